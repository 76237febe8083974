//! Handing out current tokens: the vault as a [`TokenSource`], refresh ahead
//! of expiry and on demand (single-flight in the process, row lock across
//! replicas), and the background refresher.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use airlock_vault_client::{
    Binding, BindingKind, HostPattern, Resolved, SandboxId, SwapLocation, TokenError, TokenSource,
};
use secrecy::{ExposeSecret, SecretString};

use crate::error::VaultError;
use crate::oauth::ClientCreds;
use crate::store::{now, ConnectionRow, TokenUpdate};
use crate::{sha256_hex, Vault};

/// Why a connection gave no token.
enum Failure {
    Reconnect,
    Unavailable(String),
}

impl Vault {
    /// How long before expiry a token is refreshed: min(window, fraction × lifetime).
    fn refresh_margin(&self, row: &ConnectionRow) -> i64 {
        let window = self.settings.refresh_window.as_secs() as i64;
        match (row.expires_at, row.obtained_at) {
            (Some(exp), Some(got)) if exp > got => {
                window.min(((exp - got) as f64 * self.settings.refresh_fraction) as i64)
            }
            _ => window,
        }
    }

    fn due(&self, row: &ConnectionRow) -> bool {
        row.expires_at
            .is_some_and(|exp| exp - now() <= self.refresh_margin(row))
    }

    fn open_access(&self, row: &ConnectionRow) -> Option<SecretString> {
        row.access_token.as_ref().and_then(|s| {
            self.keyring
                .open("connections.access_token", &row.id, s)
                .ok()
        })
    }

    /// The connection's current token, refreshing first when it is due.
    async fn current_token(
        &self,
        row: ConnectionRow,
    ) -> Result<(SecretString, Option<i64>), Failure> {
        if row.status == "reconnect_needed" {
            return Err(Failure::Reconnect);
        }
        if !self.due(&row) {
            if let Some(token) = self.open_access(&row) {
                return Ok((token, row.expires_at));
            }
        }
        self.refresh_connection(&row.id, None).await
    }

    /// Refreshes `id` unless someone already did. With `failed`, a stored token
    /// different from it counts as already refreshed.
    async fn refresh_connection(
        &self,
        id: &str,
        failed: Option<&SecretString>,
    ) -> Result<(SecretString, Option<i64>), Failure> {
        let lock = self.refresh_locks.entry(id.to_owned()).or_default().clone();
        let _single_flight = lock.lock().await;
        let result = self
            .store
            .with_connection_locked(id, |row| async move {
                // Re-read under the lock: another caller or replica may have refreshed.
                let stored = self.open_access(&row);
                let replaced = match (failed, &stored) {
                    (Some(failed), Some(stored)) => failed.expose_secret() != stored.expose_secret(),
                    (None, Some(_)) => !self.due(&row),
                    _ => false,
                };
                let unexpired = row.expires_at.is_none_or(|exp| exp > now());
                if row.status == "reconnect_needed" {
                    return Ok((Err(Failure::Reconnect), None, None));
                }
                if replaced && unexpired {
                    return Ok((Ok((stored.expect("checked above"), row.expires_at)), None, None));
                }
                let backoff_until = self.backoff.get(id).map(|v| *v).unwrap_or(0);
                let outcome = if backoff_until > now() {
                    Err(VaultError::ProviderUnavailable("waiting before the next refresh attempt".into()))
                } else {
                    self.grant_again(&row).await
                };
                match outcome {
                    Ok(granted) => {
                        self.backoff.remove(id);
                        let update = TokenUpdate {
                            access_token: self.keyring.seal("connections.access_token", id, &granted.access_token),
                            refresh_token: granted
                                .refresh_token
                                .as_ref()
                                .map(|r| self.keyring.seal("connections.refresh_token", id, r)),
                            expires_at: granted.expires_in.map(|d| now() + d.as_secs() as i64),
                        };
                        let expires_at = update.expires_at;
                        tracing::info!(connection = %id, provider = %row.provider, "token refreshed");
                        Ok((Ok((granted.access_token, expires_at)), Some(update), None))
                    }
                    Err(VaultError::Reconnect(reason)) => {
                        tracing::warn!(connection = %id, provider = %row.provider, %reason, "refresh refused: reconnect needed");
                        self.generation.fetch_add(1, Ordering::Relaxed);
                        Ok((Err(Failure::Reconnect), None, Some(("reconnect_needed".to_owned(), Some(reason)))))
                    }
                    Err(other) => {
                        let retry_at = now() + self.settings.refresh_backoff.as_secs() as i64;
                        self.backoff.insert(id.to_owned(), retry_at);
                        tracing::warn!(connection = %id, provider = %row.provider, error = %other, "refresh failed; will retry");
                        // Keep serving the current token while it is still valid.
                        match stored {
                            Some(token) if unexpired && row.access_token.is_some() => {
                                Ok((Ok((token, row.expires_at)), None, None))
                            }
                            _ => Ok((Err(Failure::Unavailable(other.to_string())), None, None)),
                        }
                    }
                }
            })
            .await;
        match result {
            Ok(inner) => inner,
            Err(e) => Err(Failure::Unavailable(e.to_string())),
        }
    }

    /// A new token for the connection: refresh grant, or client credentials again.
    async fn grant_again(&self, row: &ConnectionRow) -> Result<crate::oauth::Granted, VaultError> {
        let provider = self.provider(&row.provider)?;
        let (client_id, secret) = self.connection_creds(row).await?;
        let creds = ClientCreds {
            client_id: &client_id,
            client_secret: secret.as_ref(),
            token_url: row.token_url.as_deref(),
        };
        if row.grant_kind == "client_credentials" {
            let scopes: Vec<String> = row.scopes.split_whitespace().map(str::to_owned).collect();
            return self
                .oauth
                .client_credentials(&provider, &creds, &scopes)
                .await;
        }
        let refresh = row
            .refresh_token
            .as_ref()
            .map(|s| self.keyring.open("connections.refresh_token", &row.id, s))
            .transpose()?
            .ok_or_else(|| VaultError::Reconnect("no refresh token was issued".into()))?;
        self.oauth.refresh(&provider, &creds, &refresh).await
    }

    /// Refreshes every connection that will be due before the next pass.
    pub async fn refresh_due(&self, lookahead: Duration) -> usize {
        let deadline =
            now() + self.settings.refresh_window.as_secs() as i64 + lookahead.as_secs() as i64;
        let ids = match self.store.expiring(deadline).await {
            Ok(ids) => ids,
            Err(error) => {
                tracing::warn!(%error, "background refresh could not list connections");
                return 0;
            }
        };
        let mut refreshed = 0;
        for id in ids {
            let Ok(Some(row)) = self.store.connection(&id).await else {
                continue;
            };
            if row.status == "connected"
                && row.expires_at.is_some_and(|exp| {
                    exp - now() <= self.refresh_margin(&row) + lookahead.as_secs() as i64
                })
                && self.refresh_connection(&id, None).await.is_ok()
            {
                refreshed += 1;
            }
        }
        refreshed
    }

    /// Runs [`Vault::refresh_due`] every `every` until the process ends.
    pub fn spawn_refresher(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let vault = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(vault) = vault.upgrade() else { return };
                vault.refresh_due(every).await;
            }
        })
    }

    async fn resolve_inner(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
        failed: Option<&SecretString>,
    ) -> Result<Resolved, TokenError> {
        let unavailable = |e: VaultError| TokenError::Unavailable(e.to_string());
        let binding = self
            .store
            .binding(placeholder)
            .await
            .map_err(unavailable)?
            .ok_or(TokenError::UnknownPlaceholder)?;
        let binding_id = format!("{}:{}", binding.target_kind, binding.target);
        if binding.sandbox_id != sandbox.as_str() {
            return Err(TokenError::WrongSandbox {
                binding: binding_id,
            });
        }
        let owner = self
            .store
            .sandbox(&binding.sandbox_id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| TokenError::Revoked {
                binding: binding_id.clone(),
            })?;
        match binding.target_kind.as_str() {
            "secret" => {
                let secret = self
                    .store
                    .secret(&owner.tenant, &binding.target)
                    .await
                    .map_err(unavailable)?
                    .ok_or_else(|| TokenError::Revoked {
                        binding: binding_id.clone(),
                    })?;
                let token = self
                    .keyring
                    .open("secrets.value", &secret.id, &secret.value)
                    .map_err(unavailable)?;
                let swap_in = secret
                    .swap_in
                    .iter()
                    .filter_map(|s| {
                        serde_json::from_value::<SwapLocation>(serde_json::Value::String(s.clone()))
                            .ok()
                    })
                    .collect();
                Ok(Resolved {
                    binding: Arc::new(Binding {
                        id: binding_id,
                        name: binding.env_name,
                        sandbox: sandbox.clone(),
                        hosts: secret
                            .hosts
                            .iter()
                            .filter_map(|h| HostPattern::parse(h).ok())
                            .collect(),
                        swap_in,
                        kind: BindingKind::Static,
                        expired_on: Vec::new(),
                    }),
                    token,
                    expires_at: None,
                })
            }
            _ => {
                let provider = self
                    .provider(&binding.target)
                    .map_err(|_| TokenError::Revoked {
                        binding: binding_id.clone(),
                    })?;
                let connection = self
                    .store
                    .visible_connection(
                        &owner.tenant,
                        &binding.target,
                        owner.workspace.as_deref(),
                        owner.user_name.as_deref(),
                    )
                    .await
                    .map_err(unavailable)?
                    .ok_or_else(|| TokenError::NotConnected {
                        binding: binding_id.clone(),
                    })?;
                let connection_id = connection.id.clone();
                let result = match failed {
                    Some(failed) => self.refresh_connection(&connection_id, Some(failed)).await,
                    None => self.current_token(connection).await,
                };
                let (token, expires_at) = result.map_err(|f| match f {
                    Failure::Reconnect => TokenError::ReconnectNeeded {
                        binding: binding_id.clone(),
                    },
                    Failure::Unavailable(why) => {
                        TokenError::Unavailable(format!("{binding_id}: {why}"))
                    }
                })?;
                Ok(Resolved {
                    binding: Arc::new(Binding {
                        id: binding_id,
                        name: binding.env_name,
                        sandbox: sandbox.clone(),
                        hosts: provider.host_patterns(),
                        swap_in: provider.swap_in.clone(),
                        kind: BindingKind::OAuth { connection_id },
                        expired_on: provider.expired_on.clone(),
                    }),
                    token,
                    expires_at,
                })
            }
        }
    }

    /// Every host pattern the sandbox's bindings allow.
    pub async fn sandbox_hosts(&self, sandbox: &str) -> Result<Vec<HostPattern>, VaultError> {
        let Some(owner) = self.store.sandbox(sandbox).await? else {
            return Ok(Vec::new());
        };
        let mut hosts = Vec::new();
        for b in self.store.bindings_of(sandbox).await? {
            if b.target_kind == "secret" {
                if let Some(s) = self.store.secret(&owner.tenant, &b.target).await? {
                    hosts.extend(s.hosts.iter().filter_map(|h| HostPattern::parse(h).ok()));
                }
            } else if let Ok(p) = self.provider(&b.target) {
                hosts.extend(p.host_patterns());
            }
        }
        Ok(hosts)
    }
}

#[async_trait::async_trait]
impl TokenSource for Vault {
    fn placeholder_prefix(&self) -> &str {
        &self.settings.placeholder_prefix
    }

    async fn resolve(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
    ) -> Result<Resolved, TokenError> {
        self.resolve_inner(sandbox, placeholder, None).await
    }

    async fn is_bound_host(&self, sandbox: &SandboxId, host: &str) -> bool {
        self.sandbox_hosts(sandbox.as_str())
            .await
            .map(|hosts| hosts.iter().any(|p| p.matches(host)))
            .unwrap_or(false)
    }

    async fn authenticate(&self, sandbox_id: &str, secret: &str) -> Result<SandboxId, TokenError> {
        let row = self
            .store
            .sandbox(sandbox_id)
            .await
            .map_err(|e| TokenError::Unavailable(e.to_string()))?
            .ok_or(TokenError::BadCredential)?;
        // Both sides are hashes of equal length; compare without early exit.
        let given = sha256_hex(secret);
        let equal = given.len() == row.secret_hash.len()
            && given
                .bytes()
                .zip(row.secret_hash.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if equal {
            Ok(SandboxId::new(row.id))
        } else {
            Err(TokenError::BadCredential)
        }
    }

    async fn refresh(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
        failed: &SecretString,
    ) -> Result<Resolved, TokenError> {
        self.resolve_inner(sandbox, placeholder, Some(failed)).await
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}
