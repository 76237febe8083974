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
    /// The connection's name (`""`: unnamed); a machine account's is its own.
    pub name: String,
    /// Its own variable name for sandboxes (`None`: the provider's `env`).
    pub env_name: Option<String>,
    /// Its own hosts, space-separated (`None`: the provider's).
    pub hosts: Option<String>,
    /// The tenant whose OAuth app issued its grant (refresh and revoke use
    /// that app); `None` for machine accounts, which carry their own client.
    pub app_tenant: Option<String>,
    /// An OAuth 1.0a connection's token secret (sealed); `None` for OAuth 2.
    pub token_secret: Option<Sealed>,
}

impl ConnectionRow {
    /// Its own hosts, when it has any.
    pub fn own_hosts(&self) -> Option<Vec<String>> {
        self.hosts
            .as_deref()
            .map(|h| h.split_whitespace().map(str::to_owned).collect())
    }

    /// Tokens of it may be handed out (not being connected or disconnected).
    pub fn usable(&self) -> bool {
        !matches!(
            self.status,
            ConnectionStatus::Pending | ConnectionStatus::RevokePending
        )
    }

    /// Whether a sandbox of `workspace` and `user` sees it (tenant-wide
    /// connections and machine accounts: every sandbox of the tenant).
    pub fn visible_to(&self, workspace: Option<&str>, user: Option<&str>) -> bool {
        match self.scope_kind {
            ScopeKind::Tenant | ScopeKind::Machine => true,
            ScopeKind::Workspace => workspace == Some(self.scope_name.as_str()),
            ScopeKind::User => user == Some(self.scope_name.as_str()),
        }
    }

    /// Someone holds a lease that has not run out.
    pub fn leased(&self, at: i64) -> bool {
        self.lease_owner.is_some() && self.lease_expires_at.is_some_and(|t| t > at)
    }
}

pub(super) const CONNECTION_COLUMNS: &str = "id, tenant, scope_kind, scope_name, provider, grant_kind, status, scopes, \
    access_token, refresh_token, expires_at, obtained_at, client_id, client_secret, token_url, environment, \
    last_error, created_at, updated_at, lease_owner, lease_expires_at, pending_grant, refreshed_at, token_version, \
    previous_access_token, previous_expires_at, needed_scopes, name, env_name, hosts, app_tenant, token_secret";

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
            name: row.try_get("name")?,
            env_name: row.try_get("env_name")?,
            hosts: row.try_get("hosts")?,
            app_tenant: row.try_get("app_tenant")?,
            token_secret: row.try_get("token_secret")?,
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
    /// `""` for the unnamed connection.
    pub name: &'a str,
    /// Its own variable and hosts (machine accounts); `None`: the provider's.
    pub env_name: Option<&'a str>,
    pub hosts: Option<&'a [String]>,
    /// The tenant whose OAuth app issued the grant (`None`: its own client).
    pub app_tenant: Option<&'a str>,
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
    /// tenant, environment, owner, provider and name (re-authorising with new
    /// scopes). Returns its id. A name another owner's connection of the
    /// provider has in that environment is refused (`Conflict`).
    pub async fn upsert_connection(&self, new: &NewConnection<'_>) -> Result<String, VaultError> {
        let now = now();
        let id = new_id("conn");
        let hosts = new.hosts.map(|h| h.join(" "));
        let row = sqlx::query(
            "INSERT INTO connections (id, tenant, scope_kind, scope_name, provider, grant_kind, status, scopes, \
             client_id, token_url, environment, created_at, updated_at, name, env_name, hosts, app_tenant) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $10, $11, $11, $12, $13, $14, $15) \
             ON CONFLICT (tenant, environment, scope_kind, scope_name, provider, name) DO UPDATE SET grant_kind = excluded.grant_kind, \
             scopes = excluded.scopes, client_id = excluded.client_id, token_url = excluded.token_url, \
             env_name = excluded.env_name, hosts = excluded.hosts, app_tenant = excluded.app_tenant, \
             updated_at = excluded.updated_at, \
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
        .bind(new.name)
        .bind(new.env_name)
        .bind(hosts)
        .bind(new.app_tenant)
        .fetch_optional(&self.pool)
        .await;
        match row {
            Ok(Some(row)) => Ok(row.try_get("id")?),
            // The same account is still being revoked at the provider.
            Ok(None) => Err(VaultError::Conflict(format!(
                "this {} account of tenant {} is being disconnected (revocation at the provider is pending); \
                 retry later, or remove it now with `airlock disconnect --force`",
                new.provider, new.tenant
            ))),
            // Only the name index can refuse an upsert on the full key.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(VaultError::Conflict(duplicate_name(new.provider, new.name, new.environment)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The connection of `provider` called `name` in a tenant's environment, whoever owns it.
    pub async fn named_connection(
        &self,
        tenant: &str,
        environment: &str,
        provider: &str,
        name: &str,
    ) -> Result<Option<ConnectionRow>, VaultError> {
        sqlx::query(&format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE tenant = $1 AND environment = $2 \
             AND provider = $3 AND name = $4"
        ))
        .bind(tenant)
        .bind(environment)
        .bind(provider)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| connection_from(&r))
        .transpose()
    }

    /// Connections called `name` in a tenant's environment, of any provider.
    pub async fn connections_named(
        &self,
        tenant: &str,
        environment: &str,
        name: &str,
    ) -> Result<Vec<ConnectionRow>, VaultError> {
        sqlx::query(&format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE tenant = $1 AND environment = $2 \
             AND name = $3 ORDER BY provider"
        ))
        .bind(tenant)
        .bind(environment)
        .bind(name)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(connection_from)
        .collect()
    }

    /// The environments anything is registered in: apps and connections.
    pub async fn environments(&self) -> Result<Vec<String>, VaultError> {
        let rows = sqlx::query(
            "SELECT environment FROM apps UNION SELECT environment FROM connections ORDER BY environment",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("environment")?)).collect()
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
            "SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY tenant, environment, provider, scope_kind, scope_name, name"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(connection_from)
        .collect()
    }

    /// The most specific connection of `provider` a sandbox of `environment`
    /// can see: its user's, then its workspace's, then the tenant's, then a
    /// machine account; at one level the unnamed one, then the oldest. A
    /// connection with a variable of its own is reached through that
    /// variable only (a pinned binding), never as its provider's.
    pub async fn visible_connection(
        &self,
        tenant: &str,
        environment: &str,
        provider: &str,
        workspace: Option<&str>,
        user: Option<&str>,
    ) -> Result<Option<ConnectionRow>, VaultError> {
        let rows = sqlx::query(&format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE tenant = $1 AND environment = $2 AND provider = $3 \
             AND status NOT IN ('pending', 'revoke_pending') AND env_name IS NULL \
             AND ((scope_kind = 'user' AND scope_name = $4) OR (scope_kind = 'workspace' AND scope_name = $5) \
             OR scope_kind = 'tenant' OR scope_kind = 'machine') ORDER BY created_at, id"
        ))
        .bind(tenant)
        .bind(environment)
        .bind(provider)
        // NULL never equals anything: a sandbox without a user sees no user connection.
        .bind(user)
        .bind(workspace)
        .fetch_all(&self.pool)
        .await?;
        let mut best: Option<ConnectionRow> = None;
        for row in &rows {
            let c = connection_from(row)?;
            // Rows come oldest first: only a strictly better one replaces.
            let better = |b: &ConnectionRow| {
                (c.scope_kind, !c.name.is_empty()) < (b.scope_kind, !b.name.is_empty())
            };
            if best.as_ref().is_none_or(better) {
                best = Some(c);
            }
        }
        Ok(best)
    }

    pub async fn store_tokens(&self, id: &str, update: &TokenUpdate) -> Result<(), VaultError> {
        write_tokens(&self.pool, id, update).await
    }

    /// An OAuth 1.0a grant: the access token and its token secret in one write.
    pub async fn store_oauth1_tokens(
        &self,
        id: &str,
        update: &TokenUpdate,
        token_secret: &Sealed,
    ) -> Result<(), VaultError> {
        sqlx::query(
            "UPDATE connections SET previous_access_token = access_token, previous_expires_at = expires_at, \
             access_token = $1, refresh_token = NULL, expires_at = $2, token_secret = $3, \
             obtained_at = $4, status = 'connected', last_error = NULL, updated_at = $4, \
             token_version = token_version + 1, pending_grant = NULL \
             WHERE id = $5 AND status <> 'revoke_pending'",
        )
        .bind(update.access_token.encode())
        .bind(update.expires_at)
        .bind(token_secret.encode())
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
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

/// What a connection name that is taken says.
pub(crate) fn duplicate_name(provider: &str, name: &str, environment: &str) -> String {
    format!(
        "the name {name:?} is already used by another {provider} connection in environment {environment}; \
         a name picks one connection per provider and environment: choose another, or reconnect that one"
    )
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
