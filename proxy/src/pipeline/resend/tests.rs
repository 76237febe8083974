use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use airlock_vault_client::SandboxId;
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};

use super::*;
use crate::body::{empty, full};
use crate::swap::Scanner;
use crate::testing::scripted::Scripted;
use crate::testing::{MockTokens, PREFIX};

fn closed(after: ClosedAfter) -> ProxyError {
    ProxyError::UpstreamClosed {
        host: "api.example.test".into(),
        after,
        detail: "connection closed before message completed".into(),
    }
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                http::HeaderName::from_static(k),
                HeaderValue::from_static(v),
            )
        })
        .collect()
}

#[test]
fn idempotent_methods_and_idempotency_keys_are_sent_again_after_any_close() {
    let plan = BodyPlan::whole("{}");
    for method in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        assert_eq!(
            Resend::of(&method, &HeaderMap::new(), &plan),
            Resend::AfterClose,
            "{method}"
        );
    }
    for key in ["idempotency-key", "x-idempotency-key"] {
        let h = headers(&[(key, "8e03978e-40d5-43e8-bc93-6894a57f9324")]);
        assert_eq!(Resend::of(&Method::POST, &h, &plan), Resend::AfterClose);
    }
    let resend = Resend::AfterClose;
    assert!(resend.allows(&closed(ClosedAfter::Sent)));
    assert!(resend.allows(&closed(ClosedAfter::Unprocessed)));
}

#[test]
fn other_methods_are_sent_again_only_when_the_upstream_did_not_process_them() {
    let plan = BodyPlan::whole("{}");
    for method in [
        Method::POST,
        Method::PATCH,
        Method::from_bytes(b"PURGE").unwrap(),
    ] {
        let resend = Resend::of(&method, &HeaderMap::new(), &plan);
        assert_eq!(resend, Resend::IfUnprocessed, "{method}");
        assert!(!resend.allows(&closed(ClosedAfter::Sent)), "{method}");
        assert!(resend.allows(&closed(ClosedAfter::Unprocessed)), "{method}");
    }
}

#[test]
fn a_streamed_body_is_never_sent_again() {
    let plan = BodyPlan::Stream {
        read: VecDeque::new(),
        rest: empty(),
        mode: crate::body_swap::StreamMode::Swap,
    };
    let resend = Resend::of(&Method::GET, &HeaderMap::new(), &plan);
    assert_eq!(resend, Resend::Never);
    assert!(!resend.allows(&closed(ClosedAfter::Unprocessed)));
}

#[test]
fn other_failures_are_never_sent_again() {
    for err in [
        ProxyError::Upstream("api.example.test: invalid HTTP status-code parsed".into()),
        ProxyError::Timeout("api.example.test did not answer within 30s".into()),
        ProxyError::Connect("api.example.test: connection refused".into()),
        ProxyError::UpstreamTls {
            host: "api.example.test".into(),
            reason: "invalid peer certificate".into(),
        },
    ] {
        assert!(!Resend::AfterClose.allows(&err), "{err}");
    }
}

/// A swapper over one static secret, `real-secret-123`; and its placeholder.
fn swapper_with_a_secret() -> (Swapper, String) {
    let tokens = MockTokens::new();
    let p = tokens.secret("KEY", "api.example.test", "real-secret-123");
    let swapper = Swapper::new(
        tokens,
        Arc::new(Scanner::new(PREFIX)),
        SandboxId::default_sandbox(),
        "api.example.test",
    );
    (swapper, p)
}

#[tokio::test]
async fn the_second_send_carries_the_real_token_again_and_its_answer_is_the_sandbox_s() {
    let (mut swapper, p) = swapper_with_a_secret();
    let mut ok = Response::new(full(Bytes::from_static(b"fine")));
    *ok.status_mut() = StatusCode::OK;
    let attempt = Scripted::with_results(
        "authorization",
        format!("Bearer {p}"),
        vec![Err(closed(ClosedAfter::Sent)), Ok(ok)],
    );
    let mut plan = BodyPlan::Empty;
    let first = attempt.build(&mut swapper, &mut plan).await.unwrap();
    let sent = send(&attempt, &mut swapper, &mut plan, first)
        .await
        .unwrap();
    assert!(sent.resent);
    assert!(plan.replayable(), "built again from a kept body only");
    assert_eq!(sent.response.status(), 200);
    assert_eq!(
        attempt.sent(),
        ["Bearer real-secret-123", "Bearer real-secret-123"]
    );
}

#[tokio::test]
async fn a_second_close_is_the_error_and_nothing_is_sent_a_third_time() {
    let (mut swapper, p) = swapper_with_a_secret();
    let attempt = Scripted::with_results(
        "authorization",
        format!("Bearer {p}"),
        vec![
            Err(closed(ClosedAfter::Sent)),
            Err(closed(ClosedAfter::Unprocessed)),
        ],
    );
    let mut plan = BodyPlan::Empty;
    let first = attempt.build(&mut swapper, &mut plan).await.unwrap();
    let Err(err) = send(&attempt, &mut swapper, &mut plan, first).await else {
        panic!("a second close is an error");
    };
    assert!(matches!(err, ProxyError::UpstreamClosed { .. }), "{err}");
    assert!(!err.to_string().contains("real-secret"), "{err}");
    assert_eq!(attempt.sent().len(), 2);
}

mod through_the_proxy {
    //! The proxy in process, in front of an upstream that closes a kept-alive
    //! connection when the next request arrives on it, unanswered.
    use std::time::Duration;

    use airlock_certs::CertificateAuthority;
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::testing::in_process::{serve_raw_upstream, InProcess, HOST};

    /// One request as the upstream read it: (connection, method and path,
    /// `Authorization`).
    type Log = Arc<Mutex<Vec<(usize, String, String)>>>;

    /// Each connection answers its first `answered` requests (200, keep-alive)
    /// and closes on the next, unanswered.
    async fn closing_upstream(
        ca: &CertificateAuthority,
        answered: usize,
    ) -> (std::net::SocketAddr, Log) {
        scripted_upstream(ca, move |connection, nth| {
            (nth < answered).then(|| {
                let body = format!("answer {connection}.{nth}");
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
            })
        })
        .await
    }

    /// Each connection's `nth` request gets `answer(connection, nth)`, the
    /// whole answer as written; `None` closes the connection, unanswered.
    async fn scripted_upstream(
        ca: &CertificateAuthority,
        answer: impl Fn(usize, usize) -> Option<String> + Send + Sync + 'static,
    ) -> (std::net::SocketAddr, Log) {
        let log: Log = Arc::default();
        let seen = log.clone();
        let answer = Arc::new(answer);
        let addr = serve_raw_upstream(
            ca,
            Arc::new(move |number, mut tls| {
                let seen = seen.clone();
                let answer = answer.clone();
                Box::pin(async move {
                    for nth in 0.. {
                        let Some((line, auth)) = read_request(&mut tls).await else {
                            return;
                        };
                        seen.lock().unwrap().push((number, line, auth));
                        let Some(written) = answer(number, nth) else {
                            return; // closed, unanswered
                        };
                        if tls.write_all(written.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                })
            }),
        )
        .await;
        (addr, log)
    }

    /// Reads one request (head, and a body of its `content-length`):
    /// its request line and `Authorization`.
    async fn read_request(
        tls: &mut tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    ) -> Option<(String, String)> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&got[..end]).into_owned();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| {
                    l.split_once(':')
                        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                })
                .map(|(_, v)| v.trim().to_owned())
        };
        let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
        while got.len() < end + length {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let line = head.lines().next().unwrap_or_default();
        let line = line.rsplit_once(' ').map_or(line, |(l, _)| l).to_owned();
        Some((line, header("authorization").unwrap_or_default()))
    }

    async fn proxy_before(answered: usize) -> (InProcess, Log, String) {
        let tokens = MockTokens::new();
        let p = tokens.secret("KEY", HOST, "real-secret-123");
        let ca = CertificateAuthority::generate("test upstream CA").unwrap();
        let (addr, log) = closing_upstream(&ca, answered).await;
        let proxy = InProcess::start_at(tokens, &ca, addr, |_| {}).await;
        (proxy, log, p)
    }

    fn to_upstream(
        method: &str,
        placeholder: &str,
        extra: Option<(&str, &str)>,
    ) -> Request<Full<Bytes>> {
        let mut request = Request::builder()
            .method(method)
            .uri("/items/1")
            .header(http::header::HOST, HOST)
            .header(http::header::AUTHORIZATION, format!("Bearer {placeholder}"));
        if let Some((k, v)) = extra {
            request = request.header(k, v);
        }
        let body = if method == "GET" {
            Bytes::new()
        } else {
            Bytes::from_static(b"{\"n\":1}")
        };
        request.body(Full::new(body)).unwrap()
    }

    const SENT: &str = "Bearer real-secret-123";

    #[tokio::test]
    async fn a_get_on_a_pooled_connection_the_upstream_closed_is_sent_again_and_answered() {
        let (proxy, log, p) = proxy_before(1).await;
        let (status, _, body) = proxy.send(to_upstream("GET", &p, None)).await;
        assert_eq!((status, &body[..]), (200, &b"answer 0.0"[..]));
        // The pooled connection takes the next request and closes on it.
        let (status, _, body) = proxy.send(to_upstream("GET", &p, None)).await;
        assert_eq!((status, &body[..]), (200, &b"answer 1.0"[..]));
        let get = || "GET /items/1".to_owned();
        assert_eq!(
            *log.lock().unwrap(),
            [
                (0, get(), SENT.into()),
                (0, get(), SENT.into()),
                (1, get(), SENT.into())
            ]
        );
        assert_eq!(proxy.outcomes(2).await, ["ok", "resent"]);
    }

    #[tokio::test]
    async fn a_post_is_not_sent_twice_unless_it_has_an_idempotency_key() {
        let (proxy, log, p) = proxy_before(1).await;
        assert_eq!(proxy.send(to_upstream("POST", &p, None)).await.0, 200);
        let (status, headers, body) = proxy.send(to_upstream("POST", &p, None)).await;
        assert_eq!(status, 502);
        assert_eq!(headers["x-airlock-error"], "upstream_error");
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("api.example.test closed the connection before answering"),
            "{text}"
        );
        assert!(!text.contains("real-secret"), "{text}");
        assert_eq!(log.lock().unwrap().len(), 2, "the POST went once");
        // With a key the client says a repeat is harmless.
        let key = Some(("idempotency-key", "5b8e0f4e-2a6f-4f0e-9a53-0f6d3a4f8a11"));
        assert_eq!(proxy.send(to_upstream("POST", &p, None)).await.0, 200);
        let (status, _, _) = proxy.send(to_upstream("POST", &p, key)).await;
        assert_eq!(status, 200);
        let log = log.lock().unwrap().clone();
        assert_eq!(log.len(), 5);
        assert!(log
            .iter()
            .all(|(_, line, auth)| line == "POST /items/1" && auth == SENT));
        assert_eq!(
            proxy.outcomes(4).await,
            ["ok", "upstream_error", "ok", "resent"]
        );
    }

    #[tokio::test]
    async fn a_request_is_sent_again_once_only() {
        // Every connection closes on its first request.
        let (proxy, log, p) = proxy_before(0).await;
        let (status, headers, _) = proxy.send(to_upstream("GET", &p, None)).await;
        assert_eq!(status, 502);
        assert_eq!(headers["x-airlock-error"], "upstream_error");
        // Bounded: the log cannot grow after the answer.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let connections: Vec<usize> = log.lock().unwrap().iter().map(|(n, _, _)| *n).collect();
        assert_eq!(connections, [0, 1]);
        assert_eq!(proxy.outcomes(1).await, ["upstream_error"]);
    }

    #[tokio::test]
    async fn a_body_too_large_to_keep_is_not_sent_again() {
        let tokens = MockTokens::new();
        let p = tokens.secret("KEY", HOST, "real-secret-123");
        let ca = CertificateAuthority::generate("test upstream CA").unwrap();
        let (addr, log) = closing_upstream(&ca, 1).await;
        let proxy = InProcess::start_at(tokens, &ca, addr, |s| s.replay_buffer_bytes = 4).await;
        assert_eq!(proxy.send(to_upstream("PUT", &p, None)).await.0, 200);
        let (status, headers, _) = proxy.send(to_upstream("PUT", &p, None)).await;
        assert_eq!(status, 502);
        assert_eq!(headers["x-airlock-error"], "upstream_error");
        assert_eq!(log.lock().unwrap().len(), 2, "the streamed PUT went once");
    }

    /// An upstream whose first connection answers its first request with
    /// `first` and closes on the second; later connections answer 200.
    async fn answers_then_closes(
        ca: &CertificateAuthority,
        first: &'static str,
    ) -> (std::net::SocketAddr, Log) {
        scripted_upstream(ca, move |connection, nth| match (connection, nth) {
            (0, 0) => Some(first.to_owned()),
            (0, _) => None,
            _ => Some("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_owned()),
        })
        .await
    }

    /// The upstream saw the GET with `first`, then with `then` on the
    /// pooled connection (which closed on it), then with `then` on a new one.
    fn sent_again_on_a_new_connection(log: &Log, first: &str, then: &str) {
        let get = || "GET /items/1".to_owned();
        assert_eq!(
            *log.lock().unwrap(),
            [
                (0, get(), format!("Bearer {first}")),
                (0, get(), format!("Bearer {then}")),
                (1, get(), format!("Bearer {then}")),
            ]
        );
    }

    #[tokio::test]
    async fn a_replay_after_a_refresh_on_a_connection_the_upstream_closed_is_sent_again() {
        let tokens = MockTokens::new();
        let p = tokens.oauth("github", HOST, "old-token");
        tokens.on_refresh(&p, Ok("new-token"));
        let ca = CertificateAuthority::generate("test upstream CA").unwrap();
        let expired = "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n";
        let (addr, log) = answers_then_closes(&ca, expired).await;
        let proxy = InProcess::start_at(tokens.clone(), &ca, addr, |_| {}).await;
        let (status, _, body) = proxy.send(to_upstream("GET", &p, None)).await;
        assert_eq!((status, &body[..]), (200, &b"ok"[..]));
        sent_again_on_a_new_connection(&log, "old-token", "new-token");
        assert_eq!(tokens.refreshes().len(), 1, "refreshed once");
        assert_eq!(proxy.outcomes(1).await, ["refreshed_replayed"]);
    }

    #[tokio::test]
    async fn a_resend_after_a_step_up_on_a_connection_the_upstream_closed_is_sent_again() {
        let tokens = MockTokens::new();
        let p = tokens.oauth("github", HOST, "narrow-token");
        let ca = CertificateAuthority::generate("test upstream CA").unwrap();
        let lacking = "HTTP/1.1 403 Forbidden\r\nwww-authenticate: Bearer error=\"insufficient_scope\", scope=\"repo\"\r\ncontent-length: 0\r\n\r\n";
        let (addr, log) = answers_then_closes(&ca, lacking).await;
        let proxy = InProcess::start_at(tokens.clone(), &ca, addr, |s| {
            s.consent_wait = Duration::from_secs(10);
        })
        .await;
        // The human grants the scope while the request is held.
        let granted = {
            let (tokens, p) = (tokens.clone(), p.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                tokens.set_token(&p, "wide-token");
            })
        };
        let (status, headers, body) = proxy.send(to_upstream("GET", &p, None)).await;
        granted.await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"ok"[..]));
        assert!(headers.contains_key("x-airlock-held-ms"), "{headers:?}");
        sent_again_on_a_new_connection(&log, "narrow-token", "wide-token");
        assert_eq!(tokens.step_ups().len(), 1, "{:?}", tokens.step_ups());
        assert_eq!(proxy.outcomes(1).await, ["ok"]);
    }
}
