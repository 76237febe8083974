//! Sandboxes, their proxy credential, and the bindings that give them placeholders.

use std::collections::BTreeMap;

use airlock_vault_client::secret_kind::INJECT_WHEN_ABSENT_SIGNING;
use airlock_vault_client::{generate_placeholder, RequestRules, RulesSpec, SecretKind};
use serde::{Deserialize, Serialize};

use crate::error::VaultError;
use crate::scope::check_name;
use crate::store::{new_id, now, BindingRow, BindingTarget, ConnectionRow, SandboxRow};
use crate::{sha256_hex, Vault, DEFAULT_ENVIRONMENT, DEFAULT_TENANT};

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
    pub environment: String,
    pub workspace: Option<String>,
    pub user: Option<String>,
    pub created_at: i64,
    pub bindings: Vec<(String, String)>,
    /// Bindings with rules of their own, by variable.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rules: BTreeMap<String, RulesSpec>,
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
    /// Request rules by variable name, replacing the provider's.
    #[serde(default)]
    pub rules: BTreeMap<String, RulesSpec>,
    /// How long this sandbox's requests wait for a human when they do not
    /// say (`Prefer: wait=N`); absent: the proxy's `consent_wait_secs`.
    #[serde(default)]
    pub consent_wait_secs: Option<u32>,
    /// Whose connections it resolves (default: `default`).
    #[serde(default = "default_environment")]
    pub environment: String,
    /// Bindings pinned to one named connection each.
    #[serde(default)]
    pub connections: Vec<ConnectionPin>,
}

/// A binding pinned to the connection called `name`: the sandbox gets that
/// account's token under `variable` (default: the connection's own
/// variable, else its provider's), never another account's.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPin {
    /// May be left out when one provider has a connection of that name.
    #[serde(default)]
    pub provider: Option<String>,
    pub name: String,
    #[serde(default)]
    pub variable: Option<String>,
}

impl std::str::FromStr for ConnectionPin {
    type Err = VaultError;

    /// `[VARIABLE=][PROVIDER:]NAME`, as the CLI takes it.
    fn from_str(text: &str) -> Result<Self, VaultError> {
        let (variable, rest) = match text.split_once('=') {
            Some((v, rest)) => (Some(v.to_owned()), rest),
            None => (None, text),
        };
        let (provider, name) = match rest.split_once(':') {
            Some((p, n)) => (Some(p.to_owned()), n.to_owned()),
            None => (None, rest.to_owned()),
        };
        if name.is_empty() || provider.as_deref() == Some("") || variable.as_deref() == Some("") {
            return Err(VaultError::Invalid(format!(
                "{text:?} is not a connection: write [VARIABLE=][PROVIDER:]NAME (e.g. GITHUB_PERSONAL_TOKEN=github:personal)"
            )));
        }
        Ok(Self {
            provider,
            name,
            variable,
        })
    }
}

fn default_environment() -> String {
    DEFAULT_ENVIRONMENT.into()
}

/// The spec as stored, after checking it compiles; `None` for the empty spec.
fn rules_json(
    variable: &str,
    target: BindingTarget,
    secret_kind: Option<SecretKind>,
    spec: &RulesSpec,
) -> Result<Option<String>, VaultError> {
    if spec.is_empty() {
        return Ok(None);
    }
    // Injecting needs a slot to put the placeholder in; a vault secret has
    // none, and a signing one's sandbox signs its own requests.
    if let (BindingTarget::Secret, Some(true)) = (target, spec.inject_when_absent) {
        let why = if secret_kind.is_some_and(SecretKind::is_signing) {
            INJECT_WHEN_ABSENT_SIGNING
        } else {
            crate::secrets::INJECT_WHEN_ABSENT_VAULT
        };
        return Err(VaultError::Invalid(format!("rules of {variable}: {why}")));
    }
    RequestRules::compile(spec).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        VaultError::Invalid(format!("rules of {variable}: {}", list.join("; ")))
    })?;
    Ok(Some(
        serde_json::to_string(spec).expect("a rules spec serialises"),
    ))
}

pub(crate) fn default_tenant() -> String {
    DEFAULT_TENANT.into()
}

impl Vault {
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
        self.check_environment(&new.environment).await?;
        let id = new.id.clone().unwrap_or_else(|| new_id("sbx"));
        if self.store.sandbox(&id).await?.is_some() {
            return Err(VaultError::Conflict(format!("sandbox {id} already exists")));
        }
        let mut bindings = Vec::new();
        for name in &new.providers {
            let provider = self.provider(name)?;
            bindings.push(self.new_binding(&id, &provider.env, BindingTarget::Provider, name));
        }
        for pin in &new.connections {
            let connection = self
                .pinned_connection(
                    &new.tenant,
                    &new.environment,
                    new.workspace.as_deref(),
                    new.user.as_deref(),
                    pin,
                )
                .await?;
            bindings.push(self.pinned_binding(&id, &connection, pin.variable.as_deref())?);
        }
        for name in &new.secrets {
            if self.store.secret(&new.tenant, name).await?.is_none() {
                return Err(VaultError::NotFound(format!(
                    "secret {name:?} of tenant {}",
                    new.tenant
                )));
            }
            bindings.push(self.new_binding(&id, name, BindingTarget::Secret, name));
        }
        // Every variable, a signing binding's extra ones (an AWS secret's
        // secret key and session token) included.
        let variables = self.bindings_env(&new.tenant, &bindings).await?;
        let mut seen = std::collections::BTreeSet::new();
        if let Some((dup, _)) = variables.iter().find(|(v, _)| !seen.insert(v.clone())) {
            return Err(VaultError::Invalid(format!(
                "two bindings would use the variable {dup}"
            )));
        }
        for (variable, spec) in &new.rules {
            let Some(binding) = bindings.iter_mut().find(|b| &b.env_name == variable) else {
                return Err(VaultError::Invalid(format!(
                    "rules name the variable {variable}, which none of the sandbox's providers or secrets gives"
                )));
            };
            let kind = self.secret_kind_of(&new.tenant, binding).await?;
            binding.rules = rules_json(variable, binding.target_kind, kind, spec)?;
        }
        let proxy_secret = generate_placeholder("");
        let row = SandboxRow {
            id: id.clone(),
            tenant: new.tenant.clone(),
            workspace: new.workspace.clone(),
            user_name: new.user.clone(),
            secret_hash: sha256_hex(&proxy_secret),
            created_at: now(),
            consent_wait_secs: new.consent_wait_secs.map(|s| s as i64),
            environment: new.environment.clone(),
        };
        self.store.insert_sandbox(&row, &bindings).await?;
        // Proxies cache per sandbox id: a fresh random id has nothing cached
        // to go stale, so only a chosen id (perhaps of a deleted sandbox)
        // empties every proxy's caches, which a busy gateway pays for.
        if new.id.is_some() {
            self.bump_generation();
        }
        let proxy_url = self.proxy_url_with_credential(&id, &proxy_secret);
        let env = self.sandbox_env(&proxy_url, &new.tenant, &bindings).await?;
        Ok(SandboxCreated {
            id,
            proxy_secret,
            proxy_url,
            env,
        })
    }

    /// Makes sure the sidecar sandbox exists in `environment` and has a
    /// placeholder for each of `providers` and `secrets`, and for each
    /// connection of its environment that has a variable of its own (a
    /// machine account's `expose_as_env`, pinned to it); returns its
    /// bindings as (variable, placeholder).
    pub async fn ensure_sandbox(
        &self,
        id: &str,
        environment: &str,
        providers: &[String],
        secrets: &[String],
    ) -> Result<Vec<(String, String)>, VaultError> {
        self.check_environment(environment).await?;
        match self.store.sandbox(id).await? {
            None => {
                let row = SandboxRow {
                    id: id.to_owned(),
                    tenant: DEFAULT_TENANT.into(),
                    workspace: None,
                    user_name: None,
                    secret_hash: sha256_hex(&generate_placeholder("")),
                    created_at: now(),
                    consent_wait_secs: None,
                    environment: environment.to_owned(),
                };
                self.store.ensure_sandbox_row(&row).await?;
            }
            // The sidecar follows its configuration.
            Some(row) if row.environment != environment => {
                self.store.set_sandbox_environment(id, environment).await?;
            }
            Some(_) => {}
        }
        let existing = self.store.bindings_of(id).await?;
        let mut missing: Vec<BindingRow> = Vec::new();
        // Pinned first: a variable of its own wins over its provider's.
        for c in self.store.connections().await? {
            let Some(variable) = &c.env_name else {
                continue;
            };
            if c.tenant != DEFAULT_TENANT || c.environment != environment || !c.usable() {
                continue;
            }
            let pinned_here = |b: &BindingRow| {
                b.target_kind == BindingTarget::Provider
                    && b.target == c.provider
                    && b.connection_name.as_deref() == Some(c.name.as_str())
            };
            if existing.iter().chain(&missing).any(pinned_here)
                || existing
                    .iter()
                    .chain(&missing)
                    .any(|b| &b.env_name == variable)
            {
                continue;
            }
            missing.push(self.pinned_binding(id, &c, None)?);
        }
        for (kind, names) in [
            (BindingTarget::Provider, providers),
            (BindingTarget::Secret, secrets),
        ] {
            for name in names {
                if existing.iter().any(|b| {
                    b.target_kind == kind && &b.target == name && b.connection_name.is_none()
                }) {
                    continue;
                }
                let env = if kind == BindingTarget::Provider {
                    self.provider(name)?.env
                } else {
                    name.clone()
                };
                if let Some(other) = existing
                    .iter()
                    .chain(&missing)
                    .find(|b: &&BindingRow| b.env_name == env)
                {
                    if kind == BindingTarget::Provider
                        && other.target_kind == kind
                        && &other.target == name
                    {
                        // Pinned to one of this provider's connections already.
                        continue;
                    }
                    // Two values for one variable: refuse rather than pick one silently.
                    return Err(VaultError::Config(format!(
                        "variable {env} is claimed by {kind} {name:?} and by {} {:?}; \
                         a sandbox can get only one value for it (rename the secret or set the provider's env)",
                        other.target_kind, other.target
                    )));
                }
                missing.push(self.new_binding(id, &env, kind, name));
            }
        }
        // A signing secret's extra variables (an AWS secret's secret key)
        // may meet another binding's.
        let all: Vec<BindingRow> = existing.iter().chain(&missing).cloned().collect();
        let mut seen = std::collections::BTreeSet::new();
        for (variable, _) in self.bindings_env(DEFAULT_TENANT, &all).await? {
            if !seen.insert(variable.clone()) {
                return Err(VaultError::Config(format!(
                    "variable {variable} is given by two of the sandbox's bindings; \
                     a sandbox can get only one value for it (rename the secret's variables)"
                )));
            }
        }
        self.store.add_bindings(&missing).await?;
        self.bump_generation();
        let bindings = self.store.bindings_of(id).await?;
        self.bindings_env(DEFAULT_TENANT, &bindings).await
    }

    /// A binding's variables: its own, and for an OAuth 1.0a provider the
    /// consumer key and secret and token secret placeholders made from it.
    /// An AWS SigV4 secret's adds its placeholder secret access key and
    /// session token, made from it likewise. `tenant` owns the sandbox.
    pub async fn binding_env(
        &self,
        tenant: &str,
        b: &BindingRow,
    ) -> Result<Vec<(String, String)>, VaultError> {
        Ok(match b.target_kind {
            BindingTarget::Provider if self.provider(&b.target).is_ok_and(|p| p.is_oauth1()) => {
                airlock_vault_client::oauth1::environment(&b.env_name, &b.placeholder)
            }
            BindingTarget::Provider => vec![(b.env_name.clone(), b.placeholder.clone())],
            BindingTarget::Secret => {
                let row = self.store.secret(tenant, &b.target).await?;
                Self::secret_binding_env(row.as_ref(), &b.env_name, &b.placeholder)
            }
        })
    }

    /// The kind of the vault secret a binding names; `None` for a provider
    /// (or a secret gone meanwhile).
    async fn secret_kind_of(
        &self,
        tenant: &str,
        b: &BindingRow,
    ) -> Result<Option<SecretKind>, VaultError> {
        Ok(match b.target_kind {
            BindingTarget::Secret => self.store.secret(tenant, &b.target).await?.map(|s| s.kind),
            BindingTarget::Provider => None,
        })
    }

    /// [`Self::binding_env`] of each binding, in order.
    pub async fn bindings_env(
        &self,
        tenant: &str,
        bindings: &[BindingRow],
    ) -> Result<Vec<(String, String)>, VaultError> {
        let mut env = Vec::new();
        for b in bindings {
            env.extend(self.binding_env(tenant, b).await?);
        }
        Ok(env)
    }

    /// The connection `pin` names, checked: it exists in the sandbox's
    /// tenant and environment, for the provider given, and the sandbox's
    /// owner sees it.
    async fn pinned_connection(
        &self,
        tenant: &str,
        environment: &str,
        workspace: Option<&str>,
        user: Option<&str>,
        pin: &ConnectionPin,
    ) -> Result<ConnectionRow, VaultError> {
        check_name("connection name", &pin.name)?;
        let connection = match &pin.provider {
            Some(provider) => {
                self.provider(provider)?;
                match self
                    .store
                    .named_connection(tenant, environment, provider, &pin.name)
                    .await?
                {
                    Some(c) => c,
                    None => {
                        return Err(self
                            .no_such_connection(tenant, environment, Some(provider), &pin.name)
                            .await?)
                    }
                }
            }
            None => {
                let mut all = self
                    .store
                    .connections_named(tenant, environment, &pin.name)
                    .await?;
                match all.len() {
                    1 => all.remove(0),
                    0 => {
                        return Err(self
                            .no_such_connection(tenant, environment, None, &pin.name)
                            .await?)
                    }
                    _ => {
                        let providers: Vec<&str> =
                            all.iter().map(|c| c.provider.as_str()).collect();
                        return Err(VaultError::Invalid(format!(
                            "connection name {:?} is used by providers {} in environment {environment}; \
                             say which: PROVIDER:{}",
                            pin.name,
                            providers.join(", "),
                            pin.name
                        )));
                    }
                }
            }
        };
        if !connection.visible_to(workspace, user) {
            return Err(VaultError::Invalid(format!(
                "connection {:?} of {} belongs to {}:{}, which this sandbox's owner is not",
                pin.name, connection.provider, connection.scope_kind, connection.scope_name
            )));
        }
        Ok(connection)
    }

    /// Why a pin finds nothing: no such name, or the name is another
    /// provider's or another environment's.
    async fn no_such_connection(
        &self,
        tenant: &str,
        environment: &str,
        provider: Option<&str>,
        name: &str,
    ) -> Result<VaultError, VaultError> {
        let elsewhere: Vec<String> = self
            .store
            .connections()
            .await?
            .into_iter()
            .filter(|c| c.tenant == tenant && c.name == name)
            .map(|c| format!("{} in environment {}", c.provider, c.environment))
            .collect();
        let what = match provider {
            Some(p) => format!("no {p} connection is called {name:?} in environment {environment} of tenant {tenant}"),
            None => format!("no connection is called {name:?} in environment {environment} of tenant {tenant}"),
        };
        Ok(VaultError::NotFound(if elsewhere.is_empty() {
            format!("{what} (connect one with airlock connect PROVIDER --name {name})")
        } else {
            format!("{what}; that name is {}", elsewhere.join(", "))
        }))
    }

    /// A binding of `connection` under `variable`, else its own, else its provider's.
    fn pinned_binding(
        &self,
        sandbox: &str,
        connection: &ConnectionRow,
        variable: Option<&str>,
    ) -> Result<BindingRow, VaultError> {
        let provider = self.provider(&connection.provider)?;
        let env = variable
            .or(connection.env_name.as_deref())
            .unwrap_or(&provider.env);
        if let Some(v) = variable {
            let mut probe = provider.clone();
            probe.env = v.to_owned();
            if probe.validate().is_err() {
                return Err(VaultError::Invalid(format!(
                    "variable {v:?} must be an upper-case environment variable name"
                )));
            }
        }
        let mut binding =
            self.new_binding(sandbox, env, BindingTarget::Provider, &connection.provider);
        binding.connection_name = Some(connection.name.clone());
        Ok(binding)
    }

    /// The connection a provider binding of `owner` resolves: its pinned
    /// one, or the most specific it sees, in its environment, usable now.
    pub(crate) async fn binding_connection(
        &self,
        owner: &SandboxRow,
        binding: &BindingRow,
    ) -> Result<Option<ConnectionRow>, VaultError> {
        match &binding.connection_name {
            None => {
                self.store
                    .visible_connection(
                        &owner.tenant,
                        &owner.environment,
                        &binding.target,
                        owner.workspace.as_deref(),
                        owner.user_name.as_deref(),
                    )
                    .await
            }
            // Never another account: a pin that finds nothing usable is
            // not connected.
            Some(name) => Ok(self
                .store
                .named_connection(&owner.tenant, &owner.environment, &binding.target, name)
                .await?
                .filter(|c| {
                    c.usable()
                        && c.visible_to(owner.workspace.as_deref(), owner.user_name.as_deref())
                })),
        }
    }

    pub(crate) fn new_binding(
        &self,
        sandbox: &str,
        env: &str,
        kind: BindingTarget,
        target: &str,
    ) -> BindingRow {
        BindingRow {
            placeholder: generate_placeholder(&self.settings.placeholder_prefix),
            sandbox_id: sandbox.to_owned(),
            env_name: env.to_owned(),
            target_kind: kind,
            target: target.to_owned(),
            rules: None,
            connection_name: None,
        }
    }

    pub(crate) fn proxy_url_with_credential(&self, id: &str, secret: &str) -> String {
        match self.settings.proxy_url.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{id}:{secret}@{rest}"),
            None => self.settings.proxy_url.clone(),
        }
    }

    pub(crate) async fn sandbox_env(
        &self,
        proxy_url: &str,
        tenant: &str,
        bindings: &[BindingRow],
    ) -> Result<Vec<(String, String)>, VaultError> {
        let mut env: Vec<(String, String)> =
            ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"]
                .iter()
                .map(|k| (k.to_string(), proxy_url.to_owned()))
                .collect();
        env.extend(self.settings.base_env.iter().cloned());
        env.extend(self.bindings_env(tenant, bindings).await?);
        Ok(env)
    }

    /// Sets the request rules of one binding of a sandbox (an empty spec
    /// goes back to the provider's). Proxies see them on their next request.
    pub async fn set_binding_rules(
        &self,
        sandbox: &str,
        variable: &str,
        spec: &RulesSpec,
    ) -> Result<(), VaultError> {
        let Some(row) = self.store.sandbox(sandbox).await? else {
            return Err(VaultError::NotFound(format!("sandbox {sandbox}")));
        };
        let binding = self
            .store
            .bindings_of(sandbox)
            .await?
            .into_iter()
            .find(|b| b.env_name == variable);
        let (target, kind) = match &binding {
            Some(b) => (b.target_kind, self.secret_kind_of(&row.tenant, b).await?),
            None => (BindingTarget::Provider, None),
        };
        let json = rules_json(variable, target, kind, spec)?;
        if !self
            .store
            .set_binding_rules(sandbox, variable, json.as_deref())
            .await?
        {
            return Err(VaultError::NotFound(format!(
                "variable {variable} of sandbox {sandbox}"
            )));
        }
        self.bump_generation();
        Ok(())
    }

    pub async fn sandboxes(&self) -> Result<Vec<SandboxView>, VaultError> {
        let mut out = Vec::new();
        for s in self.store.sandboxes().await? {
            let rows = self.store.bindings_of(&s.id).await?;
            let rules = rows
                .iter()
                .filter_map(|b| {
                    let spec = serde_json::from_str(b.rules.as_deref()?).ok()?;
                    Some((b.env_name.clone(), spec))
                })
                .collect();
            let bindings = rows
                .into_iter()
                .map(|b| (b.env_name.clone(), b.id()))
                .collect();
            out.push(SandboxView {
                id: s.id,
                tenant: s.tenant,
                environment: s.environment,
                workspace: s.workspace,
                user: s.user_name,
                created_at: s.created_at,
                bindings,
                rules,
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
}

#[cfg(test)]
mod tests {
    use airlock_vault_client::TokenSource;

    use crate::testing::acme_vault;
    use crate::{NewSandbox, VaultSettings};

    fn new_sandbox(id: Option<&str>) -> NewSandbox {
        NewSandbox {
            tenant: "default".into(),
            workspace: None,
            user: None,
            providers: vec!["acme".into()],
            secrets: vec![],
            id: id.map(Into::into),
            rules: Default::default(),
            consent_wait_secs: None,
            connections: vec![],
            environment: "default".into(),
        }
    }

    /// A busy gateway creating sandboxes must not empty every proxy's
    /// caches each time; a chosen id may be a deleted sandbox's, so it does.
    #[tokio::test]
    async fn only_a_chosen_sandbox_id_makes_proxies_forget_their_caches() {
        let (vault, _dir) = acme_vault(9, VaultSettings::default()).await;
        let before = vault.generation();
        vault.create_sandbox(new_sandbox(None)).await.unwrap();
        vault.create_sandbox(new_sandbox(None)).await.unwrap();
        assert_eq!(
            vault.generation(),
            before,
            "a random id changed the generation"
        );

        vault
            .create_sandbox(new_sandbox(Some("sbx-reused")))
            .await
            .unwrap();
        let after_create = vault.generation();
        assert!(after_create > before, "a chosen id left proxies' caches");
        vault.delete_sandbox("sbx-reused").await.unwrap();
        assert!(
            vault.generation() > after_create,
            "a delete left proxies' caches"
        );
    }

    fn policy(json: &str) -> airlock_vault_client::RulesSpec {
        serde_json::from_str(json).unwrap()
    }

    /// A binding's own policy turns injecting on or off over its
    /// provider's default, for that binding alone; a vault secret, which
    /// has no slot, cannot be told to.
    #[tokio::test]
    async fn a_binding_opts_in_and_out_of_injecting_when_absent() {
        let (vault, _dir) = acme_vault(9, VaultSettings::default()).await;
        let host = "api.acme.test";
        let on = vault.create_sandbox(new_sandbox(None)).await.unwrap().id;
        let off = vault.create_sandbox(new_sandbox(None)).await.unwrap().id;
        assert_eq!(
            vault.host_policy(&on, host).await.unwrap().inject_absent,
            None,
            "acme does not inject by default"
        );
        vault
            .set_binding_rules(&on, "ACME_TOKEN", &policy(r#"{"inject_when_absent":true}"#))
            .await
            .unwrap();
        let injecting = vault.host_policy(&on, host).await.unwrap().inject_absent;
        let injecting = injecting.expect("opted in");
        assert_eq!(
            (injecting.binding.as_str(), injecting.inject.as_str()),
            ("provider:acme", "bearer")
        );
        assert_eq!(
            vault
                .host_policy(&on, "other.test")
                .await
                .unwrap()
                .inject_absent,
            None
        );
        assert_eq!(
            vault.host_policy(&off, host).await.unwrap().inject_absent,
            None,
            "another sandbox's binding is not affected"
        );
        vault
            .set_binding_rules(
                &on,
                "ACME_TOKEN",
                &policy(r#"{"inject_when_absent":false}"#),
            )
            .await
            .unwrap();
        assert_eq!(
            vault.host_policy(&on, host).await.unwrap().inject_absent,
            None
        );

        vault
            .add_secret(
                "default",
                "LINEAR_KEY",
                airlock_vault_client::SecretString::from("lin_value_1234"),
                vec!["api.linear.test".into()],
                None,
            )
            .await
            .unwrap();
        let mut with_secret = new_sandbox(None);
        with_secret.secrets = vec!["LINEAR_KEY".into()];
        let sbx = vault.create_sandbox(with_secret.clone()).await.unwrap().id;
        let err = vault
            .set_binding_rules(
                &sbx,
                "LINEAR_KEY",
                &policy(r#"{"inject_when_absent":true}"#),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("needs an injection slot"), "{err}");
        with_secret.rules.insert(
            "LINEAR_KEY".into(),
            policy(r#"{"inject_when_absent":true}"#),
        );
        let err = vault.create_sandbox(with_secret).await.unwrap_err();
        assert!(err.to_string().contains("needs an injection slot"), "{err}");
    }
}
