//! Connects of tenants with and without their own apps, callback origins
//! and return addresses, finished through `complete_connect`, against a
//! loopback token endpoint that records which client and redirect URI each
//! exchange sent. Every test runs on SQLite and, when it answers, PostgreSQL.

use std::sync::{Arc, Mutex};

use airlock_vault_client::SecretString;
use base64::Engine;

use crate::flows::{CompleteRequest, FlowOutcome};
use crate::store::now;
use crate::{Scope, TenantSettings, Vault, VaultError, VaultSettings};

const ACCESS: &str = "tok_WL_access_0123456789";
const REFRESH: &str = "tok_WL_refresh_0123456789";
const DEFAULT_SECRET: &str = "cs_WL_default_secret_0123";
const ACME_SECRET: &str = "cs_WL_acme_secret_456789";
const CUSTOMER_CALLBACK: &str = "https://connect.customer.example/oauth/callback";

/// One code exchange as the token endpoint saw it.
#[derive(Debug, Clone)]
struct Exchange {
    client_id: String,
    redirect_uri: String,
}

#[derive(Default)]
struct Endpoint {
    seen: Mutex<Vec<Exchange>>,
}

async fn token_endpoint(e: Arc<Endpoint>) -> u16 {
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(
            move |headers: axum::http::HeaderMap,
                  axum::Form(form): axum::Form<std::collections::HashMap<String, String>>| {
                let e = e.clone();
                async move {
                    let basic = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Basic "))
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                        .and_then(|b| String::from_utf8(b).ok())
                        .unwrap_or_default();
                    let client_id = basic.split(':').next().unwrap_or_default().to_owned();
                    e.seen.lock().unwrap().push(Exchange {
                        client_id,
                        redirect_uri: form.get("redirect_uri").cloned().unwrap_or_default(),
                    });
                    crate::testing::code_exchange_answer(
                        form.get("code").map(String::as_str) == Some("bad-code"),
                        ACCESS,
                        REFRESH,
                    )
                }
            },
        ),
    );
    crate::testing::serve_on_loopback(app).await
}

struct World {
    vault: Arc<Vault>,
    endpoint: Arc<Endpoint>,
    url: String,
}

/// A vault on each backend with the default tenant's app (`cid-default`)
/// and tenant `acme`'s own (`cid-acme`).
async fn worlds(what: &str) -> (Vec<World>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut urls = vec![format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("wl.db").display()
    )];
    if let Some(pg) = crate::store::tests::postgres_for(what).await {
        urls.push(pg);
    }
    let mut out = Vec::new();
    for url in urls {
        let endpoint = Arc::new(Endpoint::default());
        let port = token_endpoint(endpoint.clone()).await;
        let vault = crate::testing::acme_vault_at(&url, port, VaultSettings::default()).await;
        for (tenant, id, secret) in [
            ("default", "cid-default", DEFAULT_SECRET),
            ("acme", "cid-acme", ACME_SECRET),
        ] {
            vault
                .set_app(
                    tenant,
                    "acme",
                    "default",
                    id,
                    Some(SecretString::from(secret)),
                )
                .await
                .unwrap();
        }
        out.push(World {
            vault,
            endpoint,
            url,
        });
    }
    (out, dir)
}

fn query_of(url: &str, key: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn complete(state: &str, code: &str) -> CompleteRequest {
    CompleteRequest {
        state: Some(state.into()),
        code: Some(code.into()),
        ..CompleteRequest::default()
    }
}

fn assert_no_secret(text: &str) {
    for secret in [ACCESS, REFRESH, DEFAULT_SECRET, ACME_SECRET] {
        assert!(!text.contains(secret), "a secret in {text}");
    }
}

impl World {
    async fn start(&self, tenant: &str) -> Result<crate::ConnectStarted, VaultError> {
        self.vault
            .start_connect(tenant, &Scope::Tenant, "acme", None, "default")
            .await
    }

    fn exchanges(&self) -> Vec<Exchange> {
        self.endpoint.seen.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn a_tenant_connects_with_its_own_app_and_callback_origin() {
    let (worlds, _dir) = worlds("white-label own app").await;
    for w in worlds {
        let url = &w.url;
        let view = w
            .vault
            .set_tenant(
                "acme",
                TenantSettings {
                    redirect_uri: Some(CUSTOMER_CALLBACK.into()),
                    ..TenantSettings::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(view.effective_redirect_uri, CUSTOMER_CALLBACK);
        let started = w.start("acme").await.unwrap();
        assert_eq!(started.redirect_uri, CUSTOMER_CALLBACK, "{url}");
        let auth = &started.authorization_url;
        assert_eq!(
            query_of(auth, "client_id").as_deref(),
            Some("cid-acme"),
            "{url}"
        );
        assert_eq!(
            query_of(auth, "redirect_uri").as_deref(),
            Some(CUSTOMER_CALLBACK)
        );
        let state = query_of(auth, "state").unwrap();

        let done = w
            .vault
            .complete_connect(&CompleteRequest {
                tenant: Some("acme".into()),
                ..complete(&state, "good-code")
            })
            .await
            .unwrap();
        assert_eq!(done.flow_id.as_deref(), Some(started.id.as_str()));
        assert_eq!(done.connection.tenant, "acme");
        assert_no_secret(&serde_json::to_string(&done).unwrap());
        let seen = w.exchanges();
        assert_eq!(seen.len(), 1, "{url}");
        assert_eq!(
            seen[0].client_id, "cid-acme",
            "{url}: the tenant's own client"
        );
        assert_eq!(
            seen[0].redirect_uri, CUSTOMER_CALLBACK,
            "{url}: the same redirect URI"
        );
        let row = w
            .vault
            .store
            .connection(&done.connection.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.app_tenant.as_deref(), Some("acme"), "{url}");
        let flow = w.vault.connect_flow(&started.id).await.unwrap();
        assert_eq!(flow.outcome, FlowOutcome::Connected);

        // The default tenant keeps the vault's own callback and app.
        let plain = w.start("default").await.unwrap();
        assert_eq!(plain.redirect_uri, w.vault.redirect_uri(), "{url}");
        assert_eq!(
            query_of(&plain.authorization_url, "client_id").as_deref(),
            Some("cid-default")
        );
    }
}

#[tokio::test]
async fn a_tenant_without_an_app_is_refused_unless_it_uses_the_default_apps() {
    let (worlds, _dir) = worlds("white-label fallback").await;
    for w in worlds {
        let url = &w.url;
        let err = w.start("beta").await.unwrap_err();
        assert!(matches!(err, VaultError::Invalid(_)), "{url}: {err}");
        let text = err.to_string();
        assert!(
            text.contains("tenant beta has no OAuth app") && text.contains("use_default_apps"),
            "{text}"
        );
        assert_no_secret(&text);
        assert!(w.exchanges().is_empty());

        w.vault
            .set_tenant(
                "beta",
                TenantSettings {
                    use_default_apps: true,
                    ..TenantSettings::default()
                },
            )
            .await
            .unwrap();
        let started = w.start("beta").await.unwrap();
        assert_eq!(
            query_of(&started.authorization_url, "client_id").as_deref(),
            Some("cid-default"),
            "{url}"
        );
        let state = query_of(&started.authorization_url, "state").unwrap();
        let done = w
            .vault
            .complete_connect(&complete(&state, "c"))
            .await
            .unwrap();
        assert_eq!(w.exchanges()[0].client_id, "cid-default");

        // Beta registers its own app later: its grant still belongs to the
        // default tenant's client, so that app cannot go while it is used.
        w.vault
            .set_app("beta", "acme", "default", "cid-beta", None)
            .await
            .unwrap();
        let creds = w
            .vault
            .connection_creds(
                &w.vault
                    .store
                    .connection(&done.connection.id)
                    .await
                    .unwrap()
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            creds.client_id, "cid-default",
            "{url}: refresh uses the issuing app"
        );
        let err = w
            .vault
            .delete_app("default", "acme", "default")
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(&done.connection.id),
            "{url}: {err}"
        );
        w.vault.delete_app("beta", "acme", "default").await.unwrap();

        // Switched off again: a new connect of beta is refused, the
        // connection made keeps its app.
        w.vault
            .set_tenant("beta", TenantSettings::default())
            .await
            .unwrap();
        assert!(w.start("beta").await.is_err(), "{url}");
    }
}

#[tokio::test]
async fn complete_refuses_bad_input_and_keeps_the_state_when_that_is_safe() {
    let (worlds, _dir) = worlds("white-label complete").await;
    for w in worlds {
        let url = &w.url;
        let started = w.start("acme").await.unwrap();
        let state = query_of(&started.authorization_url, "state").unwrap();
        let refusals = [
            (CompleteRequest::default(), "state is required"),
            (
                CompleteRequest {
                    state: Some(state.clone()),
                    ..CompleteRequest::default()
                },
                "give code, or error",
            ),
            (
                CompleteRequest {
                    error: Some("access_denied".into()),
                    ..complete(&state, "c")
                },
                "not both",
            ),
            (
                CompleteRequest {
                    error_description: Some("x".into()),
                    ..complete(&state, "c")
                },
                "error_description comes with error",
            ),
            (
                CompleteRequest {
                    tenant: Some("default".into()),
                    ..complete(&state, "c")
                },
                "not of a connect flow of tenant default",
            ),
        ];
        for (request, says) in refusals {
            let err = w.vault.complete_connect(&request).await.unwrap_err();
            assert!(matches!(err, VaultError::Invalid(_)), "{url}: {err}");
            assert!(
                err.to_string().contains(says),
                "{url}: {err} should say {says}"
            );
        }
        assert!(w.exchanges().is_empty(), "{url}: nothing exchanged");
        assert!(w.vault.connections().await.unwrap().is_empty());

        // The provider refuses the code: the flow failed, nothing stored,
        // and the state is used up (a code is good once anyway).
        let err = w
            .vault
            .complete_connect(&complete(&state, "bad-code"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, VaultError::CodeRefused { .. }),
            "{url}: {err}"
        );
        assert_no_secret(&err.to_string());
        assert!(w.vault.connections().await.unwrap().is_empty(), "{url}");
        let flow = w.vault.connect_flow(&started.id).await.unwrap();
        assert_eq!(flow.outcome, FlowOutcome::Failed, "{url}");
        let err = w
            .vault
            .complete_connect(&complete(&state, "good-code"))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown or already used state"),
            "{err}"
        );

        // A used state stays used; an unknown one is said as such.
        let started = w.start("acme").await.unwrap();
        let state = query_of(&started.authorization_url, "state").unwrap();
        w.vault
            .complete_connect(&complete(&state, "c"))
            .await
            .unwrap();
        let again = w
            .vault
            .complete_connect(&complete(&state, "c"))
            .await
            .unwrap_err();
        assert!(again.to_string().contains("already used"), "{url}: {again}");
        let forged = w
            .vault
            .complete_connect(&complete("forged-state", "c"))
            .await
            .unwrap_err();
        assert!(forged.to_string().contains("unknown"), "{forged}");

        // The provider's refusal passes through: the flow is denied.
        let started = w.start("acme").await.unwrap();
        let state = query_of(&started.authorization_url, "state").unwrap();
        let denied = w
            .vault
            .complete_connect(&CompleteRequest {
                state: Some(state),
                error: Some("access_denied".into()),
                error_description: Some("the user said no".into()),
                ..CompleteRequest::default()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(denied, VaultError::ConsentDenied { .. }),
            "{denied}"
        );
        let flow = w.vault.connect_flow(&started.id).await.unwrap();
        assert_eq!(flow.outcome, FlowOutcome::Denied);
        assert_eq!(
            flow.provider_error_description.as_deref(),
            Some("the user said no")
        );

        // An expired state: refused, nothing exchanged.
        let before = w.exchanges().len();
        let started = w.start("acme").await.unwrap();
        let state = query_of(&started.authorization_url, "state").unwrap();
        let hash = crate::sha256_hex(&state);
        for sql in [
            "UPDATE connect_flows SET expires_at = $1 WHERE state_hash = $2",
            "UPDATE oauth_states SET expires_at = $1 WHERE state_hash = $2",
        ] {
            sqlx::query(sql)
                .bind(now() - 10)
                .bind(&hash)
                .execute(w.vault.store.pool_for_tests())
                .await
                .unwrap();
        }
        let err = w
            .vault
            .complete_connect(&complete(&state, "c"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("expired"), "{url}: {err}");
        assert_eq!(w.exchanges().len(), before, "{url}");
    }
}

#[tokio::test]
async fn return_to_must_be_on_the_tenant_s_return_url_origin() {
    let (worlds, _dir) = worlds("white-label return_to").await;
    for w in worlds {
        let url = &w.url;
        let request = crate::ConnectRequest {
            tenant: "acme".into(),
            scope: Scope::Tenant,
            provider: "acme".into(),
            scopes: None,
            environment: "default".into(),
            name: None,
        };
        let err = w
            .vault
            .start_connect_returning(&request, Some("https://app.acme.example/done"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("return_url"), "{url}: {err}");
        w.vault
            .set_tenant(
                "acme",
                TenantSettings {
                    return_url: Some("https://app.acme.example/integrations".into()),
                    ..TenantSettings::default()
                },
            )
            .await
            .unwrap();
        for evil in [
            "https://evil.example/steal",
            "https://app.acme.example.evil.example/x",
            "http://app.acme.example/done",
            "https://app.acme.example:8443/done",
            "javascript:alert(1)",
            "//evil.example/x",
        ] {
            let err = w
                .vault
                .start_connect_returning(&request, Some(evil))
                .await
                .unwrap_err();
            assert!(
                matches!(err, VaultError::Invalid(_)),
                "{url}: {evil}: {err}"
            );
        }
        let started = w
            .vault
            .start_connect_returning(&request, Some("https://app.acme.example/done?tab=2"))
            .await
            .unwrap();
        let state = query_of(&started.authorization_url, "state").unwrap();
        let context = w.vault.callback_context(&state).await;
        assert_eq!(context.tenant.as_deref(), Some("acme"));
        assert_eq!(context.flow_id.as_deref(), Some(started.id.as_str()));
        assert_eq!(
            context.return_to.as_deref(),
            Some("https://app.acme.example/done?tab=2"),
            "{url}"
        );
    }
}

/// A sandbox's connect link follows its tenant: the tenant's app and
/// redirect URI, its branding on the link's page; a tenant that may not use
/// the default tenant's app gets no link at all.
#[tokio::test]
async fn a_connect_link_uses_its_sandbox_s_tenant_s_app_and_origin() {
    use airlock_vault_client::{SandboxId, TokenSource};
    let (worlds, _dir) = worlds("white-label connect links").await;
    for w in worlds {
        let url = &w.url;
        w.vault
            .set_tenant(
                "acme",
                TenantSettings {
                    redirect_uri: Some(CUSTOMER_CALLBACK.into()),
                    display_name: Some("Acme".into()),
                    ..TenantSettings::default()
                },
            )
            .await
            .unwrap();
        let mut links = Vec::new();
        for tenant in ["acme", "beta"] {
            let created = w
                .vault
                .create_sandbox(crate::NewSandbox {
                    tenant: tenant.into(),
                    workspace: None,
                    user: None,
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
            let status = w.vault.status(&SandboxId::new(created.id)).await.unwrap();
            links.push(status.credentials[0].connect_url.clone());
        }
        assert!(links[1].is_none(), "{url}: beta has no app it may use");
        let link = links[0].clone().expect("acme's sandbox gets a link");
        let id = link.rsplit('/').next().unwrap();
        assert_eq!(
            w.vault.connect_link_tenant(id).await.as_deref(),
            Some("acme")
        );
        assert_eq!(
            w.vault.branding("acme").await.display_name.as_deref(),
            Some("Acme")
        );
        let started = w.vault.open_connect_link(id).await.unwrap();
        assert_eq!(
            query_of(&started.authorization_url, "client_id").as_deref(),
            Some("cid-acme"),
            "{url}"
        );
        assert_eq!(started.redirect_uri, CUSTOMER_CALLBACK, "{url}");

        // Forgotten settings: back to the vault's redirect URI and no branding.
        assert_eq!(w.vault.tenants().await.unwrap().len(), 1, "{url}");
        w.vault.delete_tenant("acme").await.unwrap();
        let view = w.vault.tenant("acme").await.unwrap();
        assert_eq!(view.settings, TenantSettings::default());
        assert_eq!(view.effective_redirect_uri, w.vault.redirect_uri());
        let err = w.vault.delete_tenant("acme").await.unwrap_err();
        assert!(matches!(err, VaultError::NotFound(_)), "{url}: {err}");
        let err = w.vault.tenant("no spaces").await.unwrap_err();
        assert!(matches!(err, VaultError::Invalid(_)), "{err}");
    }
}
