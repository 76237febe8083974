//! What every handler of the vault's listener shares, and who may call what.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};

use super::console::{ConfigSecrets, Console, RecentRequests};
use super::errors::ApiError;
use crate::error::VaultError;
use crate::{sha256_hex, Vault};

#[derive(Clone)]
pub struct ApiState {
    pub vault: Arc<Vault>,
    admin_hash: Arc<str>,
    service_hash: Arc<str>,
    pub(crate) console: Arc<Console>,
}

impl ApiState {
    pub fn new(
        vault: Arc<Vault>,
        admin_token: &SecretString,
        service_token: &SecretString,
    ) -> Self {
        Self {
            vault,
            admin_hash: sha256_hex(admin_token.expose_secret()).into(),
            service_hash: sha256_hex(service_token.expose_secret()).into(),
            console: Arc::new(Console::default()),
        }
    }

    /// Lets the console show the in-process proxy's recent requests and the
    /// requests it holds for a human now.
    pub fn with_proxy_feeds(mut self, recent: RecentRequests, held: RecentRequests) -> Self {
        self.console = Arc::new(Console::new(Some(recent), Some(held)));
        self
    }

    /// Lets the console list the config file's `[[secret]]`s (never their values).
    pub fn with_config_secrets(mut self, feed: ConfigSecrets) -> Self {
        self.console = Arc::new(self.console.with_config_secrets(feed));
        self
    }

    pub(crate) fn is_admin(&self, token: &str) -> bool {
        matches_hash(Some(token), &self.admin_hash)
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn matches_hash(given: Option<&str>, expected: &str) -> bool {
    let Some(given) = given else { return false };
    let given = sha256_hex(given);
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

pub(super) async fn require_admin(
    State(state): State<ApiState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    if matches_hash(bearer(request.headers()), &state.admin_hash) {
        next.run(request).await
    } else {
        ApiError(VaultError::Unauthorized(
            "send the admin token as Authorization: Bearer …",
        ))
        .into_response()
    }
}

pub(super) async fn require_service(
    State(state): State<ApiState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    if matches_hash(bearer(request.headers()), &state.service_hash) {
        next.run(request).await
    } else {
        ApiError(VaultError::Unauthorized(
            "send the service token as Authorization: Bearer …",
        ))
        .into_response()
    }
}
