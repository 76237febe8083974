//! The status document and connect links against a vault on a temp SQLite
//! file, with a loopback token endpoint that grants any code.

use std::sync::Arc;
use std::time::Duration;

use airlock_vault_client::{CredentialKind, CredentialState, SandboxId, SecretString, TokenSource};

use crate::error::VaultError;
use crate::store::ConnectionStatus;
use crate::{NewSandbox, Vault, VaultSettings};

const ACCESS: &str = "tok_STATUS_access_0123456789";
const REFRESH: &str = "tok_STATUS_refresh_0123456789";
const CLIENT_SECRET: &str = "cs_STATUS_client_secret_0123";

/// A token endpoint granting every code the same tokens.
async fn token_endpoint() -> u16 {
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(|| async {
            axum::Json(serde_json::json!({
                "access_token": ACCESS, "token_type": "bearer",
                "expires_in": 3600, "refresh_token": REFRESH, "scope": "read write",
            }))
        }),
    );
    crate::testing::serve_on_loopback(app).await
}

struct World {
    vault: Arc<Vault>,
    _dir: tempfile::TempDir,
}

async fn world(settings: VaultSettings, with_app: bool) -> World {
    let port = token_endpoint().await;
    let (vault, dir) = crate::testing::acme_vault(port, settings).await;
    if with_app {
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
    }
    World { vault, _dir: dir }
}

fn settings() -> VaultSettings {
    VaultSettings {
        public_url: "http://vault.test:8090/".into(),
        ..VaultSettings::default()
    }
}

async fn sandbox(vault: &Vault, user: Option<&str>) -> SandboxId {
    let created = vault
        .create_sandbox(NewSandbox {
            tenant: "default".into(),
            workspace: Some("ws".into()),
            user: user.map(str::to_owned),
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
    SandboxId::new(created.id)
}

/// Opens `link` and completes the flow as the provider's redirect would.
async fn complete(vault: &Vault, link: &str) -> Result<crate::ConnectionView, VaultError> {
    let id = link.rsplit('/').next().unwrap();
    let started = vault.open_connect_link(id).await?;
    let state = url::Url::parse(&started.authorization_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("a state");
    vault
        .finish_connect(&state, Some("the-code"), None, None)
        .await
}

fn link_of(status: &airlock_vault_client::SandboxStatus) -> String {
    status.credentials[0]
        .connect_url
        .clone()
        .expect("a connect link")
}

#[tokio::test]
async fn not_connected_gets_one_link_that_connects_once_then_connected() {
    let w = world(settings(), true).await;
    let sb = sandbox(&w.vault, None).await;
    let status = w.vault.status(&sb).await.unwrap();
    assert_eq!(status.version, 1);
    assert_eq!(status.sandbox, sb.as_str());
    let c = &status.credentials[0];
    assert_eq!(
        (c.variable.as_str(), c.kind, c.state),
        (
            "ACME_TOKEN",
            CredentialKind::Oauth,
            CredentialState::NotConnected
        )
    );
    assert_eq!(c.provider.as_deref(), Some("acme"));
    assert_eq!(c.hosts, vec!["api.acme.test".to_owned()]);
    let link = link_of(&status);
    assert!(
        link.starts_with("http://vault.test:8090/connect/"),
        "{link}"
    );
    // Reading again does not make another link.
    assert_eq!(link_of(&w.vault.status(&sb).await.unwrap()), link);

    let conn = complete(&w.vault, &link).await.unwrap();
    assert_eq!(
        conn.scope, "workspace:ws",
        "the sandbox's most specific scope"
    );
    let status = w.vault.status(&sb).await.unwrap();
    let c = &status.credentials[0];
    assert_eq!(c.state, CredentialState::Connected);
    assert_eq!(c.scopes, vec!["read".to_owned(), "write".to_owned()]);
    assert!(c.expires_at.is_some() && c.connect_url.is_none());
    let json = serde_json::to_string(&status).unwrap();
    for secret in [ACCESS, REFRESH, CLIENT_SECRET] {
        assert!(!json.contains(secret), "{json}");
    }
    // The sandbox's next request finds the connection.
    let placeholder = w.vault.store.bindings_of(sb.as_str()).await.unwrap()[0]
        .placeholder
        .clone();
    let resolved = w.vault.resolve(&sb, &placeholder).await.unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&resolved.token),
        ACCESS
    );

    let err = complete(&w.vault, &link).await.unwrap_err();
    assert!(matches!(err, VaultError::Gone(_)), "{err}");
    assert!(err.to_string().contains("already used"), "{err}");
}

#[tokio::test]
async fn a_user_sandbox_connects_its_user_and_others_stay_not_connected() {
    let w = world(settings(), true).await;
    let alice = sandbox(&w.vault, Some("alice")).await;
    let bob = sandbox(&w.vault, Some("bob")).await;
    let alice_link = link_of(&w.vault.status(&alice).await.unwrap());
    let bob_link = link_of(&w.vault.status(&bob).await.unwrap());
    assert_ne!(alice_link, bob_link, "a link is its sandbox's");
    let conn = complete(&w.vault, &alice_link).await.unwrap();
    assert_eq!(conn.scope, "user:alice");
    assert_eq!(
        w.vault.status(&alice).await.unwrap().credentials[0].state,
        CredentialState::Connected
    );
    assert_eq!(
        w.vault.status(&bob).await.unwrap().credentials[0].state,
        CredentialState::NotConnected
    );
}

#[tokio::test]
async fn two_flows_from_one_link_connect_once() {
    let w = world(settings(), true).await;
    let sb = sandbox(&w.vault, None).await;
    let link = link_of(&w.vault.status(&sb).await.unwrap());
    let id = link.rsplit('/').next().unwrap();
    // Two tabs opened the link before either finished.
    let first = w.vault.open_connect_link(id).await.unwrap();
    let second = w.vault.open_connect_link(id).await.unwrap();
    let state = |s: &crate::ConnectStarted| {
        url::Url::parse(&s.authorization_url)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    w.vault
        .finish_connect(&state(&first), Some("c1"), None, None)
        .await
        .unwrap();
    let err = w
        .vault
        .finish_connect(&state(&second), Some("c2"), None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::Gone(_)), "{err}");
}

#[tokio::test]
async fn reconnect_needed_gets_a_link_and_no_app_gets_none() {
    let w = world(settings(), true).await;
    let sb = sandbox(&w.vault, None).await;
    let link = link_of(&w.vault.status(&sb).await.unwrap());
    let conn = complete(&w.vault, &link).await.unwrap();
    w.vault
        .store
        .set_status(
            &conn.id,
            ConnectionStatus::ReconnectNeeded,
            Some("invalid_grant"),
        )
        .await
        .unwrap();
    let status = w.vault.status(&sb).await.unwrap();
    let c = &status.credentials[0];
    assert_eq!(c.state, CredentialState::ReconnectNeeded);
    let again = c.connect_url.clone().expect("a new link");
    assert_ne!(again, link, "the used link is not handed out again");
    complete(&w.vault, &again).await.unwrap();
    assert_eq!(
        w.vault.status(&sb).await.unwrap().credentials[0].state,
        CredentialState::Connected
    );

    let bare = world(settings(), false).await;
    let sb = sandbox(&bare.vault, None).await;
    let c = &bare.vault.status(&sb).await.unwrap().credentials[0];
    assert_eq!(c.state, CredentialState::NotConnected);
    assert_eq!(c.connect_url, None, "nobody could connect without an app");
}

#[tokio::test]
async fn expired_and_unknown_links_are_refused_clearly() {
    let w = world(
        VaultSettings {
            connect_link_ttl: Duration::from_secs(1),
            ..settings()
        },
        true,
    )
    .await;
    let sb = sandbox(&w.vault, None).await;
    let link = link_of(&w.vault.status(&sb).await.unwrap());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = complete(&w.vault, &link).await.unwrap_err();
    assert!(matches!(err, VaultError::Gone(_)), "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
    let fresh = link_of(&w.vault.status(&sb).await.unwrap());
    assert_ne!(fresh, link, "an expired link is replaced");
    let err = w.vault.open_connect_link("nope").await.unwrap_err();
    assert!(matches!(err, VaultError::NotFound(_)), "{err}");
    assert_eq!(
        w.vault
            .status(&SandboxId::new("unknown"))
            .await
            .unwrap()
            .credentials,
        vec![]
    );
}

#[tokio::test]
async fn a_step_up_is_only_for_the_connection_the_sandbox_resolves() {
    let w = world(settings(), true).await;
    let alice = sandbox(&w.vault, Some("alice")).await;
    let bob = sandbox(&w.vault, Some("bob")).await;
    let conn = complete(&w.vault, &link_of(&w.vault.status(&alice).await.unwrap()))
        .await
        .unwrap();
    // Bob cannot note a step-up on Alice's connection, nor get a link for it.
    let refused = w
        .vault
        .step_up(&bob, &conn.id, &["admin".to_string()])
        .await
        .unwrap_err();
    assert!(
        matches!(refused, airlock_vault_client::TokenError::Revoked { .. }),
        "{refused:?}"
    );
    assert_eq!(
        w.vault.status(&alice).await.unwrap().credentials[0].state,
        CredentialState::Connected,
        "nothing was noted"
    );
    // Alice can: the scopes granted ("read write") plus the missing one.
    let step = w
        .vault
        .step_up(
            &alice,
            &conn.id,
            &["write".to_string(), "admin".to_string()],
        )
        .await
        .unwrap();
    assert_eq!(step.missing, ["admin"]);
    let link = step.connect_url.expect("a step-up link");
    let status = w.vault.status(&alice).await.unwrap();
    assert_eq!(
        status.credentials[0].state,
        CredentialState::InsufficientScope
    );
    assert_eq!(
        status.credentials[0].connect_url.as_deref(),
        Some(link.as_str())
    );
    let again = w
        .vault
        .step_up(&alice, &conn.id, &["admin".to_string()])
        .await
        .unwrap();
    assert_eq!(
        again.connect_url.as_deref(),
        Some(link.as_str()),
        "one link per step-up"
    );
    let id = link.rsplit('/').next().unwrap();
    let started = w.vault.open_connect_link(id).await.unwrap();
    let asked = url::Url::parse(&started.authorization_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.into_owned());
    assert_eq!(
        asked.as_deref(),
        Some("read write admin"),
        "granted plus missing"
    );
}
