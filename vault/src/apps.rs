//! OAuth apps: a tenant's client id and (sealed) secret per provider and environment.

use airlock_vault_client::SecretString;
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::error::VaultError;
use crate::oauth::ClientCreds;
use crate::scope::check_name;
use crate::store::{self, new_id};
use crate::{Vault, DEFAULT_TENANT};

/// What reads of an app show: never the secret, only its last four characters.
#[derive(Debug, Clone, Serialize)]
pub struct AppView {
    pub tenant: String,
    pub provider: String,
    pub environment: String,
    pub client_id: String,
    pub client_secret: Option<String>,
}

impl Vault {
    // ---- OAuth apps ---------------------------------------------------------

    pub async fn set_app(
        &self,
        tenant: &str,
        provider: &str,
        environment: &str,
        client_id: &str,
        client_secret: Option<SecretString>,
    ) -> Result<AppView, VaultError> {
        check_name("tenant", tenant)?;
        check_name("environment", environment)?;
        self.provider(provider)?;
        if client_id.trim().is_empty() || client_id.len() > 512 {
            return Err(VaultError::Invalid(
                "client_id is required (at most 512 characters)".into(),
            ));
        }
        let existing = self.store.app(tenant, provider, environment).await?;
        let id = existing
            .as_ref()
            .map_or_else(|| new_id("app"), |a| a.id.clone());
        let sealed = match &client_secret {
            Some(s) if s.expose_secret().is_empty() => {
                return Err(VaultError::Invalid(
                    "client_secret may not be empty (omit it to keep the stored one)".into(),
                ))
            }
            Some(s) => Some((self.keyring.seal("apps.client_secret", &id, s), last4(s))),
            None => None,
        };
        self.store
            .upsert_app(
                &id,
                tenant,
                provider,
                environment,
                client_id,
                sealed.as_ref().map(|(s, l)| (s, l.as_str())),
            )
            .await?;
        self.bump_generation();
        let app = self
            .store
            .app(tenant, provider, environment)
            .await?
            .ok_or_else(|| VaultError::NotFound("app".into()))?;
        Ok(app_view(&app))
    }

    /// Deletes a tenant's app for `provider` in `environment`. Refused while
    /// a connection refreshes or revokes with it: the tenant's own
    /// connections, and for the default tenant's app also those of tenants
    /// without an app of their own (they fall back to it).
    pub async fn delete_app(
        &self,
        tenant: &str,
        provider: &str,
        environment: &str,
    ) -> Result<(), VaultError> {
        check_name("tenant", tenant)?;
        check_name("environment", environment)?;
        let what =
            format!("app for provider {provider:?} (tenant {tenant}, environment {environment})");
        if self
            .store
            .app(tenant, provider, environment)
            .await?
            .is_none()
        {
            return Err(VaultError::NotFound(what));
        }
        let mut users = Vec::new();
        // Whether each other tenant falls back to this app, asked once per tenant.
        let mut falls_back = std::collections::HashMap::new();
        for (id, owner) in self.store.app_connections(provider, environment).await? {
            let uses = if owner == tenant {
                true
            } else if tenant != DEFAULT_TENANT {
                false
            } else if let Some(&known) = falls_back.get(&owner) {
                known
            } else {
                let own = self.store.app(&owner, provider, environment).await?;
                *falls_back.entry(owner).or_insert(own.is_none())
            };
            if uses {
                users.push(id);
            }
        }
        if !users.is_empty() {
            return Err(VaultError::Conflict(format!(
                "the {what} is still used by {} connection(s): {}; disconnect them first (airlock disconnect ID)",
                users.len(),
                users.join(", ")
            )));
        }
        self.store.delete_app(tenant, provider, environment).await?;
        self.bump_generation();
        Ok(())
    }

    pub async fn apps(&self) -> Result<Vec<AppView>, VaultError> {
        Ok(self.store.apps().await?.iter().map(app_view).collect())
    }

    pub(crate) async fn app_creds(
        &self,
        tenant: &str,
        provider: &str,
        environment: &str,
    ) -> Result<AppCredentials, VaultError> {
        let app = match self.store.app(tenant, provider, environment).await? {
            Some(app) => app,
            // A tenant without its own app uses the default tenant's (white-label is opt-in).
            None => self
                .store
                .app(DEFAULT_TENANT, provider, environment)
                .await?
                .ok_or_else(|| VaultError::Invalid(format!("no OAuth app is registered for provider {provider:?}; add one first (airlock app set)")))?,
        };
        let secret = app
            .client_secret
            .as_ref()
            .map(|s| self.keyring.open("apps.client_secret", &app.id, s))
            .transpose()?;
        Ok(AppCredentials {
            client_id: app.client_id,
            client_secret: secret,
        })
    }
}

/// An app's (or a machine account's) client id and opened secret.
pub(crate) struct AppCredentials {
    pub client_id: String,
    pub client_secret: Option<SecretString>,
}

impl AppCredentials {
    /// Borrowed for one exchange; `token_url` overrides the provider's.
    pub fn for_exchange<'a>(&'a self, token_url: Option<&'a str>) -> ClientCreds<'a> {
        ClientCreds {
            client_id: &self.client_id,
            client_secret: self.client_secret.as_ref(),
            token_url,
        }
    }
}

pub(crate) fn last4(secret: &SecretString) -> String {
    let s = secret.expose_secret();
    let tail: String = s
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    // Short secrets show nothing: four of five characters would be most of it.
    if s.chars().count() >= 12 {
        tail
    } else {
        String::new()
    }
}

pub(crate) fn app_view(app: &store::AppRow) -> AppView {
    AppView {
        tenant: app.tenant.clone(),
        provider: app.provider.clone(),
        environment: app.environment.clone(),
        client_id: app.client_id.clone(),
        client_secret: app
            .client_secret
            .as_ref()
            .map(|_| format!("••••{}", app.secret_last4.clone().unwrap_or_default())),
    }
}
