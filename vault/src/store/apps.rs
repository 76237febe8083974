//! Provider definitions and OAuth apps (one per tenant, provider, environment).

use super::{now, Store};
use crate::crypto::Sealed;
use crate::error::VaultError;

/// A custom provider as stored: its name and JSON definition.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProviderRow {
    pub name: String,
    pub definition: String,
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
