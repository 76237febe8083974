//! Refresh-and-replay on 401, placeholders in bodies, response scrubbing,
//! SSE and WebSocket through the proxy.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::support::clients::{curl, node, python};
use crate::support::upstream::{read_ws_frame, write_ws_frame_masked};
use crate::support::{assert_not_leaked, blocking, real_secret, tunnel, Airlock, TestCa, Upstream};

pub(crate) const API: &str = "api.acme.test";

/// A static secret that may be swapped in bodies.
pub(crate) async fn body_world() -> (TestCa, Upstream, Airlock, String) {
    let ca = TestCa::new();
    let api = Upstream::start(&ca, &["api.body.test"]).await;
    let real = real_secret("body");
    let cfg = format!(
        "[proxy]\nupstream_ca = [{:?}]\n\n[resolve]\n\"api.body.test\" = \"127.0.0.1:{}\"\n\n[[secret]]\nname = \"API_KEY\"\nvalue = {real:?}\nhosts = [\"api.body.test\"]\nswap_in = [\"header\", \"body\", \"query\"]\n",
        ca.cert_pem_path().display().to_string(),
        api.port()
    );
    let airlock = Airlock::start(&cfg);
    (ca, api, airlock, real)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_form_multipart_and_gzip_bodies_arrive_swapped() {
    let (_ca, api, airlock, real) = body_world().await;
    let p = airlock.var("API_KEY");
    let env = airlock.env.clone();
    let gz = tempfile::NamedTempFile::new().unwrap();
    {
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(gz.path()).unwrap(),
            flate2::Compression::default(),
        );
        std::io::Write::write_all(
            &mut enc,
            format!(r#"{{"key":"{p}","pad":"{}"}}"#, "z".repeat(5000)).as_bytes(),
        )
        .unwrap();
        enc.finish().unwrap();
    }
    let gz_path = gz.path().display().to_string();
    let p2 = p.clone();
    let node_env = crate::support::with_env(&env, &[("NODE_PATH", crate::support::NODE_MODULES)]);
    let outs = blocking(move || {
        let json = format!(r#"{{"key":"{p2}"}}"#);
        let form = format!("user=a&key={p2}");
        let field = format!("key={p2}");
        let gzfile = format!("@{gz_path}");
        vec![
            curl(&env, &["-s", "-H", "content-type: application/json", "--data", &json, "https://api.body.test/upload"]),
            curl(&env, &["-s", "--data", &form, "https://api.body.test/upload"]),
            curl(&env, &["-s", "-F", &field, "-F", "other=1", "https://api.body.test/upload"]),
            curl(&env, &["-s", "-H", "content-type: application/json", "-H", "content-encoding: gzip", "--data-binary", &gzfile, "https://api.body.test/upload"]),
            python(&env, "import os, requests\nprint(requests.post('https://api.body.test/upload', json={'key': os.environ['API_KEY']}).text)"),
            node(&node_env, "const u = require('undici'); u.setGlobalDispatcher(new u.EnvHttpProxyAgent()); u.fetch('https://api.body.test/upload', {method: 'POST', headers: {'content-type': 'application/x-www-form-urlencoded'}, body: 'key=' + process.env.API_KEY}).then(r => r.text()).then(t => console.log(t)).catch(e => { console.error(String(e)); process.exit(1) })"),
        ]
    })
    .await;
    for (i, out) in outs.iter().enumerate() {
        assert!(
            out.stdout.contains("received"),
            "client {i}: {} {}",
            out.stdout,
            out.stderr
        );
    }
    let requests = api.requests();
    assert_eq!(requests.len(), outs.len());
    for (i, r) in requests.iter().enumerate() {
        let body = if r.header("content-encoding") == Some("gzip") {
            let mut d = flate2::read::GzDecoder::new(&r.body_sample[..]);
            let mut s = String::new();
            std::io::Read::read_to_string(&mut d, &mut s).unwrap();
            s
        } else {
            String::from_utf8_lossy(&r.body_sample).into_owned()
        };
        assert!(
            body.contains(&real),
            "request {i} did not carry the real secret: {body}"
        );
        assert!(
            !body.contains(&p),
            "request {i} still carried the placeholder"
        );
        if let Some(len) = r.header("content-length") {
            assert_eq!(
                len.parse::<u64>().unwrap(),
                r.body_len,
                "request {i}: Content-Length matches the body"
            );
        }
    }
    let logs = airlock.logs();
    let all: Vec<&str> = outs
        .iter()
        .flat_map(|o| [o.stdout.as_str(), o.stderr.as_str()])
        .chain([logs.as_str()])
        .collect();
    assert_not_leaked(&real, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_echoing_the_token_shows_only_the_placeholder() {
    let (_ca, api, airlock, real) = body_world().await;
    let p = airlock.var("API_KEY");
    let env = airlock.env.clone();
    let p2 = p.clone();
    let out = blocking(move || {
        let auth = format!("Authorization: Bearer {p2}");
        let body = format!("my key is {p2}");
        (
            curl(
                &env,
                &[
                    "-s",
                    "-i",
                    "-H",
                    &auth,
                    "https://api.body.test/echo-headers",
                ],
            ),
            curl(
                &env,
                &[
                    "-s",
                    "--data-binary",
                    &body,
                    "-H",
                    "content-type: text/plain",
                    "https://api.body.test/echo-body",
                ],
            ),
        )
    })
    .await;
    assert!(
        api.raw_contains(&real),
        "the upstream did get the real token"
    );
    assert!(
        out.0
            .stdout
            .contains(&format!("x-echo-authorization: Bearer {p}")),
        "{}",
        out.0.stdout
    );
    assert!(
        out.0
            .stdout
            .contains(&format!("\"authorization\":\"Bearer {p}\"")),
        "{}",
        out.0.stdout
    );
    assert_eq!(out.1.stdout, format!("my key is {p}"));
    assert_not_leaked(&real, &[&out.0.stdout, &out.1.stdout, &airlock.logs()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_arrive_as_they_are_sent() {
    let (_ca, _api, airlock, _real) = body_world().await;
    let env = airlock.env.clone();
    let script = r#"
import os, time, requests
r = requests.get('https://api.body.test/sse/6', headers={'Authorization': 'Bearer ' + os.environ['API_KEY']}, stream=True)
stamps = []
for line in r.iter_lines(chunk_size=1):
    if line.startswith(b'data:'):
        stamps.append(time.monotonic())
gaps = [round((b - a) * 1000) for a, b in zip(stamps, stamps[1:])]
print(len(stamps), min(gaps), max(gaps))
"#;
    let out = blocking(move || python(&env, script)).await;
    let fields: Vec<i64> = out
        .stdout
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    assert_eq!(fields.len(), 3, "{} {}", out.stdout, out.stderr);
    assert_eq!(fields[0], 6, "every event arrived");
    // Sent 100 ms apart: each must arrive apart too, not in one burst at the
    // end (a burst has gaps near 0; a busy machine delays single events).
    assert!(
        fields[1] >= 20,
        "events were held back and arrived together: gaps {:?}",
        &fields[1..]
    );
    assert!(
        fields[2] < 1000,
        "an event was delayed: gaps {:?}",
        &fields[1..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_handshake_is_swapped_and_frames_flow_both_ways() {
    let (_ca, api, airlock, real) = body_world().await;
    let p = airlock.var("API_KEY");
    let mut tls = tunnel::tls_through(
        airlock.proxy_addr(),
        "api.body.test:443",
        "api.body.test",
        airlock.ca_path().as_path(),
        &[b"http/1.1"],
    )
    .await;
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: api.body.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer {p}\r\n\r\n"
    );
    tls.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::io::AsyncReadExt::read_exact(&mut tls, &mut byte)
            .await
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    for message in ["hello", "second message"] {
        write_ws_frame_masked(&mut tls, 0x1, message.as_bytes(), Some([1, 2, 3, 4]))
            .await
            .unwrap();
        let (opcode, payload) =
            tokio::time::timeout(Duration::from_secs(5), read_ws_frame(&mut tls))
                .await
                .unwrap()
                .unwrap();
        assert_eq!((opcode, payload.as_slice()), (0x1, message.as_bytes()));
    }
    let seen = api
        .requests()
        .into_iter()
        .find(|r| r.path_and_query == "/ws")
        .expect("handshake reached the upstream");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {real}").as_str())
    );
    assert!(!api.raw_contains(&p));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_clear_errors_and_the_proxy_keeps_serving() {
    let (_ca, api, airlock, real) = body_world().await;
    let env = airlock.env.clone();
    let bomb = tempfile::NamedTempFile::new().unwrap();
    {
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(bomb.path()).unwrap(),
            flate2::Compression::best(),
        );
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            std::io::Write::write_all(&mut enc, &zeros).unwrap();
        }
        enc.finish().unwrap();
    }
    let truncated = tempfile::NamedTempFile::new().unwrap();
    {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut enc, "some json text ".repeat(100).as_bytes()).unwrap();
        let full = enc.finish().unwrap();
        std::fs::write(truncated.path(), &full[..full.len() / 2]).unwrap();
    }
    let (bomb_path, trunc_path) = (
        format!("@{}", bomb.path().display()),
        format!("@{}", truncated.path().display()),
    );
    let outs = blocking(move || {
        let gz = [
            "-s",
            "-w",
            "\n%{http_code}",
            "-H",
            "content-encoding: gzip",
            "--data-binary",
        ];
        let mut a: Vec<&str> = gz.to_vec();
        a.extend([bomb_path.as_str(), "https://api.body.test/upload"]);
        let mut b: Vec<&str> = gz.to_vec();
        b.extend([trunc_path.as_str(), "https://api.body.test/upload"]);
        (curl(&env, &a), curl(&env, &b))
    })
    .await;
    assert!(
        outs.0.stdout.ends_with("413") && outs.0.stdout.contains("decodes to more than"),
        "{}",
        outs.0.stdout
    );
    assert!(
        outs.1.stdout.ends_with("400") && outs.1.stdout.contains("invalid gzip"),
        "{}",
        outs.1.stdout
    );
    assert!(api.requests().is_empty(), "nothing reached the upstream");

    // A chunked body that stops mid-chunk, then the client hangs up.
    let mut tls = tunnel::tls_through(
        airlock.proxy_addr(),
        "api.body.test:443",
        "api.body.test",
        airlock.ca_path().as_path(),
        &[b"http/1.1"],
    )
    .await;
    tls.write_all(b"POST /upload HTTP/1.1\r\nHost: api.body.test\r\nTransfer-Encoding: chunked\r\n\r\n100\r\nonly a few bytes").await.unwrap();
    drop(tls);

    // The proxy still serves.
    let env = airlock.env.clone();
    let p = airlock.var("API_KEY");
    let ok = blocking(move || {
        curl(
            &env,
            &[
                "-s",
                "-H",
                &format!("Authorization: Bearer {p}"),
                "https://api.body.test/fine",
            ],
        )
    })
    .await;
    assert_eq!(ok.stdout, "ok\n", "{}", ok.stderr);
    assert_not_leaked(&real, &[&outs.0.stdout, &outs.1.stdout, &airlock.logs()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_http2_extended_connect() {
    let (_ca, api, airlock, real) = body_world().await;
    let p = airlock.var("API_KEY");
    let tls = tunnel::tls_through(
        airlock.proxy_addr(),
        "api.body.test:443",
        "api.body.test",
        airlock.ca_path().as_path(),
        &[b"h2"],
    )
    .await;
    let mut sender = tunnel::h2_client(tls).await;
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri("https://api.body.test/ws")
        .header("sec-websocket-version", "13")
        .header("authorization", format!("Bearer {p}"))
        .body(http_body_util::Full::default())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut response = sender
        .send_request(req)
        .await
        .expect("extended CONNECT accepted");
    assert_eq!(response.status(), 200);
    let upgraded = hyper::upgrade::on(&mut response)
        .await
        .expect("h2 stream upgraded");
    let mut io = hyper_util::rt::TokioIo::new(upgraded);
    write_ws_frame_masked(&mut io, 0x1, b"over h2", Some([9, 8, 7, 6]))
        .await
        .unwrap();
    let (opcode, payload) = tokio::time::timeout(Duration::from_secs(5), read_ws_frame(&mut io))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((opcode, payload.as_slice()), (0x1, &b"over h2"[..]));
    let seen = api
        .requests()
        .into_iter()
        .find(|r| r.path_and_query == "/ws")
        .unwrap();
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {real}").as_str())
    );
}
