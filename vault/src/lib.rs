#![forbid(unsafe_code)]
//! airlock's token vault: connected accounts, OAuth flows, encrypted tokens,
//! refresh ahead of expiry, revocation, sandboxes and their bindings.
//!
//! The proxy reaches it only through [`airlock_vault_client::TokenSource`],
//! which [`Vault`] implements (in-process in `airlock up`) and which the
//! vault's service API serves to remote proxies.

pub mod api;
pub mod catalog;
pub mod console;
pub mod crypto;
pub mod error;
pub mod oauth;
pub mod store;
mod tokens;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use airlock_vault_client::{generate_placeholder, HostPattern, SecretString, SwapLocation};
use dashmap::DashMap;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

pub use catalog::{Catalog, Provider};
pub use crypto::{Kek, Keyring};
pub use error::VaultError;
use oauth::{ClientCreds, OAuth};
use store::{new_id, now, BindingRow, NewConnection, SandboxRow, StateRow, TokenUpdate};
pub use store::{Backend, Store};

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
    /// Refresh when the token has less than min(window, fraction × lifetime) left.
    pub refresh_window: Duration,
    pub refresh_fraction: f64,
    /// After a transient refresh failure, wait this long before trying again.
    pub refresh_backoff: Duration,
    /// Environment variables (CA paths, NO_PROXY) every sandbox also gets.
    pub base_env: Vec<(String, String)>,
}

impl Default for VaultSettings {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8090".into(),
            proxy_url: "http://127.0.0.1:8080".into(),
            placeholder_prefix: airlock_vault_client::DEFAULT_PREFIX.into(),
            state_ttl: Duration::from_secs(600),
            refresh_window: Duration::from_secs(300),
            refresh_fraction: 0.1,
            refresh_backoff: Duration::from_secs(30),
            base_env: Vec::new(),
        }
    }
}

/// Where a connection belongs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Scope {
    Tenant,
    Workspace(String),
    User(String),
}

impl Scope {
    pub fn parse(s: &str) -> Result<Self, VaultError> {
        let bad = || {
            VaultError::Invalid(format!(
                "scope {s:?} must be tenant, workspace:NAME or user:NAME"
            ))
        };
        match s.split_once(':') {
            None if s == "tenant" => Ok(Self::Tenant),
            Some(("workspace", name)) if valid_name(name) => Ok(Self::Workspace(name.to_owned())),
            Some(("user", name)) if valid_name(name) => Ok(Self::User(name.to_owned())),
            _ => Err(bad()),
        }
    }

    fn kind_and_name(&self) -> (&str, &str) {
        match self {
            Self::Tenant => ("tenant", ""),
            Self::Workspace(n) => ("workspace", n),
            Self::User(n) => ("user", n),
        }
    }
}

impl From<Scope> for String {
    fn from(s: Scope) -> String {
        match s {
            Scope::Tenant => "tenant".into(),
            Scope::Workspace(n) => format!("workspace:{n}"),
            Scope::User(n) => format!("user:{n}"),
        }
    }
}

impl TryFrom<String> for Scope {
    type Error = VaultError;
    fn try_from(s: String) -> Result<Self, VaultError> {
        Scope::parse(&s)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

fn check_name(field: &str, value: &str) -> Result<(), VaultError> {
    if valid_name(value) {
        Ok(())
    } else {
        Err(VaultError::Invalid(format!(
            "{field} {value:?} must be 1-128 letters, digits, '-', '_', '.' or '@'"
        )))
    }
}

/// What reads of an app show: never the secret, only its last four characters.
#[derive(Debug, Clone, Serialize)]
pub struct AppView {
    pub tenant: String,
    pub provider: String,
    pub environment: String,
    pub client_id: String,
    pub client_secret: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionView {
    pub id: String,
    pub tenant: String,
    pub scope: String,
    pub provider: String,
    pub kind: String,
    pub status: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<i64>,
    pub last_error: Option<String>,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectStarted {
    pub authorization_url: String,
    pub expires_at: i64,
    pub redirect_uri: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SandboxCreated {
    pub id: String,
    /// Shown once: the vault keeps only its hash.
    pub proxy_secret: String,
    /// `http://ID:SECRET@proxy` for shared gateways.
    pub proxy_url: String,
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SandboxView {
    pub id: String,
    pub tenant: String,
    pub workspace: Option<String>,
    pub user: Option<String>,
    pub created_at: i64,
    pub bindings: Vec<(String, String)>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSandbox {
    #[serde(default = "default_tenant")]
    pub tenant: String,
    pub workspace: Option<String>,
    pub user: Option<String>,
    /// Provider names; each becomes a placeholder bound to the most specific
    /// connection the sandbox can see.
    #[serde(default)]
    pub providers: Vec<String>,
    /// Static secret names of the tenant.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// A fixed id (sidecar's "default"); generated when absent.
    #[serde(default)]
    pub id: Option<String>,
}

fn default_tenant() -> String {
    DEFAULT_TENANT.into()
}

pub struct Vault {
    store: Store,
    keyring: Keyring,
    catalog: RwLock<Catalog>,
    oauth: OAuth,
    settings: VaultSettings,
    /// One refresh per connection at a time within this process.
    refresh_locks: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// Connections whose last refresh failed transiently: not before this time.
    backoff: DashMap<String, i64>,
    generation: AtomicU64,
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
        for (name, definition) in store.providers().await? {
            match serde_json::from_str::<Provider>(&definition) {
                Ok(p) => catalog.upsert(p)?,
                Err(e) => {
                    tracing::warn!(provider = %name, error = %e, "stored provider definition is unreadable")
                }
            }
        }
        Ok(Arc::new(Self {
            store,
            keyring,
            catalog: RwLock::new(catalog),
            oauth: OAuth::new(http),
            settings,
            refresh_locks: DashMap::new(),
            backoff: DashMap::new(),
            generation: AtomicU64::new(1),
        }))
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

    fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
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

    /// Adds or replaces a custom provider; kept in the database.
    pub async fn add_provider(&self, provider: Provider) -> Result<(), VaultError> {
        provider.validate()?;
        let json = serde_json::to_string(&provider).expect("provider serialises");
        self.store.upsert_provider(&provider.name, &json).await?;
        self.catalog
            .write()
            .expect("catalog lock")
            .upsert(provider)?;
        self.bump_generation();
        Ok(())
    }

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

    pub async fn apps(&self) -> Result<Vec<AppView>, VaultError> {
        Ok(self.store.apps().await?.iter().map(app_view).collect())
    }

    async fn app_creds(
        &self,
        tenant: &str,
        provider: &str,
        environment: &str,
    ) -> Result<(String, Option<SecretString>), VaultError> {
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
        Ok((app.client_id, secret))
    }

    // ---- connect flow -------------------------------------------------------

    pub async fn start_connect(
        &self,
        tenant: &str,
        scope: &Scope,
        provider_name: &str,
        scopes: Option<Vec<String>>,
        environment: &str,
    ) -> Result<ConnectStarted, VaultError> {
        check_name("tenant", tenant)?;
        let provider = self.provider(provider_name)?;
        if provider.authorize_url.is_none() {
            return Err(VaultError::Invalid(format!(
                "provider {provider_name:?} has no authorize_url; use a machine account (client credentials)"
            )));
        }
        let scopes = scopes.unwrap_or_else(|| provider.scopes.clone());
        if let Some(bad) = scopes.iter().find(|s| s.is_empty() || s.contains(' ')) {
            return Err(VaultError::Invalid(format!(
                "scope {bad:?} is not a single OAuth scope"
            )));
        }
        let (client_id, secret) = self.app_creds(tenant, provider_name, environment).await?;
        let redirect = self.redirect_uri();
        let creds = ClientCreds {
            client_id: &client_id,
            client_secret: secret.as_ref(),
            token_url: None,
        };
        let (url, state, verifier) = self
            .oauth
            .authorize_url(&provider, &creds, &redirect, &scopes)?;
        let state_hash = sha256_hex(state.expose_secret());
        let (scope_kind, scope_name) = scope.kind_and_name();
        let expires_at = now() + self.settings.state_ttl.as_secs() as i64;
        let row = StateRow {
            tenant: tenant.to_owned(),
            scope_kind: scope_kind.to_owned(),
            scope_name: scope_name.to_owned(),
            provider: provider_name.to_owned(),
            scopes: scopes.join(" "),
            environment: environment.to_owned(),
            pkce_verifier: self
                .keyring
                .seal("oauth_states.pkce_verifier", &state_hash, &verifier),
            expires_at,
        };
        self.store.insert_state(&state_hash, &row).await?;
        Ok(ConnectStarted {
            authorization_url: url,
            expires_at,
            redirect_uri: redirect,
        })
    }

    /// Completes a connect flow from the provider's redirect. Nothing is
    /// stored unless the state is valid and the code exchange succeeds.
    pub async fn finish_connect(
        &self,
        state: &str,
        code: Option<&str>,
        error: Option<&str>,
    ) -> Result<ConnectionView, VaultError> {
        if state.is_empty() {
            return Err(VaultError::Invalid("the callback carries no state".into()));
        }
        let state_hash = sha256_hex(state);
        let row = self.store.take_state(&state_hash).await?.ok_or_else(|| {
            VaultError::Invalid("unknown or already used state: start the connection again".into())
        })?;
        if row.expires_at < now() {
            return Err(VaultError::Invalid(
                "this connect link expired: start the connection again".into(),
            ));
        }
        if let Some(error) = error {
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect();
            return Err(VaultError::OAuth(format!(
                "the provider did not grant access ({error})"
            )));
        }
        let code = code
            .filter(|c| !c.is_empty())
            .ok_or_else(|| VaultError::Invalid("the callback carries no code".into()))?;
        let provider = self.provider(&row.provider)?;
        let (client_id, secret) = self
            .app_creds(&row.tenant, &row.provider, &row.environment)
            .await?;
        let verifier = self.keyring.open(
            "oauth_states.pkce_verifier",
            &state_hash,
            &row.pkce_verifier,
        )?;
        let creds = ClientCreds {
            client_id: &client_id,
            client_secret: secret.as_ref(),
            token_url: None,
        };
        let granted = self
            .oauth
            .exchange_code(&provider, &creds, &self.redirect_uri(), code, &verifier)
            .await?;
        let scopes = granted
            .scopes
            .clone()
            .map(|s| s.join(" "))
            .unwrap_or(row.scopes.clone());
        let id = self
            .store
            .upsert_connection(&NewConnection {
                tenant: &row.tenant,
                scope_kind: &row.scope_kind,
                scope_name: &row.scope_name,
                provider: &row.provider,
                grant_kind: "authorization_code",
                scopes: &scopes,
                environment: &row.environment,
                client_id: None,
                token_url: None,
            })
            .await?;
        self.save_grant(&id, granted).await?;
        self.bump_generation();
        tracing::info!(connection = %id, provider = %row.provider, "account connected");
        self.connection(&id).await
    }

    /// Seals and stores a grant's tokens. A rotated refresh token is written
    /// in the same statement as the access token, before either is handed out.
    async fn save_grant(&self, id: &str, granted: oauth::Granted) -> Result<(), VaultError> {
        let update = self.token_update(id, &granted);
        self.store.store_tokens(id, &update).await
    }

    fn token_update(&self, id: &str, granted: &oauth::Granted) -> TokenUpdate {
        TokenUpdate {
            access_token: self
                .keyring
                .seal("connections.access_token", id, &granted.access_token),
            refresh_token: granted
                .refresh_token
                .as_ref()
                .map(|r| self.keyring.seal("connections.refresh_token", id, r)),
            expires_at: granted.expires_in.map(|d| now() + d.as_secs() as i64),
        }
    }

    /// A machine account: a tenant-wide client-credentials connection,
    /// fetched now and renewed without a user.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_machine_account(
        &self,
        tenant: &str,
        name: &str,
        provider_name: &str,
        client_id: &str,
        client_secret: SecretString,
        token_url: Option<&str>,
        scopes: Vec<String>,
    ) -> Result<ConnectionView, VaultError> {
        check_name("tenant", tenant)?;
        check_name("name", name)?;
        let provider = self.provider(provider_name)?;
        if client_id.trim().is_empty() || client_secret.expose_secret().is_empty() {
            return Err(VaultError::Invalid(
                "client_id and client_secret are required".into(),
            ));
        }
        if let Some(url) = token_url {
            let mut probe = provider.clone();
            probe.token_url = url.to_owned();
            probe.validate()?;
        }
        let creds = ClientCreds {
            client_id,
            client_secret: Some(&client_secret),
            token_url,
        };
        // Fetch first: a wrong secret or URL is reported and nothing is stored.
        let granted = self
            .oauth
            .client_credentials(&provider, &creds, &scopes)
            .await?;
        let id = self
            .store
            .upsert_connection(&NewConnection {
                tenant,
                scope_kind: "machine",
                scope_name: name,
                provider: provider_name,
                grant_kind: "client_credentials",
                scopes: &scopes.join(" "),
                environment: DEFAULT_ENVIRONMENT,
                client_id: Some(client_id),
                token_url,
            })
            .await?;
        self.store
            .set_connection_secret(
                &id,
                &self
                    .keyring
                    .seal("connections.client_secret", &id, &client_secret),
            )
            .await?;
        self.save_grant(&id, granted).await?;
        self.bump_generation();
        self.connection(&id).await
    }

    pub async fn connection(&self, id: &str) -> Result<ConnectionView, VaultError> {
        let row = self
            .store
            .connection(id)
            .await?
            .ok_or_else(|| VaultError::NotFound(format!("connection {id}")))?;
        Ok(connection_view(&row))
    }

    pub async fn connections(&self) -> Result<Vec<ConnectionView>, VaultError> {
        Ok(self
            .store
            .connections()
            .await?
            .iter()
            .map(connection_view)
            .collect())
    }

    /// Revokes the connection's tokens at the provider (RFC 7009, where the
    /// provider has a revoke URL) and deletes them. Revocation failures are
    /// reported in the result but do not keep the tokens.
    pub async fn disconnect(&self, id: &str) -> Result<serde_json::Value, VaultError> {
        let row = self
            .store
            .connection(id)
            .await?
            .ok_or_else(|| VaultError::NotFound(format!("connection {id}")))?;
        let mut revoked = Vec::new();
        let mut revoke_errors = Vec::new();
        if let Ok(provider) = self.provider(&row.provider) {
            let creds = self.connection_creds(&row).await;
            if let Ok((client_id, secret)) = &creds {
                let creds = ClientCreds {
                    client_id,
                    client_secret: secret.as_ref(),
                    token_url: row.token_url.as_deref(),
                };
                for (column, sealed, is_refresh) in [
                    ("connections.refresh_token", &row.refresh_token, true),
                    ("connections.access_token", &row.access_token, false),
                ] {
                    let Some(sealed) = sealed else { continue };
                    let Ok(token) = self.keyring.open(column, &row.id, sealed) else {
                        continue;
                    };
                    match self
                        .oauth
                        .revoke(&provider, &creds, &token, is_refresh)
                        .await
                    {
                        Ok(true) => revoked.push(if is_refresh {
                            "refresh_token"
                        } else {
                            "access_token"
                        }),
                        Ok(false) => {}
                        Err(e) => revoke_errors.push(e.to_string()),
                    }
                }
            }
        }
        self.store.delete_connection(id).await?;
        self.bump_generation();
        tracing::info!(connection = %id, provider = %row.provider, revoked = ?revoked, "account disconnected");
        Ok(serde_json::json!({ "deleted": id, "revoked": revoked, "revoke_errors": revoke_errors }))
    }

    async fn connection_creds(
        &self,
        row: &store::ConnectionRow,
    ) -> Result<(String, Option<SecretString>), VaultError> {
        match (&row.client_id, &row.client_secret) {
            (Some(id), Some(secret)) => Ok((
                id.clone(),
                Some(
                    self.keyring
                        .open("connections.client_secret", &row.id, secret)?,
                ),
            )),
            _ => {
                self.app_creds(&row.tenant, &row.provider, &row.environment)
                    .await
            }
        }
    }

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

    pub async fn secrets(&self) -> Result<Vec<serde_json::Value>, VaultError> {
        Ok(self
            .store
            .secrets()
            .await?
            .into_iter()
            .map(|s| serde_json::json!({ "tenant": s.tenant, "name": s.name, "hosts": s.hosts, "swap_in": s.swap_in }))
            .collect())
    }

    // ---- sandboxes ----------------------------------------------------------

    pub async fn create_sandbox(&self, new: NewSandbox) -> Result<SandboxCreated, VaultError> {
        check_name("tenant", &new.tenant)?;
        for (field, v) in [
            ("workspace", &new.workspace),
            ("user", &new.user),
            ("id", &new.id),
        ] {
            if let Some(v) = v {
                check_name(field, v)?;
            }
        }
        let id = new.id.clone().unwrap_or_else(|| new_id("sbx"));
        if self.store.sandbox(&id).await?.is_some() {
            return Err(VaultError::Conflict(format!("sandbox {id} already exists")));
        }
        let mut bindings = Vec::new();
        for name in &new.providers {
            let provider = self.provider(name)?;
            bindings.push(self.new_binding(&id, &provider.env, "provider", name));
        }
        for name in &new.secrets {
            if self.store.secret(&new.tenant, name).await?.is_none() {
                return Err(VaultError::NotFound(format!(
                    "secret {name:?} of tenant {}",
                    new.tenant
                )));
            }
            bindings.push(self.new_binding(&id, name, "secret", name));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = bindings.iter().find(|b| !seen.insert(b.env_name.clone())) {
            return Err(VaultError::Invalid(format!(
                "two bindings would use the variable {}",
                dup.env_name
            )));
        }
        let proxy_secret = generate_placeholder("");
        let row = SandboxRow {
            id: id.clone(),
            tenant: new.tenant.clone(),
            workspace: new.workspace.clone(),
            user_name: new.user.clone(),
            secret_hash: sha256_hex(&proxy_secret),
            created_at: now(),
        };
        self.store.insert_sandbox(&row, &bindings).await?;
        self.bump_generation();
        let proxy_url = self.proxy_url_with_credential(&id, &proxy_secret);
        let env = self.sandbox_env(&proxy_url, &bindings);
        Ok(SandboxCreated {
            id,
            proxy_secret,
            proxy_url,
            env,
        })
    }

    /// Makes sure the sidecar sandbox exists and has a placeholder for each
    /// of `providers` and `secrets`; returns its bindings as (variable, placeholder).
    pub async fn ensure_sandbox(
        &self,
        id: &str,
        providers: &[String],
        secrets: &[String],
    ) -> Result<Vec<(String, String)>, VaultError> {
        if self.store.sandbox(id).await?.is_none() {
            let row = SandboxRow {
                id: id.to_owned(),
                tenant: DEFAULT_TENANT.into(),
                workspace: None,
                user_name: None,
                secret_hash: sha256_hex(&generate_placeholder("")),
                created_at: now(),
            };
            self.store.ensure_sandbox_row(&row).await?;
        }
        let existing = self.store.bindings_of(id).await?;
        let mut missing = Vec::new();
        for (kind, names) in [("provider", providers), ("secret", secrets)] {
            for name in names {
                if existing
                    .iter()
                    .any(|b| b.target_kind == kind && &b.target == name)
                {
                    continue;
                }
                let env = if kind == "provider" {
                    self.provider(name)?.env
                } else {
                    name.clone()
                };
                if existing
                    .iter()
                    .chain(&missing)
                    .any(|b: &BindingRow| b.env_name == env)
                {
                    continue;
                }
                missing.push(self.new_binding(id, &env, kind, name));
            }
        }
        self.store.add_bindings(&missing).await?;
        self.bump_generation();
        Ok(self
            .store
            .bindings_of(id)
            .await?
            .into_iter()
            .map(|b| (b.env_name, b.placeholder))
            .collect())
    }

    fn new_binding(&self, sandbox: &str, env: &str, kind: &str, target: &str) -> BindingRow {
        BindingRow {
            placeholder: generate_placeholder(&self.settings.placeholder_prefix),
            sandbox_id: sandbox.to_owned(),
            env_name: env.to_owned(),
            target_kind: kind.to_owned(),
            target: target.to_owned(),
        }
    }

    fn proxy_url_with_credential(&self, id: &str, secret: &str) -> String {
        match self.settings.proxy_url.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{id}:{secret}@{rest}"),
            None => self.settings.proxy_url.clone(),
        }
    }

    fn sandbox_env(&self, proxy_url: &str, bindings: &[BindingRow]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> =
            ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"]
                .iter()
                .map(|k| (k.to_string(), proxy_url.to_owned()))
                .collect();
        env.extend(self.settings.base_env.iter().cloned());
        env.extend(
            bindings
                .iter()
                .map(|b| (b.env_name.clone(), b.placeholder.clone())),
        );
        env
    }

    pub async fn sandboxes(&self) -> Result<Vec<SandboxView>, VaultError> {
        let mut out = Vec::new();
        for s in self.store.sandboxes().await? {
            let bindings = self
                .store
                .bindings_of(&s.id)
                .await?
                .into_iter()
                .map(|b| (b.env_name, format!("{}:{}", b.target_kind, b.target)))
                .collect();
            out.push(SandboxView {
                id: s.id,
                tenant: s.tenant,
                workspace: s.workspace,
                user: s.user_name,
                created_at: s.created_at,
                bindings,
            });
        }
        Ok(out)
    }

    /// Deletes the sandbox and its placeholders: they stop working at once.
    pub async fn delete_sandbox(&self, id: &str) -> Result<(), VaultError> {
        if !self.store.delete_sandbox(id).await? {
            return Err(VaultError::NotFound(format!("sandbox {id}")));
        }
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

fn last4(secret: &SecretString) -> String {
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

fn app_view(app: &store::AppRow) -> AppView {
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

fn connection_view(row: &store::ConnectionRow) -> ConnectionView {
    let scope = match row.scope_kind.as_str() {
        "tenant" => "tenant".to_owned(),
        kind => format!("{kind}:{}", row.scope_name),
    };
    ConnectionView {
        id: row.id.clone(),
        tenant: row.tenant.clone(),
        scope,
        provider: row.provider.clone(),
        kind: row.grant_kind.clone(),
        status: row.status.clone(),
        scopes: row.scopes.split_whitespace().map(str::to_owned).collect(),
        expires_at: row.expires_at,
        last_error: row.last_error.clone(),
        updated_at: row.updated_at,
    }
}

pub fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
