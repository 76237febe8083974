#![allow(dead_code)] // each integration-test binary uses only part of the fixtures

//! A real HTTPS origin (HTTP/1.1 and HTTP/2) that records every request it gets.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::test_ca::TestCa;

/// How much of each request body is kept for assertions.
pub const BODY_SAMPLE_LIMIT: usize = 64 * 1024;

const DOWNLOAD_CHUNK: usize = 64 * 1024;

/// `/download/{n}` content: the byte at offset `i` is `i % 256`.
static DOWNLOAD_PATTERN: [u8; DOWNLOAD_CHUNK] = download_pattern();

const fn download_pattern() -> [u8; DOWNLOAD_CHUNK] {
    let mut chunk = [0u8; DOWNLOAD_CHUNK];
    let mut i = 0;
    while i < DOWNLOAD_CHUNK {
        chunk[i] = i as u8;
        i += 1;
    }
    chunk
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    /// "HTTP/1.1" or "HTTP/2.0".
    pub version: String,
    /// The request-target authority: `:authority` on h2, absent for origin-form h1.
    pub authority: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    /// The first [`BODY_SAMPLE_LIMIT`] bytes of the body.
    pub body_sample: Vec<u8>,
    pub sni: Option<String>,
}

impl Recorded {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn contains(&self, needle: &str) -> bool {
        self.path_and_query.contains(needle)
            || self
                .authority
                .as_deref()
                .is_some_and(|a| a.contains(needle))
            || self
                .headers
                .iter()
                .any(|(n, v)| n.contains(needle) || v.contains(needle))
            || contains_bytes(&self.body_sample, needle.as_bytes())
    }
}

pub struct Upstream {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Serves a leaf for `names` signed by `ca`, offering ALPN `h2` and `http/1.1`.
    pub async fn start(ca: &TestCa, names: &[&str]) -> Upstream {
        Self::start_with_config(ca.server_config(names, &[b"h2", b"http/1.1"])).await
    }

    pub async fn start_with_config(config: Arc<ServerConfig>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream local addr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler_log = log.clone();
        let task = spawn_https_server(listener, config, move |req, sni| {
            handle(req, sni, handler_log.clone())
        });
        Upstream { addr, log, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far, in arrival order of completed bodies.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    /// Whether `needle` appears in any recorded header name or value, path,
    /// authority or body sample.
    pub fn raw_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|r| r.contains(needle))
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type RespBody = BoxBody<Bytes, Infallible>;

async fn handle(
    req: Request<Incoming>,
    sni: Option<String>,
    log: Arc<Mutex<Vec<Recorded>>>,
) -> Response<RespBody> {
    if req.uri().path() == "/ws" {
        return websocket_echo(req, sni, log);
    }
    let (parts, mut body) = req.into_parts();
    let mut body_len = 0u64;
    let mut body_sample = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return text(StatusCode::BAD_REQUEST, "request body error\n");
        };
        if let Ok(data) = frame.into_data() {
            body_len += data.len() as u64;
            let room = BODY_SAMPLE_LIMIT.saturating_sub(body_sample.len());
            body_sample.extend_from_slice(&data[..room.min(data.len())]);
        }
    }

    let path = parts.uri.path().to_string();
    log.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| path.clone()),
        version: format!("{:?}", parts.version),
        authority: parts.uri.authority().map(|a| a.to_string()),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len,
        body_sample,
        sni,
    });

    let method = &parts.method;
    if let Some(n) = path.strip_prefix("/download/") {
        let Ok(n) = n.parse::<u64>() else {
            return text(StatusCode::BAD_REQUEST, "bad length\n");
        };
        return Response::builder()
            .header("content-length", n)
            .header("content-type", "application/octet-stream")
            .body(PatternBody { remaining: n }.boxed())
            .unwrap();
    }
    if path == "/upload" && (method == Method::POST || method == Method::PUT) {
        let json = serde_json::json!({ "received": body_len }).to_string();
        return Response::builder()
            .header("content-type", "application/json")
            .body(full(json))
            .unwrap();
    }
    if let Some(n) = path.strip_prefix("/sse/") {
        let n: u32 = n.parse().unwrap_or(5);
        // One event every 100 ms, each sent the moment it is made.
        let events = futures_util::stream::unfold(0u32, move |i| async move {
            if i == n {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let event = format!("id: {i}\ndata: event {i}\n\n");
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(event))), i + 1))
        });
        return Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(StreamBody::new(events).boxed())
            .unwrap();
    }
    if path == "/redirect" {
        // `/redirect?to=URL`: a hostile or careless upstream sending the client elsewhere.
        let to = parts
            .uri
            .query()
            .and_then(|q| q.strip_prefix("to="))
            .unwrap_or("/")
            .to_owned();
        return Response::builder()
            .status(StatusCode::FOUND)
            .header("location", to)
            .body(full("redirecting\n"))
            .unwrap();
    }
    if path == "/echo-body" {
        return Response::builder()
            .header("content-type", "text/plain")
            .body(full(Bytes::from(body_sample_for_echo(&log))))
            .unwrap();
    }
    if path == "/echo-headers" {
        let mut map = serde_json::Map::new();
        for (name, value) in &parts.headers {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            match map.get_mut(name.as_str()) {
                Some(serde_json::Value::String(existing)) => {
                    existing.push_str(", ");
                    existing.push_str(&value);
                }
                _ => {
                    map.insert(name.to_string(), value.into());
                }
            }
        }
        let mut response = Response::builder().header("content-type", "application/json");
        // A hostile upstream reflects the credential in a header too.
        if let Some(auth) = parts.headers.get("authorization") {
            response = response.header("x-echo-authorization", auth.clone());
        }
        return response
            .body(full(serde_json::Value::Object(map).to_string()))
            .unwrap();
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let status = match code.parse::<u16>().map(StatusCode::from_u16) {
            Ok(Ok(s)) if s.as_u16() >= 200 => s,
            _ => return text(StatusCode::BAD_REQUEST, "bad status code\n"),
        };
        let bodyless = method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let body = if bodyless {
            empty()
        } else {
            full(format!("status {}\n", status.as_u16()))
        };
        return Response::builder().status(status).body(body).unwrap();
    }
    if path == "/trailers" {
        let mut trailers = HeaderMap::new();
        trailers.insert(
            HeaderName::from_static("x-trailer"),
            HeaderValue::from_static("yes"),
        );
        let frames = futures_util::stream::iter([
            Ok(Frame::data(Bytes::from_static(b"chunk one\n"))),
            Ok(Frame::data(Bytes::from_static(b"chunk two\n"))),
            Ok(Frame::trailers(trailers)),
        ]);
        // hyper's HTTP/1.1 server only emits trailers that are announced in a
        // `trailer` header, and only when the request carried `te: trailers`.
        return Response::builder()
            .header("trailer", "x-trailer")
            .body(StreamBody::new(frames).boxed())
            .unwrap();
    }
    Response::builder()
        .header("x-upstream", "yes")
        .body(full("ok\n"))
        .unwrap()
}

/// The body of the request just recorded (for `/echo-body`).
fn body_sample_for_echo(log: &Arc<Mutex<Vec<Recorded>>>) -> Vec<u8> {
    log.lock()
        .unwrap()
        .last()
        .map(|r| r.body_sample.clone())
        .unwrap_or_default()
}

/// `/ws`: a WebSocket echo server (RFC 6455): answers the handshake, then
/// sends every text or binary message back.
fn websocket_echo(
    mut req: Request<Incoming>,
    sni: Option<String>,
    log: Arc<Mutex<Vec<Recorded>>>,
) -> Response<RespBody> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
        .unwrap_or_default();
    log.lock().unwrap().push(Recorded {
        method: req.method().to_string(),
        path_and_query: "/ws".into(),
        version: format!("{:?}", req.version()),
        authority: req.uri().authority().map(|a| a.to_string()),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len: 0,
        body_sample: Vec::new(),
        sni,
    });
    let mut input = key.clone();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = STANDARD.encode(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        &input,
    ));
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
            if write_ws_frame(&mut io, opcode, &payload).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
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

async fn write_ws_frame<W: tokio::io::AsyncWrite + Unpin>(
    io: &mut W,
    opcode: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    write_ws_frame_masked(io, opcode, payload, None).await
}

fn full(body: impl Into<Bytes>) -> RespBody {
    Full::new(body.into()).boxed()
}

fn empty() -> RespBody {
    http_body_util::Empty::new().boxed()
}

fn text(status: StatusCode, body: &'static str) -> Response<RespBody> {
    Response::builder().status(status).body(full(body)).unwrap()
}

/// Streams `remaining` bytes of [`DOWNLOAD_PATTERN`] without allocating.
struct PatternBody {
    remaining: u64,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(DOWNLOAD_CHUNK as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            &DOWNLOAD_PATTERN[..n],
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

pub(super) fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Accepts TLS connections on `listener` and serves each with hyper's auto
/// (h1/h2) builder. `handler` gets the request and the client's SNI. Aborting
/// the returned task drops every connection with it.
pub(super) fn spawn_https_server<H, Fut, B>(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    handler: H,
) -> JoinHandle<()>
where
    H: Fn(Request<Incoming>, Option<String>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            connections.spawn(async move {
                let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
                let Ok(Ok(tls)) = handshake.await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().map(str::to_string);
                let service = hyper::service::service_fn(move |req| {
                    let response = handler(req, sni.clone());
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                    .await;
            });
        }
    })
}
