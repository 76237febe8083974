//! WebSocket specifics: frame rules, the pump, large frames.

use super::*;

fn ws_run(fw: &Arc<Firewall>, wire: &[u8]) -> Result<Vec<u8>, FirewallError> {
    let mut s = fw.clone().websocket_server_to_client();
    let mut out = BytesMut::new();
    s.push(wire, &mut out)?;
    Ok(out.to_vec())
}

#[test]
fn extension_bits_are_refused() {
    let fw = Arc::new(one());
    for rsv in [0x40u8, 0x20, 0x10] {
        let mut frame = encode(true, 1, None, b"compressed");
        frame[0] |= rsv;
        let err = ws_run(&fw, &frame[..1]).unwrap_err();
        assert!(matches!(err, FirewallError::WsExtension { .. }), "{err}");
    }
    // After a clean frame, the refused one yields nothing more.
    let mut wire = encode(true, 1, None, b"hello");
    let mut bad = encode(true, 1, None, b"x");
    bad[0] |= 0x40;
    wire.extend(bad);
    let mut s = fw.clone().websocket_server_to_client();
    let mut out = BytesMut::new();
    assert!(s.push(&wire, &mut out).is_err());
    assert_eq!(decode(&out).len(), 1);
}

#[test]
fn protocol_violations_are_refused() {
    let fw = Arc::new(one());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (encode(true, 0, None, b"orphan"), "continuation"),
        (encode(false, 9, None, b"p"), "fragmented"),
        (
            [encode(false, 1, None, b"a"), encode(true, 2, None, b"b")].concat(),
            "previous",
        ),
        (encode(true, 3, None, b"r"), "reserved"),
        (vec![0x89, 126, 0, 200], "125"),
        (vec![0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0], "significant"),
    ];
    for (wire, what) in cases {
        let err = ws_run(&fw, &wire).unwrap_err();
        assert!(err.to_string().contains(what), "{err} / {what}");
    }
}

#[test]
fn length_field_forms_are_rewritten() {
    // Short token, long placeholder: payloads grow across each boundary.
    let fw = Arc::new(firewall(&[(
        "tok_SHORT1",
        &format!("miosa-tok-{}", "L".repeat(60)),
    )]));
    let grow = 60 - "tok_SHORT1".len() + "miosa-tok-".len();
    for (len, form_in, form_out) in [
        (100usize, 7u8, 16u8),
        (125, 7, 16),
        (65_500, 16, 64),
        (70_000, 64, 64),
    ] {
        let mut payload = vec![b'.'; len - 10];
        payload.splice(3..3, *b"tok_SHORT1");
        let wire = encode(true, 2, None, &payload);
        assert_eq!(decode(&wire)[0].3, form_in);
        let frames = decode(&ws_run(&fw, &wire).unwrap());
        assert_eq!(frames.len(), 1, "{len}");
        let (fin, opcode, _, form, out) = &frames[0];
        assert!(*fin);
        assert_eq!(*opcode, 2);
        assert_eq!(out.len(), len + grow);
        assert_eq!(*form, form_out, "{len}");
    }
    // And shrink: long token, short placeholder.
    let long = format!("tok_{}", "S".repeat(80));
    let fw = Arc::new(firewall(&[(&long, "miosa-tok-s")]));
    for (len, form_in, form_out) in [(150usize, 16u8, 7u8), (65_600, 64, 16)] {
        let mut payload = vec![b'.'; len - long.len()];
        payload.splice(0..0, long.bytes());
        let wire = encode(true, 1, None, &payload);
        assert_eq!(decode(&wire)[0].3, form_in);
        let frames = decode(&ws_run(&fw, &wire).unwrap());
        assert_eq!(frames[0].4.len(), len - long.len() + "miosa-tok-s".len());
        assert_eq!(frames[0].3, form_out, "{len}");
    }
}

#[test]
fn a_complete_frame_goes_out_at_once_and_the_held_tail_rides_on_the_next() {
    let fw = Arc::new(one());
    let mut s = fw.clone().websocket_server_to_client();
    let mut out = BytesMut::new();
    s.push(&encode(false, 1, None, b"{\"n\":1}\n"), &mut out)
        .unwrap();
    assert_eq!(
        decode(&out),
        vec![(false, 1, false, 7, b"{\"n\":1}\n".to_vec())]
    );
    out.clear();
    s.push(&encode(false, 0, None, b"see ghp_SeCr"), &mut out)
        .unwrap();
    assert_eq!(decode(&out), vec![(false, 0, false, 7, b"see ".to_vec())]);
    out.clear();
    // A ping between fragments goes out at once, scrubbed.
    s.push(&encode(true, 9, None, TOKEN.as_bytes()), &mut out)
        .unwrap();
    assert_eq!(
        decode(&out),
        vec![(true, 9, false, 7, PLACEHOLDER.as_bytes().to_vec())]
    );
    out.clear();
    s.push(
        &encode(true, 0, None, b"Et+To/Ken=0123456789abc!"),
        &mut out,
    )
    .unwrap();
    let want = format!("{PLACEHOLDER}!").into_bytes();
    assert_eq!(decode(&out), vec![(true, 0, false, 7, want)]);
}

#[test]
fn a_held_first_fragment_passes_its_opcode_on() {
    let fw = Arc::new(one());
    let mut s = fw.clone().websocket_server_to_client();
    let mut out = BytesMut::new();
    s.push(&encode(false, 2, None, b"ghp_Se"), &mut out)
        .unwrap();
    assert!(out.is_empty());
    s.push(
        &encode(true, 0, None, b"CrEt+To/Ken=0123456789abc"),
        &mut out,
    )
    .unwrap();
    assert_eq!(
        decode(&out),
        vec![(true, 2, false, 7, PLACEHOLDER.as_bytes().to_vec())]
    );
}

#[test]
fn control_frames_stay_within_125_bytes() {
    let fw = Arc::new(firewall(&[(
        "tok_SHORT1",
        &format!("miosa-tok-{}", "é".repeat(60)),
    )]));
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye tok_SHORT1");
    let frames = decode(&ws_run(&fw, &encode(true, 8, None, &close)).unwrap());
    let (_, opcode, _, _, payload) = &frames[0];
    assert_eq!(*opcode, 8);
    assert!(payload.len() <= 125);
    assert_eq!(&payload[..2], &1000u16.to_be_bytes());
    assert!(std::str::from_utf8(&payload[2..]).is_ok());
    assert!(!find(payload, b"tok_SHORT1"));
}

#[tokio::test]
async fn pump_relays_then_closes_on_a_compressed_frame() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fw = Arc::new(one());
    let (mut server, server_side) = tokio::io::duplex(1 << 16);
    let (client_side, mut client) = tokio::io::duplex(1 << 16);
    let pump = tokio::spawn(
        fw.websocket_server_to_client()
            .pump(server_side, client_side),
    );
    server
        .write_all(&encode(true, 1, None, format!("echo {TOKEN}").as_bytes()))
        .await
        .unwrap();
    let mut bad = encode(true, 1, None, b"deflated");
    bad[0] |= 0x40;
    server.write_all(&bad).await.unwrap();
    let err = pump.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap_or_default();
    let frames = decode(&got);
    assert_eq!(frames[0].4, format!("echo {PLACEHOLDER}").into_bytes());
    let (_, opcode, _, _, close) = frames.last().unwrap();
    assert_eq!(*opcode, 8);
    assert_eq!(&close[..2], &1008u16.to_be_bytes());
}

#[tokio::test]
async fn pump_returns_bytes_written_at_server_eof() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fw = Arc::new(one());
    let (mut server, server_side) = tokio::io::duplex(1 << 16);
    let (client_side, mut client) = tokio::io::duplex(1 << 16);
    let pump = tokio::spawn(
        fw.websocket_server_to_client()
            .pump(server_side, client_side),
    );
    let frame = encode(true, 2, None, b"plain");
    server.write_all(&frame).await.unwrap();
    drop(server);
    assert_eq!(pump.await.unwrap().unwrap(), frame.len() as u64);
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, frame);
}

#[test]
fn a_large_frame_streams_in_pieces_and_scrubs_across_them() {
    let fw = Arc::new(one());
    let mut payload = vec![b'-'; 200_000];
    for at in [
        0usize,
        999,
        1000 - 5,
        65_530,
        150_000,
        200_000 - TOKEN.len(),
    ] {
        payload[at..at + TOKEN.len()].copy_from_slice(TOKEN.as_bytes());
    }
    let wire = encode(true, 2, None, &payload);
    let mut s = fw.clone().websocket_server_to_client();
    let mut out = BytesMut::new();
    let mut most = 0;
    for chunk in wire.chunks(1000) {
        s.push(chunk, &mut out).unwrap();
        most = most.max(s.buffered());
    }
    assert!(most < 1000 + TOKEN.len(), "memory stays bounded: {most}");
    let frames = decode(&out);
    assert!(frames.len() > 100, "forwarded as it arrived");
    assert_eq!(frames[0].1, 2);
    assert!(frames[1..].iter().all(|f| f.1 == 0));
    assert!(frames.last().unwrap().0);
    let joined: Vec<u8> = frames.iter().flat_map(|f| f.4.clone()).collect();
    assert_eq!(joined, fw.scrub(&payload).into_owned());
    assert!(!find(&joined, TOKEN.as_bytes()));
}
