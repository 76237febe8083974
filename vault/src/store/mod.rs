//! The vault's database: SQLite by default (one file), PostgreSQL when several
//! vault replicas serve one fleet. One SQL dialect serves both through sqlx's
//! `Any` driver (`$N` parameters work in SQLite too). No transaction is held
//! across a network call: a refresh takes a lease on the connection's row
//! (one short statement), calls the provider, and writes the result with a
//! compare-and-set on the lease and the row's `token_version`.

//!
//! One module per table (or family of tables); every one adds an `impl Store`
//! block. Migrations are SQL files below `migrations/`, applied in order once
//! each; they mean the same in both databases, so there is one set.

/// Reads a TEXT column as a type that parses from it (`FromStr`).
macro_rules! text_column {
    ($t:ty) => {
        impl sqlx::Type<sqlx::Any> for $t {
            fn type_info() -> sqlx::any::AnyTypeInfo {
                <String as sqlx::Type<sqlx::Any>>::type_info()
            }

            fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
                <String as sqlx::Type<sqlx::Any>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Any> for $t {
            fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::Any>>::decode(value)?;
                Ok(text.parse::<$t>()?)
            }
        }
    };
}
pub(crate) use text_column;

/// A fieldless enum stored as text: `as_str`, `Display`, `FromStr` and the
/// column impls, all from one variant ↔ text table.
macro_rules! text_enum {
    ($t:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $t {
            type Err = crate::error::VaultError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(crate::error::VaultError::Store(format!(
                        concat!("unknown ", $what, " {:?}"),
                        s
                    ))),
                }
            }
        }

        crate::store::text_column!($t);
    };
}
pub(crate) use text_enum;

mod apps;
mod changes;
mod connections;
mod flows;
mod leases;
mod links;
mod requests;
mod rotation;
mod sandboxes;
mod secrets;
mod states;
mod tenants;
#[cfg(test)]
pub(crate) mod tests;

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

pub use airlock_vault_client::ConnectionStatus;
pub use apps::{AppRow, ProviderRow, ProviderUsers};
pub use changes::{ChangeListener, Heard, CHANGES_CHANNEL};
pub(crate) use connections::duplicate_name;
pub use connections::{ConnectionRow, GrantKind, IdleGrant, NewConnection, ScopeKind, TokenUpdate};
pub use flows::{FlowEnd, FlowRow, FlowState, FLOW_KEEP_SECS};
pub use leases::LeaseEnd;
pub use links::LinkRow;
pub use rotation::SealedCell;
pub use sandboxes::{BindingRow, BindingTarget, SandboxRow};
pub use secrets::SecretRow;
pub use states::StateRow;
pub use tenants::TenantRow;

use crate::crypto::Sealed;
use crate::error::VaultError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Schema migrations, applied in order once each.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_refresh_leases.sql"),
    include_str!("migrations/0003_previous_tokens.sql"),
    include_str!("migrations/0004_connect_links.sql"),
    include_str!("migrations/0005_binding_rules.sql"),
    include_str!("migrations/0006_step_up.sql"),
    include_str!("migrations/0007_connect_flows.sql"),
    include_str!("migrations/0008_sandbox_consent_wait.sql"),
    include_str!("migrations/0009_environments_and_names.sql"),
    include_str!("migrations/0011_proxy_requests.sql"),
    include_str!("migrations/0012_white_label.sql"),
    include_str!("migrations/0013_oauth1_token_secret.sql"),
    include_str!("migrations/0014_signing_secrets.sql"),
];

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

/// The SQLite file holds sealed tokens: it is created, before SQLite opens
/// it, readable by its owner only (and tightened when it already exists
/// wider), and SQLite makes its `-wal` and `-shm` files with the same mode.
/// A URL that says no `mode` gets `mode=rwc`, so a new database is created
/// rather than refused with "unable to open database file".
fn prepare_sqlite_file(url: &str) -> Result<String, VaultError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or_default();
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let in_memory = path.is_empty() || path == ":memory:";
    let mode = query.split('&').find_map(|p| p.strip_prefix("mode="));
    let mut url = url.to_owned();
    if mode.is_none() {
        url.push(if query.is_empty() && !url.ends_with('?') {
            '?'
        } else {
            '&'
        });
        url.push_str("mode=rwc");
    }
    // Read-only and in-memory databases are SQLite's to open as they are.
    if in_memory || mode.is_some_and(|m| m != "rwc") {
        return Ok(url);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path = std::path::Path::new(path);
        let owner_only = || std::fs::Permissions::from_mode(0o600);
        match std::fs::metadata(path) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(path, owner_only())
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map(drop),
            Err(e) => Err(e),
        }
        .map_err(|e| {
            VaultError::Store(format!(
                "cannot prepare the database file {}: {e}",
                path.display()
            ))
        })?;
    }
    Ok(url)
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// For the change listener's own connection (PostgreSQL only). May
    /// hold a password: redacted in `Debug`.
    postgres_url: Option<secrecy::SecretString>,
}

impl Store {
    /// Opens (creating when needed) the database and applies migrations.
    pub async fn open(url: &str) -> Result<Self, VaultError> {
        Self::open_at(url, MIGRATIONS.len()).await
    }

    /// Opens the database with migrations applied up to `version` only.
    pub(crate) async fn open_at(url: &str, version: usize) -> Result<Self, VaultError> {
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
        let url = if backend == Backend::Sqlite {
            prepare_sqlite_file(url)?
        } else {
            url.to_owned()
        };
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(15));
        if backend == Backend::Sqlite {
            // One writer at a time anyway; WAL lets readers go on meanwhile.
            // A connection in this process cannot have gone away: no ping
            // (a round trip to its worker thread) before every query.
            options = options.max_connections(4).test_before_acquire(false).after_connect(|conn, _| {
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
            .connect(&url)
            .await
            .map_err(|e| VaultError::Store(format!("cannot open the database: {e}")))?;
        let postgres_url = (backend == Backend::Postgres).then(|| url.clone().into());
        let store = Self {
            pool,
            backend,
            postgres_url,
        };
        store.migrate(version).await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn migrate(&self, upto: usize) -> Result<(), VaultError> {
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
        for (i, migration) in MIGRATIONS.iter().enumerate().take(upto).skip(current) {
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
}

impl std::str::FromStr for Sealed {
    type Err = VaultError;

    fn from_str(text: &str) -> Result<Self, VaultError> {
        Sealed::decode(text)
    }
}

// Sealed columns read as `Sealed`; a value that is not one fails the read.
text_column!(Sealed);
