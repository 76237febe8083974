//! The vault's database: SQLite by default (one file), PostgreSQL when several
//! vault replicas serve one fleet. One SQL dialect serves both through sqlx's
//! `Any` driver (`$N` parameters work in SQLite too); the one place that
//! differs is the refresh row lock.

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::crypto::Sealed;
use crate::error::VaultError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Schema migrations, applied in order once each. Types are chosen to mean
/// the same in both databases (TEXT, BIGINT).
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE providers (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE apps (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    provider TEXT NOT NULL,
    environment TEXT NOT NULL,
    client_id TEXT NOT NULL,
    client_secret TEXT,
    secret_last4 TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant, provider, environment)
);
CREATE TABLE connections (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    scope_kind TEXT NOT NULL,
    scope_name TEXT NOT NULL,
    provider TEXT NOT NULL,
    grant_kind TEXT NOT NULL,
    status TEXT NOT NULL,
    scopes TEXT NOT NULL,
    access_token TEXT,
    refresh_token TEXT,
    expires_at BIGINT,
    obtained_at BIGINT,
    client_id TEXT,
    client_secret TEXT,
    token_url TEXT,
    environment TEXT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant, scope_kind, scope_name, provider)
);
CREATE TABLE oauth_states (
    state_hash TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    scope_kind TEXT NOT NULL,
    scope_name TEXT NOT NULL,
    provider TEXT NOT NULL,
    scopes TEXT NOT NULL,
    environment TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used BIGINT NOT NULL
);
CREATE TABLE sandboxes (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    workspace TEXT,
    user_name TEXT,
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE bindings (
    placeholder TEXT PRIMARY KEY,
    sandbox_id TEXT NOT NULL,
    env_name TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target TEXT NOT NULL,
    UNIQUE (sandbox_id, env_name)
);
CREATE TABLE secrets (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    hosts TEXT NOT NULL,
    swap_in TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant, name)
);
"#];

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A random id with a readable prefix: `conn_3kq…`.
pub fn new_id(prefix: &str) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rngs::OsRng;
    let tail: String = (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}_{tail}")
}

#[derive(Debug, Clone)]
pub struct AppRow {
    pub id: String,
    pub tenant: String,
    pub provider: String,
    pub environment: String,
    pub client_id: String,
    pub client_secret: Option<Sealed>,
    pub secret_last4: Option<String>,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct ConnectionRow {
    pub id: String,
    pub tenant: String,
    pub scope_kind: String,
    pub scope_name: String,
    pub provider: String,
    pub grant_kind: String,
    pub status: String,
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
}

#[derive(Debug, Clone)]
pub struct StateRow {
    pub tenant: String,
    pub scope_kind: String,
    pub scope_name: String,
    pub provider: String,
    pub scopes: String,
    pub environment: String,
    pub pkce_verifier: Sealed,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub struct SandboxRow {
    pub id: String,
    pub tenant: String,
    pub workspace: Option<String>,
    pub user_name: Option<String>,
    pub secret_hash: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct BindingRow {
    pub placeholder: String,
    pub sandbox_id: String,
    pub env_name: String,
    /// `provider` or `secret`.
    pub target_kind: String,
    pub target: String,
}

#[derive(Debug, Clone)]
pub struct SecretRow {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub value: Sealed,
    pub hosts: Vec<String>,
    pub swap_in: Vec<String>,
}

fn sealed(row: &AnyRow, col: &str) -> Result<Option<Sealed>, VaultError> {
    let text: Option<String> = row.try_get(col)?;
    text.map(|t| Sealed::decode(&t)).transpose()
}

fn connection_from(row: &AnyRow) -> Result<ConnectionRow, VaultError> {
    Ok(ConnectionRow {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        scope_kind: row.try_get("scope_kind")?,
        scope_name: row.try_get("scope_name")?,
        provider: row.try_get("provider")?,
        grant_kind: row.try_get("grant_kind")?,
        status: row.try_get("status")?,
        scopes: row.try_get("scopes")?,
        access_token: sealed(row, "access_token")?,
        refresh_token: sealed(row, "refresh_token")?,
        expires_at: row.try_get("expires_at")?,
        obtained_at: row.try_get("obtained_at")?,
        client_id: row.try_get("client_id")?,
        client_secret: sealed(row, "client_secret")?,
        token_url: row.try_get("token_url")?,
        environment: row.try_get("environment")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn app_from(row: &AnyRow) -> Result<AppRow, VaultError> {
    Ok(AppRow {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        provider: row.try_get("provider")?,
        environment: row.try_get("environment")?,
        client_id: row.try_get("client_id")?,
        client_secret: sealed(row, "client_secret")?,
        secret_last4: row.try_get("secret_last4")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn sandbox_from(row: &AnyRow) -> Result<SandboxRow, VaultError> {
    Ok(SandboxRow {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        workspace: row.try_get("workspace")?,
        user_name: row.try_get("user_name")?,
        secret_hash: row.try_get("secret_hash")?,
        created_at: row.try_get("created_at")?,
    })
}

fn binding_from(row: &AnyRow) -> Result<BindingRow, VaultError> {
    Ok(BindingRow {
        placeholder: row.try_get("placeholder")?,
        sandbox_id: row.try_get("sandbox_id")?,
        env_name: row.try_get("env_name")?,
        target_kind: row.try_get("target_kind")?,
        target: row.try_get("target")?,
    })
}

fn secret_from(row: &AnyRow) -> Result<SecretRow, VaultError> {
    let hosts: String = row.try_get("hosts")?;
    let swap_in: String = row.try_get("swap_in")?;
    Ok(SecretRow {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        name: row.try_get("name")?,
        value: sealed(row, "value")?
            .ok_or_else(|| VaultError::Store("secret without a value".into()))?,
        hosts: serde_json::from_str(&hosts).unwrap_or_default(),
        swap_in: serde_json::from_str(&swap_in).unwrap_or_default(),
    })
}

const CONNECTION_COLUMNS: &str = "id, tenant, scope_kind, scope_name, provider, grant_kind, status, scopes, \
    access_token, refresh_token, expires_at, obtained_at, client_id, client_secret, token_url, environment, \
    last_error, created_at, updated_at";

/// Values written when a connection is created or its grant replaced.
pub struct NewConnection<'a> {
    pub tenant: &'a str,
    pub scope_kind: &'a str,
    pub scope_name: &'a str,
    pub provider: &'a str,
    pub grant_kind: &'a str,
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

#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens (creating when needed) the database and applies migrations.
    pub async fn open(url: &str) -> Result<Self, VaultError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(VaultError::Config(format!(
                "database_url must start with sqlite:// or postgres:// (got {:?})",
                url.split(':').next().unwrap_or_default()
            )));
        };
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(15));
        if backend == Backend::Sqlite {
            // One writer at a time anyway; WAL lets readers go on meanwhile.
            options = options.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=15000; PRAGMA foreign_keys=ON;")
                        .await?;
                    Ok(())
                })
            });
        } else {
            options = options.max_connections(16);
        }
        let pool = options
            .connect(url)
            .await
            .map_err(|e| VaultError::Store(format!("cannot open the database: {e}")))?;
        let store = Self { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn migrate(&self) -> Result<(), VaultError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS airlock_schema (version BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        if self.backend == Backend::Postgres {
            // Replicas starting together migrate one at a time.
            sqlx::query("LOCK TABLE airlock_schema IN EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
        }
        let current: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM airlock_schema")
            .fetch_one(&mut *tx)
            .await?
            .try_get("v")?;
        let current = current.unwrap_or(0) as usize;
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(current) {
            for statement in migration
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            sqlx::query("INSERT INTO airlock_schema (version) VALUES ($1)")
                .bind((i + 1) as i64)
                .execute(&mut *tx)
                .await?;
            tracing::info!(version = i + 1, "applied vault schema migration");
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- providers -------------------------------------------------------

    pub async fn upsert_provider(&self, name: &str, definition: &str) -> Result<(), VaultError> {
        sqlx::query(
            "INSERT INTO providers (name, definition, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET definition = excluded.definition",
        )
        .bind(name)
        .bind(definition)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn providers(&self) -> Result<Vec<(String, String)>, VaultError> {
        let rows = sqlx::query("SELECT name, definition FROM providers ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("definition")?)))
            .collect()
    }

    // ---- apps --------------------------------------------------------------

    pub async fn upsert_app(
        &self,
        id: &str,
        tenant: &str,
        provider: &str,
        environment: &str,
        client_id: &str,
        secret: Option<(&Sealed, &str)>,
    ) -> Result<(), VaultError> {
        let now = now();
        let (sealed, last4) = match secret {
            Some((s, l)) => (Some(s.encode()), Some(l.to_owned())),
            None => (None, None),
        };
        sqlx::query(
            "INSERT INTO apps (id, tenant, provider, environment, client_id, client_secret, secret_last4, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             ON CONFLICT (tenant, provider, environment) DO UPDATE SET client_id = excluded.client_id, \
             client_secret = COALESCE(excluded.client_secret, apps.client_secret), \
             secret_last4 = COALESCE(excluded.secret_last4, apps.secret_last4), updated_at = excluded.updated_at",
        )
        .bind(id)
        .bind(tenant)
        .bind(provider)
        .bind(environment)
        .bind(client_id)
        .bind(sealed)
        .bind(last4)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn app(
        &self,
        tenant: &str,
        provider: &str,
        environment: &str,
    ) -> Result<Option<AppRow>, VaultError> {
        sqlx::query("SELECT * FROM apps WHERE tenant = $1 AND provider = $2 AND environment = $3")
            .bind(tenant)
            .bind(provider)
            .bind(environment)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| app_from(&r))
            .transpose()
    }

    pub async fn apps(&self) -> Result<Vec<AppRow>, VaultError> {
        sqlx::query("SELECT * FROM apps ORDER BY tenant, provider, environment")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(app_from)
            .collect()
    }

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
             environment = excluded.environment, updated_at = excluded.updated_at \
             RETURNING id",
        )
        .bind(&id)
        .bind(new.tenant)
        .bind(new.scope_kind)
        .bind(new.scope_name)
        .bind(new.provider)
        .bind(new.grant_kind)
        .bind(new.scopes)
        .bind(new.client_id)
        .bind(new.token_url)
        .bind(new.environment)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
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
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE tenant = $1 AND provider = $2 AND status <> 'pending' \
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
        let rank = |kind: &str| match kind {
            "user" => 0,
            "workspace" => 1,
            "tenant" => 2,
            _ => 3,
        };
        let mut best: Option<ConnectionRow> = None;
        for row in &rows {
            let c = connection_from(row)?;
            if best
                .as_ref()
                .is_none_or(|b| rank(&c.scope_kind) < rank(&b.scope_kind))
            {
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
        status: &str,
        error: Option<&str>,
    ) -> Result<(), VaultError> {
        write_status(&self.pool, id, status, error).await
    }

    pub async fn delete_connection(&self, id: &str) -> Result<bool, VaultError> {
        let done = sqlx::query("DELETE FROM connections WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
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

    /// Runs `f` with the connection's row locked across replicas (PostgreSQL
    /// `FOR UPDATE`; SQLite's database write lock), re-reading the row first.
    pub async fn with_connection_locked<T, F, Fut>(&self, id: &str, f: F) -> Result<T, VaultError>
    where
        F: FnOnce(ConnectionRow) -> Fut,
        Fut: std::future::Future<
            Output = Result<(T, Option<TokenUpdate>, Option<(String, Option<String>)>), VaultError>,
        >,
    {
        let mut tx = self.pool.begin().await?;
        let row = match self.backend {
            Backend::Postgres => {
                sqlx::query(&format!(
                    "SELECT {CONNECTION_COLUMNS} FROM connections WHERE id = $1 FOR UPDATE"
                ))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
            }
            Backend::Sqlite => {
                // The first write takes SQLite's write lock for the transaction.
                sqlx::query("UPDATE connections SET updated_at = updated_at WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&format!(
                    "SELECT {CONNECTION_COLUMNS} FROM connections WHERE id = $1"
                ))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
            }
        };
        let row = row.ok_or_else(|| VaultError::NotFound(format!("connection {id}")))?;
        let row = connection_from(&row)?;
        let (value, update, status) = f(row).await?;
        if let Some(update) = update {
            write_tokens(&mut *tx, id, &update).await?;
        }
        if let Some((status, error)) = status {
            write_status(&mut *tx, id, &status, error.as_deref()).await?;
        }
        tx.commit().await?;
        Ok(value)
    }

    // ---- OAuth states ------------------------------------------------------

    pub async fn insert_state(&self, state_hash: &str, s: &StateRow) -> Result<(), VaultError> {
        sqlx::query(
            "INSERT INTO oauth_states (state_hash, tenant, scope_kind, scope_name, provider, scopes, environment, \
             pkce_verifier, expires_at, used) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0)",
        )
        .bind(state_hash)
        .bind(&s.tenant)
        .bind(&s.scope_kind)
        .bind(&s.scope_name)
        .bind(&s.provider)
        .bind(&s.scopes)
        .bind(&s.environment)
        .bind(s.pkce_verifier.encode())
        .bind(s.expires_at)
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
             RETURNING tenant, scope_kind, scope_name, provider, scopes, environment, pkce_verifier, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(StateRow {
            tenant: row.try_get("tenant")?,
            scope_kind: row.try_get("scope_kind")?,
            scope_name: row.try_get("scope_name")?,
            provider: row.try_get("provider")?,
            scopes: row.try_get("scopes")?,
            environment: row.try_get("environment")?,
            pkce_verifier: sealed(&row, "pkce_verifier")?
                .ok_or_else(|| VaultError::Store("state without verifier".into()))?,
            expires_at: row.try_get("expires_at")?,
        }))
    }

    // ---- sandboxes and bindings -------------------------------------------

    pub async fn insert_sandbox(
        &self,
        s: &SandboxRow,
        bindings: &[BindingRow],
    ) -> Result<(), VaultError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sandboxes (id, tenant, workspace, user_name, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&s.id)
        .bind(&s.tenant)
        .bind(&s.workspace)
        .bind(&s.user_name)
        .bind(&s.secret_hash)
        .bind(s.created_at)
        .execute(&mut *tx)
        .await?;
        insert_bindings(&mut tx, bindings, false).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates the sandbox row unless it exists (replicas may race at start).
    pub async fn ensure_sandbox_row(&self, s: &SandboxRow) -> Result<(), VaultError> {
        sqlx::query(
            "INSERT INTO sandboxes (id, tenant, workspace, user_name, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&s.id)
        .bind(&s.tenant)
        .bind(&s.workspace)
        .bind(&s.user_name)
        .bind(&s.secret_hash)
        .bind(s.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Adds bindings; one that would reuse a variable name of the sandbox is skipped.
    pub async fn add_bindings(&self, bindings: &[BindingRow]) -> Result<(), VaultError> {
        let mut tx = self.pool.begin().await?;
        insert_bindings(&mut tx, bindings, true).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn sandbox(&self, id: &str) -> Result<Option<SandboxRow>, VaultError> {
        sqlx::query("SELECT * FROM sandboxes WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| sandbox_from(&r))
            .transpose()
    }

    pub async fn sandboxes(&self) -> Result<Vec<SandboxRow>, VaultError> {
        sqlx::query("SELECT * FROM sandboxes ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(sandbox_from)
            .collect()
    }

    pub async fn delete_sandbox(&self, id: &str) -> Result<bool, VaultError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM bindings WHERE sandbox_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM sandboxes WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn binding(&self, placeholder: &str) -> Result<Option<BindingRow>, VaultError> {
        sqlx::query("SELECT * FROM bindings WHERE placeholder = $1")
            .bind(placeholder)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| binding_from(&r))
            .transpose()
    }

    pub async fn bindings_of(&self, sandbox_id: &str) -> Result<Vec<BindingRow>, VaultError> {
        sqlx::query("SELECT * FROM bindings WHERE sandbox_id = $1 ORDER BY env_name")
            .bind(sandbox_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(binding_from)
            .collect()
    }

    // ---- static secrets ----------------------------------------------------

    pub async fn upsert_secret(
        &self,
        id: &str,
        tenant: &str,
        name: &str,
        value: &Sealed,
        hosts: &[String],
        swap_in: &[String],
    ) -> Result<(), VaultError> {
        sqlx::query(
            "INSERT INTO secrets (id, tenant, name, value, hosts, swap_in, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant, name) DO UPDATE SET value = excluded.value, hosts = excluded.hosts, swap_in = excluded.swap_in",
        )
        .bind(id)
        .bind(tenant)
        .bind(name)
        .bind(value.encode())
        .bind(serde_json::to_string(hosts).expect("strings serialise"))
        .bind(serde_json::to_string(swap_in).expect("strings serialise"))
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn secret(&self, tenant: &str, name: &str) -> Result<Option<SecretRow>, VaultError> {
        sqlx::query("SELECT * FROM secrets WHERE tenant = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| secret_from(&r))
            .transpose()
    }

    pub async fn secrets(&self) -> Result<Vec<SecretRow>, VaultError> {
        sqlx::query("SELECT * FROM secrets ORDER BY tenant, name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(secret_from)
            .collect()
    }

    // ---- key rotation ------------------------------------------------------

    /// Every sealed value: (table, key column, key, sealed column, sealed text).
    pub async fn sealed_values(&self) -> Result<Vec<SealedCell>, VaultError> {
        let mut out = Vec::new();
        for (table, key, columns) in SEALED_COLUMNS {
            for column in *columns {
                let rows = sqlx::query(&format!(
                    "SELECT {key} AS k, {column} AS v FROM {table} WHERE {column} IS NOT NULL"
                ))
                .fetch_all(&self.pool)
                .await?;
                for row in rows {
                    out.push(SealedCell {
                        table,
                        key_column: key,
                        key: row.try_get("k")?,
                        column,
                        value: row.try_get("v")?,
                    });
                }
            }
        }
        Ok(out)
    }

    pub async fn replace_sealed(
        &self,
        cell: &SealedCell,
        value: &Sealed,
    ) -> Result<(), VaultError> {
        sqlx::query(&format!(
            "UPDATE {} SET {} = $1 WHERE {} = $2 AND {} = $3",
            cell.table, cell.column, cell.key_column, cell.column
        ))
        .bind(value.encode())
        .bind(&cell.key)
        .bind(&cell.value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Writes a grant's tokens and marks the connection connected.
async fn write_tokens<'e, E>(executor: E, id: &str, update: &TokenUpdate) -> Result<(), VaultError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "UPDATE connections SET access_token = $1, refresh_token = COALESCE($2, refresh_token), expires_at = $3, \
         obtained_at = $4, status = 'connected', last_error = NULL, updated_at = $4 WHERE id = $5",
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
    status: &str,
    error: Option<&str>,
) -> Result<(), VaultError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "UPDATE connections SET status = $1, last_error = $2, updated_at = $3 WHERE id = $4",
    )
    .bind(status)
    .bind(error)
    .bind(now())
    .bind(id)
    .execute(executor)
    .await?;
    Ok(())
}

/// Inserts bindings; with `skip_taken`, one reusing a sandbox's variable name is skipped.
async fn insert_bindings(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    bindings: &[BindingRow],
    skip_taken: bool,
) -> Result<(), VaultError> {
    let sql = if skip_taken {
        "INSERT INTO bindings (placeholder, sandbox_id, env_name, target_kind, target) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (sandbox_id, env_name) DO NOTHING"
    } else {
        "INSERT INTO bindings (placeholder, sandbox_id, env_name, target_kind, target) VALUES ($1, $2, $3, $4, $5)"
    };
    for b in bindings {
        sqlx::query(sql)
            .bind(&b.placeholder)
            .bind(&b.sandbox_id)
            .bind(&b.env_name)
            .bind(&b.target_kind)
            .bind(&b.target)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Tables and columns that hold sealed values, for key rotation.
const SEALED_COLUMNS: &[(&str, &str, &[&str])] = &[
    ("apps", "id", &["client_secret"]),
    (
        "connections",
        "id",
        &["access_token", "refresh_token", "client_secret"],
    ),
    ("oauth_states", "state_hash", &["pkce_verifier"]),
    ("secrets", "id", &["value"]),
];

#[derive(Debug)]
pub struct SealedCell {
    pub table: &'static str,
    pub key_column: &'static str,
    pub key: String,
    pub column: &'static str,
    pub value: String,
}

impl SealedCell {
    /// The associated-data kind the value was sealed under.
    pub fn kind(&self) -> String {
        format!("{}.{}", self.table, self.column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Kek, Keyring};
    use secrecy::SecretString;

    /// A fresh SQLite file, and a fresh PostgreSQL database when the server on
    /// 127.0.0.1:5432 is reachable (said clearly when it is not).
    async fn backends() -> Vec<(String, Store, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().unwrap();
        let sqlite_url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let mut out = vec![(
            sqlite_url.clone(),
            Store::open(&sqlite_url).await.unwrap(),
            Some(dir),
        )];
        match fresh_postgres().await {
            Some(url) => out.push((url.clone(), Store::open(&url).await.unwrap(), None)),
            None => eprintln!(
                "SKIPPED PostgreSQL store tests: no server at 127.0.0.1:5432 (database test)"
            ),
        }
        out
    }

    async fn fresh_postgres() -> Option<String> {
        use sqlx::ConnectOptions;
        sqlx::any::install_default_drivers();
        let admin_url = std::env::var("AIRLOCK_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let options: sqlx::any::AnyConnectOptions = admin_url.parse().ok()?;
        let mut conn = tokio::time::timeout(Duration::from_secs(3), options.connect())
            .await
            .ok()?
            .ok()?;
        let name = new_id("airlock_test");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .ok()?;
        let base = admin_url.rsplit_once('/').map(|(b, _)| b.to_owned())?;
        Some(format!("{base}/{name}"))
    }

    #[tokio::test]
    async fn migrations_are_idempotent_and_data_survives_reopen() {
        for (url, store, _keep) in backends().await {
            let ring = Keyring::new(Kek::generate(), vec![]);
            let sealed = ring.seal(
                "apps.client_secret",
                "app_1",
                &SecretString::from("client-secret-value"),
            );
            store
                .upsert_app(
                    "app_1",
                    "default",
                    "acme",
                    "default",
                    "cid",
                    Some((&sealed, "alue")),
                )
                .await
                .unwrap();
            drop(store);
            let reopened = Store::open(&url).await.unwrap();
            let app = reopened
                .app("default", "acme", "default")
                .await
                .unwrap()
                .expect("app survives");
            assert_eq!(app.client_id, "cid");
            assert_eq!(app.client_secret, Some(sealed), "{url}");
        }
    }

    #[tokio::test]
    async fn states_are_taken_once() {
        for (url, store, _keep) in backends().await {
            let ring = Keyring::new(Kek::generate(), vec![]);
            let row = StateRow {
                tenant: "t".into(),
                scope_kind: "tenant".into(),
                scope_name: String::new(),
                provider: "acme".into(),
                scopes: "read".into(),
                environment: "default".into(),
                pkce_verifier: ring.seal(
                    "oauth_states.pkce_verifier",
                    "h",
                    &SecretString::from("v"),
                ),
                expires_at: now() + 60,
            };
            store.insert_state("h", &row).await.unwrap();
            assert!(store.take_state("h").await.unwrap().is_some(), "{url}");
            assert!(
                store.take_state("h").await.unwrap().is_none(),
                "{url}: a state is single-use"
            );
            assert!(store.take_state("other").await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn the_most_specific_connection_wins() {
        for (url, store, _keep) in backends().await {
            let ring = Keyring::new(Kek::generate(), vec![]);
            for (kind, name) in [
                ("tenant", ""),
                ("workspace", "ws"),
                ("user", "alice"),
                ("machine", "bot"),
            ] {
                let id = store
                    .upsert_connection(&NewConnection {
                        tenant: "t",
                        scope_kind: kind,
                        scope_name: name,
                        provider: "acme",
                        grant_kind: "authorization_code",
                        scopes: "",
                        environment: "default",
                        client_id: None,
                        token_url: None,
                    })
                    .await
                    .unwrap();
                let token = ring.seal(
                    "connections.access_token",
                    &id,
                    &SecretString::from(format!("tok-{kind}")),
                );
                store
                    .store_tokens(
                        &id,
                        &TokenUpdate {
                            access_token: token,
                            refresh_token: None,
                            expires_at: None,
                        },
                    )
                    .await
                    .unwrap();
            }
            let pick = |ws: Option<&'static str>, user: Option<&'static str>| {
                let store = store.clone();
                async move {
                    store
                        .visible_connection("t", "acme", ws, user)
                        .await
                        .unwrap()
                        .unwrap()
                        .scope_kind
                }
            };
            assert_eq!(pick(Some("ws"), Some("alice")).await, "user", "{url}");
            assert_eq!(pick(Some("ws"), Some("bob")).await, "workspace");
            assert_eq!(pick(None, Some("bob")).await, "tenant");
            assert!(store
                .visible_connection("other", "acme", None, None)
                .await
                .unwrap()
                .is_none());
        }
    }

    #[tokio::test]
    async fn locked_refresh_sees_the_row_written_by_the_previous_holder() {
        for (url, store, _keep) in backends().await {
            let ring = std::sync::Arc::new(Keyring::new(Kek::generate(), vec![]));
            let id = store
                .upsert_connection(&NewConnection {
                    tenant: "t",
                    scope_kind: "tenant",
                    scope_name: "",
                    provider: "acme",
                    grant_kind: "authorization_code",
                    scopes: "",
                    environment: "default",
                    client_id: None,
                    token_url: None,
                })
                .await
                .unwrap();
            // Ten holders in turn: each sees the generation the one before wrote.
            let tasks: Vec<_> = (0..10)
                .map(|_| {
                    let store = store.clone();
                    let ring = ring.clone();
                    let id = id.clone();
                    tokio::spawn(async move {
                        store
                            .with_connection_locked(&id, |row| {
                                let ring = ring.clone();
                                let id = id.clone();
                                async move {
                                    let seen = row.expires_at.unwrap_or(0);
                                    let update = TokenUpdate {
                                        access_token: ring.seal(
                                            "connections.access_token",
                                            &id,
                                            &SecretString::from("x"),
                                        ),
                                        refresh_token: None,
                                        expires_at: Some(seen + 1),
                                    };
                                    Ok((seen, Some(update), None))
                                }
                            })
                            .await
                            .unwrap()
                    })
                })
                .collect();
            let mut seen: Vec<i64> = Vec::new();
            for t in tasks {
                seen.push(t.await.unwrap());
            }
            seen.sort();
            assert_eq!(
                seen,
                (0..10).collect::<Vec<_>>(),
                "{url}: no two holders saw the same row"
            );
        }
    }
}
