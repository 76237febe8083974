//! A fake token endpoint on loopback (plain HTTP, which the catalog allows
//! there) and vaults, connections and sandboxes using it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicUsize};
use std::sync::Mutex;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Form, Json};

use std::sync::Arc;

use airlock_vault_client::{SandboxId, TokenSource};
use secrecy::{ExposeSecret, SecretString};

use super::*;
use crate::crypto::{Kek, Keyring};
use crate::store::{now, GrantKind, ScopeKind, TokenUpdate};
use crate::store::{NewConnection, Store};
use crate::Vault;
use crate::{Catalog, NewSandbox, VaultSettings};

pub(super) const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Mode {
    Ok,
    Down,
    StringExpiry,
    Garbage,
}

pub(super) struct Fake {
    pub(super) mode: Mutex<Mode>,
    pub(super) requests: AtomicUsize,
    pub(super) granted: AtomicUsize,
    pub(super) probes: AtomicUsize,
    pub(super) probe_status: AtomicU16,
    pub(super) delay_ms: AtomicU64,
    pub(super) lifetime: AtomicU64,
    pub(super) current_refresh: Mutex<String>,
}

impl Fake {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            mode: Mutex::new(Mode::Ok),
            requests: AtomicUsize::new(0),
            granted: AtomicUsize::new(0),
            probes: AtomicUsize::new(0),
            probe_status: AtomicU16::new(200),
            delay_ms: AtomicU64::new(0),
            lifetime: AtomicU64::new(3600),
            current_refresh: Mutex::new("rt0".into()),
        })
    }
    pub(super) fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
    pub(super) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
    pub(super) fn granted(&self) -> usize {
        self.granted.load(Ordering::SeqCst)
    }
}

pub(super) async fn token(
    State(fake): State<Arc<Fake>>,
    Form(form): Form<HashMap<String, String>>,
) -> axum::response::Response {
    fake.requests.fetch_add(1, Ordering::SeqCst);
    let delay = fake.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mode = *fake.mode.lock().unwrap();
    if mode == Mode::Down {
        let body = serde_json::json!({"error": "temporarily_unavailable"});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
        let mut current = fake.current_refresh.lock().unwrap();
        if form.get("refresh_token") != Some(&*current) {
            let body = serde_json::json!({"error": "invalid_grant"});
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
        let n = fake.granted.fetch_add(1, Ordering::SeqCst) + 1;
        *current = format!("rt{n}");
    } else {
        fake.granted.fetch_add(1, Ordering::SeqCst);
    }
    let n = fake.granted();
    let lifetime = fake.lifetime.load(Ordering::SeqCst);
    let body = match mode {
        Mode::StringExpiry => serde_json::json!({
            "access_token": format!("at{n}"), "token_type": "BEARER",
            "expires_in": lifetime.to_string(), "refresh_token": format!("rt{n}"),
        }),
        Mode::Garbage => {
            serde_json::json!({ "access_token": 42, "refresh_token": format!("rt{n}") })
        }
        _ => serde_json::json!({
            "access_token": format!("at{n}"), "token_type": "bearer",
            "expires_in": lifetime, "refresh_token": format!("rt{n}"),
        }),
    };
    Json(body).into_response()
}

pub(super) async fn me(State(fake): State<Arc<Fake>>) -> StatusCode {
    fake.probes.fetch_add(1, Ordering::SeqCst);
    StatusCode::from_u16(fake.probe_status.load(Ordering::SeqCst)).unwrap()
}

pub(super) async fn serve(fake: Arc<Fake>) -> u16 {
    let app = axum::Router::new()
        .route("/token", axum::routing::post(token))
        .route("/me", axum::routing::get(me))
        .with_state(fake);
    crate::testing::serve_on_loopback(app).await
}

pub(super) fn provider_toml(name: &str, env: &str, port: u16, probe: bool) -> String {
    let probe = if probe {
        format!("probe_url = \"http://127.0.0.1:{port}/me\"\n")
    } else {
        String::new()
    };
    format!(
        "[[provider]]\nname = \"{name}\"\nauthorize_url = \"http://127.0.0.1:{port}/authorize\"\n\
         token_url = \"http://127.0.0.1:{port}/token\"\nhosts = [\"127.0.0.1\"]\nenv = \"{env}\"\n{probe}"
    )
}

pub(super) struct World {
    pub(super) vault: Arc<Vault>,
    pub(super) url: String,
    pub(super) _dir: tempfile::TempDir,
}

pub(super) async fn open(url: &str, catalog: &str, settings: VaultSettings) -> Arc<Vault> {
    let store = Store::open(url).await.unwrap();
    let keyring = Keyring::new(Kek::from_text(KEY).unwrap(), vec![]);
    let catalog = Catalog::from_toml(catalog).unwrap();
    // Plain HTTP on loopback, but reqwest wants a TLS config all the same.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    Vault::open(store, keyring, catalog, http, settings)
        .await
        .unwrap()
}

pub(super) async fn world(catalog: &str, settings: VaultSettings) -> World {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("v.db").display());
    let vault = open(&url, catalog, settings).await;
    World {
        vault,
        url,
        _dir: dir,
    }
}

/// A tenant connection of `provider` holding `at0` (and `rt0` if `refresh`).
pub(super) async fn connection(
    vault: &Vault,
    provider: &str,
    refresh: bool,
    expires_in: i64,
) -> String {
    vault
        .set_app(
            "default",
            provider,
            "default",
            "cid",
            Some(SecretString::from("csecret")),
        )
        .await
        .unwrap();
    let id = vault
        .store
        .upsert_connection(&NewConnection {
            tenant: "default",
            scope_kind: ScopeKind::Tenant,
            scope_name: "",
            provider,
            grant_kind: GrantKind::AuthorizationCode,
            scopes: "",
            environment: "default",
            client_id: None,
            token_url: None,
            name: "",
            env_name: None,
            hosts: None,
            app_tenant: None,
        })
        .await
        .unwrap();
    let update = TokenUpdate {
        access_token: vault.keyring.seal(
            "connections.access_token",
            &id,
            &SecretString::from("at0"),
        ),
        refresh_token: refresh.then(|| {
            vault
                .keyring
                .seal("connections.refresh_token", &id, &SecretString::from("rt0"))
        }),
        expires_at: Some(now() + expires_in),
    };
    vault.store.store_tokens(&id, &update).await.unwrap();
    id
}

/// A sandbox bound to `provider`: (sandbox, placeholder).
pub(super) async fn sandbox(vault: &Vault, provider: &str) -> (SandboxId, String) {
    let created = vault
        .create_sandbox(NewSandbox {
            tenant: "default".into(),
            workspace: None,
            user: None,
            providers: vec![provider.into()],
            secrets: vec![],
            id: None,
            rules: Default::default(),
            consent_wait_secs: None,
            environment: "default".into(),
            connections: Vec::new(),
        })
        .await
        .unwrap();
    let env = created
        .env
        .iter()
        .find(|(k, _)| k.ends_with("_TOKEN"))
        .unwrap();
    (SandboxId::new(created.id), env.1.clone())
}

/// A fake provider `acme` (no probe) and a vault using it.
pub(super) async fn acme_world(settings: VaultSettings) -> (Arc<Fake>, World) {
    let fake = Fake::new();
    let port = serve(fake.clone()).await;
    let w = world(&provider_toml("acme", "ACME_TOKEN", port, false), settings).await;
    (fake, w)
}

pub(super) fn settings() -> VaultSettings {
    VaultSettings {
        refresh_backoff: Duration::from_secs(1),
        ..VaultSettings::default()
    }
}

pub(super) async fn token_of(vault: &Vault, sandbox: &SandboxId, placeholder: &str) -> String {
    vault
        .resolve(sandbox, placeholder)
        .await
        .map(|r| r.token.expose_secret().to_owned())
        .unwrap_or_else(|e| format!("error: {e}"))
}
