//! The response firewall: whatever an upstream sends back, in whatever
//! spelling, on whichever request, the sandbox never receives a byte of a
//! real token. The upstream here is hostile: it stores every credential it
//! is sent and hands it back later to requests that carry none.

use crate::support::clients::curl;
use crate::support::upstream::leak_forms;
use crate::support::{assert_not_leaked, blocking, real_secret, Airlock, TestCa, Upstream};

const HOST: &str = "api.store.test";

struct Setup {
    _ca: TestCa,
    upstream: Upstream,
    airlock: Airlock,
    real: String,
    placeholder: String,
}

async fn setup(extra_proxy: &str, swap_in: &str) -> Setup {
    let ca = TestCa::new();
    let upstream = Upstream::start(&ca, &[HOST]).await;
    let real = real_secret("firewall");
    let cfg = format!(
        "[proxy]\nintercept = \"all\"\nupstream_ca = [{:?}]\n{extra_proxy}\n\n[resolve]\n\"{HOST}\" = \"127.0.0.1:{}\"\n\n\
         [[secret]]\nname = \"API_TOKEN\"\nvalue = {real:?}\nhosts = [\"{HOST}\"]\nswap_in = {swap_in}\n",
        ca.cert_pem_path().display().to_string(),
        upstream.port(),
    );
    let airlock = Airlock::start(&cfg);
    let placeholder = airlock.var("API_TOKEN");
    Setup {
        _ca: ca,
        upstream,
        airlock,
        real,
        placeholder,
    }
}

impl Setup {
    /// A TLS connection to the upstream through airlock, HTTP/1.1.
    async fn tls(&self) -> impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {
        crate::support::tunnel::tls_through(
            self.airlock.proxy_addr(),
            &format!("{HOST}:443"),
            HOST,
            self.airlock.ca_path().as_path(),
            &[b"http/1.1"],
        )
        .await
    }
}

fn assert_no_form_of(real: &str, texts: &[&str]) {
    for form in leak_forms(real) {
        assert_not_leaked(&form, texts);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_token_never_comes_back_in_any_spelling_or_place() {
    let s = setup("", r#"["header"]"#).await;
    let env = s.airlock.env.clone();
    let auth = format!("Authorization: Bearer {}", s.placeholder);
    let outs = blocking(move || {
        let store = curl(&env, &["-s", "-H", &auth, &format!("https://{HOST}/store")]);
        // Later requests carry no placeholder at all: h1 with trailers, raw
        // framing so the trailer is printed, and h2.
        let h1 = curl(
            &env,
            &[
                "-s",
                "-i",
                "--raw",
                "--http1.1",
                "-H",
                "TE: trailers",
                &format!("https://{HOST}/leak"),
            ],
        );
        let h2 = curl(
            &env,
            &["-s", "-i", "--http2", &format!("https://{HOST}/leak")],
        );
        vec![store, h1, h2]
    })
    .await;
    assert!(
        s.upstream.raw_contains(&s.real),
        "the bound upstream got the real token"
    );
    for out in &outs[1..] {
        assert!(
            out.stdout.contains("split:"),
            "{} {}",
            out.stdout,
            out.stderr
        );
        // The firewall put the placeholder where the token was.
        assert!(out.stdout.contains(&s.placeholder), "{}", out.stdout);
    }
    assert!(
        outs[1]
            .stdout
            .to_ascii_lowercase()
            .contains("x-leak-trailer"),
        "the h1 answer carried its trailer: {}",
        outs[1].stdout
    );
    let logs = s.airlock.logs();
    let texts: Vec<&str> = outs
        .iter()
        .flat_map(|o| [o.stdout.as_str(), o.stderr.as_str()])
        .chain([logs.as_str()])
        .collect();
    assert_no_form_of(&s.real, &texts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_of_a_large_streamed_upload_is_screened() {
    // A body larger than the replay buffer streams, its placeholder swapped
    // on the way; the upstream echoes what it got.
    let s = setup("replay_buffer_bytes = 1024", r#"["header", "body"]"#).await;
    let mut body = format!("token={} ", s.placeholder).into_bytes();
    body.resize(200 * 1024, b'x');
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &body).unwrap();
    let env = s.airlock.env.clone();
    let arg = format!("@{}", file.path().display());
    let out = blocking(move || {
        curl(
            &env,
            &[
                "-s",
                "-H",
                "content-type: text/plain",
                "--data-binary",
                &arg,
                &format!("https://{HOST}/echo-body"),
            ],
        )
    })
    .await;
    assert!(
        s.upstream.raw_contains(&s.real),
        "the upstream got the token"
    );
    assert!(
        out.stdout.starts_with(&format!("token={}", s.placeholder)),
        "{}",
        &out.stdout[..80.min(out.stdout.len())]
    );
    assert_no_form_of(&s.real, &[&out.stdout, &out.stderr, &s.airlock.logs()]);
}

async fn read_head<S: tokio::io::AsyncRead + Unpin>(tls: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::io::AsyncReadExt::read_exact(tls, &mut byte)
            .await
            .unwrap();
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_handshakes_and_frames_never_carry_the_token_back() {
    use crate::support::upstream::{read_ws_frame, write_ws_frame_masked};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let s = setup("", r#"["header"]"#).await;
    let p = s.placeholder.clone();
    let mut tls = s.tls().await;
    // The client offers the placeholder as its subprotocol (some SDKs send
    // credentials that way); the server echoes what it received.
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {p}\r\nSec-WebSocket-Extensions: permessage-deflate\r\nAuthorization: Bearer {p}\r\n\r\n"
    );
    tls.write_all(handshake.as_bytes()).await.unwrap();
    let head = read_head(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains(&p),
        "the subprotocol came back as the placeholder: {head}"
    );
    assert!(
        !head.to_ascii_lowercase().contains("permessage-deflate"),
        "compression is never negotiated on an intercepted WebSocket: {head}"
    );
    write_ws_frame_masked(&mut tls, 0x1, b"leak", Some([9, 8, 7, 6]))
        .await
        .unwrap();
    let mut frames = Vec::new();
    for _ in 0..3 {
        let frame = tokio::time::timeout(Duration::from_secs(5), read_ws_frame(&mut tls))
            .await
            .expect("a frame in time")
            .expect("a frame");
        frames.push(frame);
    }
    let text: Vec<u8> = frames[..2].iter().flat_map(|(_, p)| p.clone()).collect();
    let text = String::from_utf8_lossy(&text).into_owned();
    assert_eq!(
        text,
        format!("token:{p}"),
        "fragments reassemble to the placeholder"
    );
    let binary = String::from_utf8_lossy(&frames[2].1).into_owned();
    drop(tls);

    // An upgrade request the upstream answers without switching: screened too.
    let mut tls = s.tls().await;
    let refused = format!(
        "GET /leak HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tls.write_all(refused.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.contains("split:"), "{answer}");
    assert_no_form_of(
        &s.real,
        &[&head, &text, &binary, &answer, &s.airlock.logs()],
    );
}
