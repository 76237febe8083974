//! What a sandbox sees when something fails: bad input, untrusted or unreachable upstreams, DNS failures and timeouts.

use super::foundation::*;
use crate::support::clients::curl;
use crate::support::tunnel;
use crate::support::{
    assert_not_leaked, blocking, real_secret, with_env, Airlock, TestCa, Upstream,
};
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_upstream_certificate_gives_502() {
    let ca = TestCa::new();
    let bad = Upstream::start_with_config(TestCa::untrusted_server_config(
        &["bad.test"],
        &[b"h2", b"http/1.1"],
    ))
    .await;
    let real = real_secret("tls");
    let cfg = config(
        &ca,
        &[("bad.test", bad.port())],
        "",
        &github_secret(&real, &["bad.test"]),
    );
    let airlock = Airlock::start(&cfg);
    let env = airlock.env.clone();
    let auth = format!("Authorization: Bearer {}", airlock.var("GITHUB_TOKEN"));
    let out = blocking(move || curl(&env, &["-i", "-H", &auth, "https://bad.test/"])).await;
    assert!(out.stdout.contains(" 502"), "{}", out.stdout);
    assert!(
        out.stdout.contains("x-airlock-error: upstream_tls"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("TLS verification failed for bad.test"),
        "{}",
        out.stdout
    );
    assert!(
        bad.requests().is_empty(),
        "a request went to an unverified upstream"
    );
    let logs = airlock.wait_for_log("upstream_tls");
    assert_not_leaked(&real, &[&out.stdout, &logs]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_and_private_literals_are_named() {
    let w = world("").await;
    // A port nobody listens on, reached through an override.
    let cfg = config(
        &w.ca,
        &[("down.test", 9)],
        "",
        &github_secret("x-value", &["down.test"]),
    );
    let airlock = Airlock::start(&cfg);
    let env = airlock.env.clone();
    let out = blocking(move || curl(&env, &["-i", "https://down.test/"])).await;
    assert!(
        out.stdout.contains(" 502") && out.stdout.contains("upstream_connect"),
        "{}",
        out.stdout
    );

    // An IP literal is guarded even though a name overrides to it.
    let no_bypass = [("NO_PROXY", ""), ("no_proxy", "")];
    let env = with_env(&w.env(), &no_bypass);
    let out = blocking(move || {
        curl(
            &env,
            &[
                "-w",
                "%{http_connect}",
                "-o",
                "/dev/null",
                "https://127.0.0.1/",
            ],
        )
    })
    .await;
    assert_eq!(out.stdout, "403", "{}", out.stderr);
    let env = with_env(&w.env(), &no_bypass);
    let out = blocking(move || {
        curl(
            &env,
            &[
                "-w",
                "%{http_connect}",
                "-o",
                "/dev/null",
                "https://[::ffff:127.0.0.1]/",
            ],
        )
    })
    .await;
    assert_eq!(out.stdout, "403", "{}", out.stderr);
    let logs = w.airlock.wait_for_log("egress_denied");
    assert!(logs.contains("loopback"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_the_proxy_keeps_serving() {
    let w = world("").await;
    let proxy = w.airlock.proxy_addr();

    // Malformed CONNECT target.
    let (code, head, _) = tunnel::connect(proxy, "no-port-here").await;
    assert_eq!(code, 400, "{head}");
    w.assert_still_serving().await;

    // A port that is not allowed.
    let (code, head, _) = tunnel::connect(proxy, "api.github.test:8443").await;
    assert_eq!(code, 403, "{head}");
    assert!(head.contains("x-airlock-error: port_not_allowed"), "{head}");

    // Plain HTTP where a TLS ClientHello belongs.
    let (code, _, mut s) = tunnel::connect(proxy, "api.github.test:443").await;
    assert_eq!(code, 200);
    s.write_all(b"GET / HTTP/1.1\r\nHost: api.github.test\r\n\r\n")
        .await
        .unwrap();
    let answer = tunnel::read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("expected a TLS ClientHello"), "{answer}");
    w.assert_still_serving().await;

    // A client that hangs up halfway through its ClientHello.
    let (_, _, mut s) = tunnel::connect(proxy, "api.github.test:443").await;
    s.write_all(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ])
    .await
    .unwrap();
    drop(s);
    w.assert_still_serving().await;

    // Oversized request head, each time (hyper's own limit let one in when
    // a single read brought the rest of it): never forwarded.
    for _ in 0..4 {
        let env = w.env();
        let huge = format!("X-Huge: {}", "a".repeat(100 * 1024));
        let out = blocking(move || {
            curl(
                &env,
                &[
                    "--http1.1",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-H",
                    &huge,
                    "https://api.github.test/",
                ],
            )
        })
        .await;
        assert_eq!(out.stdout, "431", "{}", out.stderr);
    }
    assert!(
        w.api
            .requests()
            .iter()
            .all(|r| r.header("x-huge").is_none()),
        "an oversized head reached the upstream"
    );
    w.assert_still_serving().await;

    // Garbage instead of an HTTP request on the proxy port.
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    s.write_all(b"\x00\x01garbage\r\n\r\n").await.unwrap();
    let answer = tunnel::read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");

    // A request sent to the proxy as if it were a web server.
    let env = w.env();
    let url = format!("http://{proxy}/");
    let out = blocking(move || curl(&with_env(&env, &[("no_proxy", "*")]), &["-s", &url])).await;
    assert!(out.stdout.contains("forward proxy"), "{}", out.stdout);

    w.assert_still_serving().await;
    let mut airlock = w.airlock;
    assert!(airlock.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_failure_and_upstream_timeout_are_named() {
    // A listener that accepts and never answers.
    let (silent_port, hold) = crate::support::silent_listener().await;
    let ca = TestCa::new();
    let cfg = config(
        &ca,
        &[("slow.test", silent_port)],
        "intercept = \"all\"\nresponse_timeout_secs = 1",
        &github_secret("x-value-0123", &["slow.test"]),
    );
    let airlock = Airlock::start(&cfg);
    let env = airlock.env.clone();
    let (slow, dns) = blocking(move || {
        (
            curl(&env, &["-i", "https://slow.test/"]),
            curl(&env, &["-i", "https://no-such-host.invalid/"]),
        )
    })
    .await;
    assert!(
        slow.stdout.contains(" 504") && slow.stdout.contains("upstream_timeout"),
        "{}",
        slow.stdout
    );
    assert!(
        dns.stdout.contains(" 502") && dns.stdout.contains("upstream_dns"),
        "{}",
        dns.stdout
    );
    assert!(
        dns.stdout.contains("no-such-host.invalid"),
        "{}",
        dns.stdout
    );
    hold.abort();
}

/// An HTTPS origin that answers the first request of each connection
/// (keep-alive) and closes the connection, unanswered, when the next one
/// arrives on it: the race a pooled connection meets when a server's
/// keep-alive timeout fires as a request goes out. Returns the port and the
/// request lines it read, with the connection each came on.
async fn closes_kept_alive_connections(
    ca: &TestCa,
    name: &str,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<(usize, String)>>>) {
    use tokio::io::AsyncReadExt;
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&[name], &[b"http/1.1"]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = log.clone();
    tokio::spawn(async move {
        for conn in 0usize.. {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                for nth in 0..2 {
                    // Bodiless requests: a head ends each.
                    let end = loop {
                        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head: Vec<u8> = got.drain(..end).collect();
                    let line = String::from_utf8_lossy(&head)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    seen.lock().unwrap().push((conn, line));
                    if nth == 0 {
                        let answer =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nanswer {conn}\n");
                        if tls.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
                // Dropped: closed, the second request unanswered.
            });
        }
    });
    (port, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_whose_pooled_connection_the_upstream_closed_is_sent_again_a_post_is_not() {
    let ca = TestCa::new();
    let (port, log) = closes_kept_alive_connections(&ca, "closing.test").await;
    let real = real_secret("closing");
    let cfg = config(
        &ca,
        &[("closing.test", port)],
        "",
        &github_secret(&real, &["closing.test"]),
    );
    let airlock = Airlock::start(&cfg);
    let env = airlock.env.clone();
    let auth = format!("Authorization: Bearer {}", airlock.var("GITHUB_TOKEN"));
    let url = "https://closing.test/items";
    // One curl, two requests on one connection to airlock (so on one of its
    // workers, whose pool keeps the upstream connection): the second goes
    // on the pooled upstream connection, which closes on it.
    let (e, a) = (env.clone(), auth.clone());
    let gets = blocking(move || curl(&e, &["-sf", "-H", &a, url, url])).await;
    assert_eq!(gets.stdout, "answer 0\nanswer 1\n", "{gets:?}");
    let lines = || log.lock().unwrap().clone();
    let get_line = "GET /items HTTP/1.1".to_owned();
    assert_eq!(
        lines(),
        [
            (0, get_line.clone()),
            (0, get_line.clone()),
            (1, get_line.clone())
        ]
    );
    airlock.wait_for_log("outcome=\"resent\"");

    // A POST without an Idempotency-Key is not sent twice: the 502 names the
    // close. A GET first, so the POST goes on a pooled connection.
    let (e, a) = (env.clone(), auth.clone());
    let posted = blocking(move || {
        curl(
            &e,
            &[
                "-si", "-H", &a, url, "--next", "-si", "-X", "POST", "-H", &a, url,
            ],
        )
    })
    .await;
    let (_, post_answer) = posted
        .stdout
        .split_once("answer ")
        .expect("the GET was answered");
    assert!(post_answer.contains(" 502"), "{}", posted.stdout);
    assert!(
        post_answer.contains("x-airlock-error: upstream_error"),
        "{}",
        posted.stdout
    );
    assert!(
        post_answer.contains("closing.test closed the connection before answering"),
        "{}",
        posted.stdout
    );
    let seen = lines();
    let posts = seen.iter().filter(|(_, l)| l.starts_with("POST ")).count();
    assert_eq!(posts, 1, "the POST went once: {seen:?}");
    assert!(seen.last().unwrap().1.starts_with("POST "), "{seen:?}");
    let logs = airlock.wait_for_log("upstream_error");
    assert_not_leaked(&real, &[&gets.stdout, &posted.stdout, &logs]);
}
