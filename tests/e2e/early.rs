//! An upstream that answers before it reads a large upload (and closes):
//! every client, over HTTP/2 and HTTP/1.1, gets the answer intact, and the
//! audit counts only the bytes that went upstream.

use std::process::{Command, Stdio};

use crate::support::clients::{curl, python};
use crate::support::{assert_not_leaked, blocking, real_secret, Airlock, TestCa, Upstream};

const HOST: &str = "api.early.test";
const UPLOAD: usize = 3_000_000;
const ANSWER: &str = "early 401: not reading your upload";

/// An upstream offering `alpn`, and airlock holding a header secret for it.
async fn world(alpn: &[&[u8]]) -> (TestCa, Upstream, Airlock, String) {
    let ca = TestCa::new();
    let api = Upstream::start_with_config(ca.server_config(&[HOST], alpn)).await;
    let real = real_secret("early");
    // HTTP/2 where the upstream offers it, whatever the client speaks: the
    // h2 upstream's flow control is what these tests are about.
    let upstream_protocol = "upstream_protocol = \"http2\"";
    let cfg = format!(
        "[proxy]\nupstream_ca = [{:?}]\n{upstream_protocol}\n[resolve]\n\"{HOST}\" = \"127.0.0.1:{}\"\n\n[[secret]]\nname = \"API_KEY\"\nvalue = {real:?}\nhosts = [\"{HOST}\"]\nswap_in = [\"header\"]\n",
        ca.cert_pem_path().display().to_string(),
        api.port()
    );
    let airlock = Airlock::start(&cfg);
    (ca, api, airlock, real)
}

/// httpx with HTTP/2 needs the `h2` package; CI must have it (scripts/test installs it).
fn have_httpx_h2() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import httpx, h2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "httpx and h2 must be installed under CI (scripts/test installs them)"
        );
        eprintln!("skipped httpx: python3 -m pip install httpx h2");
    }
    ok
}

/// The `request_bytes` of every audit line for `/early-401`.
fn audited_bytes(logs: &str) -> Vec<u64> {
    logs.lines()
        .filter(|l| l.contains("path=/early-401"))
        .filter_map(|l| l.split("request_bytes=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect()
}

/// An HTTP/1.1 upstream that closes with our upload unread makes its kernel
/// send RST, and a RST that lands before airlock read the answer discards it
/// from the receive buffer (why servers linger before closing). Nothing on
/// our side can get it back; the client then gets a clear 502.
fn reset_ate_the_answer(stdout: &str) -> bool {
    stdout.contains("airlock: upstream error: api.early.test")
        && stdout.contains("error writing a body to connection: broken pipe")
        && stdout.contains("\n502 ")
}

async fn early_answer_reaches_every_client(alpn: &[&[u8]], upstream_version: &str) {
    let rst_may_lose_it = upstream_version == "HTTP/1.1";
    let (_ca, api, airlock, real) = world(alpn).await;
    let upload = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(upload.path(), vec![b'u'; UPLOAD]).unwrap();
    let path = upload.path().display().to_string();
    let env = airlock.env.clone();
    let url = format!("https://{HOST}/early-401");
    let placeholder = airlock.var("API_KEY");
    let httpx = have_httpx_h2();
    // httpx reads SSL_CERT_FILE, not REQUESTS_CA_BUNDLE.
    let httpx_env: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != "REQUESTS_CA_BUNDLE" && k != "CURL_CA_BUNDLE")
        .cloned()
        .collect();
    let outs = blocking(move || {
        let auth = format!("Authorization: Bearer {placeholder}");
        let data = format!("@{path}");
        let mut outs = Vec::new();
        // The upstream closes each connection 200 ms after an early answer,
        // without a GOAWAY: a request that takes a pooled connection at that
        // instant fails (502), whatever this test is about. So each client
        // starts once the last one's connection is closed and dropped.
        let settle = || std::thread::sleep(std::time::Duration::from_millis(400));
        for version in ["--http2", "--http1.1"] {
            settle();
            let args = [
                version,
                "-s",
                "-w",
                "\n%{http_code} %{http_version}",
                "-H",
                auth.as_str(),
                "-H",
                "content-type: application/octet-stream",
                "--data-binary",
                data.as_str(),
                url.as_str(),
            ];
            outs.push((format!("curl {version}"), curl(&env, &args)));
        }
        if httpx {
            for http2 in ["True", "False"] {
                settle();
                let script = format!(
                    "import os, httpx\nbody = b'u' * {UPLOAD}\nwith httpx.Client(http2={http2}, http1={http1}) as c:\n    r = c.post({url:?}, content=body, headers={{'Authorization': 'Bearer ' + os.environ['API_KEY'], 'content-type': 'application/octet-stream'}})\n    print(r.text.strip())\n    print(r.status_code, r.http_version)",
                    http1 = if http2 == "True" { "False" } else { "True" },
                );
                outs.push((format!("httpx http2={http2}"), python(&httpx_env, &script)));
            }
        }
        outs
    })
    .await;
    let lost: Vec<String> = outs
        .iter()
        .filter(|(_, out)| !(out.stdout.contains(ANSWER) && out.stdout.contains("\n401 ")))
        .filter(|(_, out)| !(rst_may_lose_it && reset_ate_the_answer(&out.stdout)))
        .map(|(client, out)| format!("{client}: stdout {:?} stderr {:?}", out.stdout, out.stderr))
        .collect();
    assert!(
        lost.is_empty(),
        "upstream {upstream_version}: early answer lost by {lost:#?}"
    );
    let requests = api.requests();
    assert_eq!(requests.len(), outs.len());
    for r in &requests {
        assert_eq!(r.version, upstream_version);
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {real}").as_str())
        );
    }
    // Each audit line counts what went upstream: never the whole upload the
    // upstream refused to read, when its flow control (HTTP/2) held it back.
    let logs = airlock.wait_for_log("path=/early-401");
    let mut bytes = audited_bytes(&logs);
    for _ in 0..50 {
        if bytes.len() >= outs.len() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        bytes = audited_bytes(&airlock.logs());
    }
    assert_eq!(bytes.len(), outs.len(), "{logs}");
    for b in &bytes {
        assert!(*b <= UPLOAD as u64, "{bytes:?}");
        if upstream_version == "HTTP/2.0" {
            // hyper's server windows are 1 MiB; the upload cannot all have gone.
            assert!(*b < UPLOAD as u64, "{bytes:?}");
        }
    }
    eprintln!("audited request_bytes: {bytes:?}");
    let texts: Vec<&str> = outs
        .iter()
        .flat_map(|(_, o)| [o.stdout.as_str(), o.stderr.as_str()])
        .chain([logs.as_str()])
        .collect();
    assert_not_leaked(&real, &texts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_401_from_an_http2_upstream_reaches_every_client() {
    early_answer_reaches_every_client(&[b"h2"], "HTTP/2.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_401_from_an_http1_upstream_reaches_every_client() {
    early_answer_reaches_every_client(&[b"http/1.1"], "HTTP/1.1").await;
}
