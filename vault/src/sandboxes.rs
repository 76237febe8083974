//! Sandboxes, their proxy credential, and the bindings that give them placeholders.

use std::collections::BTreeMap;

use airlock_vault_client::{generate_placeholder, RequestRules, RulesSpec};
use serde::{Deserialize, Serialize};

use crate::error::VaultError;
use crate::scope::check_name;
use crate::store::{new_id, now, BindingRow, BindingTarget, SandboxRow};
use crate::{sha256_hex, Vault, DEFAULT_TENANT};

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
}

/// The spec as stored, after checking it compiles; `None` for the empty spec.
fn rules_json(variable: &str, spec: &RulesSpec) -> Result<Option<String>, VaultError> {
    if spec.is_empty() {
        return Ok(None);
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
        let id = new.id.clone().unwrap_or_else(|| new_id("sbx"));
        if self.store.sandbox(&id).await?.is_some() {
            return Err(VaultError::Conflict(format!("sandbox {id} already exists")));
        }
        let mut bindings = Vec::new();
        for name in &new.providers {
            let provider = self.provider(name)?;
            bindings.push(self.new_binding(&id, &provider.env, BindingTarget::Provider, name));
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
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = bindings.iter().find(|b| !seen.insert(b.env_name.clone())) {
            return Err(VaultError::Invalid(format!(
                "two bindings would use the variable {}",
                dup.env_name
            )));
        }
        for (variable, spec) in &new.rules {
            let Some(binding) = bindings.iter_mut().find(|b| &b.env_name == variable) else {
                return Err(VaultError::Invalid(format!(
                    "rules name the variable {variable}, which none of the sandbox's providers or secrets gives"
                )));
            };
            binding.rules = rules_json(variable, spec)?;
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
                consent_wait_secs: None,
            };
            self.store.ensure_sandbox_row(&row).await?;
        }
        let existing = self.store.bindings_of(id).await?;
        let mut missing = Vec::new();
        for (kind, names) in [
            (BindingTarget::Provider, providers),
            (BindingTarget::Secret, secrets),
        ] {
            for name in names {
                if existing
                    .iter()
                    .any(|b| b.target_kind == kind && &b.target == name)
                {
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
        }
    }

    pub(crate) fn proxy_url_with_credential(&self, id: &str, secret: &str) -> String {
        match self.settings.proxy_url.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{id}:{secret}@{rest}"),
            None => self.settings.proxy_url.clone(),
        }
    }

    pub(crate) fn sandbox_env(
        &self,
        proxy_url: &str,
        bindings: &[BindingRow],
    ) -> Vec<(String, String)> {
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

    /// Sets the request rules of one binding of a sandbox (an empty spec
    /// goes back to the provider's). Proxies see them on their next request.
    pub async fn set_binding_rules(
        &self,
        sandbox: &str,
        variable: &str,
        spec: &RulesSpec,
    ) -> Result<(), VaultError> {
        let json = rules_json(variable, spec)?;
        if self.store.sandbox(sandbox).await?.is_none() {
            return Err(VaultError::NotFound(format!("sandbox {sandbox}")));
        }
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
                .map(|b| (b.env_name, format!("{}:{}", b.target_kind, b.target)))
                .collect();
            out.push(SandboxView {
                id: s.id,
                tenant: s.tenant,
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
