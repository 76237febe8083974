//! Environments: names that keep development and production credentials
//! apart. An app is registered per environment, a connection is made in one,
//! and a sandbox resolves the connections of its own environment only.
//! `default` always exists; another exists once an app or a connection is in it.

use crate::error::VaultError;
use crate::scope::check_name;
use crate::{Vault, DEFAULT_ENVIRONMENT};

impl Vault {
    /// Every environment: `default` and those apps and connections are in.
    pub async fn environments(&self) -> Result<Vec<String>, VaultError> {
        let mut all = self.store.environments().await?;
        if !all.iter().any(|e| e == DEFAULT_ENVIRONMENT) {
            all.insert(0, DEFAULT_ENVIRONMENT.to_owned());
        }
        Ok(all)
    }

    /// Refuses a name that is not an environment, listing those there are.
    pub(crate) async fn check_environment(&self, environment: &str) -> Result<(), VaultError> {
        check_name("environment", environment)?;
        let known = self.environments().await?;
        if known.iter().any(|e| e == environment) {
            return Ok(());
        }
        Err(VaultError::Invalid(format!(
            "unknown environment {environment:?} (known: {}); an environment exists once an OAuth app \
             is registered in it (airlock app set PROVIDER --environment {environment} …) or a machine \
             account is added to it",
            known.join(", ")
        )))
    }
}
