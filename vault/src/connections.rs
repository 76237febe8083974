//! Connections: the browser connect flow, machine accounts, and what reads show of them.

use airlock_vault_client::SecretString;
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::apps::AppCredentials;
use crate::error::VaultError;
use crate::flows::FlowOrigin;
use crate::oauth::{self, AuthorizeLink, ClientCreds};
use crate::scope::check_name;
use crate::store::{
    self, now, ConnectionStatus, GrantKind, NewConnection, ScopeKind, StateRow, TokenUpdate,
};
use crate::{sha256_hex, Scope, Vault, DEFAULT_ENVIRONMENT};

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionView {
    pub id: String,
    pub tenant: String,
    pub scope: String,
    pub provider: String,
    pub kind: GrantKind,
    pub status: ConnectionStatus,
    pub scopes: Vec<String>,
    pub expires_at: Option<i64>,
    pub last_error: Option<String>,
    pub updated_at: i64,
    /// What the operator should know about this connection (e.g. no refresh token).
    pub warnings: Vec<String>,
}

/// Said of a user connection the provider gave no refresh token.
pub const NO_REFRESH_TOKEN_WARNING: &str =
    "no refresh token: this account must be reconnected when the token expires; \
     the provider may need prompt=consent / access_type=offline";

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
        self.start_connect_from(
            tenant,
            scope,
            provider_name,
            scopes,
            environment,
            FlowOrigin::default(),
        )
        .await
    }

    /// [`Self::start_connect`], from where `origin` says: completing a flow
    /// started from a connect link uses that link up.
    pub(crate) async fn start_connect_from(
        &self,
        tenant: &str,
        scope: &Scope,
        provider_name: &str,
        scopes: Option<Vec<String>>,
        environment: &str,
        origin: FlowOrigin,
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
        let app = self.app_creds(tenant, provider_name, environment).await?;
        let redirect = self.redirect_uri();
        let AuthorizeLink {
            url,
            state,
            pkce_verifier: verifier,
        } = self
            .oauth
            .authorize_url(&provider, &app.for_exchange(None), &redirect, &scopes)?;
        let state_hash = sha256_hex(state.expose_secret());
        let (scope_kind, scope_name) = scope.kind_and_name();
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
        let app = self
            .app_creds(&row.tenant, &row.provider, &row.environment)
            .await?;
        let verifier =
            self.keyring
                .open("oauth_states.pkce_verifier", state_hash, &row.pkce_verifier)?;
        let creds = app.for_exchange(None);
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
                scope_kind: row.scope_kind,
                scope_name: &row.scope_name,
                provider: &row.provider,
                grant_kind: GrantKind::AuthorizationCode,
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
                scope_kind: ScopeKind::Machine,
                scope_name: name,
                provider: provider_name,
                grant_kind: GrantKind::ClientCredentials,
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
                self.app_creds(&row.tenant, &row.provider, &row.environment)
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
        scope,
        provider: row.provider.clone(),
        kind: row.grant_kind,
        status: row.status,
        scopes: row.scopes.split_whitespace().map(str::to_owned).collect(),
        expires_at: row.expires_at,
        last_error: row.last_error.clone(),
        updated_at: row.updated_at,
        warnings: connection_warnings(row),
    }
}

pub(crate) fn connection_warnings(row: &store::ConnectionRow) -> Vec<String> {
    let mut warnings = Vec::new();
    if row.grant_kind == GrantKind::AuthorizationCode
        && row.refresh_token.is_none()
        && row.status == ConnectionStatus::Connected
    {
        warnings.push(NO_REFRESH_TOKEN_WARNING.to_owned());
    }
    warnings
}
