//! The vault's HTTP API: the admin API (admin credential), the service API
//! the proxy uses (service credential), and the OAuth callback.
//! No admin response carries a token, a refresh token or a client secret.
//!
//! `mod.rs` only routes; each surface is a module below it, and they share
//! `state` (credentials) and `errors` (the error → status edge).

mod admin;
mod callback;
mod console;
mod errors;
mod html;
mod listener;
mod service;
mod state;
#[cfg(test)]
mod tests;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;

pub use console::{ConfigSecretView, ConfigSecrets, RecentRequests};
pub use errors::{status, ApiError, ApiJson};
pub use listener::Limits;
pub use state::ApiState;

/// Largest request body the API reads.
const BODY_LIMIT: usize = 64 * 1024;

pub fn router(state: ApiState) -> Router {
    Router::new()
        .merge(admin::routes(&state))
        .merge(service::routes(&state))
        .merge(console::routes())
        .route("/oauth/callback", get(callback::oauth_callback))
        .route("/connect/{id}", get(callback::connect_link))
        .route("/branding/{tenant}/style.css", get(callback::branding_css))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(admin::readyz))
        .fallback(|| async { ApiError(crate::VaultError::NotFound("route".into())) })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Serves the API on `listener`, within `limits`, until the listener fails.
pub async fn serve<A, T>(
    listener: tokio::net::TcpListener,
    state: ApiState,
    limits: Limits<A>,
) -> std::io::Result<()>
where
    A: Fn() -> Option<T> + Send + 'static,
    T: Send + 'static,
{
    listener::serve_limited(listener, router(state), limits).await
}
