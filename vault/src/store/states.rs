//! OAuth `state` values of connects in progress, each usable once.

use sqlx::FromRow;

use super::{now, ScopeKind, Store};
use crate::crypto::Sealed;
use crate::error::VaultError;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StateRow {
    pub tenant: String,
    pub scope_kind: ScopeKind,
    pub scope_name: String,
    pub provider: String,
    pub scopes: String,
    pub environment: String,
    pub pkce_verifier: Sealed,
    pub expires_at: i64,
    /// The hash of the connect link this flow was started from, if any.
    pub connect_link: Option<String>,
    /// The name the connection gets (`""`: unnamed).
    pub name: String,
    /// The redirect URI the authorize URL named; the code exchange must send
    /// the same. `None` (flows from before white-label): the vault's own.
    pub redirect_uri: Option<String>,
    /// The tenant whose app the flow was started with; `None`: resolved
    /// again at the exchange (flows from before white-label).
    pub app_tenant: Option<String>,
    /// Where the browser goes after a successful callback (checked against
    /// the tenant's `return_url` when the flow started).
    pub return_to: Option<String>,
}

impl Store {
    // ---- OAuth states ------------------------------------------------------

    pub async fn insert_state(&self, state_hash: &str, s: &StateRow) -> Result<(), VaultError> {
        sqlx::query(
            "INSERT INTO oauth_states (state_hash, tenant, scope_kind, scope_name, provider, scopes, environment, \
             pkce_verifier, expires_at, used, connect_link, name, redirect_uri, app_tenant, return_to) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11, $12, $13, $14)",
        )
        .bind(state_hash)
        .bind(&s.tenant)
        .bind(s.scope_kind.as_str())
        .bind(&s.scope_name)
        .bind(&s.provider)
        .bind(&s.scopes)
        .bind(&s.environment)
        .bind(s.pkce_verifier.encode())
        .bind(s.expires_at)
        .bind(&s.connect_link)
        .bind(&s.name)
        .bind(&s.redirect_uri)
        .bind(&s.app_tenant)
        .bind(&s.return_to)
        .execute(&self.pool)
        .await?;
        // Expired states are of no use to anyone.
        sqlx::query("DELETE FROM oauth_states WHERE expires_at < $1")
            .bind(now() - 3600)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks the state used and returns it, once. `Ok(None)` for unknown or
    /// already used states.
    pub async fn take_state(&self, state_hash: &str) -> Result<Option<StateRow>, VaultError> {
        let row = sqlx::query(
            "UPDATE oauth_states SET used = 1 WHERE state_hash = $1 AND used = 0 \
             RETURNING tenant, scope_kind, scope_name, provider, scopes, environment, pkce_verifier, expires_at, \
             connect_link, name, redirect_uri, app_tenant, return_to",
        )
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| StateRow::from_row(&r)).transpose()?)
    }

    /// The unused state `state_hash`, without using it up: for checks that
    /// refuse a completion and leave the flow to its rightful owner.
    pub async fn unused_state(&self, state_hash: &str) -> Result<Option<StateRow>, VaultError> {
        let row = sqlx::query(
            "SELECT tenant, scope_kind, scope_name, provider, scopes, environment, pkce_verifier, expires_at, \
             connect_link, name, redirect_uri, app_tenant, return_to FROM oauth_states WHERE state_hash = $1 AND used = 0",
        )
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| StateRow::from_row(&r)).transpose()?)
    }
}
