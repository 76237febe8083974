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
    /// a connection refreshes or revokes with it: those whose grant it
    /// issued (and, for connections from before that was recorded, the
    /// tenant's own and, for the default tenant's app, those of tenants
    /// without an app of their own).
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
        for (id, owner, issuer) in self.store.app_connections(provider, environment).await? {
            let uses = if let Some(issuer) = issuer {
                issuer == tenant
            } else if owner == tenant {
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

    /// The app a new connect of `tenant` uses: its own, else the default
    /// tenant's when the tenant allows that (`use_default_apps`), else a
    /// refusal naming both ways out. Also says whose app it is.
    pub(crate) async fn resolve_app(
        &self,
        tenant: &str,
        provider: &str,
        environment: &str,
    ) -> Result<(String, AppCredentials), VaultError> {
        if let Some(app) = self.store.app(tenant, provider, environment).await? {
            return Ok((tenant.to_owned(), self.open_app(app)?));
        }
        if tenant == DEFAULT_TENANT || !self.uses_default_apps(tenant).await? {
            return Err(no_app(tenant, provider, environment));
        }
        match self
            .store
            .app(DEFAULT_TENANT, provider, environment)
            .await?
        {
            Some(app) => Ok((DEFAULT_TENANT.to_owned(), self.open_app(app)?)),
            None => Err(no_app(tenant, provider, environment)),
        }
    }

    /// The credentials of the app a new connect of `tenant` uses.
    #[cfg(test)]
    pub(crate) async fn app_creds(
        &self,
        tenant: &str,
        provider: &str,
        environment: &str,
    ) -> Result<AppCredentials, VaultError> {
        Ok(self.resolve_app(tenant, provider, environment).await?.1)
    }

    /// The app of `app_tenant` that issued a grant: refresh, revoke and the
    /// code exchange must use the client the grant belongs to, whatever the
    /// tenant registered since.
    pub(crate) async fn issuing_app(
        &self,
        app_tenant: &str,
        provider: &str,
        environment: &str,
    ) -> Result<AppCredentials, VaultError> {
        let app = self
            .store
            .app(app_tenant, provider, environment)
            .await?
            .ok_or_else(|| {
                VaultError::Invalid(format!(
                    "the OAuth app of tenant {app_tenant} for provider {provider:?} (environment {environment}) \
                     that issued this grant is gone; register it again (airlock app set) or reconnect"
                ))
            })?;
        self.open_app(app)
    }

    /// Whose app served a grant recorded before white-label: the tenant's
    /// own if it has one, else the default tenant's (the fallback of then).
    pub(crate) async fn legacy_app_tenant(
        &self,
        tenant: &str,
        provider: &str,
        environment: &str,
    ) -> Result<String, VaultError> {
        Ok(
            if self
                .store
                .app(tenant, provider, environment)
                .await?
                .is_some()
            {
                tenant.to_owned()
            } else {
                DEFAULT_TENANT.to_owned()
            },
        )
    }

    fn open_app(&self, app: store::AppRow) -> Result<AppCredentials, VaultError> {
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

fn no_app(tenant: &str, provider: &str, environment: &str) -> VaultError {
    if tenant == DEFAULT_TENANT {
        return VaultError::Invalid(format!(
            "no OAuth app is registered for provider {provider:?} (environment {environment}); add one first (airlock app set)"
        ));
    }
    VaultError::Invalid(format!(
        "tenant {tenant} has no OAuth app for provider {provider:?} (environment {environment}): register its own \
         (airlock app set --tenant {tenant}, or PUT /v1/apps with tenant), or let it use the default tenant's apps \
         (PUT /v1/tenants/{tenant} with use_default_apps: true)"
    ))
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
