//! Connections: one account's grant at a provider, and its tokens.

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{new_id, now, ConnectionStatus, Store};
use crate::crypto::Sealed;
use crate::error::VaultError;

#[derive(Debug, Clone)]
pub struct ConnectionRow {
    pub id: String,
    pub tenant: String,
    pub scope_kind: ScopeKind,
    pub scope_name: String,
    pub provider: String,
    pub grant_kind: GrantKind,
    /// A value this version does not know reads as pending (never handed out).
    pub status: ConnectionStatus,
    pub scopes: String,
    pub access_token: Option<Sealed>,
    pub refresh_token: Option<Sealed>,
    pub expires_at: Option<i64>,
    pub obtained_at: Option<i64>,
    pub client_id: Option<String>,
    pub client_secret: Option<Sealed>,
    pub token_url: Option<String>,
    pub environment: String,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Who is refreshing it, until when (a crashed holder's lease runs out).
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    /// A token endpoint's answer kept (sealed) before it was read.
    pub pending_grant: Option<Sealed>,
    /// The last successful refresh grant (not the first connect).
    pub refreshed_at: Option<i64>,
    /// Bumped by every write of tokens or status: the compare-and-set key.
    pub token_version: i64,
    /// The access token the last write replaced (sealed like the current
    /// one), and its expiry: still guarded until then.
    pub previous_access_token: Option<Sealed>,
    pub previous_expires_at: Option<i64>,
    /// Scopes an upstream said the token lacks (space-separated).
    pub needed_scopes: Option<String>,
}

impl ConnectionRow {
    /// Someone holds a lease that has not run out.
    pub fn leased(&self, at: i64) -> bool {
        self.lease_owner.is_some() && self.lease_expires_at.is_some_and(|t| t > at)
    }
}

pub(super) const CONNECTION_COLUMNS: &str = "id, tenant, scope_kind, scope_name, provider, grant_kind, status, scopes, \
    access_token, refresh_token, expires_at, obtained_at, client_id, client_secret, token_url, environment, \
    last_error, created_at, updated_at, lease_owner, lease_expires_at, pending_grant, refreshed_at, token_version, \
    previous_access_token, previous_expires_at, needed_scopes";

/// Who a connection belongs to, most specific first (the order in which a
/// sandbox picks the connection it sees).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScopeKind {
    User,
    Workspace,
    Tenant,
    /// A machine account (client credentials).
    Machine,
}

super::text_enum!(ScopeKind, "scope kind", {
    User => "user",
    Workspace => "workspace",
    Tenant => "tenant",
    Machine => "machine",
});

/// How a connection got its grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    /// A user consented in a browser; refreshed with a refresh token.
    AuthorizationCode,
    /// A machine account; "refreshed" by asking for a new token.
    ClientCredentials,
}

super::text_enum!(GrantKind, "grant kind", {
    AuthorizationCode => "authorization_code",
    ClientCredentials => "client_credentials",
});

pub(super) fn connection_from(row: &AnyRow) -> Result<ConnectionRow, VaultError> {
    Ok(ConnectionRow::from_row(row)?)
}

/// Written out rather than derived: the status is the contract crate's type,
/// which knows nothing of sqlx.
impl FromRow<'_, AnyRow> for ConnectionRow {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            tenant: row.try_get("tenant")?,
            scope_kind: row.try_get("scope_kind")?,
            scope_name: row.try_get("scope_name")?,
            provider: row.try_get("provider")?,
            grant_kind: row.try_get("grant_kind")?,
            status: ConnectionStatus::from(row.try_get::<String, _>("status")?),
            scopes: row.try_get("scopes")?,
            access_token: row.try_get("access_token")?,
            refresh_token: row.try_get("refresh_token")?,
            expires_at: row.try_get("expires_at")?,
            obtained_at: row.try_get("obtained_at")?,
            client_id: row.try_get("client_id")?,
            client_secret: row.try_get("client_secret")?,
            token_url: row.try_get("token_url")?,
            environment: row.try_get("environment")?,
            last_error: row.try_get("last_error")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            lease_owner: row.try_get("lease_owner")?,
            lease_expires_at: row.try_get("lease_expires_at")?,
            pending_grant: row.try_get("pending_grant")?,
            refreshed_at: row.try_get("refreshed_at")?,
            token_version: row.try_get("token_version")?,
            previous_access_token: row.try_get("previous_access_token")?,
            previous_expires_at: row.try_get("previous_expires_at")?,
            needed_scopes: row.try_get("needed_scopes")?,
        })
    }
}

/// A connected grant that may need a keep-alive refresh.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct IdleGrant {
    pub id: String,
    pub provider: String,
    /// When its tokens were obtained (connect or last refresh).
    pub obtained_at: Option<i64>,
}

/// Values written when a connection is created or its grant replaced.
pub struct NewConnection<'a> {
    pub tenant: &'a str,
    pub scope_kind: ScopeKind,
    pub scope_name: &'a str,
    pub provider: &'a str,
    pub grant_kind: GrantKind,
    pub scopes: &'a str,
    pub environment: &'a str,
    pub client_id: Option<&'a str>,
    pub token_url: Option<&'a str>,
}

/// Sealed token values, sealed by the caller for the connection's id.
pub struct TokenUpdate {
    pub access_token: Sealed,
    /// `None` keeps the stored refresh token (providers that do not rotate).
    pub refresh_token: Option<Sealed>,
    pub expires_at: Option<i64>,
}

impl Store {
    // ---- connections -------------------------------------------------------

    /// Creates the connection, or replaces the grant of the one with the same
    /// tenant, scope and provider (re-authorising with new scopes). Returns its id.
    pub async fn upsert_connection(&self, new: &NewConnection<'_>) -> Result<String, VaultError> {
        let now = now();
        let id = new_id("conn");
        let row = sqlx::query(
            "INSERT INTO connections (id, tenant, scope_kind, scope_name, provider, grant_kind, status, scopes, \
             client_id, token_url, environment, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $10, $11, $11) \
             ON CONFLICT (tenant, scope_kind, scope_name, provider) DO UPDATE SET grant_kind = excluded.grant_kind, \
             scopes = excluded.scopes, client_id = excluded.client_id, token_url = excluded.token_url, \
             environment = excluded.environment, updated_at = excluded.updated_at, \
             token_version = connections.token_version + 1, pending_grant = NULL, refreshed_at = NULL, \
             lease_owner = NULL, lease_expires_at = NULL, needed_scopes = NULL \
             WHERE connections.status <> 'revoke_pending' \
             RETURNING id",
        )
        .bind(&id)
        .bind(new.tenant)
        .bind(new.scope_kind.as_str())
        .bind(new.scope_name)
        .bind(new.provider)
        .bind(new.grant_kind.as_str())
        .bind(new.scopes)
        .bind(new.client_id)
        .bind(new.token_url)
        .bind(new.environment)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(row.try_get("id")?),
            // The same account is still being revoked at the provider.
            None => Err(VaultError::Conflict(format!(
                "this {} account of tenant {} is being disconnected (revocation at the provider is pending); \
                 retry later, or remove it now with `airlock disconnect --force`",
                new.provider, new.tenant
            ))),
        }
    }

    /// Notes the scopes an upstream said the connection's token lacks.
    pub async fn set_needed_scopes(&self, id: &str, needed: &str) -> Result<(), VaultError> {
        sqlx::query("UPDATE connections SET needed_scopes = $1 WHERE id = $2")
            .bind(needed)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_connection_secret(&self, id: &str, secret: &Sealed) -> Result<(), VaultError> {
        sqlx::query("UPDATE connections SET client_secret = $1 WHERE id = $2")
            .bind(secret.encode())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn connection(&self, id: &str) -> Result<Option<ConnectionRow>, VaultError> {
        sqlx::query(&format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| connection_from(&r))
        .transpose()
    }

    pub async fn connections(&self) -> Result<Vec<ConnectionRow>, VaultError> {
        sqlx::query(&format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY tenant, provider, scope_kind, scope_name"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(connection_from)
        .collect()
    }

    /// The most specific connection of `provider` a sandbox can see:
    /// its user's, then its workspace's, then the tenant's, then a machine account.
    pub async fn visible_connection(
        &self,
        tenant: &str,
        provider: &str,
        workspace: Option<&str>,
        user: Option<&str>,
    ) -> Result<Option<ConnectionRow>, VaultError> {
        let rows = sqlx::query(&format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE tenant = $1 AND provider = $2 AND status NOT IN ('pending', 'revoke_pending') \
             AND ((scope_kind = 'user' AND scope_name = $3) OR (scope_kind = 'workspace' AND scope_name = $4) \
             OR scope_kind = 'tenant' OR scope_kind = 'machine') ORDER BY scope_name"
        ))
        .bind(tenant)
        .bind(provider)
        // NULL never equals anything: a sandbox without a user sees no user connection.
        .bind(user)
        .bind(workspace)
        .fetch_all(&self.pool)
        .await?;
        let mut best: Option<ConnectionRow> = None;
        for row in &rows {
            let c = connection_from(row)?;
            if best.as_ref().is_none_or(|b| c.scope_kind < b.scope_kind) {
                best = Some(c);
            }
        }
        Ok(best)
    }

    pub async fn store_tokens(&self, id: &str, update: &TokenUpdate) -> Result<(), VaultError> {
        write_tokens(&self.pool, id, update).await
    }

    pub async fn set_status(
        &self,
        id: &str,
        status: ConnectionStatus,
        error: Option<&str>,
    ) -> Result<(), VaultError> {
        write_status(&self.pool, id, status, error).await
    }

    /// Marks the connection revoke-pending; its tokens are never handed out again.
    pub async fn mark_revoke_pending(&self, id: &str, error: &str) -> Result<(), VaultError> {
        sqlx::query(
            "UPDATE connections SET status = 'revoke_pending', last_error = $1, updated_at = $2 WHERE id = $3",
        )
        .bind(error)
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records why the latest revocation attempt failed.
    pub async fn set_revoke_error(&self, id: &str, error: &str) -> Result<(), VaultError> {
        sqlx::query(
            "UPDATE connections SET last_error = $1, updated_at = $2 WHERE id = $3 AND status = 'revoke_pending'",
        )
        .bind(error)
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets one token once the provider confirmed its revocation.
    pub async fn clear_token(&self, id: &str, refresh: bool) -> Result<(), VaultError> {
        let sql = if refresh {
            "UPDATE connections SET refresh_token = NULL WHERE id = $1"
        } else {
            "UPDATE connections SET access_token = NULL WHERE id = $1"
        };
        sqlx::query(sql).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// Connections whose revocation is still to be retried.
    pub async fn revoke_pending(&self) -> Result<Vec<ConnectionRow>, VaultError> {
        sqlx::query(&format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE status = 'revoke_pending'"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(connection_from)
        .collect()
    }

    /// Deletes a revoke-pending connection (not one that changed meanwhile).
    pub async fn delete_revoked(&self, id: &str) -> Result<bool, VaultError> {
        let done =
            sqlx::query("DELETE FROM connections WHERE id = $1 AND status = 'revoke_pending'")
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn delete_connection(&self, id: &str) -> Result<bool, VaultError> {
        let done = sqlx::query("DELETE FROM connections WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Connected user grants holding a refresh token whose tokens were
    /// obtained before `before` (or at an unknown time): candidates for a
    /// keep-alive refresh, each with its provider and when it was obtained.
    pub async fn obtained_before(&self, before: i64) -> Result<Vec<IdleGrant>, VaultError> {
        Ok(sqlx::query_as::<_, IdleGrant>(
            "SELECT id, provider, obtained_at FROM connections WHERE status = 'connected' \
             AND grant_kind = 'authorization_code' AND refresh_token IS NOT NULL \
             AND (obtained_at IS NULL OR obtained_at < $1) ORDER BY id",
        )
        .bind(before)
        .fetch_all(&self.pool)
        .await?)
    }

    #[cfg(test)]
    pub(crate) async fn backdate_tokens(&self, id: &str, obtained_at: i64) {
        sqlx::query("UPDATE connections SET obtained_at = $1 WHERE id = $2")
            .bind(obtained_at)
            .bind(id)
            .execute(&self.pool)
            .await
            .expect("backdate");
    }

    /// Ids of connected connections whose token expires before `deadline`.
    pub async fn expiring(&self, deadline: i64) -> Result<Vec<String>, VaultError> {
        let rows = sqlx::query(
            "SELECT id FROM connections WHERE status = 'connected' AND expires_at IS NOT NULL AND expires_at < $1",
        )
        .bind(deadline)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }
}

/// Writes a grant's tokens and marks the connection connected.
async fn write_tokens<'e, E>(executor: E, id: &str, update: &TokenUpdate) -> Result<(), VaultError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        // SET reads the row as it was: the replaced token becomes the previous one.
        "UPDATE connections SET previous_access_token = access_token, previous_expires_at = expires_at, \
         access_token = $1, refresh_token = COALESCE($2, refresh_token), expires_at = $3, \
         obtained_at = $4, status = 'connected', last_error = NULL, updated_at = $4, \
         token_version = token_version + 1, pending_grant = NULL \
         WHERE id = $5 AND status <> 'revoke_pending'",
    )
    .bind(update.access_token.encode())
    .bind(update.refresh_token.as_ref().map(Sealed::encode))
    .bind(update.expires_at)
    .bind(now())
    .bind(id)
    .execute(executor)
    .await?;
    Ok(())
}

async fn write_status<'e, E>(
    executor: E,
    id: &str,
    status: ConnectionStatus,
    error: Option<&str>,
) -> Result<(), VaultError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        // A disconnected (revoke-pending) connection is never brought back.
        "UPDATE connections SET status = $1, last_error = $2, updated_at = $3, token_version = token_version + 1 \
         WHERE id = $4 AND status <> 'revoke_pending'",
    )
    .bind(status.as_str())
    .bind(error)
    .bind(now())
    .bind(id)
    .execute(executor)
    .await?;
    Ok(())
}
