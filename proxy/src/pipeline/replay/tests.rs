use std::sync::Arc;

use airlock_vault_client::{ExpiredSignal, Injection, SandboxId, TokenError};
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::BodyExt;

use super::*;
use crate::body::full;
use crate::swap::Scanner;
use crate::testing::scripted::Scripted;
use crate::testing::{MockTokens, PREFIX};

fn answer(status: u16, body: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
}

fn swapper(tokens: &Arc<MockTokens>) -> Swapper {
    Swapper::new(
        tokens.clone(),
        Arc::new(Scanner::new(PREFIX)),
        SandboxId::default_sandbox(),
        "api.example.test",
    )
}

/// Sends once through `attempt` and runs the layer, as the pipeline does.
async fn run(
    tokens: &Arc<MockTokens>,
    attempt: &Scripted,
    plan: &mut BodyPlan,
) -> Result<Replayed, ProxyError> {
    let mut swapper = swapper(tokens);
    let first = attempt.build(&mut swapper, plan).await?;
    let first = attempt.send(first).await?;
    refresh_and_replay(
        attempt,
        tokens.as_ref(),
        &SandboxId::default_sandbox(),
        &mut swapper,
        plan,
        first,
    )
    .await
}

async fn text(response: Response<ProxyBody>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn an_expired_bearer_token_is_refreshed_and_the_request_replayed_once() {
    let tokens = MockTokens::new();
    let p = tokens.oauth("github", "api.example.test", "old-token");
    tokens.on_refresh(&p, Ok("new-token"));
    let attempt = Scripted::new(
        "authorization",
        format!("Bearer {p}"),
        vec![answer(401, "expired"), answer(200, "hello")],
    );
    let replayed = run(&tokens, &attempt, &mut BodyPlan::whole("body"))
        .await
        .unwrap();
    assert_eq!(replayed.outcome, Some(Outcome::RefreshedReplayed));
    assert_eq!(replayed.response.status(), 200);
    assert_eq!(attempt.sent(), ["Bearer old-token", "Bearer new-token"]);
    assert_eq!(tokens.refreshes(), [(p, "old-token".to_owned())]);
}

#[tokio::test]
async fn a_refresh_that_returns_the_same_token_is_not_replayed() {
    let tokens = MockTokens::new();
    let p = tokens.oauth("github", "api.example.test", "same-token");
    let attempt = Scripted::new(
        "authorization",
        format!("Bearer {p}"),
        vec![answer(401, "nope")],
    );
    let replayed = run(&tokens, &attempt, &mut BodyPlan::Empty).await.unwrap();
    assert_eq!(replayed.outcome, Some(Outcome::ExpiredTokenNotRefreshed));
    assert_eq!(replayed.response.status(), 401);
    assert_eq!(attempt.sent().len(), 1);
    assert_eq!(tokens.refreshes().len(), 1);
}

#[tokio::test]
async fn a_body_too_large_to_keep_is_refreshed_but_not_replayed() {
    let tokens = MockTokens::new();
    let p = tokens.oauth("github", "api.example.test", "old-token");
    tokens.on_refresh(&p, Ok("new-token"));
    let attempt = Scripted::new(
        "authorization",
        format!("Bearer {p}"),
        vec![answer(401, "expired")],
    );
    let mut plan = BodyPlan::Stream {
        read: Default::default(),
        rest: full(Bytes::from_static(b"streamed")),
        mode: crate::body_swap::StreamMode::Swap,
    };
    let replayed = run(&tokens, &attempt, &mut plan).await.unwrap();
    assert_eq!(replayed.outcome, Some(Outcome::RefreshedNotReplayed));
    assert_eq!(replayed.response.status(), 401);
    assert_eq!(attempt.sent().len(), 1);
}

#[tokio::test]
async fn a_token_outside_its_injection_slot_is_no_evidence_of_expiry() {
    let tokens = MockTokens::new();
    let p = tokens.oauth("github", "api.example.test", "old-token");
    tokens.on_refresh(&p, Ok("new-token"));
    let attempt = Scripted::new("x-forwarded-token", p.clone(), vec![answer(401, "who?")]);
    let replayed = run(&tokens, &attempt, &mut BodyPlan::Empty).await.unwrap();
    assert_eq!(replayed.outcome, None);
    assert_eq!(text(replayed.response).await, "who?");
    assert!(tokens.refreshes().is_empty());
}

#[tokio::test]
async fn static_secrets_and_other_bearer_errors_pass_through() {
    let tokens = MockTokens::new();
    let p = tokens.secret("KEY", "api.example.test", "static");
    let attempt = Scripted::new(
        "authorization",
        format!("Bearer {p}"),
        vec![answer(401, "")],
    );
    let replayed = run(&tokens, &attempt, &mut BodyPlan::Empty).await.unwrap();
    assert_eq!(replayed.outcome, None);

    let p = tokens.oauth("github", "api.example.test", "old-token");
    let mut scoped = answer(401, "");
    scoped.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"insufficient_scope\""),
    );
    let attempt = Scripted::new("authorization", format!("Bearer {p}"), vec![scoped]);
    let replayed = run(&tokens, &attempt, &mut BodyPlan::Empty).await.unwrap();
    assert_eq!(replayed.outcome, None);
    assert!(tokens.refreshes().is_empty());
}

#[tokio::test]
async fn a_body_marker_rule_reads_the_answer_and_keeps_it_whole() {
    let tokens = MockTokens::new();
    let p = tokens.add("slack", "api.example.test", "old-token", |b| {
        b.kind = BindingKind::OAuth {
            connection_id: "c".into(),
        };
        b.inject = Some(Injection::Bearer);
        b.expired_on = vec![ExpiredSignal {
            status: 403,
            body_contains: Some("token_expired".into()),
        }];
    });
    tokens.on_refresh(&p, Ok("new-token"));
    // A 403 without the marker: not expiry, and the body reaches the sandbox.
    let attempt = Scripted::new(
        "authorization",
        format!("Bearer {p}"),
        vec![answer(403, "{\"error\":\"forbidden\"}")],
    );
    let replayed = run(&tokens, &attempt, &mut BodyPlan::Empty).await.unwrap();
    assert_eq!(replayed.outcome, None);
    assert_eq!(text(replayed.response).await, "{\"error\":\"forbidden\"}");
    // With the marker: refreshed and replayed.
    let attempt = Scripted::new(
        "authorization",
        format!("Bearer {p}"),
        vec![
            answer(403, "{\"error\":\"token_expired\"}"),
            answer(200, "ok"),
        ],
    );
    let replayed = run(&tokens, &attempt, &mut BodyPlan::Empty).await.unwrap();
    assert_eq!(replayed.outcome, Some(Outcome::RefreshedReplayed));
    assert_eq!(text(replayed.response).await, "ok");
}

#[tokio::test]
async fn reconnect_needed_becomes_the_sandboxs_401() {
    let tokens = MockTokens::new();
    let p = tokens.oauth("github", "api.example.test", "old-token");
    tokens.on_refresh(
        &p,
        Err(TokenError::ReconnectNeeded {
            binding: "secret:github".into(),
        }),
    );
    let attempt = Scripted::new(
        "authorization",
        format!("Bearer {p}"),
        vec![answer(401, "")],
    );
    let err = run(&tokens, &attempt, &mut BodyPlan::Empty)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), "reconnect_needed");
    assert_eq!(err.status(), 401);
}

#[tokio::test]
async fn a_vault_that_cannot_refresh_leaves_the_answer_as_it_was() {
    let tokens = MockTokens::new();
    let p = tokens.oauth("github", "api.example.test", "old-token");
    tokens.on_refresh(&p, Err(TokenError::Unavailable("down".into())));
    let attempt = Scripted::new(
        "authorization",
        format!("Bearer {p}"),
        vec![answer(401, "expired")],
    );
    let replayed = run(&tokens, &attempt, &mut BodyPlan::Empty).await.unwrap();
    assert_eq!(replayed.outcome, Some(Outcome::ExpiredTokenNotRefreshed));
    assert_eq!(text(replayed.response).await, "expired");
}
