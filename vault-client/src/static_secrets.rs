//! Static secrets from the config file, served as a [`TokenSource`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use secrecy::SecretString;

use crate::contract::{CredentialKind, CredentialState, CredentialStatus, SandboxStatus};
use crate::{
    AbsentInjection, Binding, BindingKind, ForeignBody, Guarded, HostPattern, HostPolicy,
    Injection, RequestRules, Requirement, Resolved, SandboxId, SigningKeys, StepUp, SwapLocation,
    TokenError, TokenSource,
};

/// One configured secret, already validated.
pub struct StaticSecret {
    pub name: String,
    pub value: SecretString,
    pub placeholder: String,
    pub hosts: Vec<HostPattern>,
    pub swap_in: BTreeSet<SwapLocation>,
    pub on_foreign_body: ForeignBody,
    pub rules: Arc<RequestRules>,
    /// For a signing kind (`aws_sigv4`): the keys; `value` is then the real
    /// access key id and `placeholder` the sandbox's.
    pub signing: Option<Arc<SigningKeys>>,
    /// `inject_when_absent`: the slot its placeholder goes into on a request
    /// to its hosts that carries no credential; `None`: never injected.
    pub inject_when_absent: Option<Injection>,
}

/// Static secrets of the one sidecar sandbox.
pub struct StaticSecrets {
    prefix: String,
    sandbox: SandboxId,
    by_placeholder: HashMap<String, Resolved>,
    /// Secrets that inject when absent: (binding id, placeholder, slot, hosts).
    injecting: Vec<(AbsentInjection, Vec<HostPattern>)>,
}

impl StaticSecrets {
    pub fn new(prefix: impl Into<String>, sandbox: SandboxId, secrets: Vec<StaticSecret>) -> Self {
        let injecting = secrets
            .iter()
            .filter_map(|s| {
                let inject = s.inject_when_absent.as_ref()?;
                Some((
                    AbsentInjection {
                        binding: format!("secret:{}", s.name),
                        placeholder: s.placeholder.clone(),
                        inject: inject.to_string(),
                    },
                    s.hosts.clone(),
                ))
            })
            .collect();
        let by_placeholder = secrets
            .into_iter()
            .map(|s| {
                let binding = Binding {
                    id: format!("secret:{}", s.name),
                    name: s.name,
                    sandbox: sandbox.clone(),
                    hosts: s.hosts,
                    swap_in: s.swap_in,
                    kind: match s.signing.as_deref() {
                        // OAuth 1.0a keys come from vault connections,
                        // never from the config; signing keys are never swapped as text.
                        None | Some(SigningKeys::OAuth1(_)) => BindingKind::Static,
                        Some(SigningKeys::AwsSigV4(_)) => BindingKind::AwsSigV4,
                        Some(SigningKeys::Hmac(_)) => BindingKind::Hmac,
                    },
                    expired_on: Vec::new(),
                    inject: None,
                    on_foreign_body: s.on_foreign_body,
                    rules: s.rules,
                    narrowed: None,
                    scope_signals: Default::default(),
                };
                (
                    s.placeholder,
                    Resolved {
                        binding: Arc::new(binding),
                        token: s.value.into(),
                        expires_at: None,
                        signing: s.signing,
                    },
                )
            })
            .collect();
        Self {
            prefix: prefix.into(),
            sandbox,
            by_placeholder,
            injecting,
        }
    }

    /// `(variable name, placeholder)` pairs for the sandbox's environment.
    pub fn environment(&self) -> Vec<(String, String)> {
        let mut env: Vec<_> = self
            .by_placeholder
            .iter()
            .flat_map(|(placeholder, r)| {
                let mut vars = vec![(r.binding.name.clone(), placeholder.clone())];
                if let Some(SigningKeys::AwsSigV4(k)) = r.signing.as_deref() {
                    use secrecy::ExposeSecret;
                    // Placeholders, not secrets: the sandbox signs with them.
                    vars.push((
                        k.secret_variable.clone(),
                        k.placeholder_secret.expose_secret().to_owned(),
                    ));
                    if let Some(t) = &k.session_token {
                        vars.push((t.variable.clone(), t.placeholder.clone()));
                    }
                }
                vars
            })
            .collect();
        env.sort();
        env
    }
}

#[async_trait::async_trait]
impl TokenSource for StaticSecrets {
    fn placeholder_prefix(&self) -> &str {
        &self.prefix
    }

    async fn resolve(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
    ) -> Result<Resolved, TokenError> {
        let resolved = self
            .by_placeholder
            .get(placeholder)
            .ok_or(TokenError::UnknownPlaceholder)?;
        if &resolved.binding.sandbox != sandbox {
            return Err(TokenError::WrongSandbox {
                binding: resolved.binding.id.clone(),
            });
        }
        Ok(resolved.clone())
    }

    async fn is_bound_host(&self, sandbox: &SandboxId, host: &str) -> bool {
        sandbox == &self.sandbox
            && self
                .by_placeholder
                .values()
                .any(|r| r.binding.allows_host(host))
    }

    async fn guarded(&self, sandbox: &SandboxId) -> Result<Vec<Guarded>, TokenError> {
        if sandbox != &self.sandbox {
            return Ok(Vec::new());
        }
        Ok(self
            .by_placeholder
            .iter()
            .flat_map(|(placeholder, r)| {
                let mut guarded = vec![Guarded {
                    placeholder: placeholder.clone(),
                    token: r.token.to_secret_string(),
                    expires_at: None,
                }];
                // A signing binding's other real keys map back to their placeholders.
                if let Some(SigningKeys::AwsSigV4(k)) = r.signing.as_deref() {
                    use secrecy::ExposeSecret;
                    guarded.push(Guarded {
                        placeholder: k.placeholder_secret.expose_secret().to_owned(),
                        token: k.secret_access_key.clone(),
                        expires_at: None,
                    });
                    // Empty until STS answers (role secrets): nothing to guard.
                    if let Some(t) = k
                        .session_token
                        .as_ref()
                        .filter(|t| !t.token.expose_secret().is_empty())
                    {
                        guarded.push(Guarded {
                            placeholder: t.placeholder.clone(),
                            token: t.token.clone(),
                            expires_at: None,
                        });
                    }
                }
                guarded
            })
            .collect())
    }

    async fn host_policy(&self, sandbox: &SandboxId, host: &str) -> HostPolicy {
        if sandbox != &self.sandbox {
            return HostPolicy::default();
        }
        let mut out: Vec<Requirement> = self
            .by_placeholder
            .values()
            .filter(|r| r.binding.rules.require() && r.binding.allows_host(host))
            .map(|r| Requirement {
                binding: r.binding.id.clone(),
                dry_run: r.binding.rules.mode() == crate::RulesMode::DryRun,
            })
            .collect();
        out.sort_by(|a, b| a.binding.cmp(&b.binding));
        let mut signers: Vec<String> = self
            .by_placeholder
            .iter()
            .filter(|(_, r)| r.binding.kind == BindingKind::Hmac && r.binding.allows_host(host))
            .map(|(p, _)| p.clone())
            .collect();
        signers.sort();
        let injecting = self
            .injecting
            .iter()
            .filter(|(_, hosts)| hosts.iter().any(|p| p.matches(host)))
            .map(|(a, _)| a.clone())
            .collect();
        HostPolicy {
            required: out,
            signers,
            inject_absent: AbsentInjection::sole(injecting, sandbox.as_str(), host),
        }
    }

    async fn step_up(
        &self,
        sandbox: &SandboxId,
        connection_id: &str,
        needed: &[String],
    ) -> Result<StepUp, TokenError> {
        let _ = (sandbox, needed);
        Err(TokenError::Unavailable(format!(
            "connection {connection_id} is not a config-file secret: static secrets have no scopes"
        )))
    }

    async fn may_swap_body(&self, sandbox: &SandboxId, host: &str) -> bool {
        sandbox == &self.sandbox
            && self
                .by_placeholder
                .values()
                .any(|r| r.binding.allows_host(host) && r.binding.allows(SwapLocation::Body))
    }

    async fn status(&self, sandbox: &SandboxId) -> Result<SandboxStatus, TokenError> {
        let mut status = SandboxStatus::empty(sandbox);
        if sandbox != &self.sandbox {
            return Ok(status);
        }
        // A config-file secret is there as long as the file says so.
        status.merge(
            self.by_placeholder
                .values()
                .map(|r| CredentialStatus {
                    variable: r.binding.name.clone(),
                    kind: CredentialKind::Static,
                    provider: None,
                    connection: None,
                    hosts: r.binding.hosts.iter().map(|h| h.to_string()).collect(),
                    state: CredentialState::Connected,
                    scopes: Vec::new(),
                    expires_at: None,
                    connect_url: None,
                })
                .collect(),
        );
        Ok(status)
    }

    async fn authenticate(&self, sandbox_id: &str, _secret: &str) -> Result<SandboxId, TokenError> {
        // Static secrets serve only the sidecar sandbox, which needs no credential.
        if sandbox_id == self.sandbox.as_str() {
            Ok(self.sandbox.clone())
        } else {
            Err(TokenError::BadCredential)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate_placeholder;

    fn source() -> (StaticSecrets, String) {
        let placeholder = generate_placeholder("miosa-tok-");
        let secret = StaticSecret {
            name: "GITHUB_TOKEN".into(),
            value: SecretString::from("ghp_real"),
            placeholder: placeholder.clone(),
            hosts: vec![HostPattern::parse("api.github.com").unwrap()],
            swap_in: SwapLocation::defaults(),
            on_foreign_body: Default::default(),
            rules: Default::default(),
            signing: None,
            inject_when_absent: None,
        };
        (
            StaticSecrets::new("miosa-tok-", SandboxId::default_sandbox(), vec![secret]),
            placeholder,
        )
    }

    #[tokio::test]
    async fn resolves_only_for_its_sandbox() {
        let (src, placeholder) = source();
        let ok = src
            .resolve(&SandboxId::default_sandbox(), &placeholder)
            .await
            .unwrap();
        assert_eq!(ok.binding.id, "secret:GITHUB_TOKEN");
        assert!(!format!("{ok:?}").contains("ghp_real"));
        let other = src
            .resolve(&SandboxId::new("other"), &placeholder)
            .await
            .unwrap_err();
        assert!(matches!(other, TokenError::WrongSandbox { .. }));
        let unknown = src
            .resolve(&SandboxId::default_sandbox(), "miosa-tok-nope")
            .await
            .unwrap_err();
        assert!(matches!(unknown, TokenError::UnknownPlaceholder));
        assert!(
            src.is_bound_host(&SandboxId::default_sandbox(), "api.github.com")
                .await
        );
        assert!(
            !src.is_bound_host(&SandboxId::default_sandbox(), "example.com")
                .await
        );
    }

    #[tokio::test]
    async fn status_lists_secrets_as_connected_for_their_sandbox_only() {
        let (src, _) = source();
        let status = src.status(&SandboxId::default_sandbox()).await.unwrap();
        assert_eq!(status.version, crate::STATUS_VERSION);
        assert_eq!(status.credentials.len(), 1);
        let c = &status.credentials[0];
        assert_eq!(c.variable, "GITHUB_TOKEN");
        assert_eq!(c.kind, CredentialKind::Static);
        assert_eq!(c.state, CredentialState::Connected);
        assert_eq!(c.hosts, vec!["api.github.com".to_owned()]);
        let json = serde_json::to_string(&status).unwrap();
        assert!(!json.contains("ghp_real"), "{json}");
        let other = src.status(&SandboxId::new("other")).await.unwrap();
        assert!(other.credentials.is_empty());
        assert_eq!(other.sandbox, "other");
    }

    #[tokio::test]
    async fn body_swap_is_known_per_host() {
        let (src, _) = source();
        let sbx = SandboxId::default_sandbox();
        assert!(
            !src.may_swap_body(&sbx, "api.github.com").await,
            "header and basic only"
        );
        let secret = StaticSecret {
            name: "LLM_KEY".into(),
            value: SecretString::from("sk_real"),
            placeholder: generate_placeholder("miosa-tok-"),
            hosts: vec![HostPattern::parse("api.llm.test").unwrap()],
            swap_in: [SwapLocation::Header, SwapLocation::Body]
                .into_iter()
                .collect(),
            on_foreign_body: Default::default(),
            rules: Default::default(),
            signing: None,
            inject_when_absent: None,
        };
        let src = StaticSecrets::new("miosa-tok-", sbx.clone(), vec![secret]);
        assert!(src.may_swap_body(&sbx, "api.llm.test").await);
        assert!(!src.may_swap_body(&sbx, "api.github.com").await);
        assert!(
            !src.may_swap_body(&SandboxId::new("other"), "api.llm.test")
                .await
        );
    }

    fn injecting(name: &str, host: &str, inject: &str) -> StaticSecret {
        StaticSecret {
            name: name.into(),
            value: SecretString::from("real"),
            placeholder: generate_placeholder("miosa-tok-"),
            hosts: vec![HostPattern::parse(host).unwrap()],
            swap_in: SwapLocation::defaults(),
            on_foreign_body: Default::default(),
            rules: Default::default(),
            signing: None,
            inject_when_absent: Some(Injection::parse(inject).unwrap()),
        }
    }

    #[tokio::test]
    async fn a_secret_that_injects_when_absent_is_named_for_its_hosts_only_and_never_two() {
        let sbx = SandboxId::default_sandbox();
        let one = injecting("API_KEY", "api.one.test", "header:X-Api-Key");
        let placeholder = one.placeholder.clone();
        let (plain, _) = source();
        let both = StaticSecrets::new(
            "miosa-tok-",
            sbx.clone(),
            vec![
                one,
                injecting("OTHER", "api.two.test", "bearer"),
                injecting("SECOND", "api.two.test", "basic:x"),
            ],
        );
        let policy = both.host_policy(&sbx, "api.one.test").await;
        assert_eq!(
            policy.inject_absent,
            Some(AbsentInjection {
                binding: "secret:API_KEY".into(),
                placeholder,
                inject: "header:x-api-key".into(),
            })
        );
        // Two would inject on one host: neither does.
        assert_eq!(
            both.host_policy(&sbx, "api.two.test").await.inject_absent,
            None
        );
        assert_eq!(
            both.host_policy(&sbx, "elsewhere.test").await.inject_absent,
            None
        );
        assert_eq!(
            both.host_policy(&SandboxId::new("other"), "api.one.test")
                .await
                .inject_absent,
            None
        );
        // Not opted in: never injected.
        assert_eq!(
            plain
                .host_policy(&sbx, "api.github.com")
                .await
                .inject_absent,
            None
        );
    }
}
