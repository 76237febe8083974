//! Test seam: a scripted [`TokenSource`] whose bindings, tokens and refresh
//! answers a test sets, and which records every refresh it was asked for;
//! [`in_process`], a whole proxy in this process over a loopback TLS
//! upstream; and [`scripted`], a scripted send stage.

pub(crate) mod in_process;
pub(crate) mod scripted;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::shared::Shared;

use airlock_vault_client::{
    generate_placeholder, AbsentInjection, Binding, BindingKind, CredentialKind, CredentialState,
    CredentialStatus, ExpiredSignal, ExposeSecret, ForeignBody, Guarded, HostPattern, HostPolicy,
    Injection, Requirement, Resolved, RulesMode, SandboxId, SandboxStatus, ScopeSignal,
    SecretString, StepUp, SwapLocation, TokenError, TokenSource,
};

pub(crate) const PREFIX: &str = "miosa-tok-";

/// A proxy's shared state over `tokens`, never listening: for stages that
/// take [`Shared`] but no socket.
pub(crate) fn shared(
    tokens: Arc<dyn TokenSource>,
    configure: impl FnOnce(&mut crate::ProxySettings),
) -> Shared {
    let mut settings = crate::ProxySettings::default();
    configure(&mut settings);
    let ca = airlock_certs::CertificateAuthority::generate("test airlock CA").unwrap();
    let leaves = Arc::new(airlock_certs::LeafCache::new(Arc::new(ca), 10));
    Shared::new(
        settings,
        tokens,
        leaves,
        "127.0.0.1:9".parse().unwrap(),
        crate::Telemetry::default(),
        Arc::new(crate::limits::Descriptors::for_process()),
    )
}

#[derive(Default)]
pub(crate) struct MockTokens {
    entries: Mutex<HashMap<String, Resolved>>,
    /// What the next refresh of a placeholder answers; absent: the same token.
    refresh_to: Mutex<HashMap<String, Result<String, TokenError>>>,
    /// (placeholder, the failed token it was asked with).
    refreshes: Mutex<Vec<(String, String)>>,
    /// Status entries listed besides the bindings' (a provider not connected).
    status_extra: Mutex<Vec<(SandboxId, CredentialStatus)>>,
    /// When set, `status` fails with this.
    status_error: Mutex<Option<TokenError>>,
    /// Every step-up asked for: (sandbox, connection, needed scopes).
    step_ups: Mutex<Vec<(SandboxId, String, Vec<String>)>>,
    /// What `host_policy` says to inject into requests with no credential.
    pub inject_absent: Mutex<Option<AbsentInjection>>,
}

impl MockTokens {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// An OAuth connection injected as `Authorization: Bearer`, 401 meaning expired.
    pub fn oauth(&self, name: &str, host: &str, token: &str) -> String {
        self.add(name, host, token, |b| {
            b.kind = BindingKind::OAuth {
                connection_id: format!("conn-{name}"),
            };
            b.inject = Some(Injection::Bearer);
            b.expired_on = ExpiredSignal::defaults();
            b.scope_signals = Arc::new(ScopeSignal::defaults());
        })
    }

    /// Changes the binding behind `placeholder`.
    pub fn configure(&self, placeholder: &str, change: impl FnOnce(&mut Binding)) {
        let mut entries = self.entries.lock().unwrap();
        let resolved = entries.get_mut(placeholder).expect("a known placeholder");
        let mut binding = (*resolved.binding).clone();
        change(&mut binding);
        resolved.binding = Arc::new(binding);
    }

    /// A static secret (never refreshed).
    pub fn secret(&self, name: &str, host: &str, token: &str) -> String {
        self.add(name, host, token, |_| {})
    }

    /// Adds a binding `configure` may change; returns its placeholder.
    pub fn add(
        &self,
        name: &str,
        host: &str,
        token: &str,
        configure: impl FnOnce(&mut Binding),
    ) -> String {
        let placeholder = generate_placeholder(PREFIX);
        let mut binding = static_binding(name, host);
        configure(&mut binding);
        let resolved = Resolved {
            binding: Arc::new(binding),
            token: airlock_vault_client::SharedToken::from(token),
            expires_at: None,
            signing: None,
        };
        self.entries
            .lock()
            .unwrap()
            .insert(placeholder.clone(), resolved);
        placeholder
    }

    /// Adds an HMAC signing binding with `spec`; returns its placeholder
    /// (the secret the sandbox signs with).
    pub fn hmac(
        &self,
        name: &str,
        host: &str,
        real: &str,
        spec: airlock_vault_client::HmacSpec,
    ) -> String {
        let placeholder = self.add(name, host, real, |b| b.kind = BindingKind::Hmac);
        let mut entries = self.entries.lock().unwrap();
        let entry = entries.get_mut(&placeholder).expect("just added");
        entry.signing = Some(Arc::new(airlock_vault_client::SigningKeys::Hmac(
            airlock_vault_client::HmacKeys { spec },
        )));
        placeholder
    }

    /// `placeholder` resolves to `token` from now on (a human reconnected).
    pub fn set_token(&self, placeholder: &str, token: &str) {
        let mut entries = self.entries.lock().unwrap();
        let entry = entries.get_mut(placeholder).expect("a known placeholder");
        entry.token = airlock_vault_client::SharedToken::from(token);
    }

    /// The next refresh of `placeholder` answers this.
    pub fn on_refresh(&self, placeholder: &str, answer: Result<&str, TokenError>) {
        self.refresh_to
            .lock()
            .unwrap()
            .insert(placeholder.into(), answer.map(str::to_owned));
    }

    /// `status` also lists `entry` for `sandbox`.
    pub fn status_entry(&self, sandbox: &SandboxId, entry: CredentialStatus) {
        self.status_extra
            .lock()
            .unwrap()
            .push((sandbox.clone(), entry));
    }

    /// `status` fails with `err` from now on.
    pub fn fail_status(&self, err: TokenError) {
        *self.status_error.lock().unwrap() = Some(err);
    }

    /// Every step-up asked for: (sandbox, connection, needed scopes).
    pub fn step_ups(&self) -> Vec<(SandboxId, String, Vec<String>)> {
        self.step_ups.lock().unwrap().clone()
    }

    /// Every refresh asked for: (placeholder, failed token).
    pub fn refreshes(&self) -> Vec<(String, String)> {
        self.refreshes.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl TokenSource for MockTokens {
    fn placeholder_prefix(&self) -> &str {
        PREFIX
    }

    async fn resolve(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
    ) -> Result<Resolved, TokenError> {
        let entries = self.entries.lock().unwrap();
        let resolved = entries
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
        let entries = self.entries.lock().unwrap();
        entries
            .values()
            .any(|r| &r.binding.sandbox == sandbox && r.binding.allows_host(host))
    }

    async fn host_policy(&self, sandbox: &SandboxId, host: &str) -> HostPolicy {
        let entries = self.entries.lock().unwrap();
        let required = entries
            .values()
            .filter(|r| {
                &r.binding.sandbox == sandbox
                    && r.binding.allows_host(host)
                    && r.binding.rules.require()
            })
            .map(|r| Requirement {
                binding: r.binding.id.clone(),
                dry_run: r.binding.rules.mode() == RulesMode::DryRun,
            })
            .collect();
        let signers = entries
            .iter()
            .filter(|(_, r)| {
                &r.binding.sandbox == sandbox
                    && r.binding.allows_host(host)
                    && r.binding.kind == BindingKind::Hmac
            })
            .map(|(p, _)| p.clone())
            .collect();
        HostPolicy {
            required,
            inject_absent: self.inject_absent.lock().unwrap().clone(),
            signers,
        }
    }

    async fn step_up(
        &self,
        sandbox: &SandboxId,
        connection_id: &str,
        needed: &[String],
    ) -> Result<StepUp, TokenError> {
        self.step_ups.lock().unwrap().push((
            sandbox.clone(),
            connection_id.to_owned(),
            needed.to_vec(),
        ));
        Ok(StepUp {
            missing: needed.to_vec(),
            connect_url: Some(format!(
                "https://vault.test/connect/step-up-{connection_id}"
            )),
        })
    }

    async fn may_swap_body(&self, sandbox: &SandboxId, host: &str) -> bool {
        let entries = self.entries.lock().unwrap();
        entries.values().any(|r| {
            &r.binding.sandbox == sandbox
                && r.binding.allows_host(host)
                && r.binding.allows(SwapLocation::Body)
        })
    }

    async fn authenticate(&self, sandbox_id: &str, secret: &str) -> Result<SandboxId, TokenError> {
        if secret == "proxy-secret" {
            Ok(SandboxId::new(sandbox_id))
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
        self.refreshes
            .lock()
            .unwrap()
            .push((placeholder.into(), failed.expose_secret().to_owned()));
        let answer = self.refresh_to.lock().unwrap().remove(placeholder);
        match answer {
            None => self.resolve(sandbox, placeholder).await,
            Some(Err(err)) => Err(err),
            Some(Ok(token)) => {
                let mut entries = self.entries.lock().unwrap();
                let entry = entries
                    .get_mut(placeholder)
                    .ok_or(TokenError::UnknownPlaceholder)?;
                entry.token = airlock_vault_client::SharedToken::from(token);
                Ok(entry.clone())
            }
        }
    }

    async fn status(&self, sandbox: &SandboxId) -> Result<SandboxStatus, TokenError> {
        if let Some(err) = self.status_error.lock().unwrap().clone() {
            return Err(err);
        }
        let mut status = SandboxStatus::empty(sandbox);
        let listed: Vec<CredentialStatus> = self
            .entries
            .lock()
            .unwrap()
            .values()
            .filter(|r| &r.binding.sandbox == sandbox)
            .map(|r| CredentialStatus {
                variable: r.binding.name.clone(),
                kind: match r.binding.kind {
                    BindingKind::Static | BindingKind::AwsSigV4 | BindingKind::Hmac => {
                        CredentialKind::Static
                    }
                    BindingKind::OAuth { .. } => CredentialKind::Oauth,
                },
                provider: None,
                connection: None,
                hosts: r.binding.hosts.iter().map(|h| h.to_string()).collect(),
                state: CredentialState::Connected,
                scopes: Vec::new(),
                expires_at: r.expires_at,
                connect_url: None,
            })
            .collect();
        status.merge(listed);
        status.merge(
            self.status_extra
                .lock()
                .unwrap()
                .iter()
                .filter(|(s, _)| s == sandbox)
                .map(|(_, c)| c.clone())
                .collect(),
        );
        Ok(status)
    }

    async fn guarded(&self, sandbox: &SandboxId) -> Result<Vec<Guarded>, TokenError> {
        let entries = self.entries.lock().unwrap();
        Ok(entries
            .iter()
            .filter(|(_, r)| &r.binding.sandbox == sandbox)
            .map(|(p, r)| Guarded {
                placeholder: p.clone(),
                token: r.token.to_secret_string(),
                expires_at: None,
            })
            .collect())
    }
}

/// A static secret's binding `secret:NAME` for `host`, as the mock source makes them.
pub fn static_binding(name: &str, host: &str) -> Binding {
    Binding {
        id: format!("secret:{name}"),
        name: name.into(),
        sandbox: SandboxId::default_sandbox(),
        hosts: vec![HostPattern::parse(host).expect("a valid host pattern")],
        swap_in: SwapLocation::defaults(),
        kind: BindingKind::Static,
        expired_on: Vec::new(),
        inject: None,
        on_foreign_body: ForeignBody::Pass,
        rules: Default::default(),
        narrowed: None,
        scope_signals: Default::default(),
    }
}
