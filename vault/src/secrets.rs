//! Static secrets kept in the vault.

use airlock_vault_client::{HostPattern, SandboxId, SecretString, SwapLocation};
use secrecy::ExposeSecret;

use crate::error::VaultError;
use crate::scope::check_name;
use crate::store::new_id;
use crate::Vault;

impl Vault {
    // ---- static secrets -----------------------------------------------------

    pub async fn add_secret(
        &self,
        tenant: &str,
        name: &str,
        value: SecretString,
        hosts: Vec<String>,
        swap_in: Option<Vec<SwapLocation>>,
    ) -> Result<serde_json::Value, VaultError> {
        check_name("tenant", tenant)?;
        if name.is_empty()
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || name.as_bytes()[0].is_ascii_digit()
        {
            return Err(VaultError::Invalid(format!(
                "secret name {name:?} must be an environment variable name"
            )));
        }
        if value.expose_secret().is_empty()
            || value.expose_secret().bytes().any(|b| b.is_ascii_control())
        {
            return Err(VaultError::Invalid(
                "the secret value is empty or holds control characters".into(),
            ));
        }
        if hosts.is_empty() {
            return Err(VaultError::Invalid(
                "hosts is empty: the secret could never be sent anywhere".into(),
            ));
        }
        for h in &hosts {
            HostPattern::parse(h).map_err(|e| VaultError::Invalid(e.to_string()))?;
        }
        let swap_in: Vec<String> = swap_in
            .unwrap_or_else(|| SwapLocation::defaults().into_iter().collect())
            .into_iter()
            .map(|l| l.as_str().to_owned())
            .collect();
        let existing = self.store.secret(tenant, name).await?;
        let id = existing.map_or_else(|| new_id("sec"), |s| s.id);
        let sealed = self.keyring.seal("secrets.value", &id, &value);
        self.store
            .upsert_secret(&id, tenant, name, &sealed, &hosts, &swap_in)
            .await?;
        self.bump_generation();
        Ok(
            serde_json::json!({ "tenant": tenant, "name": name, "hosts": hosts, "swap_in": swap_in }),
        )
    }

    /// Deletes a tenant's static secret. Refused while a sandbox holds a
    /// placeholder for it; the sidecar sandbox (`airlock up`'s own, which
    /// gets every default-tenant secret) loses its placeholder with it.
    pub async fn delete_secret(&self, tenant: &str, name: &str) -> Result<(), VaultError> {
        check_name("tenant", tenant)?;
        if self.store.secret(tenant, name).await?.is_none() {
            return Err(VaultError::NotFound(format!(
                "secret {name:?} of tenant {tenant}"
            )));
        }
        let sidecar = SandboxId::DEFAULT;
        let users: Vec<String> = self
            .store
            .sandboxes_with_secret(tenant, name)
            .await?
            .into_iter()
            .filter(|id| id != sidecar)
            .collect();
        if !users.is_empty() {
            return Err(VaultError::Conflict(format!(
                "secret {name:?} is still bound to {} sandbox(es): {}; delete them first (airlock sandbox delete ID)",
                users.len(),
                users.join(", ")
            )));
        }
        self.store.delete_secret(tenant, name, sidecar).await?;
        self.bump_generation();
        Ok(())
    }

    pub async fn secrets(&self) -> Result<Vec<serde_json::Value>, VaultError> {
        Ok(self
            .store
            .secrets()
            .await?
            .into_iter()
            .map(|s| serde_json::json!({ "tenant": s.tenant, "name": s.name, "hosts": s.hosts, "swap_in": s.swap_in }))
            .collect())
    }
}
