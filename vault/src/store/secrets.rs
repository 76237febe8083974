//! Static secrets kept in the vault, with the hosts that may receive them.

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use airlock_vault_client::SecretKind;

use super::{now, BindingRow, Store};
use crate::crypto::Sealed;
use crate::error::VaultError;

#[derive(Debug, Clone)]
pub struct SecretRow {
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// The token; for `aws_sigv4`, the access key id (sealed `secrets.value`).
    pub value: Sealed,
    pub hosts: Vec<String>,
    pub swap_in: Vec<String>,
    pub kind: SecretKind,
    /// JSON of the signing settings that are no secret
    /// ([`crate::secrets::SigningSettings`]); `None` for `static`.
    pub signing: Option<String>,
    /// `aws_sigv4`: sealed `secrets.secret_access_key`.
    pub secret_access_key: Option<Sealed>,
    /// `aws_sigv4` with temporary credentials: sealed `secrets.session_token`.
    pub session_token: Option<Sealed>,
}

fn secret_from(row: &AnyRow) -> Result<SecretRow, VaultError> {
    let hosts: String = row.try_get("hosts")?;
    let swap_in: String = row.try_get("swap_in")?;
    let kind: String = row.try_get("kind")?;
    Ok(SecretRow {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        name: row.try_get("name")?,
        value: row.try_get("value")?,
        hosts: serde_json::from_str(&hosts).unwrap_or_default(),
        swap_in: serde_json::from_str(&swap_in).unwrap_or_default(),
        // A kind this vault does not know (a newer one's) is never served
        // as a plain token.
        kind: SecretKind::parse(&kind).ok_or_else(|| {
            VaultError::Store(format!("secret kind {kind:?} is not one this vault knows"))
        })?,
        signing: row.try_get("signing")?,
        secret_access_key: row.try_get("secret_access_key")?,
        session_token: row.try_get("session_token")?,
    })
}

impl Store {
    // ---- static secrets ----------------------------------------------------

    /// Writes the secret, replacing every field of one of the same tenant and name.
    pub async fn upsert_secret(&self, s: &SecretRow) -> Result<(), VaultError> {
        sqlx::query(
            "INSERT INTO secrets (id, tenant, name, value, hosts, swap_in, created_at, kind, signing, secret_access_key, session_token) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (tenant, name) DO UPDATE SET value = excluded.value, hosts = excluded.hosts, swap_in = excluded.swap_in, \
             kind = excluded.kind, signing = excluded.signing, secret_access_key = excluded.secret_access_key, \
             session_token = excluded.session_token",
        )
        .bind(&s.id)
        .bind(&s.tenant)
        .bind(&s.name)
        .bind(s.value.encode())
        .bind(serde_json::to_string(&s.hosts).expect("strings serialise"))
        .bind(serde_json::to_string(&s.swap_in).expect("strings serialise"))
        .bind(now())
        .bind(s.kind.as_str())
        .bind(s.signing.as_deref())
        .bind(s.secret_access_key.as_ref().map(Sealed::encode))
        .bind(s.session_token.as_ref().map(Sealed::encode))
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

    /// Every secret `sandbox_id` holds a placeholder for, with its binding:
    /// one query for what would be three a binding. A secret this vault
    /// cannot read (a newer one's kind) comes as its own error, so a caller
    /// may skip it and keep the rest.
    pub async fn secrets_bound_to(
        &self,
        sandbox_id: &str,
    ) -> Result<Vec<(BindingRow, Result<SecretRow, VaultError>)>, VaultError> {
        // Columns named one by one: the two tables must not shadow each other.
        let rows = sqlx::query(
            "SELECT b.placeholder, b.sandbox_id, b.env_name, b.target_kind, b.target, b.rules, \
             b.connection_name, s.id, s.tenant, s.name, s.value, s.hosts, s.swap_in, s.kind, \
             s.signing, s.secret_access_key, s.session_token FROM bindings b \
             JOIN sandboxes x ON x.id = b.sandbox_id \
             JOIN secrets s ON s.tenant = x.tenant AND s.name = b.target \
             WHERE b.sandbox_id = $1 AND b.target_kind = 'secret' ORDER BY b.env_name",
        )
        .bind(sandbox_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((BindingRow::from_row(r)?, secret_from(r))))
            .collect()
    }

    /// Sandboxes of `tenant` holding a placeholder for the secret `name`.
    pub async fn sandboxes_with_secret(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<String>, VaultError> {
        let rows = sqlx::query(
            "SELECT b.sandbox_id FROM bindings b JOIN sandboxes s ON s.id = b.sandbox_id \
             WHERE b.target_kind = 'secret' AND b.target = $1 AND s.tenant = $2 ORDER BY b.sandbox_id",
        )
        .bind(name)
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("sandbox_id")?)).collect()
    }

    /// Deletes the secret and `sandbox`'s placeholder for it; whether it existed.
    pub async fn delete_secret(
        &self,
        tenant: &str,
        name: &str,
        sandbox: &str,
    ) -> Result<bool, VaultError> {
        let done = sqlx::query("DELETE FROM secrets WHERE tenant = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "DELETE FROM bindings WHERE sandbox_id = $1 AND target_kind = 'secret' AND target = $2",
        )
        .bind(sandbox)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn secrets(&self) -> Result<Vec<SecretRow>, VaultError> {
        sqlx::query("SELECT * FROM secrets ORDER BY tenant, name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(secret_from)
            .collect()
    }
}
