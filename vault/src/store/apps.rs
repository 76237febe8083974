//! Provider definitions and OAuth apps (one per tenant, provider, environment).

use sqlx::Row;

use super::{now, Store};
use crate::crypto::Sealed;
use crate::error::VaultError;

/// A custom provider as stored: its name and JSON definition.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProviderRow {
    pub name: String,
    pub definition: String,
}

/// What still uses a provider, each by id (apps as `tenant/environment`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderUsers {
    pub connections: Vec<String>,
    pub apps: Vec<String>,
    pub sandboxes: Vec<String>,
}

impl ProviderUsers {
    pub fn is_empty(&self) -> bool {
        self.connections.is_empty() && self.apps.is_empty() && self.sandboxes.is_empty()
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
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

impl Store {
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

    pub async fn providers(&self) -> Result<Vec<ProviderRow>, VaultError> {
        Ok(
            sqlx::query_as::<_, ProviderRow>(
                "SELECT name, definition FROM providers ORDER BY name",
            )
            .fetch_all(&self.pool)
            .await?,
        )
    }

    /// Stores a new provider definition; `false` when one of that name is
    /// stored already (nothing written).
    pub async fn insert_provider(&self, name: &str, definition: &str) -> Result<bool, VaultError> {
        let done = sqlx::query(
            "INSERT INTO providers (name, definition, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(definition)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// What still uses provider `name`: its connections (machine accounts
    /// included, any status), its apps, and the sandboxes bound to it other
    /// than `except` (the sidecar, whose binding goes with the provider).
    pub async fn provider_users(
        &self,
        name: &str,
        except: &str,
    ) -> Result<ProviderUsers, VaultError> {
        let column = |rows: Vec<sqlx::any::AnyRow>| {
            rows.iter()
                .map(|r| Ok(r.try_get::<String, _>(0)?))
                .collect::<Result<Vec<String>, VaultError>>()
        };
        let connections = sqlx::query("SELECT id FROM connections WHERE provider = $1 ORDER BY id")
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        let apps = sqlx::query(
            "SELECT tenant || '/' || environment FROM apps WHERE provider = $1 \
             ORDER BY tenant, environment",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        let sandboxes = sqlx::query(
            "SELECT DISTINCT sandbox_id FROM bindings WHERE target_kind = 'provider' \
             AND target = $1 AND sandbox_id <> $2 ORDER BY sandbox_id",
        )
        .bind(name)
        .bind(except)
        .fetch_all(&self.pool)
        .await?;
        Ok(ProviderUsers {
            connections: column(connections)?,
            apps: column(apps)?,
            sandboxes: column(sandboxes)?,
        })
    }

    /// Deletes the stored provider `name`, and `sidecar`'s binding to it,
    /// only while nothing else uses it (one statement, so a connection, app
    /// or sandbox added meanwhile keeps it); whether it was deleted.
    pub async fn delete_unused_provider(
        &self,
        name: &str,
        sidecar: &str,
    ) -> Result<bool, VaultError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "DELETE FROM providers WHERE name = $1 \
             AND NOT EXISTS (SELECT 1 FROM connections WHERE provider = $1) \
             AND NOT EXISTS (SELECT 1 FROM apps WHERE provider = $1) \
             AND NOT EXISTS (SELECT 1 FROM bindings WHERE target_kind = 'provider' \
                             AND target = $1 AND sandbox_id <> $2)",
        )
        .bind(name)
        .bind(sidecar)
        .execute(&mut *tx)
        .await?;
        let deleted = done.rows_affected() > 0;
        if deleted {
            sqlx::query(
                "DELETE FROM bindings WHERE sandbox_id = $1 AND target_kind = 'provider' AND target = $2",
            )
            .bind(sidecar)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(deleted)
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
        Ok(sqlx::query_as::<_, AppRow>(
            "SELECT * FROM apps WHERE tenant = $1 AND provider = $2 AND environment = $3",
        )
        .bind(tenant)
        .bind(provider)
        .bind(environment)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Whether a row was deleted.
    pub async fn delete_app(
        &self,
        tenant: &str,
        provider: &str,
        environment: &str,
    ) -> Result<bool, VaultError> {
        let done = sqlx::query(
            "DELETE FROM apps WHERE tenant = $1 AND provider = $2 AND environment = $3",
        )
        .bind(tenant)
        .bind(provider)
        .bind(environment)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Connections of `provider` in `environment` that refresh and revoke
    /// with an app (machine accounts carry their own client): (id, tenant,
    /// the tenant whose app issued the grant, when recorded).
    pub async fn app_connections(
        &self,
        provider: &str,
        environment: &str,
    ) -> Result<Vec<(String, String, Option<String>)>, VaultError> {
        let rows = sqlx::query(
            "SELECT id, tenant, app_tenant FROM connections WHERE provider = $1 AND environment = $2 \
             AND client_id IS NULL ORDER BY id",
        )
        .bind(provider)
        .bind(environment)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("tenant")?,
                    r.try_get("app_tenant")?,
                ))
            })
            .collect()
    }

    pub async fn apps(&self) -> Result<Vec<AppRow>, VaultError> {
        Ok(
            sqlx::query_as::<_, AppRow>(
                "SELECT * FROM apps ORDER BY tenant, provider, environment",
            )
            .fetch_all(&self.pool)
            .await?,
        )
    }
}
