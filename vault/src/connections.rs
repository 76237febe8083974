//! Connections: the browser connect flow, machine accounts, and what reads show of them.

use airlock_vault_client::SecretString;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::apps::AppCredentials;
use crate::error::VaultError;
use crate::flows::FlowOrigin;
use crate::oauth::{self, AuthorizeLink, ClientCreds};
use crate::scope::check_name;
use crate::store::{
    self, duplicate_name, now, ConnectionStatus, GrantKind, NewConnection, ScopeKind, StateRow,
    TokenUpdate,
};
use crate::{sha256_hex, Provider, Scope, Vault, DEFAULT_ENVIRONMENT};

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionView {
    pub id: String,
    pub tenant: String,
    pub environment: String,
    pub scope: String,
    pub provider: String,
    /// Its name, when it has one (a machine account's is its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its own variable name for sandboxes, when not the provider's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
    /// Its own hosts, when not the provider's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    pub kind: GrantKind,
    pub status: ConnectionStatus,
    pub scopes: Vec<String>,
    pub expires_at: Option<i64>,
    /// When its token was last refreshed (Unix seconds); `None`: never.
    pub refreshed_at: Option<i64>,
    pub last_error: Option<String>,
    pub updated_at: i64,
    /// What the operator should know about this connection (e.g. no refresh token).
    pub warnings: Vec<String>,
}

/// Said of a user connection the provider gave no refresh token.
pub const NO_REFRESH_TOKEN_WARNING: &str =
    "no refresh token: this account must be reconnected when the token expires; \
     the provider may need prompt=consent / access_type=offline";

/// What a connect flow is for: an owner's account at a provider, in an
/// environment, optionally under a name (`airlock connect github --name work`).
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    pub tenant: String,
    pub scope: Scope,
    pub provider: String,
    /// Scopes to ask for; `None`: the provider's.
    pub scopes: Option<Vec<String>>,
    pub environment: String,
    /// `None`: the owner's unnamed connection.
    pub name: Option<String>,
}

/// A machine account in one call (`POST /v1/machine-accounts`): OAuth client
/// credentials, the variable sandboxes get and the hosts it is sent to. With
/// `provider`, the provider's token URL, variable and hosts are the defaults;
/// without, `token_url`, `expose_as_env` and `hosts` are required and a
/// provider of the account's name is made from them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineAccountSpec {
    #[serde(default = "crate::sandboxes::default_tenant")]
    pub tenant: String,
    #[serde(default = "default_environment")]
    pub environment: String,
    pub name: String,
    #[serde(default)]
    pub provider: Option<String>,
    pub client_id: String,
    pub client_secret: SecretString,
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The sandbox's variable for it (default: the provider's `env`).
    #[serde(default)]
    pub expose_as_env: Option<String>,
    /// Where its token may go (default: the provider's hosts).
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
}

fn default_environment() -> String {
    DEFAULT_ENVIRONMENT.into()
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectStarted {
    /// The flow's id: `GET /v1/connect-flows/{id}` follows it.
    pub id: String,
    pub authorization_url: String,
    pub expires_at: i64,
    pub redirect_uri: String,
}

impl Vault {
    // ---- connect flow -------------------------------------------------------

    pub async fn start_connect(
        &self,
        tenant: &str,
        scope: &Scope,
        provider_name: &str,
        scopes: Option<Vec<String>>,
        environment: &str,
    ) -> Result<ConnectStarted, VaultError> {
        self.start_connect_request(&ConnectRequest {
            tenant: tenant.to_owned(),
            scope: scope.clone(),
            provider: provider_name.to_owned(),
            scopes,
            environment: environment.to_owned(),
            name: None,
        })
        .await
    }

    /// Starts a connect flow for `request` (with its environment and name).
    pub async fn start_connect_request(
        &self,
        request: &ConnectRequest,
    ) -> Result<ConnectStarted, VaultError> {
        self.start_connect_from(request, FlowOrigin::default())
            .await
    }

    /// [`Self::start_connect_request`] whose browser returns to `return_to`
    /// after a successful callback (on the tenant's `return_url` origin).
    pub async fn start_connect_returning(
        &self,
        request: &ConnectRequest,
        return_to: Option<&str>,
    ) -> Result<ConnectStarted, VaultError> {
        self.start_connect_from(
            request,
            FlowOrigin {
                return_to: return_to.map(str::to_owned),
                ..FlowOrigin::default()
            },
        )
        .await
    }

    /// [`Self::start_connect_request`], from where `origin` says: completing
    /// a flow started from a connect link uses that link up.
    pub(crate) async fn start_connect_from(
        &self,
        request: &ConnectRequest,
        origin: FlowOrigin,
    ) -> Result<ConnectStarted, VaultError> {
        let ConnectRequest {
            tenant,
            scope,
            provider: provider_name,
            environment,
            ..
        } = request;
        check_name("tenant", tenant)?;
        let provider = self.provider(provider_name)?;
        if provider.authorize_url.is_none() {
            return Err(VaultError::Invalid(format!(
                "provider {provider_name:?} has no authorize_url; use a machine account (client credentials)"
            )));
        }
        self.check_environment(environment).await?;
        let (scope_kind, scope_name) = scope.kind_and_name();
        let name = request.name.clone().unwrap_or_default();
        if !name.is_empty() {
            check_name("name", &name)?;
            self.check_name_free(
                tenant,
                environment,
                provider_name,
                &name,
                scope_kind,
                scope_name,
            )
            .await?;
        }
        let scopes = request
            .scopes
            .clone()
            .unwrap_or_else(|| provider.scopes.clone());
        if let Some(bad) = scopes.iter().find(|s| s.is_empty() || s.contains(' ')) {
            return Err(VaultError::Invalid(format!(
                "scope {bad:?} is not a single OAuth scope"
            )));
        }
        let return_to = match origin.return_to.as_deref() {
            Some(r) => Some(self.check_return_to(tenant, r).await?),
            None => None,
        };
        let (app_tenant, app) = self.resolve_app(tenant, provider_name, environment).await?;
        // The tenant's own callback origin when it has one (white-label).
        let redirect = self.redirect_uri_for(tenant).await?;
        let AuthorizeLink {
            url,
            state,
            pkce_verifier: verifier,
        } = if provider.is_oauth1() {
            self.oauth1_authorize_link(&provider, &app, &redirect)
                .await?
        } else {
            self.oauth
                .authorize_url(&provider, &app.for_exchange(None), &redirect, &scopes)?
        };
        let state_hash = sha256_hex(state.expose_secret());
        let expires_at = now() + self.settings.state_ttl.as_secs() as i64;
        let row = StateRow {
            tenant: tenant.to_owned(),
            scope_kind,
            scope_name: scope_name.to_owned(),
            provider: provider_name.to_owned(),
            scopes: scopes.join(" "),
            environment: environment.to_owned(),
            pkce_verifier: self
                .keyring
                .seal("oauth_states.pkce_verifier", &state_hash, &verifier),
            expires_at,
            connect_link: origin.link,
            name,
            redirect_uri: Some(redirect.clone()),
            app_tenant: Some(app_tenant),
            return_to,
        };
        self.store.insert_state(&state_hash, &row).await?;
        let id = self.record_flow(&state_hash, &row, origin.sandbox).await?;
        Ok(ConnectStarted {
            id,
            authorization_url: url,
            expires_at,
            redirect_uri: redirect,
        })
    }

    /// OAuth 1.0a: asks the provider for a request token whose callback is
    /// airlock's, carrying a fresh `state`; the user is sent to authorize it.
    /// The request token and its secret are what the flow keeps (sealed,
    /// bound to the state, in place of a PKCE verifier).
    async fn oauth1_authorize_link(
        &self,
        provider: &Provider,
        app: &AppCredentials,
        redirect: &str,
    ) -> Result<AuthorizeLink, VaultError> {
        let state = airlock_vault_client::generate_placeholder("");
        let mut callback = url::Url::parse(redirect)
            .map_err(|e| VaultError::Config(format!("public_url gives no callback URL: {e}")))?;
        callback.query_pairs_mut().append_pair("state", &state);
        let request = self
            .oauth
            .oauth1_request_token(provider, &app.for_exchange(None), callback.as_str())
            .await?;
        let authorize = provider.authorize_url.as_deref().unwrap_or_default();
        let mut url = url::Url::parse(authorize)
            .map_err(|e| VaultError::Config(format!("authorize_url {authorize:?}: {e}")))?;
        url.query_pairs_mut()
            .append_pair("oauth_token", request.token.expose_secret());
        Ok(AuthorizeLink {
            url: url.to_string(),
            state: SecretString::from(state),
            pkce_verifier: request.to_secret(),
        })
    }

    /// Refuses `name` when another owner's connection of `provider` in the
    /// tenant's environment has it (the same owner reconnects it).
    async fn check_name_free(
        &self,
        tenant: &str,
        environment: &str,
        provider: &str,
        name: &str,
        scope_kind: ScopeKind,
        scope_name: &str,
    ) -> Result<(), VaultError> {
        match self
            .store
            .named_connection(tenant, environment, provider, name)
            .await?
        {
            Some(other)
                if (other.scope_kind, other.scope_name.as_str()) != (scope_kind, scope_name) =>
            {
                Err(VaultError::Conflict(format!(
                    "{} (connection {}, {})",
                    duplicate_name(provider, name, environment),
                    other.id,
                    connection_view(&other).scope
                )))
            }
            _ => Ok(()),
        }
    }

    /// Completes a connect flow from the provider's redirect. Nothing is
    /// stored unless the state is valid and the code exchange succeeds.
    pub async fn finish_connect(
        &self,
        state: &str,
        code: Option<&str>,
        error: Option<&str>,
        error_description: Option<&str>,
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
            return Err(VaultError::ConsentDenied {
                provider: row.provider.clone(),
                answer: crate::error::OAuthAnswer::new(error, error_description),
            });
        }
        let code = code
            .filter(|c| !c.is_empty())
            .ok_or_else(|| VaultError::Invalid("the callback carries no code".into()))?;
        let Some(link) = row.connect_link.clone() else {
            return self.exchange_and_store(&row, &state_hash, code).await;
        };
        // A link connects once: a second flow started from it (another tab)
        // is refused before its code is exchanged.
        if !self.store.use_link(&link).await? {
            return Err(VaultError::Gone(
                "this connect link was already used: the account is connected".into(),
            ));
        }
        let result = self.exchange_and_store(&row, &state_hash, code).await;
        if result.is_err() {
            // Nothing was connected: the link may be tried again.
            self.store.unuse_link(&link).await?;
        }
        result
    }

    /// Exchanges the callback's code and stores the connection it grants.
    async fn exchange_and_store(
        &self,
        row: &StateRow,
        state_hash: &str,
        code: &str,
    ) -> Result<ConnectionView, VaultError> {
        let provider = self.provider(&row.provider)?;
        // The app the authorize URL named; flows from before that was kept
        // resolve it as then (the tenant's own, else the default tenant's).
        let app_tenant = match &row.app_tenant {
            Some(t) => t.clone(),
            None => {
                self.legacy_app_tenant(&row.tenant, &row.provider, &row.environment)
                    .await?
            }
        };
        let app = self
            .issuing_app(&app_tenant, &row.provider, &row.environment)
            .await?;
        let redirect = row
            .redirect_uri
            .clone()
            .unwrap_or_else(|| self.redirect_uri());
        let verifier =
            self.keyring
                .open("oauth_states.pkce_verifier", state_hash, &row.pkce_verifier)?;
        let creds = app.for_exchange(None);
        if provider.is_oauth1() {
            return self
                .oauth1_exchange_and_store(row, &app_tenant, &provider, &creds, &verifier, code)
                .await;
        }
        let granted = self
            .oauth
            .exchange_code(&provider, &creds, &redirect, code, &verifier)
            .await?;
        let scopes = granted
            .scopes
            .clone()
            .map(|s| s.join(" "))
            .unwrap_or(row.scopes.clone());
        let id = self
            .store
            .upsert_connection(&flow_connection(row, &scopes, &app_tenant))
            .await?;
        self.save_grant(&id, granted).await?;
        self.bump_generation();
        tracing::info!(connection = %id, provider = %row.provider, "account connected");
        self.connection(&id).await
    }

    /// OAuth 1.0a: trades the request token kept with the flow and the
    /// callback's `oauth_verifier` for an access token and token secret.
    async fn oauth1_exchange_and_store(
        &self,
        row: &StateRow,
        app_tenant: &str,
        provider: &Provider,
        creds: &oauth::ClientCreds<'_>,
        kept: &SecretString,
        verifier: &str,
    ) -> Result<ConnectionView, VaultError> {
        let request = oauth::oauth1::TokenPair::from_secret(kept).ok_or_else(|| {
            VaultError::Invalid(
                "this connect was not started as OAuth 1.0a (the provider changed): start it again"
                    .into(),
            )
        })?;
        let access = self
            .oauth
            .oauth1_access_token(provider, creds, &request, verifier)
            .await?;
        let id = self
            .store
            .upsert_connection(&flow_connection(row, &row.scopes, app_tenant))
            .await?;
        let update = TokenUpdate {
            access_token: self
                .keyring
                .seal("connections.access_token", &id, &access.token),
            refresh_token: None,
            // OAuth 1.0a tokens do not expire unless revoked.
            expires_at: None,
        };
        let secret = self
            .keyring
            .seal("connections.token_secret", &id, &access.secret);
        self.store
            .store_oauth1_tokens(&id, &update, &secret)
            .await?;
        self.backoff.remove(&id);
        self.probed.remove(&id);
        self.bump_generation();
        tracing::info!(connection = %id, provider = %row.provider, "account connected (OAuth 1.0a)");
        self.connection(&id).await
    }

    /// Seals and stores a grant's tokens. A rotated refresh token is written
    /// in the same statement as the access token, before either is handed out.
    pub(crate) async fn save_grant(
        &self,
        id: &str,
        granted: oauth::Granted,
    ) -> Result<(), VaultError> {
        let update = self.token_update(id, &granted);
        self.store.store_tokens(id, &update).await?;
        // A new grant starts with a clean slate.
        self.backoff.remove(id);
        self.probed.remove(id);
        Ok(())
    }

    pub(crate) fn token_update(&self, id: &str, granted: &oauth::Granted) -> TokenUpdate {
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

    /// A machine account: a tenant-wide client-credentials connection named
    /// after itself, fetched now and renewed without a user. Several of one
    /// provider each need their own variable (`expose_as_env`); a sandbox
    /// gets each through its own pinned binding.
    pub async fn add_machine_account(
        &self,
        spec: MachineAccountSpec,
    ) -> Result<ConnectionView, VaultError> {
        let MachineAccountSpec {
            tenant,
            environment,
            name,
            provider,
            client_id,
            client_secret,
            token_url,
            scopes,
            expose_as_env,
            hosts,
        } = spec;
        check_name("tenant", &tenant)?;
        check_name("name", &name)?;
        // A machine account may be the first thing in an environment.
        check_name("environment", &environment)?;
        if client_id.trim().is_empty() || client_secret.expose_secret().is_empty() {
            return Err(VaultError::Invalid(
                "client_id and client_secret are required".into(),
            ));
        }
        if let Some(bad) = scopes.iter().find(|s| s.is_empty() || s.contains(' ')) {
            return Err(VaultError::Invalid(format!(
                "scope {bad:?} is not a single OAuth scope"
            )));
        }
        let (provider, own_provider) = match provider {
            Some(p) if self.provider(&p)?.is_oauth1() => {
                return Err(VaultError::Invalid(format!(
                    "provider {p:?} is OAuth 1.0a: it has no client-credentials grant, connect a user account instead"
                )))
            }
            Some(p) => (self.provider(&p)?, false),
            None => (
                self.machine_provider(
                    &name,
                    token_url.as_deref(),
                    &scopes,
                    expose_as_env.as_deref(),
                    hosts.as_deref(),
                )
                .await?,
                true,
            ),
        };
        // The account's own token URL, variable and hosts, checked as the
        // provider's would be.
        let mut probe = provider.clone();
        if let Some(url) = &token_url {
            probe.token_url = url.clone();
        }
        if let Some(env) = &expose_as_env {
            probe.env = env.clone();
        }
        if let Some(hosts) = &hosts {
            if hosts.is_empty() {
                return Err(VaultError::Invalid(
                    "hosts may not be empty: the token would be sent nowhere".into(),
                ));
            }
            probe.hosts = hosts.clone();
        }
        probe.validate()?;
        let variable = probe.env.clone();
        for other in self.store.connections().await? {
            if other.tenant == tenant
                && other.environment == environment
                && other.provider == provider.name
                && other.scope_kind == ScopeKind::Machine
                && other.name != name
                && other.env_name.as_deref().unwrap_or(&provider.env) == variable
            {
                return Err(VaultError::Conflict(format!(
                    "machine account {:?} of provider {} already gives sandboxes {variable} in environment {environment}; \
                     give this one its own variable with expose_as_env",
                    other.name, provider.name
                )));
            }
        }
        if let Some(other) = self
            .store
            .named_connection(&tenant, &environment, &provider.name, &name)
            .await?
            .filter(|c| c.scope_kind != ScopeKind::Machine)
        {
            return Err(VaultError::Conflict(format!(
                "{} (connection {}, {})",
                duplicate_name(&provider.name, &name, &environment),
                other.id,
                connection_view(&other).scope
            )));
        }
        let creds = ClientCreds {
            client_id: &client_id,
            client_secret: Some(&client_secret),
            token_url: token_url.as_deref(),
        };
        // Fetch first: a wrong secret or URL is reported and nothing is stored.
        let granted = self
            .oauth
            .client_credentials(&probe, &creds, &scopes)
            .await?;
        if own_provider {
            self.add_provider(provider.clone()).await?;
        }
        // A provider made for the account already says its variable and
        // hosts: its provider's binding reaches it.
        let (env_name, own_hosts) = if own_provider {
            (None, None)
        } else {
            (expose_as_env.as_deref(), hosts.as_deref())
        };
        let id = self
            .store
            .upsert_connection(&NewConnection {
                tenant: &tenant,
                scope_kind: ScopeKind::Machine,
                scope_name: &name,
                provider: &provider.name,
                grant_kind: GrantKind::ClientCredentials,
                scopes: &scopes.join(" "),
                environment: &environment,
                client_id: Some(&client_id),
                token_url: token_url.as_deref(),
                name: &name,
                env_name,
                hosts: own_hosts,
                app_tenant: None,
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

    /// The provider a machine account given without one gets: its name,
    /// token URL, scopes, variable and hosts, injected as a bearer token.
    /// An existing provider of that name is replaced only when it was made
    /// this way (a machine account of its own name uses it): adding the
    /// account again updates it.
    async fn machine_provider(
        &self,
        name: &str,
        token_url: Option<&str>,
        scopes: &[String],
        expose_as_env: Option<&str>,
        hosts: Option<&[String]>,
    ) -> Result<Provider, VaultError> {
        let missing: Vec<&str> = [
            ("token_url", token_url.is_none()),
            ("expose_as_env", expose_as_env.is_none()),
            ("hosts", hosts.is_none()),
        ]
        .iter()
        .filter(|(_, absent)| *absent)
        .map(|(field, _)| *field)
        .collect();
        if !missing.is_empty() {
            return Err(VaultError::Invalid(format!(
                "machine account {name:?} names no provider, so it needs {}: \
                 token_url (where to get tokens), expose_as_env (the sandbox's variable) and hosts (where the token may go); \
                 or give provider = an existing provider",
                missing.join(", ")
            )));
        }
        if self.provider(name).is_ok() {
            let made_here = self.store.connections().await?.iter().any(|c| {
                c.provider == name && c.name == name && c.scope_kind == ScopeKind::Machine
            });
            if !made_here {
                return Err(VaultError::Conflict(format!(
                    "provider {name:?} exists; add the machine account to it with provider = {name:?} \
                     (its token URL, variable and hosts are then the defaults), or give the account another name"
                )));
            }
        }
        let provider: Provider = serde_json::from_value(serde_json::json!({
            "name": name,
            "token_url": token_url,
            "scopes": scopes,
            "hosts": hosts,
            "env": expose_as_env,
            "inject": "bearer",
        }))
        .map_err(|e| VaultError::Invalid(format!("machine account {name:?}: {e}")))?;
        provider.validate()?;
        Ok(provider)
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

    pub(crate) async fn connection_creds(
        &self,
        row: &store::ConnectionRow,
    ) -> Result<AppCredentials, VaultError> {
        match (&row.client_id, &row.client_secret) {
            (Some(id), Some(secret)) => Ok(AppCredentials {
                client_id: id.clone(),
                client_secret: Some(self.keyring.open(
                    "connections.client_secret",
                    &row.id,
                    secret,
                )?),
            }),
            _ => {
                let issuer = match &row.app_tenant {
                    Some(t) => t.clone(),
                    None => {
                        self.legacy_app_tenant(&row.tenant, &row.provider, &row.environment)
                            .await?
                    }
                };
                self.issuing_app(&issuer, &row.provider, &row.environment)
                    .await
            }
        }
    }
}

pub(crate) fn connection_view(row: &store::ConnectionRow) -> ConnectionView {
    let scope = match row.scope_kind {
        ScopeKind::Tenant => "tenant".to_owned(),
        kind => format!("{kind}:{}", row.scope_name),
    };
    ConnectionView {
        id: row.id.clone(),
        tenant: row.tenant.clone(),
        environment: row.environment.clone(),
        scope,
        provider: row.provider.clone(),
        name: (!row.name.is_empty()).then(|| row.name.clone()),
        variable: row.env_name.clone(),
        hosts: row.own_hosts(),
        kind: row.grant_kind,
        status: row.status,
        scopes: row.scopes.split_whitespace().map(str::to_owned).collect(),
        expires_at: row.expires_at,
        refreshed_at: row.refreshed_at,
        last_error: row.last_error.clone(),
        updated_at: row.updated_at,
        warnings: connection_warnings(row),
    }
}

pub(crate) fn connection_warnings(row: &store::ConnectionRow) -> Vec<String> {
    let mut warnings = Vec::new();
    // OAuth 1.0a tokens (those with a token secret) do not expire.
    if row.grant_kind == GrantKind::AuthorizationCode
        && row.refresh_token.is_none()
        && row.token_secret.is_none()
        && row.status == ConnectionStatus::Connected
    {
        warnings.push(NO_REFRESH_TOKEN_WARNING.to_owned());
    }
    warnings
}

/// The connection a browser flow makes: the flow's owner, provider,
/// environment and name, granted `scopes` by `app_tenant`'s app.
fn flow_connection<'a>(
    row: &'a StateRow,
    scopes: &'a str,
    app_tenant: &'a str,
) -> NewConnection<'a> {
    NewConnection {
        tenant: &row.tenant,
        scope_kind: row.scope_kind,
        scope_name: &row.scope_name,
        provider: &row.provider,
        grant_kind: GrantKind::AuthorizationCode,
        scopes,
        environment: &row.environment,
        client_id: None,
        token_url: None,
        name: &row.name,
        env_name: None,
        hosts: None,
        app_tenant: Some(app_tenant),
    }
}
