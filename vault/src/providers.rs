//! Providers added through the admin API: deleted while nothing uses them,
//! and any provider's setup duplicated under a new name.

use airlock_vault_client::SandboxId;
use serde::Deserialize;

use crate::error::VaultError;
use crate::{Provider, Vault};

/// What a duplicate changes of its source; the rest is copied.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuplicateProvider {
    /// The new provider's name.
    pub name: String,
    /// Its sandbox variable (default: from the name, `github-work` →
    /// `GITHUB_WORK_TOKEN`), so a sandbox can hold both.
    #[serde(default)]
    pub env: Option<String>,
    /// Its label (default: none, the name is shown).
    #[serde(default)]
    pub display_name: Option<String>,
    /// Copy the source's OAuth apps (client id and secret, every tenant and
    /// environment) too.
    #[serde(default)]
    pub apps: bool,
}

impl Vault {
    /// Deletes a provider added through the API. Refused while a connection,
    /// an app or a sandbox (other than the sidecar, whose binding goes with
    /// it) uses it, naming them; refused for catalog and config-file
    /// providers, which come back at the next start. A provider stored over
    /// a catalog one of the same name gives way to the catalog's again.
    pub async fn delete_provider(&self, name: &str) -> Result<(), VaultError> {
        self.provider(name)?;
        let stored = self
            .store
            .providers()
            .await?
            .into_iter()
            .any(|p| p.name == name);
        if !stored {
            return Err(VaultError::Conflict(format!(
                "provider {name:?} is part of the catalog (built in, the catalog_file or a [[provider]] \
                 of the config file), not added through the API: only those can be deleted; \
                 remove a [[provider]] from the config file instead"
            )));
        }
        let sidecar = SandboxId::DEFAULT;
        let writing = self.provider_writes.lock().await;
        // Checked and deleted in one statement; read again for the message
        // if a user appeared in between.
        if !self.store.delete_unused_provider(name, sidecar).await? {
            let users = self.store.provider_users(name, sidecar).await?;
            return Err(in_use(name, &users));
        }
        {
            let mut catalog = self.catalog.write().expect("catalog lock");
            match self.base_catalog.get(name) {
                Some(base) => catalog.upsert(base.clone())?,
                None => catalog.remove(name),
            }
        }
        drop(writing);
        self.bump_generation();
        Ok(())
    }

    /// Copies `source`'s setup (a catalog, config-file or API provider)
    /// under a new name, kept in the database like any API provider; with
    /// `apps`, its OAuth apps too. The new provider's definition.
    pub async fn duplicate_provider(
        &self,
        source: &str,
        new: DuplicateProvider,
    ) -> Result<Provider, VaultError> {
        let mut copy = self.provider(source)?;
        if self.provider(&new.name).is_ok() {
            return Err(VaultError::Conflict(format!(
                "provider {:?} exists already: choose another name for the copy of {source:?}",
                new.name
            )));
        }
        copy.env = new.env.unwrap_or_else(|| env_for(&new.name));
        copy.name = new.name;
        copy.display_name = new.display_name;
        copy.validate()?;
        let json = serde_json::to_string(&copy).expect("provider serialises");
        let writing = self.provider_writes.lock().await;
        if !self.store.insert_provider(&copy.name, &json).await? {
            return Err(VaultError::Conflict(format!(
                "provider {:?} exists already: choose another name for the copy of {source:?}",
                copy.name
            )));
        }
        self.catalog
            .write()
            .expect("catalog lock")
            .upsert(copy.clone())?;
        drop(writing);
        self.bump_generation();
        if new.apps {
            for app in self.store.apps().await? {
                if app.provider != source {
                    continue;
                }
                let secret = app
                    .client_secret
                    .as_ref()
                    .map(|s| self.keyring.open("apps.client_secret", &app.id, s))
                    .transpose()?;
                self.set_app(
                    &app.tenant,
                    &copy.name,
                    &app.environment,
                    &app.client_id,
                    secret,
                )
                .await?;
            }
        }
        Ok(copy)
    }
}

/// The refusal naming everything that still uses provider `name`.
fn in_use(name: &str, users: &crate::store::ProviderUsers) -> VaultError {
    let mut parts = Vec::new();
    let app_fix = format!("airlock app delete {name} --tenant T --environment E");
    for (what, ids, fix) in [
        ("connection(s)", &users.connections, "airlock disconnect ID"),
        ("app(s)", &users.apps, app_fix.as_str()),
        ("sandbox(es)", &users.sandboxes, "airlock sandbox delete ID"),
    ] {
        if !ids.is_empty() {
            parts.push(format!("{} {what}: {} ({fix})", ids.len(), ids.join(", ")));
        }
    }
    if parts.is_empty() {
        // Deleted by someone else between the two reads.
        return VaultError::NotFound(format!("provider {name:?}"));
    }
    VaultError::Conflict(format!(
        "provider {name:?} is still used by {}; remove them first",
        parts.join("; ")
    ))
}

/// A sandbox variable for a provider name: `github-work` → `GITHUB_WORK_TOKEN`.
fn env_for(name: &str) -> String {
    let stem: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{stem}_TOKEN")
}

#[cfg(test)]
mod tests;
