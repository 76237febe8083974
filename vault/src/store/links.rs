//! One-time connect links: a sandbox's way to hand its user a connect flow.

use super::{now, Store};
use crate::crypto::Sealed;
use crate::error::VaultError;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LinkRow {
    pub id_hash: String,
    /// The link's id, sealed under `connect_links.link_id` with the hash as key.
    pub link_id: Sealed,
    pub sandbox_id: String,
    pub provider: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    /// The scopes the link asks for (space-separated); `None`: the provider's.
    pub scopes: Option<String>,
    /// The connection name of the pinned binding it was made for.
    pub connection_name: Option<String>,
}

impl Store {
    // ---- connect links -----------------------------------------------------

    pub async fn insert_link(&self, link: &LinkRow) -> Result<(), VaultError> {
        sqlx::query(
            "INSERT INTO connect_links (id_hash, link_id, sandbox_id, provider, created_at, expires_at, used_at, scopes, connection_name) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $8)",
        )
        .bind(&link.id_hash)
        .bind(link.link_id.encode())
        .bind(&link.sandbox_id)
        .bind(&link.provider)
        .bind(link.created_at)
        .bind(link.expires_at)
        .bind(&link.scopes)
        .bind(&link.connection_name)
        .execute(&self.pool)
        .await?;
        // Links a day past their expiry are of no use, even to say "expired".
        sqlx::query("DELETE FROM connect_links WHERE expires_at < $1")
            .bind(now() - 24 * 3600)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The unused link of `sandbox` for `provider` (and the pinned
    /// `connection_name`) that lives longest, if it lives past `until`.
    pub async fn live_link(
        &self,
        sandbox: &str,
        provider: &str,
        connection_name: Option<&str>,
        scopes: Option<&str>,
        until: i64,
    ) -> Result<Option<LinkRow>, VaultError> {
        Ok(sqlx::query_as::<_, LinkRow>(
            "SELECT * FROM connect_links WHERE sandbox_id = $1 AND provider = $2 AND used_at IS NULL \
             AND expires_at > $3 AND COALESCE(scopes, '') = $4 AND COALESCE(connection_name, '') = $5 \
             ORDER BY expires_at DESC LIMIT 1",
        )
        .bind(sandbox)
        .bind(provider)
        .bind(until)
        .bind(scopes.unwrap_or(""))
        .bind(connection_name.unwrap_or(""))
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn link(&self, id_hash: &str) -> Result<Option<LinkRow>, VaultError> {
        Ok(
            sqlx::query_as::<_, LinkRow>("SELECT * FROM connect_links WHERE id_hash = $1")
                .bind(id_hash)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Marks the link used, once: false when it already was (or is gone).
    pub async fn use_link(&self, id_hash: &str) -> Result<bool, VaultError> {
        let done = sqlx::query(
            "UPDATE connect_links SET used_at = $1 WHERE id_hash = $2 AND used_at IS NULL",
        )
        .bind(now())
        .bind(id_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a used link back (its flow failed after claiming it).
    pub async fn unuse_link(&self, id_hash: &str) -> Result<(), VaultError> {
        sqlx::query("UPDATE connect_links SET used_at = NULL WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
