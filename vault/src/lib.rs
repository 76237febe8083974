#![forbid(unsafe_code)]
//! airlock's token vault: connected accounts, OAuth flows, encrypted tokens,
//! refresh ahead of expiry, revocation, sandboxes and their bindings.
//!
//! The proxy reaches it only through [`airlock_vault_client::TokenSource`],
//! which [`Vault`] implements (in-process in `airlock up`) and which the
//! vault's service API serves to remote proxies.

pub mod api;
pub mod catalog;
pub mod crypto;
pub mod error;
pub mod oauth;
pub mod store;

// The vault's domains, each an `impl Vault` block over the store.
mod apps;
mod changes;
mod connections;
mod environments;
mod flows;
mod providers;
mod revoke;
mod sandboxes;
mod scope;
mod secrets;
mod status;
mod tenants;
#[cfg(test)]
mod testing;
mod tokens;

pub use apps::AppView;
pub use connections::{
    ConnectRequest, ConnectStarted, ConnectionView, MachineAccountSpec, NO_REFRESH_TOKEN_WARNING,
};
pub use flows::{
    CallbackContext, CompleteRequest, Completed, FlowOutcome, FlowTarget, FlowView,
    MAX_WAIT as MAX_FLOW_WAIT,
};
pub use sandboxes::{ConnectionPin, NewSandbox, SandboxCreated, SandboxView};
pub use scope::{valid_name, Scope};
pub use secrets::{NewSecret, SigningSettings};
pub use status::CONNECT_LINK_PATH;
pub use tenants::{Branding, TenantSettings, TenantView};

pub use tokens::{RefreshCounts, RefreshStats};

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dashmap::DashMap;

pub use catalog::{Catalog, Provider};
pub use crypto::{Kek, Keyring};
pub use error::VaultError;
use oauth::OAuth;
pub use providers::DuplicateProvider;
pub use revoke::{DisconnectStatus, Disconnected};
use store::new_id;
pub use store::{Backend, ConnectionStatus, Store};

/// The default tenant: sidecar deployments have just this one.
pub const DEFAULT_TENANT: &str = "default";
pub const DEFAULT_ENVIRONMENT: &str = "default";

#[derive(Debug, Clone)]
pub struct VaultSettings {
    /// Where browsers reach the vault: the redirect URI is `{public_url}/oauth/callback`.
    pub public_url: String,
    /// The proxy URL sandboxes get (`HTTPS_PROXY`), without credentials.
    pub proxy_url: String,
    pub placeholder_prefix: String,
    /// How long a connect link (its `state`) stays usable.
    pub state_ttl: Duration,
    /// How long a one-time connect link from a sandbox's status stays usable.
    pub connect_link_ttl: Duration,
    /// Refresh when the token has less than min(window, fraction × lifetime) left.
    pub refresh_window: Duration,
    pub refresh_fraction: f64,
    /// After a transient refresh failure, wait about this long before trying
    /// again; doubled (with jitter) for each further failure in a row...
    pub refresh_backoff: Duration,
    /// ...up to this.
    pub refresh_backoff_max: Duration,
    /// After a successful refresh, a 401 with the new token does not refresh
    /// again for this long (a sandbox cannot churn the account).
    pub refresh_cooldown: Duration,
    /// A refreshable connection whose tokens are older than this is
    /// refreshed by the background pass even when its access token is far
    /// from expiry: refresh tokens that lapse when unused stay alive.
    /// `ZERO` turns it off. A provider's own `refresh_keepalive` replaces it.
    pub keepalive_refresh: Duration,
    /// Environment variables (CA paths, NO_PROXY) every sandbox also gets.
    pub base_env: Vec<(String, String)>,
    /// How long one revocation request may take (a disconnect waits for it).
    pub revoke_timeout: Duration,
    /// After a failed revocation, retry after this long, doubling each time...
    pub revoke_retry_base: Duration,
    /// ...up to this long between attempts.
    pub revoke_retry_max: Duration,
}

impl Default for VaultSettings {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8090".into(),
            proxy_url: "http://127.0.0.1:8080".into(),
            placeholder_prefix: airlock_vault_client::DEFAULT_PREFIX.into(),
            state_ttl: Duration::from_secs(600),
            connect_link_ttl: Duration::from_secs(3600),
            refresh_window: Duration::from_secs(300),
            refresh_fraction: 0.1,
            refresh_backoff: Duration::from_secs(30),
            refresh_backoff_max: Duration::from_secs(600),
            refresh_cooldown: Duration::from_secs(60),
            keepalive_refresh: Duration::from_secs(24 * 3600),
            base_env: Vec::new(),
            revoke_timeout: Duration::from_secs(10),
            revoke_retry_base: Duration::from_secs(30),
            revoke_retry_max: Duration::from_secs(3600),
        }
    }
}

pub struct Vault {
    /// Itself, for refreshes that must finish even if their caller goes away.
    me: std::sync::Weak<Vault>,
    store: Store,
    keyring: Keyring,
    catalog: RwLock<Catalog>,
    /// The catalog as given (built in or `catalog_file`, plus the config
    /// file's `[[provider]]`s), before providers stored through the API:
    /// what a deleted stored provider falls back to.
    base_catalog: Catalog,
    /// Held while stored providers and the catalog change together, so a
    /// reload after another replica's change cannot undo a local one.
    provider_writes: tokio::sync::Mutex<()>,
    oauth: OAuth,
    settings: VaultSettings,
    /// Revoke-pending connections: when each is tried again.
    revoke_backoff: DashMap<String, revoke::RevokeRetry>,
    /// Wakes platforms long-polling a connect flow when it ends.
    flows: flows::FlowWaiters,
    /// Wakes callers waiting for another caller's refresh of a connection.
    refresh_wake: DashMap<String, Arc<tokio::sync::Notify>>,
    /// Connections whose last refreshes failed transiently.
    backoff: DashMap<String, tokens::Backoff>,
    /// When a connection's token was last probed (`probe_url`).
    probed: DashMap<String, i64>,
    /// Names this process's refresh leases.
    instance: String,
    stats: tokens::RefreshStats,
    generation: AtomicU64,
    changes: changes::Changes,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("backend", &self.store.backend())
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// `http` is the client used to reach OAuth providers. Custom providers
    /// stored through the API are loaded on top of `catalog`.
    pub async fn open(
        store: Store,
        keyring: Keyring,
        mut catalog: Catalog,
        http: reqwest::Client,
        settings: VaultSettings,
    ) -> Result<Arc<Self>, VaultError> {
        let base_catalog = catalog.clone();
        with_stored_providers(&store, &mut catalog).await?;
        let vault = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            store,
            keyring,
            catalog: RwLock::new(catalog),
            base_catalog,
            provider_writes: tokio::sync::Mutex::new(()),
            oauth: OAuth::new(http).with_revoke_timeout(settings.revoke_timeout),
            settings,
            flows: flows::FlowWaiters::default(),
            refresh_wake: DashMap::new(),
            backoff: DashMap::new(),
            revoke_backoff: DashMap::new(),
            probed: DashMap::new(),
            instance: new_id("vault"),
            stats: tokens::RefreshStats::default(),
            generation: AtomicU64::new(1),
            changes: changes::Changes::new(1),
        });
        vault.recover_unfinished_refreshes().await?;
        Ok(vault)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn settings(&self) -> &VaultSettings {
        &self.settings
    }

    pub fn redirect_uri(&self) -> String {
        format!(
            "{}/oauth/callback",
            self.settings.public_url.trim_end_matches('/')
        )
    }

    pub fn provider(&self, name: &str) -> Result<Provider, VaultError> {
        self.catalog
            .read()
            .expect("catalog lock")
            .get(name)
            .cloned()
            .ok_or_else(|| VaultError::NotFound(format!("provider {name:?}")))
    }

    pub fn providers(&self) -> Vec<Provider> {
        self.catalog
            .read()
            .expect("catalog lock")
            .all()
            .cloned()
            .collect()
    }

    /// Reads the providers stored through the API again (another replica
    /// added, changed or deleted one). The catalog is built aside and then
    /// swapped in: no lock is held while the database answers.
    pub(crate) async fn reload_providers(&self) -> Result<(), VaultError> {
        let _writing = self.provider_writes.lock().await;
        let mut catalog = self.base_catalog.clone();
        with_stored_providers(&self.store, &mut catalog).await?;
        *self.catalog.write().expect("catalog lock") = catalog;
        Ok(())
    }

    /// Adds or replaces a custom provider; kept in the database.
    pub async fn add_provider(&self, provider: Provider) -> Result<(), VaultError> {
        provider.validate()?;
        let json = serde_json::to_string(&provider).expect("provider serialises");
        let _writing = self.provider_writes.lock().await;
        self.store.upsert_provider(&provider.name, &json).await?;
        self.catalog
            .write()
            .expect("catalog lock")
            .upsert(provider)?;
        self.bump_generation();
        Ok(())
    }

    /// Re-wraps every sealed value under the current master key.
    pub async fn rotate_keys(&self) -> Result<usize, VaultError> {
        let mut rewrapped = 0;
        for cell in self.store.sealed_values().await? {
            let sealed = crypto::Sealed::decode(&cell.value)?;
            if let Some(new) = self.keyring.rewrap(&cell.kind(), &cell.key, &sealed)? {
                self.store.replace_sealed(&cell, &new).await?;
                rewrapped += 1;
            }
        }
        Ok(rewrapped)
    }
}

/// `catalog` with the providers stored through the API on top.
async fn with_stored_providers(store: &Store, catalog: &mut Catalog) -> Result<(), VaultError> {
    for stored in store.providers().await? {
        let name = stored.name;
        match serde_json::from_str::<Provider>(&stored.definition) {
            Ok(p) => catalog.upsert(p)?,
            Err(e) => {
                tracing::warn!(provider = %name, error = %e, "stored provider definition is unreadable")
            }
        }
    }
    Ok(())
}

pub fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
