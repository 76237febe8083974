//! The WebSocket echo route and the frame helpers tests use as a client.

use super::*;

/// `/ws`: a WebSocket echo server (RFC 6455): answers the handshake, then
/// sends every text or binary message back.
pub(super) fn websocket_echo(
    mut req: Request<Incoming>,
    sni: Option<String>,
    log: Arc<Mutex<Vec<Recorded>>>,
) -> Response<RespBody> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
        .unwrap_or_default();
    record_head(&log, &req, "/ws".into(), sni);
    let mut input = key.clone();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = STANDARD.encode(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        &input,
    ));
    // Like real servers, select (echo) the first subprotocol offered.
    let protocol = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_owned());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        while let Some((opcode, payload)) = read_ws_frame(&mut io).await {
            if opcode == 0x8 {
                let _ = write_ws_frame(&mut io, 0x8, &[]).await;
                return;
            }
            // `leak`: a hostile server hands back the stored bearer token,
            // split over two fragments, then base64 in a binary message.
            if payload == b"leak" {
                let token = stored_bearer(&log).unwrap_or_default();
                let (a, b) = token.as_bytes().split_at(token.len() / 2);
                let first = [b"token:".as_slice(), a].concat();
                let _ = write_ws_fragment(&mut io, 0x1, &first, false).await;
                let _ = write_ws_fragment(&mut io, 0x0, b, true).await;
                let _ = write_ws_frame(&mut io, 0x2, STANDARD.encode(&token).as_bytes()).await;
                continue;
            }
            if write_ws_frame(&mut io, opcode, &payload).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::builder();
    if let Some(p) = protocol {
        response = response.header("sec-websocket-protocol", p);
    }
    response
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(empty())
        .unwrap()
}

/// Reads one (client, masked) frame: (opcode, unmasked payload). Payloads
/// over 1 MiB end the connection.
pub async fn read_ws_frame<R: tokio::io::AsyncRead + Unpin>(io: &mut R) -> Option<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 2];
    io.read_exact(&mut head).await.ok()?;
    let opcode = head[0] & 0x0f;
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7f {
        126 => io.read_u16().await.ok()? as u64,
        127 => io.read_u64().await.ok()?,
        n => n as u64,
    };
    if len > 1 << 20 {
        return None;
    }
    let mut mask = [0u8; 4];
    if masked {
        io.read_exact(&mut mask).await.ok()?;
    }
    let mut payload = vec![0u8; len as usize];
    io.read_exact(&mut payload).await.ok()?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Some((opcode, payload))
}

/// Writes one final frame; `mask` is what clients must do.
pub async fn write_ws_frame_masked<W: tokio::io::AsyncWrite + Unpin>(
    io: &mut W,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut frame = vec![0x80 | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => frame.push(mask_bit | n as u8),
        n if n <= u16::MAX as usize => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            frame.extend_from_slice(&m);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => frame.extend_from_slice(payload),
    }
    io.write_all(&frame).await?;
    io.flush().await
}

/// One unmasked server frame, final or not (fragments of one message).
pub(super) async fn write_ws_fragment<W: tokio::io::AsyncWrite + Unpin>(
    io: &mut W,
    opcode: u8,
    payload: &[u8],
    fin: bool,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    assert!(payload.len() < 126, "test fragments are short");
    let mut frame = vec![if fin { 0x80 } else { 0 } | opcode, payload.len() as u8];
    frame.extend_from_slice(payload);
    io.write_all(&frame).await?;
    io.flush().await
}

pub(super) async fn write_ws_frame<W: tokio::io::AsyncWrite + Unpin>(
    io: &mut W,
    opcode: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    write_ws_frame_masked(io, opcode, payload, None).await
}
