//! Refresh leases: who refreshes a connection, the answer kept before it is
//! read, and how a lease ends. Each step is one compare-and-set statement.

use super::connections::TokenUpdate;
use super::{now, ConnectionStatus, Store};
use crate::crypto::Sealed;
use crate::error::VaultError;
use sqlx::Row;

/// How a refresh lease ends; each is one compare-and-set statement that also
/// clears the lease and the kept answer.
pub enum LeaseEnd {
    /// A grant was read: new tokens, status `connected`.
    Tokens(TokenUpdate),
    /// The answer was unreadable but carried a rotated refresh token.
    RefreshToken(Sealed),
    /// A new status (`reconnect_needed`) and why.
    Status {
        status: ConnectionStatus,
        reason: Option<String>,
    },
    /// Nothing to write (a transient failure).
    Release,
}

impl Store {
    /// Takes the refresh lease on the connection if it is free (or its
    /// holder's ran out) and the row is still at `version`. One statement:
    /// no transaction outlives it.
    pub async fn take_lease(
        &self,
        id: &str,
        owner: &str,
        until: i64,
        version: i64,
    ) -> Result<bool, VaultError> {
        let done = sqlx::query(
            "UPDATE connections SET lease_owner = $1, lease_expires_at = $2 WHERE id = $3 AND token_version = $4 \
             AND (lease_owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at <= $5)",
        )
        .bind(owner)
        .bind(until)
        .bind(id)
        .bind(version)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves `owner`'s lease on to `until`; false when it is no longer theirs.
    pub async fn renew_lease(&self, id: &str, owner: &str, until: i64) -> Result<bool, VaultError> {
        let done = sqlx::query(
            "UPDATE connections SET lease_expires_at = $1 WHERE id = $2 AND lease_owner = $3",
        )
        .bind(until)
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Keeps a token endpoint's answer (sealed) before it is read, while
    /// `owner` still holds the lease.
    pub async fn keep_answer(
        &self,
        id: &str,
        owner: &str,
        answer: &Sealed,
    ) -> Result<bool, VaultError> {
        let done = sqlx::query(
            "UPDATE connections SET pending_grant = $1 WHERE id = $2 AND lease_owner = $3",
        )
        .bind(answer.encode())
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends `owner`'s lease with `end`, only if the lease is still theirs and
    /// the row is still at `version` (a reconnect or disconnect meanwhile
    /// wins). `Release` needs only the lease.
    pub async fn finish_lease(
        &self,
        id: &str,
        owner: &str,
        version: i64,
        end: &LeaseEnd,
    ) -> Result<bool, VaultError> {
        const CLEAR: &str = "pending_grant = NULL, lease_owner = NULL, lease_expires_at = NULL";
        let at = now();
        let done = match end {
            LeaseEnd::Tokens(update) => {
                let sql = format!(
                    // SET reads the row as it was: the replaced token becomes the previous one.
                    "UPDATE connections SET previous_access_token = access_token, previous_expires_at = expires_at, \
                     access_token = $1, refresh_token = COALESCE($2, refresh_token), \
                     expires_at = $3, obtained_at = $4, refreshed_at = $4, status = 'connected', last_error = NULL, \
                     updated_at = $4, token_version = token_version + 1, {CLEAR} \
                     WHERE id = $5 AND lease_owner = $6 AND token_version = $7"
                );
                sqlx::query(&sql)
                    .bind(update.access_token.encode())
                    .bind(update.refresh_token.as_ref().map(Sealed::encode))
                    .bind(update.expires_at)
                    .bind(at)
                    .bind(id)
                    .bind(owner)
                    .bind(version)
                    .execute(&self.pool)
                    .await?
            }
            LeaseEnd::RefreshToken(refresh) => {
                let sql = format!(
                    "UPDATE connections SET refresh_token = $1, updated_at = $2, token_version = token_version + 1, \
                     {CLEAR} WHERE id = $3 AND lease_owner = $4 AND token_version = $5"
                );
                sqlx::query(&sql)
                    .bind(refresh.encode())
                    .bind(at)
                    .bind(id)
                    .bind(owner)
                    .bind(version)
                    .execute(&self.pool)
                    .await?
            }
            LeaseEnd::Status { status, reason } => {
                let sql = format!(
                    "UPDATE connections SET status = $1, last_error = $2, updated_at = $3, \
                     token_version = token_version + 1, {CLEAR} \
                     WHERE id = $4 AND lease_owner = $5 AND token_version = $6"
                );
                sqlx::query(&sql)
                    .bind(status.as_str())
                    .bind(reason.as_deref())
                    .bind(at)
                    .bind(id)
                    .bind(owner)
                    .bind(version)
                    .execute(&self.pool)
                    .await?
            }
            LeaseEnd::Release => {
                let sql =
                    format!("UPDATE connections SET {CLEAR} WHERE id = $1 AND lease_owner = $2");
                sqlx::query(&sql)
                    .bind(id)
                    .bind(owner)
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }

    /// Sets a status unless the row changed since `version` was read.
    pub async fn set_status_if_unchanged(
        &self,
        id: &str,
        version: i64,
        status: ConnectionStatus,
        error: Option<&str>,
    ) -> Result<bool, VaultError> {
        let done = sqlx::query(
            "UPDATE connections SET status = $1, last_error = $2, updated_at = $3, token_version = token_version + 1 \
             WHERE id = $4 AND token_version = $5",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(now())
        .bind(id)
        .bind(version)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Drops refresh leases left by a process that died: every one (`all`,
    /// for SQLite, which one process owns) or those that ran out.
    pub async fn release_stale_leases(&self, all: bool) -> Result<u64, VaultError> {
        let done = sqlx::query(
            "UPDATE connections SET lease_owner = NULL, lease_expires_at = NULL \
             WHERE lease_owner IS NOT NULL AND ($1 = 1 OR lease_expires_at IS NULL OR lease_expires_at <= $2)",
        )
        .bind(i64::from(all))
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Connections holding a token endpoint answer that was never read.
    pub async fn pending_answers(&self) -> Result<Vec<String>, VaultError> {
        let rows = sqlx::query("SELECT id FROM connections WHERE pending_grant IS NOT NULL")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }
}
