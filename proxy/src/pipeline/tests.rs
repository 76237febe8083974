//! The pipeline end to end, in process: a sandbox-side client, the proxy's
//! listener and a loopback TLS upstream (see [`crate::testing::in_process`]).

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::body::{full, ProxyBody};
use crate::testing::in_process::{handler, request, InProcess, HOST};
use crate::testing::MockTokens;

fn answer(status: u16, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
}

fn bearer(req: &http::Request<hyper::body::Incoming>) -> String {
    req.headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn the_upstream_gets_the_token_and_the_sandbox_never_sees_it() {
    let tokens = MockTokens::new();
    let p = tokens.secret("KEY", HOST, "real-secret-123");
    // The upstream echoes what it got, in a header and the body.
    let proxy = InProcess::start(
        tokens.clone(),
        handler(|req| {
            let got = bearer(&req);
            let mut response = answer(200, format!("you sent {got}"));
            response
                .headers_mut()
                .insert("x-echo", got.parse().unwrap());
            response
        }),
    )
    .await;
    let (status, headers, body) = proxy
        .send(request(
            "/user?x=1",
            "authorization",
            &format!("Bearer {p}"),
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        proxy.seen()[0].headers["authorization"],
        "Bearer real-secret-123"
    );
    assert_eq!(body, format!("you sent Bearer {p}"));
    assert_eq!(headers["x-echo"], format!("Bearer {p}").as_str());
    assert_eq!(proxy.outcomes(1).await, ["ok"]);
    let recent = proxy.telemetry.recent.newest_first();
    assert_eq!(recent[0].swapped.ids().collect::<Vec<_>>(), ["secret:KEY"]);
    assert_eq!(recent[0].path, "/user", "the query is never recorded");
}

#[tokio::test]
async fn an_expired_token_is_refreshed_and_the_request_replayed_through_the_proxy() {
    let tokens = MockTokens::new();
    let p = tokens.oauth("github", HOST, "old-token");
    tokens.on_refresh(&p, Ok("new-token"));
    let proxy = InProcess::start(
        tokens.clone(),
        handler(|req| match bearer(&req).as_str() {
            "Bearer new-token" => answer(200, "fresh".into()),
            _ => answer(401, "expired".into()),
        }),
    )
    .await;
    let req = http::Request::builder()
        .method("POST")
        .uri("/repos")
        .header(http::header::HOST, HOST)
        .header("authorization", format!("Bearer {p}"))
        .body(Full::new(Bytes::from_static(b"{\"name\":\"x\"}")))
        .unwrap();
    let (status, _, body) = proxy.send(req).await;
    assert_eq!((status, &body[..]), (200, &b"fresh"[..]));
    let seen = proxy.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].headers["authorization"], "Bearer new-token");
    assert_eq!(
        (&seen[1].method, seen[1].path.as_str()),
        (&http::Method::POST, "/repos")
    );
    assert_eq!(tokens.refreshes(), [(p, "old-token".to_owned())]);
    assert_eq!(proxy.outcomes(1).await, ["refreshed_replayed"]);
    let metrics = proxy.telemetry.metrics.render();
    assert!(
        metrics.contains("airlock_token_refreshes_total{reason=\"refreshed_replayed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_401_to_a_token_outside_its_slot_is_passed_through_without_a_refresh() {
    let tokens = MockTokens::new();
    let p = tokens.oauth("github", HOST, "old-token");
    tokens.on_refresh(&p, Ok("new-token"));
    let proxy = InProcess::start(tokens.clone(), handler(|_| answer(401, "no".into()))).await;
    let (status, _, _) = proxy.send(request("/", "x-api-key", &p)).await;
    assert_eq!(status, 401);
    assert!(tokens.refreshes().is_empty());
    assert_eq!(proxy.seen().len(), 1);
    assert_eq!(proxy.outcomes(1).await, ["ok"]);
}

#[tokio::test]
async fn an_unknown_placeholder_is_refused_before_anything_is_sent() {
    let tokens = MockTokens::new();
    tokens.secret("KEY", HOST, "real");
    let proxy = InProcess::start(tokens.clone(), handler(|_| answer(200, String::new()))).await;
    let unknown = airlock_vault_client::generate_placeholder(crate::testing::PREFIX);
    let (status, headers, _) = proxy
        .send(request("/", "authorization", &format!("Bearer {unknown}")))
        .await;
    assert_eq!(status, 403);
    assert_eq!(headers["x-airlock-error"], "unknown_placeholder");
    assert!(proxy.seen().is_empty());
    assert_eq!(proxy.outcomes(1).await, ["unknown_placeholder"]);
}

#[tokio::test]
async fn a_websocket_server_frame_reaches_the_sandbox_scrubbed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tokens = MockTokens::new();
    let p = tokens.secret("KEY", HOST, "ws-secret-token");
    let proxy = InProcess::start(
        tokens.clone(),
        Arc::new(|mut req| {
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let mut io = hyper_util::rt::TokioIo::new(upgrade.await.unwrap());
                // One unmasked text frame echoing the token.
                let payload = b"hello ws-secret-token";
                let mut frame = vec![0x81, payload.len() as u8];
                frame.extend_from_slice(payload);
                io.write_all(&frame).await.unwrap();
                io.flush().await.unwrap();
            });
            Box::pin(async move {
                let mut response = answer(101, String::new());
                let h = response.headers_mut();
                h.insert("connection", "Upgrade".parse().unwrap());
                h.insert("upgrade", "websocket".parse().unwrap());
                h.insert("sec-websocket-accept", "x".parse().unwrap());
                response
            })
        }),
    )
    .await;
    let mut sender = proxy.connect().await;
    let req = http::Request::builder()
        .uri("/socket")
        .header(http::header::HOST, HOST)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-extensions", "permessage-deflate")
        .header("authorization", format!("Bearer {p}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 101);
    let seen = &proxy.seen()[0];
    assert_eq!(seen.headers["authorization"], "Bearer ws-secret-token");
    assert!(
        !seen.headers.contains_key("sec-websocket-extensions"),
        "no extension is offered upstream: frames stay readable"
    );
    let mut io = hyper_util::rt::TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    let mut head = [0u8; 2];
    io.read_exact(&mut head).await.unwrap();
    let mut payload = vec![0u8; usize::from(head[1] & 0x7f)];
    io.read_exact(&mut payload).await.unwrap();
    assert_eq!(head[0], 0x81);
    assert_eq!(payload, format!("hello {p}").as_bytes());
}

#[tokio::test]
async fn plain_http_where_tls_belongs_gets_a_readable_400() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tokens = MockTokens::new();
    tokens.secret("KEY", HOST, "real");
    let proxy = InProcess::start(tokens.clone(), handler(|_| answer(200, String::new()))).await;
    let mut tcp = proxy.tunnel().await;
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("x-airlock-error: bad_request\r\n"),
        "{answer}"
    );
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(answer.ends_with(
        "\r\n\r\nairlock: expected a TLS ClientHello for api.example.test after CONNECT; got something else (plain HTTP?)\n"
    ), "{answer}");
    assert_eq!(proxy.outcomes(1).await, ["bad_request"]);
}

#[tokio::test]
async fn an_upstream_that_fails_verification_fails_the_request() {
    let tokens = MockTokens::new();
    let p = tokens.secret("KEY", HOST, "real-secret");
    let proxy = InProcess::start_with(
        tokens.clone(),
        handler(|_| answer(200, String::new())),
        // The upstream's CA is not trusted.
        |settings| settings.upstream_ca.clear(),
    )
    .await;
    let (status, headers, _) = proxy
        .send(request("/", "authorization", &format!("Bearer {p}")))
        .await;
    assert_eq!(status, 502);
    assert_eq!(headers["x-airlock-error"], "upstream_tls");
    assert!(proxy.seen().is_empty());
    assert_eq!(proxy.outcomes(1).await, ["upstream_tls"]);
}

#[tokio::test]
async fn on_per_core_workers_every_connection_is_swapped_refreshed_and_screened() {
    let tokens = MockTokens::new();
    let p = tokens.oauth("github", HOST, "old-token");
    tokens.on_refresh(&p, Ok("new-token"));
    // Echoes the token it got; answers 401 to the old one.
    let proxy = InProcess::start_with(
        tokens.clone(),
        handler(|req| {
            let got = bearer(&req);
            if got == "Bearer old-token" {
                return answer(401, "expired".into());
            }
            answer(200, format!("you sent {got}"))
        }),
        |s| s.workers = 2,
    )
    .await;
    // Each send is a connection of its own: they take the workers in turn.
    for _ in 0..4 {
        let (status, _, body) = proxy
            .send(request("/user", "authorization", &format!("Bearer {p}")))
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            format!("you sent Bearer {p}"),
            "screened on the way back"
        );
    }
    assert_eq!(
        tokens.refreshes().len(),
        1,
        "one refresh, whichever worker saw the 401"
    );
    let seen: Vec<_> = proxy
        .seen()
        .iter()
        .map(|s| s.headers["authorization"].clone())
        .collect();
    assert_eq!(
        seen,
        [
            "Bearer old-token",
            "Bearer new-token",
            "Bearer new-token",
            "Bearer new-token",
            "Bearer new-token"
        ]
    );
}
