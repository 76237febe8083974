//! Fixtures the vault's unit tests share.

use std::sync::Arc;

use crate::crypto::{Kek, Keyring};
use crate::store::Store;
use crate::{Catalog, Vault, VaultSettings};

/// A vault on a temp SQLite file whose catalog has one provider, `acme`,
/// authorizing and granting on the loopback `token_port` (scope `read`).
/// Keep the folder as long as the vault.
pub(crate) async fn acme_vault(
    token_port: u16,
    settings: VaultSettings,
) -> (Arc<Vault>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("v.db").display());
    (acme_vault_at(&url, token_port, settings).await, dir)
}

/// [`acme_vault`] on the database at `url` (SQLite or PostgreSQL).
pub(crate) async fn acme_vault_at(
    url: &str,
    token_port: u16,
    settings: VaultSettings,
) -> Arc<Vault> {
    acme_vault_keyed(
        url,
        token_port,
        settings,
        Keyring::new(Kek::generate(), vec![]),
    )
    .await
}

/// [`acme_vault_at`] sealing with `keyring` (a key rotation's).
pub(crate) async fn acme_vault_keyed(
    url: &str,
    token_port: u16,
    settings: VaultSettings,
    keyring: Keyring,
) -> Arc<Vault> {
    let catalog = format!(
        "[[provider]]\nname = \"acme\"\nauthorize_url = \"http://127.0.0.1:{token_port}/authorize\"\n\
         token_url = \"http://127.0.0.1:{token_port}/token\"\nhosts = [\"api.acme.test\"]\nenv = \"ACME_TOKEN\"\n\
         scopes = [\"read\"]\n"
    );
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
        .build()
        .unwrap();
    Vault::open(
        Store::open(url).await.unwrap(),
        keyring,
        Catalog::from_toml(&catalog).unwrap(),
        http,
        settings,
    )
    .await
    .unwrap()
}

/// Serves `app` on a loopback port of its own; the port.
pub(crate) async fn serve_on_loopback(app: axum::Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// A token endpoint's answer to a code exchange: the grant of `access` and
/// `refresh` (scope `read`, an hour), or `invalid_grant` when `refused`.
pub(crate) fn code_exchange_answer(
    refused: bool,
    access: &str,
    refresh: &str,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    if refused {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({
                "error": "invalid_grant", "error_description": "code expired"
            })),
        );
    }
    (
        axum::http::StatusCode::OK,
        axum::Json(serde_json::json!({
            "access_token": access, "token_type": "bearer",
            "expires_in": 3600, "refresh_token": refresh, "scope": "read",
        })),
    )
}
