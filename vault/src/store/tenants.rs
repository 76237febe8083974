//! A tenant's white-label settings: branding, its own OAuth redirect URI and
//! whether it may use the default tenant's OAuth apps.

use super::{now, Store};
use crate::error::VaultError;

#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct TenantRow {
    pub tenant: String,
    pub display_name: Option<String>,
    pub accent_color: Option<String>,
    pub logo_url: Option<String>,
    pub support_url: Option<String>,
    pub return_url: Option<String>,
    pub redirect_uri: Option<String>,
    /// 1: connects of this tenant may use the default tenant's app.
    pub use_default_apps: i64,
    pub updated_at: i64,
}

impl Store {
    // ---- tenant settings ---------------------------------------------------

    pub async fn upsert_tenant(&self, t: &TenantRow) -> Result<(), VaultError> {
        sqlx::query(
            "INSERT INTO tenant_settings (tenant, display_name, accent_color, logo_url, support_url, return_url, \
             redirect_uri, use_default_apps, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (tenant) DO UPDATE SET display_name = excluded.display_name, \
             accent_color = excluded.accent_color, logo_url = excluded.logo_url, \
             support_url = excluded.support_url, return_url = excluded.return_url, \
             redirect_uri = excluded.redirect_uri, use_default_apps = excluded.use_default_apps, \
             updated_at = excluded.updated_at",
        )
        .bind(&t.tenant)
        .bind(&t.display_name)
        .bind(&t.accent_color)
        .bind(&t.logo_url)
        .bind(&t.support_url)
        .bind(&t.return_url)
        .bind(&t.redirect_uri)
        .bind(t.use_default_apps)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn tenant(&self, tenant: &str) -> Result<Option<TenantRow>, VaultError> {
        Ok(
            sqlx::query_as::<_, TenantRow>("SELECT * FROM tenant_settings WHERE tenant = $1")
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn tenants(&self) -> Result<Vec<TenantRow>, VaultError> {
        Ok(
            sqlx::query_as::<_, TenantRow>("SELECT * FROM tenant_settings ORDER BY tenant")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Whether a row was deleted.
    pub async fn delete_tenant(&self, tenant: &str) -> Result<bool, VaultError> {
        let done = sqlx::query("DELETE FROM tenant_settings WHERE tenant = $1")
            .bind(tenant)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
