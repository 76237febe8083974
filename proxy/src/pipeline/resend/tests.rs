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

#[tokio::test]
async fn the_second_send_carries_the_real_token_again_and_its_answer_is_the_sandbox_s() {
    let tokens = MockTokens::new();
    let p = tokens.secret("KEY", "api.example.test", "real-secret-123");
    let mut swapper = Swapper::new(
        tokens.clone(),
        Arc::new(Scanner::new(PREFIX)),
        SandboxId::default_sandbox(),
        "api.example.test",
    );
    let mut ok = Response::new(full(Bytes::from_static(b"fine")));
    *ok.status_mut() = StatusCode::OK;
    let attempt = Scripted::with_results(
        "authorization",
        format!("Bearer {p}"),
        vec![Err(closed(ClosedAfter::Sent)), Ok(ok)],
    );
    let mut plan = BodyPlan::Empty;
    let first = attempt.build(&mut swapper, &mut plan).await.unwrap();
    let err = attempt.send(first).await.unwrap_err();
    assert!(Resend::of(&Method::GET, &HeaderMap::new(), &plan).allows(&err));
    let response = again(&attempt, &mut swapper, &mut plan, err).await.unwrap();
    assert!(plan.replayable(), "built again from a kept body only");
    assert_eq!(response.status(), 200);
    assert_eq!(
        attempt.sent(),
        ["Bearer real-secret-123", "Bearer real-secret-123"]
    );
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
        let log: Log = Arc::default();
        let seen = log.clone();
        let addr = serve_raw_upstream(
            ca,
            Arc::new(move |number, mut tls| {
                let seen = seen.clone();
                Box::pin(async move {
                    for nth in 0.. {
                        let Some((line, auth)) = read_request(&mut tls).await else {
                            return;
                        };
                        seen.lock().unwrap().push((number, line, auth));
                        if nth >= answered {
                            return; // closed, unanswered
                        }
                        let body = format!("answer {number}.{nth}");
                        let head =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                        if tls
                            .write_all(format!("{head}{body}").as_bytes())
                            .await
                            .is_err()
                        {
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
}
