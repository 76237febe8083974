//! `airlock.internal` in process: over CONNECT and plain `http://`, its
//! routes and refusals, `require_auth`, and the firewall on its answers.

use std::sync::Arc;

use airlock_vault_client::{
    CredentialKind, CredentialState, CredentialStatus, SandboxId, TokenError,
};
use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use super::{route, Route};
use crate::body::{empty, full};
use crate::egress::{OverrideTarget, ResolveOverrides};
use crate::testing::in_process::{handler, InProcess};
use crate::testing::MockTokens;

const REAL: &str = "tok_REAL_status_0123456789abcdef";

fn not_connected(variable: &str, provider: &str, link: &str) -> CredentialStatus {
    CredentialStatus {
        variable: variable.into(),
        kind: CredentialKind::Oauth,
        provider: Some(provider.into()),
        connection: None,
        hosts: vec![format!("api.{provider}.test")],
        state: CredentialState::NotConnected,
        scopes: vec![],
        expires_at: None,
        connect_url: Some(link.into()),
    }
}

/// A proxy whose default sandbox has a static secret and a provider that is
/// not connected; its upstream answers 418 so a forwarded request shows.
async fn proxy(configure: impl FnOnce(&mut crate::ProxySettings)) -> (InProcess, Arc<MockTokens>) {
    let tokens = MockTokens::new();
    tokens.secret("LLM_KEY", "api.llm.test", REAL);
    tokens.status_entry(
        &SandboxId::default_sandbox(),
        not_connected("GITHUB_TOKEN", "github", "http://vault.test/connect/one"),
    );
    let proxy = InProcess::start_with(
        tokens.clone(),
        handler(|_| {
            let mut r = http::Response::new(empty());
            *r.status_mut() = http::StatusCode::IM_A_TEAPOT;
            r
        }),
        configure,
    )
    .await;
    (proxy, tokens)
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(path)
        .header(header::HOST, crate::INTERNAL_HOST)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn https(proxy: &InProcess, request: Request<Full<Bytes>>) -> (u16, http::HeaderMap, Value) {
    let mut sender = proxy.connect_to(crate::INTERNAL_HOST).await;
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&body).unwrap())
}

fn body_of(raw: &str) -> Value {
    let (_, body) = raw.split_once("\r\n\r\n").expect("a whole answer");
    serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()))
}

#[test]
fn routes() {
    assert_eq!(route("/v1/status"), Some(Route::Status));
    assert_eq!(
        route("/v1/status/GITHUB_TOKEN"),
        Some(Route::One("GITHUB_TOKEN"))
    );
    for path in ["/", "/v1/status/", "/v1/status/a/b", "/v1", "/v2/status"] {
        assert_eq!(route(path), None, "{path}");
    }
}

#[tokio::test]
async fn status_over_connect_lists_the_sandbox_credentials_and_dials_nothing() {
    let (proxy, _) = proxy(|_| {}).await;
    let (status, headers, doc) = https(&proxy, get("/v1/status")).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["sandbox"], "default");
    let creds = doc["credentials"].as_array().unwrap();
    assert_eq!(creds.len(), 2);
    assert_eq!(creds[0]["variable"], "GITHUB_TOKEN");
    assert_eq!(creds[0]["state"], "not_connected");
    assert_eq!(creds[0]["connect_url"], "http://vault.test/connect/one");
    assert_eq!(creds[1]["variable"], "LLM_KEY");
    assert_eq!(creds[1]["kind"], "static");
    assert_eq!(creds[1]["state"], "connected");
    assert_eq!(creds[1]["provider"], Value::Null);
    assert!(!doc.to_string().contains(REAL));
    assert!(proxy.seen().is_empty(), "nothing was forwarded");
    assert_eq!(proxy.outcomes(1).await, vec!["internal_api"]);
}

#[tokio::test]
async fn one_credential_by_variable_or_provider_and_clear_json_errors() {
    let (proxy, _) = proxy(|_| {}).await;
    let (status, _, doc) = https(&proxy, get("/v1/status/GITHUB_TOKEN")).await;
    assert_eq!(status, 200);
    assert_eq!(doc["credential"]["state"], "not_connected");
    assert_eq!(doc["version"], 1);
    let (status, _, by_provider) = https(&proxy, get("/v1/status/github")).await;
    assert_eq!(status, 200);
    assert_eq!(by_provider["credential"], doc["credential"]);

    let (status, _, doc) = https(&proxy, get("/v1/status/NOPE")).await;
    assert_eq!(status, 404);
    assert_eq!(doc["error"], "not_found");
    let (status, _, doc) = https(&proxy, get("/admin")).await;
    assert_eq!(status, 404);
    assert!(doc["message"].as_str().unwrap().contains("/v1/status"));
    let mut post = get("/v1/status");
    *post.method_mut() = Method::POST;
    let (status, headers, doc) = https(&proxy, post).await;
    assert_eq!(status, 405);
    assert_eq!(headers[header::ALLOW], "GET");
    assert_eq!(doc["error"], "method_not_allowed");
    assert!(proxy.seen().is_empty());
}

#[tokio::test]
async fn plain_http_absolute_form_is_answered_on_port_80_only() {
    let (proxy, _) = proxy(|_| {}).await;
    let raw = proxy
        .raw("GET http://airlock.internal/v1/status HTTP/1.1\r\nHost: airlock.internal\r\nConnection: close\r\n\r\n")
        .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert_eq!(body_of(&raw)["credentials"][1]["variable"], "LLM_KEY");

    let raw = proxy
        .raw("GET http://airlock.internal:8080/v1/status HTTP/1.1\r\nHost: airlock.internal:8080\r\nConnection: close\r\n\r\n")
        .await;
    assert!(raw.starts_with("HTTP/1.1 403"), "{raw}");
    assert!(raw.contains("x-airlock-error: port_not_allowed"), "{raw}");
    assert!(proxy.seen().is_empty());
}

#[tokio::test]
async fn connect_to_another_port_is_refused_and_allowed_ports_do_not_apply() {
    // 443 is not among allowed_ports, and still served for airlock.internal.
    let (proxy, _) = proxy(|s| s.allowed_ports = vec![8443]).await;
    let (head, _) = proxy.tunnel_to("airlock.internal:8443", "").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(head.contains("port_not_allowed"), "{head}");
    let (status, _, _) = https(&proxy, get("/v1/status")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_resolve_override_naming_it_is_never_dialled() {
    let (proxy, _) = proxy(|s| {
        s.resolve = ResolveOverrides::new([(
            crate::INTERNAL_HOST,
            OverrideTarget {
                ip: "127.0.0.1".parse().unwrap(),
                port: Some(9),
            },
        )])
        .unwrap();
    })
    .await;
    let (status, _, doc) = https(&proxy, get("/v1/status")).await;
    assert_eq!(status, 200, "{doc}");
    let raw = proxy
        .raw("GET http://airlock.internal/v1/status HTTP/1.1\r\nHost: airlock.internal\r\nConnection: close\r\n\r\n")
        .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
}

#[tokio::test]
async fn shared_mode_needs_a_credential_and_shows_only_the_callers_sandbox() {
    let (proxy, tokens) = proxy(|s| s.require_auth = true).await;
    tokens.status_entry(
        &SandboxId::new("sb-b"),
        not_connected("ACME_TOKEN", "acme", "http://vault.test/connect/b-only"),
    );
    let plain = |auth: &str| {
        format!("GET http://airlock.internal/v1/status HTTP/1.1\r\nHost: airlock.internal\r\n{auth}Connection: close\r\n\r\n")
    };
    let raw = proxy.raw(&plain("")).await;
    assert!(raw.starts_with("HTTP/1.1 407"), "{raw}");
    let (head, _) = proxy.tunnel_to("airlock.internal:443", "").await;
    assert!(head.starts_with("HTTP/1.1 407"), "{head}");

    // sb-a:proxy-secret is accepted by the mock; sb-a has nothing.
    let auth = "Proxy-Authorization: Basic c2ItYTpwcm94eS1zZWNyZXQ=\r\n";
    let raw = proxy.raw(&plain(auth)).await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let doc = body_of(&raw);
    assert_eq!(doc["sandbox"], "sb-a");
    assert_eq!(doc["credentials"], serde_json::json!([]));
    assert!(!raw.contains("b-only") && !raw.contains("LLM_KEY"), "{raw}");
}

#[tokio::test]
async fn a_token_that_reached_the_document_leaves_as_its_placeholder() {
    let tokens = MockTokens::new();
    let placeholder = tokens.secret("LLM_KEY", "api.llm.test", REAL);
    // A source bug: a token in a field. The firewall still stands.
    tokens.status_entry(
        &SandboxId::default_sandbox(),
        not_connected(
            "X_TOKEN",
            "x",
            &format!("http://vault.test/connect?t={REAL}"),
        ),
    );
    let proxy =
        InProcess::start(tokens, handler(|_| http::Response::new(full(Bytes::new())))).await;
    let (status, _, doc) = https(&proxy, get("/v1/status/X_TOKEN")).await;
    assert_eq!(status, 200);
    let text = doc.to_string();
    assert!(!text.contains(REAL), "{text}");
    assert!(text.contains(&placeholder), "{text}");
}

#[tokio::test]
async fn a_source_that_cannot_answer_gives_a_503_document() {
    let (proxy, tokens) = proxy(|_| {}).await;
    tokens.fail_status(TokenError::Unavailable("vault down".into()));
    let (status, _, doc) = https(&proxy, get("/v1/status")).await;
    assert_eq!(status, 503);
    assert_eq!(doc["error"], "unavailable");
    assert!(doc["message"].as_str().unwrap().contains("vault down"));
    assert_eq!(proxy.outcomes(1).await, vec!["vault_unavailable"]);
}
