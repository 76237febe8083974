//! Connect flows against a vault on a temp SQLite file, with a loopback
//! token endpoint that can be slowed down or made to refuse codes.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use airlock_vault_client::SecretString;

use super::*;
use crate::{NewSandbox, VaultSettings};

const ACCESS: &str = "tok_FLOWS_access_0123456789";
const REFRESH: &str = "tok_FLOWS_refresh_0123456789";
const CLIENT_SECRET: &str = "cs_FLOWS_client_secret_0123";

#[derive(Default)]
struct Endpoint {
    delay_ms: AtomicU64,
    refuse: AtomicBool,
    requests: AtomicUsize,
}

async fn token_endpoint(e: Arc<Endpoint>) -> u16 {
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move || {
            let e = e.clone();
            async move {
                e.requests.fetch_add(1, Ordering::SeqCst);
                let delay = e.delay_ms.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                crate::testing::code_exchange_answer(
                    e.refuse.load(Ordering::SeqCst),
                    ACCESS,
                    REFRESH,
                )
            }
        }),
    );
    crate::testing::serve_on_loopback(app).await
}

struct World {
    vault: Arc<Vault>,
    endpoint: Arc<Endpoint>,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let endpoint = Arc::new(Endpoint::default());
    let port = token_endpoint(endpoint.clone()).await;
    let (vault, dir) = crate::testing::acme_vault(port, VaultSettings::default()).await;
    vault
        .set_app(
            "default",
            "acme",
            "default",
            "cid",
            Some(SecretString::from(CLIENT_SECRET)),
        )
        .await
        .unwrap();
    World {
        vault,
        endpoint,
        _dir: dir,
    }
}

fn state_of(started: &crate::ConnectStarted) -> String {
    url::Url::parse(&started.authorization_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("a state")
}

impl World {
    async fn start(&self) -> crate::ConnectStarted {
        self.vault
            .start_connect("default", &Scope::Tenant, "acme", None, "default")
            .await
            .unwrap()
    }

    async fn connections(&self) -> usize {
        self.vault.connections().await.unwrap().len()
    }

    /// Moves the flow's and its state's expiry into the past.
    async fn age(&self, id: &str) {
        let flow = self.vault.store.flow(id).await.unwrap().unwrap();
        for sql in [
            "UPDATE connect_flows SET expires_at = $1 WHERE state_hash = $2",
            "UPDATE oauth_states SET expires_at = $1 WHERE state_hash = $2",
        ] {
            sqlx::query(sql)
                .bind(now() - 10)
                .bind(&flow.state_hash)
                .execute(self.vault.store.pool_for_tests())
                .await
                .unwrap();
        }
    }
}

fn assert_no_secret(text: &str) {
    for secret in [ACCESS, REFRESH, CLIENT_SECRET] {
        assert!(!text.contains(secret), "a secret in {text}");
    }
}

#[tokio::test]
async fn a_waiter_sees_connected_when_the_callback_completes() {
    let w = world().await;
    let started = w.start().await;
    let pending = w.vault.connect_flow(&started.id).await.unwrap();
    assert_eq!(pending.outcome, FlowOutcome::Pending);
    assert_eq!(pending.expires_at, started.expires_at);

    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let (vault, id) = (w.vault.clone(), started.id.clone());
            tokio::spawn(async move {
                let t = tokio::time::Instant::now();
                let view = vault
                    .wait_connect_flow(&id, Duration::from_secs(60))
                    .await
                    .unwrap();
                (view, t.elapsed())
            })
        })
        .collect();
    // Every waiter has subscribed before the callback.
    for _ in 0..200 {
        if w.vault
            .flows
            .wake
            .get(&started.id)
            .map(|n| Arc::strong_count(&n))
            == Some(6)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let conn = w
        .vault
        .complete_connect_flow(&state_of(&started), Some("code"), None, None)
        .await
        .unwrap();
    for waiter in waiters {
        let (view, took) = waiter.await.unwrap();
        assert_eq!(view.outcome, FlowOutcome::Connected);
        assert_eq!(view.connection_id.as_deref(), Some(conn.id.as_str()));
        assert!(took < Duration::from_secs(30), "waited {took:?}");
        assert_no_secret(&serde_json::to_string(&view).unwrap());
    }
    assert_eq!(w.vault.flows.len(), 0, "no waiter entry left behind");
    // An ended flow answers at once, whatever the wait.
    let view = w
        .vault
        .wait_connect_flow(&started.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(view.outcome, FlowOutcome::Connected);
    assert!(view.finished_at.is_some());
}

#[tokio::test]
async fn a_wake_reaches_a_subscribed_waiter_without_polling() {
    let waiters = FlowWaiters::default();
    let waiting = waiters.subscribe("flow_a");
    {
        let notified = waiting.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        waiters.wake("flow_b");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut notified)
                .await
                .is_err(),
            "another flow's wake does not reach it"
        );
        waiters.wake("flow_a");
        tokio::time::timeout(Duration::from_secs(10), notified)
            .await
            .expect("woken");
    }
    let second = waiters.subscribe("flow_a");
    drop(waiting);
    assert_eq!(waiters.len(), 1, "kept while someone still waits");
    drop(second);
    assert_eq!(waiters.len(), 0);
}

#[tokio::test]
async fn a_waiter_whose_client_goes_away_leaves_nothing_behind() {
    let w = world().await;
    let started = w.start().await;
    let (vault, id) = (w.vault.clone(), started.id.clone());
    let waiter =
        tokio::spawn(async move { vault.wait_connect_flow(&id, Duration::from_secs(60)).await });
    for _ in 0..200 {
        if w.vault.flows.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(w.vault.flows.len(), 1);
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    assert_eq!(w.vault.flows.len(), 0);
}

#[tokio::test]
async fn a_short_wait_returns_pending_and_an_unknown_flow_is_not_found() {
    let w = world().await;
    let started = w.start().await;
    let view = w
        .vault
        .wait_connect_flow(&started.id, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(view.outcome, FlowOutcome::Pending);
    let err = w
        .vault
        .wait_connect_flow("flow_nope", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::NotFound(_)), "{err}");
    assert_eq!(w.vault.flows.len(), 0);
}

#[tokio::test]
async fn a_denied_consent_records_the_provider_s_reason_and_connects_nothing() {
    let w = world().await;
    let started = w.start().await;
    let err = w
        .vault
        .complete_connect_flow(
            &state_of(&started),
            None,
            Some("access_denied"),
            Some("The user pressed\nCancel"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::ConsentDenied { .. }), "{err}");
    let view = w.vault.connect_flow(&started.id).await.unwrap();
    assert_eq!(view.outcome, FlowOutcome::Denied);
    assert_eq!(view.provider_error.as_deref(), Some("access_denied"));
    assert_eq!(
        view.provider_error_description.as_deref(),
        Some("The user pressedCancel"),
        "cleaned of control characters"
    );
    assert_eq!(w.connections().await, 0);
    assert_eq!(w.endpoint.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_refused_code_is_failed_with_a_reason_and_no_secret() {
    let w = world().await;
    w.endpoint.refuse.store(true, Ordering::SeqCst);
    let started = w.start().await;
    w.vault
        .complete_connect_flow(&state_of(&started), Some("code"), None, None)
        .await
        .unwrap_err();
    let view = w.vault.connect_flow(&started.id).await.unwrap();
    assert_eq!(view.outcome, FlowOutcome::Failed);
    let reason = view.reason.clone().unwrap();
    assert!(reason.contains("invalid_grant"), "{reason}");
    assert_no_secret(&serde_json::to_string(&view).unwrap());
    assert_eq!(w.connections().await, 0);
}

#[tokio::test]
async fn a_cancelled_flow_wakes_waiters_and_its_late_callback_connects_nothing() {
    let w = world().await;
    let started = w.start().await;
    let (vault, id) = (w.vault.clone(), started.id.clone());
    let waiter =
        tokio::spawn(async move { vault.wait_connect_flow(&id, Duration::from_secs(60)).await });
    let view = w.vault.cancel_connect_flow(&started.id).await.unwrap();
    assert_eq!(view.outcome, FlowOutcome::Cancelled);
    assert_eq!(
        waiter.await.unwrap().unwrap().outcome,
        FlowOutcome::Cancelled
    );

    let err = w
        .vault
        .complete_connect_flow(&state_of(&started), Some("code"), None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::Gone(_)), "{err}");
    assert!(err.to_string().contains("cancelled"), "{err}");
    assert_eq!(w.endpoint.requests.load(Ordering::SeqCst), 0, "no exchange");
    assert_eq!(w.connections().await, 0);
    // The state is used up: a replay says so and exchanges nothing either.
    let err = w
        .vault
        .complete_connect_flow(&state_of(&started), Some("code"), None, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");

    let err = w.vault.cancel_connect_flow(&started.id).await.unwrap_err();
    assert!(matches!(err, VaultError::Conflict(_)), "{err}");
    assert!(
        err.to_string().contains("already ended: cancelled"),
        "{err}"
    );
    let err = w.vault.cancel_connect_flow("flow_nope").await.unwrap_err();
    assert!(matches!(err, VaultError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn a_cancel_during_the_code_exchange_loses_to_the_callback() {
    let w = world().await;
    w.endpoint.delay_ms.store(400, Ordering::SeqCst);
    let started = w.start().await;
    let (vault, state) = (w.vault.clone(), state_of(&started));
    let callback = tokio::spawn(async move {
        vault
            .complete_connect_flow(&state, Some("code"), None, None)
            .await
    });
    for _ in 0..200 {
        if w.endpoint.requests.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = w.vault.cancel_connect_flow(&started.id).await.unwrap_err();
    assert!(matches!(err, VaultError::Conflict(_)), "{err}");
    assert!(err.to_string().contains("being completed"), "{err}");
    let conn = callback.await.unwrap().unwrap();
    let view = w.vault.connect_flow(&started.id).await.unwrap();
    assert_eq!(view.outcome, FlowOutcome::Connected);
    assert_eq!(view.connection_id, Some(conn.id));
    let err = w.vault.cancel_connect_flow(&started.id).await.unwrap_err();
    assert!(
        err.to_string().contains("already ended: connected"),
        "{err}"
    );
}

#[tokio::test]
async fn a_flow_past_its_state_s_expiry_is_expired_and_its_callback_refused() {
    let w = world().await;
    let started = w.start().await;
    w.age(&started.id).await;
    let view = w
        .vault
        .wait_connect_flow(&started.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(view.outcome, FlowOutcome::Expired);
    let err = w
        .vault
        .complete_connect_flow(&state_of(&started), Some("code"), None, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    assert_eq!(w.endpoint.requests.load(Ordering::SeqCst), 0);
    assert_eq!(
        w.vault.connect_flow(&started.id).await.unwrap().outcome,
        FlowOutcome::Expired
    );
    let err = w.vault.cancel_connect_flow(&started.id).await.unwrap_err();
    assert!(err.to_string().contains("already ended: expired"), "{err}");
}

#[tokio::test]
async fn a_flow_for_a_sandbox_connects_at_the_scope_it_resolves() {
    let w = world().await;
    let created = w
        .vault
        .create_sandbox(NewSandbox {
            tenant: "default".into(),
            workspace: Some("ws".into()),
            user: Some("alice".into()),
            providers: vec!["acme".into()],
            secrets: vec![],
            id: None,
            rules: Default::default(),
            consent_wait_secs: None,
            environment: "default".into(),
            connections: Vec::new(),
        })
        .await
        .unwrap();
    let started = w
        .vault
        .start_connect_flow(
            FlowTarget::Sandbox(created.id.clone()),
            "acme",
            None,
            None,
            None,
            None,
        )
        .await
        .unwrap();
    let view = w.vault.connect_flow(&started.id).await.unwrap();
    assert_eq!(view.scope, "user:alice");
    assert_eq!(view.sandbox.as_deref(), Some(created.id.as_str()));
    let conn = w
        .vault
        .complete_connect_flow(&state_of(&started), Some("code"), None, None)
        .await
        .unwrap();
    assert_eq!(conn.scope, "user:alice");
    let err = w
        .vault
        .start_connect_flow(
            FlowTarget::Sandbox("sbx_nope".into()),
            "acme",
            None,
            None,
            None,
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn ended_flows_are_kept_a_day_then_deleted() {
    let w = world().await;
    let old = w.start().await;
    w.vault.cancel_connect_flow(&old.id).await.unwrap();
    let kept = w.start().await;
    assert!(w.vault.store.flow(&old.id).await.unwrap().is_some());
    sqlx::query("UPDATE connect_flows SET finished_at = $1 WHERE id = $2")
        .bind(now() - crate::store::FLOW_KEEP_SECS - 10)
        .bind(&old.id)
        .execute(w.vault.store.pool_for_tests())
        .await
        .unwrap();
    // The next start cleans up.
    w.start().await;
    assert!(w.vault.store.flow(&old.id).await.unwrap().is_none());
    assert!(w.vault.store.flow(&kept.id).await.unwrap().is_some());
}
