//! What a sandbox may know of its own credentials (the proxy serves it as
//! `http://airlock.internal/v1/status`), and the one-time connect links it
//! hands its user.
//!
//! A link is a random id the vault keeps hashed (the key) and sealed (so a
//! later status read hands out the same link: reading the status creates at
//! most one live link per sandbox and provider, and no OAuth state). Opening
//! it starts the provider's authorize flow at the scope the sandbox
//! resolves; completing that flow uses the link up; a used or expired link
//! is refused with a page that says so.

use airlock_vault_client::{
    generate_placeholder, CredentialKind, CredentialState, CredentialStatus, SandboxId,
    SandboxStatus, SecretString, StepUp,
};

use crate::connections::{ConnectRequest, ConnectStarted};
use crate::error::VaultError;
use crate::flows::FlowOrigin;
use crate::store::{now, BindingTarget, ConnectionStatus, LinkRow, SandboxRow, ScopeKind};
use crate::{sha256_hex, Provider, Scope, Vault, DEFAULT_TENANT};

/// The path below `public_url` a connect link opens.
pub const CONNECT_LINK_PATH: &str = "/connect/";

/// What a sandbox asks for after a used or expired link.
const ASK_AGAIN: &str = "ask for a new one (GET http://airlock.internal/v1/status)";

impl Vault {
    /// Every credential `sandbox` has, its state, and a connect link where a
    /// human must act. Built from bindings and connection rows, never from
    /// their sealed values: it holds no token. An unknown sandbox has none.
    pub async fn sandbox_status(&self, sandbox: &SandboxId) -> Result<SandboxStatus, VaultError> {
        let mut status = SandboxStatus::empty(sandbox);
        let Some(owner) = self.store.sandbox(sandbox.as_str()).await? else {
            return Ok(status);
        };
        status.consent_wait_secs = owner.consent_wait_secs.map(|s| s.max(0) as u64);
        let mut list = Vec::new();
        for b in self.store.bindings_of(sandbox.as_str()).await? {
            match b.target_kind {
                BindingTarget::Secret => {
                    // A deleted secret has no state a human could fix: left out.
                    if let Some(secret) = self.store.secret(&owner.tenant, &b.target).await? {
                        list.push(CredentialStatus {
                            variable: b.env_name,
                            kind: CredentialKind::Static,
                            provider: None,
                            connection: None,
                            hosts: secret.hosts.clone(),
                            state: CredentialState::Connected,
                            scopes: Vec::new(),
                            expires_at: None,
                            connect_url: None,
                        });
                    }
                }
                BindingTarget::Provider => {
                    let Ok(provider) = self.provider(&b.target) else {
                        continue;
                    };
                    let connection = self.binding_connection(&owner, &b).await?;
                    let pin = b.connection_name.as_deref();
                    // The same connection resolve would pick, so the state is
                    // what the sandbox's next request meets.
                    let (state, scopes, expires_at) = match &connection {
                        Some(c) => {
                            let scopes: Vec<String> =
                                c.scopes.split_whitespace().map(str::to_owned).collect();
                            match c.status {
                                ConnectionStatus::Connected
                                    if !missing_scopes(&scopes, c.needed_scopes.as_deref())
                                        .is_empty() =>
                                {
                                    (CredentialState::InsufficientScope, scopes, c.expires_at)
                                }
                                ConnectionStatus::Connected => {
                                    (CredentialState::Connected, scopes, c.expires_at)
                                }
                                ConnectionStatus::ReconnectNeeded => {
                                    (CredentialState::ReconnectNeeded, scopes, None)
                                }
                                // Never visible; listed as what the sandbox meets.
                                ConnectionStatus::Pending | ConnectionStatus::RevokePending => {
                                    (CredentialState::NotConnected, Vec::new(), None)
                                }
                            }
                        }
                        None => (CredentialState::NotConnected, Vec::new(), None),
                    };
                    let connect_url = match (&state, &connection) {
                        (CredentialState::InsufficientScope, Some(c)) => {
                            let wanted = union_scopes(&scopes, c.needed_scopes.as_deref());
                            self.connect_link(&owner, &provider, pin, Some(&wanted))
                                .await?
                        }
                        _ if state.needs_human() => {
                            self.connect_link(&owner, &provider, pin, None).await?
                        }
                        _ => None,
                    };
                    list.push(CredentialStatus {
                        variable: b.env_name,
                        kind: CredentialKind::Oauth,
                        provider: Some(provider.name.clone()),
                        connection: b.connection_name.clone(),
                        hosts: connection
                            .as_ref()
                            .and_then(|c| c.own_hosts())
                            .unwrap_or_else(|| {
                                provider
                                    .host_patterns()
                                    .iter()
                                    .map(|h| h.to_string())
                                    .collect()
                            }),
                        state,
                        scopes,
                        expires_at,
                        connect_url,
                    });
                }
            }
        }
        status.merge(list);
        Ok(status)
    }

    /// A live connect link of `sandbox` for `provider` (and the pinned
    /// connection name): one that still has at least half its time, or a
    /// new one. `None` when no human could connect (no authorize flow, or
    /// no OAuth app registered in the sandbox's environment).
    async fn connect_link(
        &self,
        sandbox: &SandboxRow,
        provider: &Provider,
        pin: Option<&str>,
        scopes: Option<&[String]>,
    ) -> Result<Option<String>, VaultError> {
        let scopes = scopes.map(|s| s.join(" "));
        if provider.authorize_url.is_none()
            || !self
                .has_app(&sandbox.tenant, &provider.name, &sandbox.environment)
                .await?
        {
            return Ok(None);
        }
        // A pinned account the sandbox's user does not own (the tenant's, a
        // machine account) is not the sandbox's to reconnect.
        if let Some(name) = pin {
            if let Some(c) = self
                .store
                .named_connection(&sandbox.tenant, &sandbox.environment, &provider.name, name)
                .await?
            {
                let own = sandbox_scope(sandbox);
                let (kind, scope_name) = own.kind_and_name();
                if (c.scope_kind, c.scope_name.as_str()) != (kind, scope_name) {
                    return Ok(None);
                }
            }
        }
        let ttl = self.settings.connect_link_ttl.as_secs() as i64;
        let now = now();
        if let Some(live) = self
            .store
            .live_link(
                &sandbox.id,
                &provider.name,
                pin,
                scopes.as_deref(),
                now + ttl / 2,
            )
            .await?
        {
            // A link the keyring cannot open (a key gone) is replaced below.
            if let Ok(id) = self
                .keyring
                .open("connect_links.link_id", &live.id_hash, &live.link_id)
            {
                use secrecy::ExposeSecret;
                return Ok(Some(self.connect_link_url(id.expose_secret())));
            }
        }
        let id = generate_placeholder("");
        let id_hash = sha256_hex(&id);
        self.store
            .insert_link(&LinkRow {
                link_id: self.keyring.seal(
                    "connect_links.link_id",
                    &id_hash,
                    &SecretString::from(id.clone()),
                ),
                id_hash,
                sandbox_id: sandbox.id.clone(),
                provider: provider.name.clone(),
                created_at: now,
                expires_at: now + ttl,
                used_at: None,
                scopes,
                connection_name: pin.map(str::to_owned),
            })
            .await?;
        Ok(Some(self.connect_link_url(&id)))
    }

    fn connect_link_url(&self, id: &str) -> String {
        format!(
            "{}{CONNECT_LINK_PATH}{id}",
            self.settings.public_url.trim_end_matches('/')
        )
    }

    /// Whether an OAuth app serves `provider` for `tenant` (its own, or the
    /// default tenant's when the tenant uses the default apps, as
    /// `resolve_app` decides).
    async fn has_app(
        &self,
        tenant: &str,
        provider: &str,
        environment: &str,
    ) -> Result<bool, VaultError> {
        Ok(self
            .store
            .app(tenant, provider, environment)
            .await?
            .is_some()
            || (self.uses_default_apps(tenant).await?
                && self
                    .store
                    .app(DEFAULT_TENANT, provider, environment)
                    .await?
                    .is_some()))
    }

    /// Opens a connect link: the provider's authorize flow for the link's
    /// sandbox, at the scope that sandbox resolves first (its user, else its
    /// workspace, else its tenant), so its next request finds the connection.
    pub async fn open_connect_link(&self, id: &str) -> Result<ConnectStarted, VaultError> {
        let id_hash = sha256_hex(id);
        let link = self
            .store
            .link(&id_hash)
            .await?
            .ok_or_else(|| VaultError::NotFound("connect link".into()))?;
        if link.used_at.is_some() {
            return Err(VaultError::Gone(format!(
                "this connect link was already used; {ASK_AGAIN}"
            )));
        }
        if link.expires_at < now() {
            return Err(VaultError::Gone(format!(
                "this connect link expired; {ASK_AGAIN}"
            )));
        }
        let sandbox = self.store.sandbox(&link.sandbox_id).await?.ok_or_else(|| {
            VaultError::Gone("the sandbox of this connect link no longer exists".into())
        })?;
        let scopes = link
            .scopes
            .as_deref()
            .map(|s| s.split_whitespace().map(str::to_owned).collect());
        self.start_connect_from(
            &ConnectRequest {
                tenant: sandbox.tenant.clone(),
                // A link connects at the sandbox's own scope, never another
                // owner's (a pinned name another owner has is refused).
                scope: sandbox_scope(&sandbox),
                provider: link.provider.clone(),
                scopes,
                environment: sandbox.environment.clone(),
                name: link.connection_name.clone(),
            },
            FlowOrigin {
                link: Some(id_hash),
                sandbox: Some(sandbox.id.clone()),
                return_to: None,
            },
        )
        .await
    }

    /// Where a connect an operator starts for the sandbox puts the
    /// connection: a pinned name that exists stays with its owner, else the
    /// sandbox's own scope.
    pub(crate) async fn pin_scope(
        &self,
        sandbox: &SandboxRow,
        provider: &str,
        pin: Option<&str>,
    ) -> Result<Scope, VaultError> {
        if let Some(name) = pin {
            if let Some(c) = self
                .store
                .named_connection(&sandbox.tenant, &sandbox.environment, provider, name)
                .await?
            {
                return Ok(match c.scope_kind {
                    ScopeKind::User => Scope::User(c.scope_name),
                    ScopeKind::Workspace => Scope::Workspace(c.scope_name),
                    ScopeKind::Tenant | ScopeKind::Machine => Scope::Tenant,
                });
            }
        }
        Ok(sandbox_scope(sandbox))
    }

    /// An upstream said the token of `connection_id` (one `sandbox` resolves)
    /// lacks `needed` scopes: noted on the connection, so the status says
    /// `insufficient_scope`, and answered with the scopes missing and a link
    /// asking for the granted ones plus those. Concurrent step-ups of one
    /// connection share the link.
    pub async fn step_up_connection(
        &self,
        sandbox: &SandboxId,
        connection_id: &str,
        needed: &[String],
    ) -> Result<StepUp, VaultError> {
        let not_found = || VaultError::NotFound(format!("connection {connection_id}"));
        let owner = self
            .store
            .sandbox(sandbox.as_str())
            .await?
            .ok_or_else(not_found)?;
        let connection = self
            .store
            .connection(connection_id)
            .await?
            .ok_or_else(not_found)?;
        // Only a connection this sandbox resolves, never another's.
        let mut pin = None;
        let mut resolves = false;
        for b in self.store.bindings_of(sandbox.as_str()).await? {
            if b.target_kind != BindingTarget::Provider || b.target != connection.provider {
                continue;
            }
            let found = self.binding_connection(&owner, &b).await?;
            if found.is_some_and(|c| c.id == connection_id) {
                pin = b.connection_name;
                resolves = true;
                break;
            }
        }
        if !resolves {
            return Err(not_found());
        }
        let provider = self.provider(&connection.provider)?;
        let granted: Vec<String> = connection
            .scopes
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let mut noted: Vec<String> = connection
            .needed_scopes
            .as_deref()
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        for scope in needed {
            if !scope.is_empty() && !scope.contains(' ') && !noted.contains(scope) {
                noted.push(scope.clone());
            }
        }
        let missing = missing_scopes(&granted, Some(&noted.join(" ")));
        self.store
            .set_needed_scopes(connection_id, &noted.join(" "))
            .await?;
        self.bump_generation();
        let wanted = union_scopes(&granted, Some(&noted.join(" ")));
        let connect_url = self
            .connect_link(&owner, &provider, pin.as_deref(), Some(&wanted))
            .await?;
        Ok(StepUp {
            missing,
            connect_url,
        })
    }
}

/// The noted scopes the connection was not granted.
fn missing_scopes(granted: &[String], needed: Option<&str>) -> Vec<String> {
    needed
        .unwrap_or("")
        .split_whitespace()
        .filter(|s| !granted.iter().any(|g| g == s))
        .map(str::to_owned)
        .collect()
}

/// What a step-up asks for: everything granted, then what is missing.
fn union_scopes(granted: &[String], needed: Option<&str>) -> Vec<String> {
    let mut all = granted.to_vec();
    all.extend(missing_scopes(granted, needed));
    all
}

#[cfg(test)]
mod step_up_tests {
    use super::{missing_scopes, union_scopes};

    #[test]
    fn the_step_up_asks_for_granted_and_missing_in_order() {
        let granted = vec!["read:user".to_string()];
        assert_eq!(missing_scopes(&granted, Some("repo read:user")), ["repo"]);
        assert_eq!(
            union_scopes(&granted, Some("repo read:user")),
            ["read:user", "repo"]
        );
        assert!(missing_scopes(&granted, None).is_empty());
    }
}

/// The scope a sandbox's requests resolve first: its user, else its
/// workspace, else its tenant.
pub(crate) fn sandbox_scope(sandbox: &SandboxRow) -> Scope {
    match (&sandbox.user_name, &sandbox.workspace) {
        (Some(user), _) => Scope::User(user.clone()),
        (None, Some(workspace)) => Scope::Workspace(workspace.clone()),
        (None, None) => Scope::Tenant,
    }
}

#[cfg(test)]
mod tests;
