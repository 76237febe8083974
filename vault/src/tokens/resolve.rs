//! Resolution: placeholder → binding → the visible connection or secret →
//! its current token; the vault as a [`TokenSource`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use airlock_vault_client::oauth1::OAuth1Keys;
use airlock_vault_client::{
    AbsentInjection, Binding, BindingKind, Guarded, HostPattern, HostPolicy, RequestRules,
    Requirement, Resolved, RulesMode, RulesSpec, SandboxId, SandboxStatus, SecretKind, SigningKeys,
    StepUp, SwapLocation, TokenError, TokenSource,
};
use secrecy::{ExposeSecret, SecretString};

use super::{Failure, Reason};
use crate::catalog::Provider;
use crate::error::VaultError;
use crate::store::{now, BindingRow, BindingTarget, ConnectionRow};
use crate::{sha256_hex, Vault};

impl Vault {
    pub(super) async fn resolve_inner(
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
        let binding_id = binding.id();
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
        match binding.target_kind {
            BindingTarget::Secret => {
                let secret = self
                    .store
                    .secret(&owner.tenant, &binding.target)
                    .await
                    .map_err(unavailable)?
                    .ok_or_else(|| TokenError::Revoked {
                        binding: binding_id.clone(),
                    })?;
                let (token, signing) = self
                    .secret_keys(&secret, placeholder)
                    .map_err(|e| TokenError::Unavailable(format!("{binding_id}: {e}")))?;
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
                        name: binding.env_name.clone(),
                        sandbox: sandbox.clone(),
                        hosts: secret
                            .hosts
                            .iter()
                            .filter_map(|h| HostPattern::parse(h).ok())
                            .collect(),
                        swap_in,
                        kind: match secret.kind {
                            SecretKind::Static => BindingKind::Static,
                            SecretKind::AwsSigV4 => BindingKind::AwsSigV4,
                            SecretKind::Hmac => BindingKind::Hmac,
                        },
                        expired_on: Vec::new(),
                        inject: None,
                        on_foreign_body: Default::default(),
                        rules: binding_rules(&binding, None),
                        narrowed: None,
                        scope_signals: Default::default(),
                    }),
                    token: token.into(),
                    expires_at: None,
                    signing,
                })
            }
            BindingTarget::Provider => {
                let provider = self
                    .provider(&binding.target)
                    .map_err(|_| TokenError::Revoked {
                        binding: binding_id.clone(),
                    })?;
                let connection = self
                    .binding_connection(&owner, &binding)
                    .await
                    .map_err(unavailable)?
                    .ok_or_else(|| TokenError::NotConnected {
                        binding: binding_id.clone(),
                    })?;
                let connection_id = connection.id.clone();
                let hosts = connection_hosts(&connection, &provider);
                let oauth1 = if provider.is_oauth1() {
                    Some(
                        self.oauth1_keys(&connection)
                            .await
                            .map_err(|e| TokenError::Unavailable(format!("{binding_id}: {e}")))?,
                    )
                } else {
                    None
                };
                let result = match failed {
                    Some(failed) => self
                        .refresh_connection(&connection_id, Reason::Failed(failed))
                        .await
                        .map(|f| (f.token, f.expires_at)),
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
                        name: binding.env_name.clone(),
                        sandbox: sandbox.clone(),
                        hosts,
                        swap_in: provider.swap_in.clone(),
                        kind: BindingKind::OAuth { connection_id },
                        expired_on: provider.expired_on.clone(),
                        inject: crate::catalog::parse_inject(&provider.inject).ok(),
                        on_foreign_body: Default::default(),
                        rules: binding_rules(&binding, Some(&provider)),
                        narrowed: None,
                        scope_signals: Arc::new(provider.insufficient_scope.clone()),
                    }),
                    token: token.into(),
                    expires_at,
                    signing: oauth1.map(|k| Arc::new(SigningKeys::OAuth1(k))),
                })
            }
        }
    }

    /// A secret's token, and its other keys when it signs.
    fn secret_keys(
        &self,
        secret: &crate::store::SecretRow,
        placeholder: &str,
    ) -> Result<(SecretString, Option<Arc<SigningKeys>>), VaultError> {
        let token = self
            .keyring
            .open("secrets.value", &secret.id, &secret.value)?;
        Ok((token, self.secret_signing_keys(secret, placeholder)?))
    }

    /// An OAuth 1.0a connection's consumer key and secret (its app's client
    /// id and secret) and token secret.
    async fn oauth1_keys(&self, connection: &ConnectionRow) -> Result<OAuth1Keys, VaultError> {
        // The app that issued the grant signs its requests.
        let app = self.connection_creds(connection).await?;
        let consumer_secret = app.client_secret.ok_or_else(|| {
            VaultError::Config(format!(
                "the app of provider {} has no client_secret (the OAuth 1.0a consumer secret)",
                connection.provider
            ))
        })?;
        let token_secret = connection
            .token_secret
            .as_ref()
            .ok_or_else(|| {
                VaultError::Reconnect("the connection holds no OAuth 1.0a token secret".into())
            })
            .and_then(|s| {
                self.keyring
                    .open("connections.token_secret", &connection.id, s)
            })?;
        Ok(OAuth1Keys {
            consumer_key: SecretString::from(app.client_id),
            consumer_secret,
            token_secret,
        })
    }

    /// The current token of each of the sandbox's bindings, and the one a
    /// refresh replaced until it expires, for the response firewall (a proxy
    /// of the fleet that never saw the old token must still catch its echo).
    /// Bindings that cannot give a token now are skipped: the sandbox cannot
    /// obtain those either.
    pub async fn guarded_tokens(&self, sandbox: &SandboxId) -> Result<Vec<Guarded>, VaultError> {
        let mut out = Vec::new();
        // Secrets in one query: a sandbox may hold a thousand, and its list
        // is read again every half minute while it is used.
        for (binding, secret) in self.store.secrets_bound_to(sandbox.as_str()).await? {
            let Ok((token, signing)) =
                secret.and_then(|s| self.secret_keys(&s, &binding.placeholder))
            else {
                continue;
            };
            push_guarded(
                &mut out,
                binding.placeholder,
                token,
                None,
                signing.as_deref(),
            );
        }
        let providers = self
            .store
            .bindings_of_kind(sandbox.as_str(), BindingTarget::Provider)
            .await?;
        for b in providers {
            let Ok(resolved) = self.resolve_inner(sandbox, &b.placeholder, None).await else {
                continue;
            };
            if let BindingKind::OAuth { connection_id } = &resolved.binding.kind {
                if let Some(previous) = self.previous_token(connection_id).await? {
                    out.push(Guarded {
                        placeholder: b.placeholder.clone(),
                        token: previous.0,
                        expires_at: previous.1,
                    });
                }
            }
            push_guarded(
                &mut out,
                b.placeholder,
                resolved.token.to_secret_string(),
                resolved.expires_at,
                resolved.signing.as_deref(),
            );
        }
        Ok(out)
    }

    /// The access token the connection's last write replaced, while it may
    /// still work: until its expiry, or a day when it had none.
    async fn previous_token(
        &self,
        connection_id: &str,
    ) -> Result<Option<(SecretString, Option<i64>)>, VaultError> {
        const UNKNOWN_EXPIRY_KEPT: i64 = 24 * 3600;
        let Some(row) = self.store.connection(connection_id).await? else {
            return Ok(None);
        };
        let Some(sealed) = row.previous_access_token.as_ref() else {
            return Ok(None);
        };
        let live = match row.previous_expires_at {
            Some(exp) => exp > now(),
            None => row.updated_at + UNKNOWN_EXPIRY_KEPT > now(),
        };
        if !live {
            return Ok(None);
        }
        Ok(self
            .keyring
            .open("connections.access_token", &row.id, sealed)
            .ok()
            .map(|token| (token, row.previous_expires_at)))
    }

    /// Every host pattern the sandbox's bindings allow.
    pub async fn sandbox_hosts(&self, sandbox: &str) -> Result<Vec<HostPattern>, VaultError> {
        self.sandbox_hosts_where(sandbox, false).await
    }

    /// Host patterns of the sandbox's bindings; with `body_only`, only of
    /// those that may swap in request bodies.
    pub(super) async fn sandbox_hosts_where(
        &self,
        sandbox: &str,
        body_only: bool,
    ) -> Result<Vec<HostPattern>, VaultError> {
        Ok(self
            .binding_shapes(sandbox)
            .await?
            .into_iter()
            .filter(|b| !body_only || b.swaps_in_body)
            .flat_map(|b| b.hosts)
            .collect())
    }

    /// What the bindings of `sandbox` ask of requests to `host`: those that
    /// say `require = true`, and the one provider binding that says
    /// `inject_when_absent` (none when two would: the request is not guessed).
    pub async fn host_policy(&self, sandbox: &str, host: &str) -> Result<HostPolicy, VaultError> {
        let shapes: Vec<BindingShape> = self
            .binding_shapes(sandbox)
            .await?
            .into_iter()
            .filter(|b| b.hosts.iter().any(|p| p.matches(host)))
            .collect();
        let required = shapes
            .iter()
            .filter(|b| b.rules.require())
            .map(|b| Requirement {
                binding: b.id.clone(),
                dry_run: b.rules.mode() == RulesMode::DryRun,
            })
            .collect();
        let mut signers: Vec<String> = shapes.iter().filter_map(|b| b.signer.clone()).collect();
        signers.sort();
        let injecting = shapes.into_iter().filter_map(|b| b.inject_absent).collect();
        Ok(HostPolicy {
            required,
            inject_absent: AbsentInjection::sole(injecting, sandbox, host),
            signers,
        })
    }

    /// What each of the sandbox's bindings allows, without its token.
    async fn binding_shapes(&self, sandbox: &str) -> Result<Vec<BindingShape>, VaultError> {
        let Some(owner) = self.store.sandbox(sandbox).await? else {
            return Ok(Vec::new());
        };
        // By variable name, as the bindings are listed. Secrets in one query:
        // asked every 30 s per host a sandbox uses, of up to a thousand.
        let mut out = Vec::new();
        for (b, s) in self.store.secrets_bound_to(sandbox).await? {
            let s = s?;
            out.push((
                b.env_name.clone(),
                BindingShape {
                    id: b.id(),
                    hosts: s
                        .hosts
                        .iter()
                        .filter_map(|h| HostPattern::parse(h).ok())
                        .collect(),
                    swaps_in_body: s.swap_in.iter().any(|l| l == SwapLocation::Body.as_str()),
                    rules: binding_rules(&b, None),
                    inject_absent: None,
                    signer: (s.kind == SecretKind::Hmac).then(|| b.placeholder.clone()),
                },
            ));
        }
        let providers = self
            .store
            .bindings_of_kind(sandbox, BindingTarget::Provider)
            .await?;
        for b in providers {
            let id = b.id();
            if let Ok(p) = self.provider(&b.target) {
                // The binding's own say first, else its provider's.
                let inject = own_inject_when_absent(&b).unwrap_or(p.inject_when_absent);
                let inject_absent = inject.then(|| AbsentInjection {
                    binding: id.clone(),
                    placeholder: b.placeholder.clone(),
                    inject: p.inject.clone(),
                });
                // A pinned connection with hosts of its own is bound to those.
                let hosts = match &b.connection_name {
                    Some(_) => match self.binding_connection(&owner, &b).await? {
                        Some(c) => connection_hosts(&c, &p),
                        None => p.host_patterns(),
                    },
                    None => p.host_patterns(),
                };
                out.push((
                    b.env_name.clone(),
                    BindingShape {
                        id,
                        hosts,
                        swaps_in_body: p.swap_in.contains(&SwapLocation::Body),
                        rules: binding_rules(&b, Some(&p)),
                        inject_absent,
                        signer: None,
                    },
                ));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into_iter().map(|(_, shape)| shape).collect())
    }
}

/// The hosts a connection's token may go to: its own, else its provider's.
fn connection_hosts(connection: &ConnectionRow, provider: &Provider) -> Vec<HostPattern> {
    match connection.own_hosts() {
        Some(hosts) => hosts
            .iter()
            .filter_map(|h| HostPattern::parse(h).ok())
            .collect(),
        None => provider.host_patterns(),
    }
}

struct BindingShape {
    id: String,
    hosts: Vec<HostPattern>,
    swaps_in_body: bool,
    rules: Arc<RequestRules>,
    inject_absent: Option<AbsentInjection>,
    /// An HMAC secret's placeholder: requests carrying its signature header
    /// are checked and signed again.
    signer: Option<String>,
}

/// What the binding's own policy says of `inject_when_absent`; `None`
/// leaves it to the provider (an unreadable policy injects nothing).
fn own_inject_when_absent(row: &BindingRow) -> Option<bool> {
    let json = row.rules.as_deref()?;
    match serde_json::from_str::<RulesSpec>(json) {
        Ok(spec) => spec.inject_when_absent,
        Err(_) => Some(false),
    }
}

/// The binding's own rules, else its provider's. Rules are checked when
/// written; ones that no longer compile refuse everything rather than open up.
/// A policy that only says `inject_when_absent` keeps the provider's rules:
/// turning injection on must not drop them.
pub(crate) fn binding_rules(row: &BindingRow, provider: Option<&Provider>) -> Arc<RequestRules> {
    let own = match &row.rules {
        Some(json) => match serde_json::from_str::<RulesSpec>(json) {
            Ok(spec) => Some(spec.request_rules()).filter(|s| !s.is_empty()),
            Err(_) => return Arc::new(RequestRules::deny_all()),
        },
        None => None,
    };
    let spec = match own {
        Some(spec) => spec,
        None => match provider {
            Some(p) => p.rules_spec(),
            None => return Arc::default(),
        },
    };
    Arc::new(RequestRules::compile(&spec).unwrap_or_else(|_| RequestRules::deny_all()))
}

/// A binding's token for the response firewall, and a signing binding's
/// other real keys, each mapped back to its own placeholder.
fn push_guarded(
    out: &mut Vec<Guarded>,
    placeholder: String,
    token: SecretString,
    expires_at: Option<i64>,
    signing: Option<&SigningKeys>,
) {
    match signing {
        Some(SigningKeys::AwsSigV4(k)) => {
            out.push(Guarded {
                placeholder: k.placeholder_secret.expose_secret().to_owned(),
                token: k.secret_access_key.clone(),
                expires_at: None,
            });
            if let Some(t) = &k.session_token {
                out.push(Guarded {
                    placeholder: t.placeholder.clone(),
                    token: t.token.clone(),
                    expires_at: None,
                });
            }
        }
        Some(SigningKeys::OAuth1(k)) => {
            let p = airlock_vault_client::oauth1::placeholders(&placeholder);
            for (placeholder, token) in [
                (p.consumer_key, &k.consumer_key),
                (p.consumer_secret, &k.consumer_secret),
                (p.token_secret, &k.token_secret),
            ] {
                out.push(Guarded {
                    placeholder,
                    token: token.clone(),
                    expires_at: None,
                });
            }
        }
        _ => {}
    }
    out.push(Guarded {
        placeholder,
        token,
        expires_at,
    });
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

    async fn host_policy(&self, sandbox: &SandboxId, host: &str) -> HostPolicy {
        // Unknown (store failing): nothing required; resolving fails anyway.
        self.host_policy(sandbox.as_str(), host)
            .await
            .unwrap_or_default()
    }

    async fn step_up(
        &self,
        sandbox: &SandboxId,
        connection_id: &str,
        needed: &[String],
    ) -> Result<StepUp, TokenError> {
        self.step_up_connection(sandbox, connection_id, needed)
            .await
            .map_err(|e| match e {
                VaultError::NotFound(what) => TokenError::Revoked { binding: what },
                other => TokenError::Unavailable(other.to_string()),
            })
    }

    async fn may_swap_body(&self, sandbox: &SandboxId, host: &str) -> bool {
        // Unknown (store failing): say yes, the body is then re-framed as before.
        self.sandbox_hosts_where(sandbox.as_str(), true)
            .await
            .map(|hosts| hosts.iter().any(|p| p.matches(host)))
            .unwrap_or(true)
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

    async fn guarded(&self, sandbox: &SandboxId) -> Result<Vec<Guarded>, TokenError> {
        self.guarded_tokens(sandbox)
            .await
            .map_err(|e| TokenError::Unavailable(e.to_string()))
    }

    async fn status(&self, sandbox: &SandboxId) -> Result<SandboxStatus, TokenError> {
        self.sandbox_status(sandbox)
            .await
            .map_err(|e| TokenError::Unavailable(e.to_string()))
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BindingTarget;
    use crate::testing::acme_vault;
    use crate::VaultSettings;

    /// Turning injection on must not drop the provider's rules.
    #[tokio::test]
    async fn a_policy_that_only_says_inject_keeps_the_provider_s_rules() {
        let (vault, _dir) = acme_vault(9, VaultSettings::default()).await;
        let mut provider = vault.provider("acme").unwrap();
        provider.rules = vec!["allow GET /api/me".into()];
        let row = |rules: Option<&str>| BindingRow {
            placeholder: "p".into(),
            sandbox_id: "s".into(),
            env_name: "ACME_TOKEN".into(),
            target_kind: BindingTarget::Provider,
            target: "acme".into(),
            rules: rules.map(Into::into),
            connection_name: None,
        };
        let kept = binding_rules(
            &row(Some(r#"{"inject_when_absent":true}"#)),
            Some(&provider),
        );
        assert_eq!(kept.spec().rules, ["allow GET /api/me"]);
        let own = binding_rules(
            &row(Some(
                r#"{"rules":["allow GET /x"],"inject_when_absent":true}"#,
            )),
            Some(&provider),
        );
        assert_eq!(own.spec().rules, ["allow GET /x"]);
        assert_eq!(own.spec().inject_when_absent, None, "never sent to proxies");
    }
}
