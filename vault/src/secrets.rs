//! Static secrets kept in the vault: plain tokens, and the signing kinds
//! (AWS SigV4 keys, HMAC secrets) the proxy signs requests with again.

use std::sync::Arc;

use airlock_vault_client::secret_kind::{
    access_key_id_problem, aws_placeholders, is_reserved_variable, misplaced_settings,
    signing_variable_problem, GivenSettings, RoleSupport, DEFAULT_SECRET_VARIABLE,
    DEFAULT_SESSION_TOKEN_VARIABLE,
};
use airlock_vault_client::{
    AwsSigV4Keys, HmacKeys, HmacSettings, HostPattern, SandboxId, SecretKind, SecretString,
    SessionToken, SigningKeys, SwapLocation,
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::error::VaultError;
use crate::scope::check_name;
use crate::store::{new_id, SecretRow};
use crate::Vault;

/// A secret to store, as the admin API takes it (`POST /v1/secrets`).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSecret {
    #[serde(default = "crate::sandboxes::default_tenant")]
    pub tenant: String,
    pub name: String,
    #[serde(default)]
    pub kind: SecretKind,
    /// `static` and `hmac`: the real token or signing secret.
    #[serde(default)]
    pub value: Option<SecretString>,
    pub hosts: Vec<String>,
    #[serde(default)]
    pub swap_in: Option<Vec<SwapLocation>>,
    /// `aws_sigv4`: the real keys.
    #[serde(default)]
    pub access_key_id: Option<SecretString>,
    #[serde(default)]
    pub secret_access_key: Option<SecretString>,
    #[serde(default)]
    pub session_token: Option<SecretString>,
    /// `aws_sigv4`: the sandbox's variables for the placeholder secret and token.
    #[serde(default)]
    pub secret_variable: Option<String>,
    #[serde(default)]
    pub session_token_variable: Option<String>,
    /// Refused: STS roles are config-only.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// Refused when true: a vault secret has no injection slot, and a
    /// signing kind's sandbox signs its own requests.
    #[serde(default)]
    pub inject_when_absent: Option<bool>,
    #[serde(default)]
    pub signature_header: Option<String>,
    #[serde(default)]
    pub signature_template: Option<String>,
    #[serde(default)]
    pub signature_algorithm: Option<String>,
    #[serde(default)]
    pub signature_encoding: Option<String>,
    #[serde(default)]
    pub signature_prefix: Option<String>,
    #[serde(default)]
    pub timestamp_header: Option<String>,
}

impl NewSecret {
    fn hmac_settings(&self) -> HmacSettings {
        HmacSettings {
            signature_header: self.signature_header.clone(),
            signature_template: self.signature_template.clone(),
            signature_algorithm: self.signature_algorithm.clone(),
            signature_encoding: self.signature_encoding.clone(),
            signature_prefix: self.signature_prefix.clone(),
            timestamp_header: self.timestamp_header.clone(),
        }
    }
}

/// Said of `inject_when_absent` on a plain vault secret (the secret and its
/// sandbox bindings alike).
pub(crate) const INJECT_WHEN_ABSENT_VAULT: &str =
    "inject_when_absent needs an injection slot, which a vault secret has not (providers have `inject`)";

/// What a signing secret keeps beside its sealed values: nothing secret
/// (the `signing` column, JSON).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SigningSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_variable: Option<String>,
    /// Set when the secret has a session token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token_variable: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac: Option<HmacSettings>,
}

/// A real key from the admin API: trimmed of surrounding blanks (a file's
/// line break), then refused when empty or holding control characters.
fn real_key(
    what: &str,
    key: Option<&SecretString>,
    problems: &mut Vec<String>,
) -> Option<SecretString> {
    let key = key?;
    let trimmed = key.expose_secret().trim();
    if trimmed.is_empty() {
        problems.push(format!("{what} is empty"));
        return None;
    }
    if trimmed.bytes().any(|b| b.is_ascii_control()) {
        problems.push(format!("{what} holds control characters (line breaks?)"));
        return None;
    }
    Some(SecretString::from(trimmed.to_owned()))
}

impl Vault {
    // ---- static secrets -----------------------------------------------------

    /// Stores a plain (`static`) secret.
    pub async fn add_secret(
        &self,
        tenant: &str,
        name: &str,
        value: SecretString,
        hosts: Vec<String>,
        swap_in: Option<Vec<SwapLocation>>,
    ) -> Result<serde_json::Value, VaultError> {
        self.put_secret(NewSecret {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            value: Some(value),
            hosts,
            swap_in,
            ..NewSecret::default()
        })
        .await
    }

    /// Stores a secret of any kind, checked as a config `[[secret]]` is;
    /// every problem is reported at once and nothing is stored then.
    pub async fn put_secret(&self, new: NewSecret) -> Result<serde_json::Value, VaultError> {
        check_name("tenant", &new.tenant)?;
        let name = new.name.as_str();
        let mut problems = Vec::new();
        if !airlock_vault_client::secret_kind::is_env_name(name) {
            problems.push(format!(
                "secret name {name:?} must be an environment variable name"
            ));
        }
        if is_reserved_variable(name) {
            problems.push(format!(
                "name {name} is a variable airlock sets itself for sandboxes (proxy, CA); choose another"
            ));
        }
        let inject_when_absent = new.inject_when_absent == Some(true);
        if inject_when_absent && !new.kind.is_signing() {
            problems.push(INJECT_WHEN_ABSENT_VAULT.into());
        }
        let hmac = new.hmac_settings();
        problems.extend(misplaced_settings(
            new.kind,
            GivenSettings {
                value: new.value.is_some(),
                aws: new.access_key_id.is_some()
                    || new.secret_access_key.is_some()
                    || new.session_token.is_some()
                    || new.secret_variable.is_some()
                    || new.session_token_variable.is_some(),
                hmac: hmac.any(),
                swap_in: new.swap_in.is_some(),
                role: new.role_arn.is_some(),
                inject_when_absent,
            },
            RoleSupport::ConfigOnly,
        ));
        if new.hosts.is_empty() {
            problems.push("hosts is empty: the secret could never be sent anywhere".into());
        }
        for h in &new.hosts {
            if let Err(e) = HostPattern::parse(h) {
                problems.push(e.to_string());
            }
        }
        let mut settings = SigningSettings::default();
        let (value, secret_access_key, session_token) = match new.kind {
            SecretKind::Static | SecretKind::Hmac => {
                let value = match new.value.as_ref() {
                    Some(v)
                        if v.expose_secret().is_empty()
                            || v.expose_secret().bytes().any(|b| b.is_ascii_control()) =>
                    {
                        problems
                            .push("the secret value is empty or holds control characters".into());
                        None
                    }
                    Some(v) => Some(v.clone()),
                    None => {
                        problems.push(format!("kind = \"{}\" needs value", new.kind));
                        None
                    }
                };
                if new.kind == SecretKind::Hmac {
                    settings.hmac = hmac.spec(&mut problems).map(|spec| HmacSettings::of(&spec));
                }
                (value, None, None)
            }
            SecretKind::AwsSigV4 => {
                if new.access_key_id.is_none() {
                    problems.push("kind = \"aws_sigv4\" needs access_key_id".into());
                }
                if new.secret_access_key.is_none() {
                    problems.push("kind = \"aws_sigv4\" needs secret_access_key".into());
                }
                let key_id = real_key("access_key_id", new.access_key_id.as_ref(), &mut problems);
                if let Some(k) = &key_id {
                    problems.extend(access_key_id_problem(k.expose_secret()).map(String::from));
                }
                let secret = real_key(
                    "secret_access_key",
                    new.secret_access_key.as_ref(),
                    &mut problems,
                );
                let token = real_key("session_token", new.session_token.as_ref(), &mut problems);
                let secret_variable = new
                    .secret_variable
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SECRET_VARIABLE.into());
                let token_variable = new
                    .session_token_variable
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SESSION_TOKEN_VARIABLE.into());
                for var in [&secret_variable, &token_variable] {
                    problems.extend(signing_variable_problem(var));
                }
                if [&secret_variable, &token_variable].contains(&&new.name) {
                    problems.push(format!(
                        "variable {:?} is the secret's own name (its access key id's variable)",
                        new.name
                    ));
                }
                if new.session_token_variable.is_some() && new.session_token.is_none() {
                    problems.push("session_token_variable goes with session_token".into());
                }
                settings.secret_variable = Some(secret_variable);
                settings.session_token_variable = token.is_some().then_some(token_variable);
                (key_id, secret, token)
            }
        };
        if !problems.is_empty() {
            return Err(VaultError::Invalid(problems.join("; ")));
        }
        let value = value.expect("no problem means a value");
        let swap_in: Vec<String> = if new.kind.is_signing() {
            // A signing key is never swapped as text; the set only says
            // where the request names it (SigV4's Authorization).
            vec![SwapLocation::Header.as_str().to_owned()]
        } else {
            new.swap_in
                .unwrap_or_else(|| SwapLocation::defaults().into_iter().collect())
                .into_iter()
                .map(|l| l.as_str().to_owned())
                .collect()
        };
        let existing = self.store.secret(&new.tenant, name).await?;
        let id = existing.map_or_else(|| new_id("sec"), |s| s.id);
        let row = SecretRow {
            value: self.keyring.seal("secrets.value", &id, &value),
            secret_access_key: secret_access_key
                .map(|k| self.keyring.seal("secrets.secret_access_key", &id, &k)),
            session_token: session_token
                .map(|t| self.keyring.seal("secrets.session_token", &id, &t)),
            signing: new
                .kind
                .is_signing()
                .then(|| serde_json::to_string(&settings).expect("settings serialise")),
            kind: new.kind,
            tenant: new.tenant.clone(),
            name: name.to_owned(),
            hosts: new.hosts.clone(),
            swap_in: swap_in.clone(),
            id,
        };
        self.store.upsert_secret(&row).await?;
        self.bump_generation();
        Ok(secret_view(&row))
    }

    /// A vault secret's signing keys (`None` for `static`), with the
    /// placeholders of the sandbox's binding whose own is `placeholder`.
    pub(crate) fn secret_signing_keys(
        &self,
        row: &SecretRow,
        placeholder: &str,
    ) -> Result<Option<Arc<SigningKeys>>, VaultError> {
        let settings = || -> Result<SigningSettings, VaultError> {
            serde_json::from_str(row.signing.as_deref().unwrap_or("{}")).map_err(|e| {
                VaultError::Store(format!(
                    "secret {}: unreadable signing settings: {e}",
                    row.name
                ))
            })
        };
        let keys = match row.kind {
            SecretKind::Static => return Ok(None),
            SecretKind::Hmac => {
                let mut problems = Vec::new();
                let spec = settings()?
                    .hmac
                    .unwrap_or_default()
                    .spec(&mut problems)
                    .ok_or_else(|| {
                        VaultError::Store(format!(
                            "secret {}: its HMAC settings no longer read: {}",
                            row.name,
                            problems.join("; ")
                        ))
                    })?;
                SigningKeys::Hmac(HmacKeys { spec })
            }
            SecretKind::AwsSigV4 => {
                let settings = settings()?;
                let sealed = row.secret_access_key.as_ref().ok_or_else(|| {
                    VaultError::Store(format!("secret {} has no secret access key", row.name))
                })?;
                let (secret_placeholder, token_placeholder) = aws_placeholders(placeholder);
                let session_token = match (&row.session_token, settings.session_token_variable) {
                    (Some(sealed), Some(variable)) => Some(SessionToken {
                        variable,
                        placeholder: token_placeholder,
                        token: self
                            .keyring
                            .open("secrets.session_token", &row.id, sealed)?,
                    }),
                    _ => None,
                };
                SigningKeys::AwsSigV4(AwsSigV4Keys {
                    secret_variable: settings
                        .secret_variable
                        .unwrap_or_else(|| DEFAULT_SECRET_VARIABLE.into()),
                    placeholder_secret: SecretString::from(secret_placeholder),
                    secret_access_key: self.keyring.open(
                        "secrets.secret_access_key",
                        &row.id,
                        sealed,
                    )?,
                    session_token,
                })
            }
        };
        Ok(Some(Arc::new(keys)))
    }

    /// The (variable, placeholder) pairs of a secret binding: its own, and
    /// for `aws_sigv4` the placeholder secret access key and session token
    /// (made from its own; nothing real).
    pub(crate) fn secret_binding_env(
        row: Option<&SecretRow>,
        variable: &str,
        placeholder: &str,
    ) -> Vec<(String, String)> {
        let mut env = vec![(variable.to_owned(), placeholder.to_owned())];
        if let Some(row) = row.filter(|r| r.kind == SecretKind::AwsSigV4) {
            let settings: SigningSettings =
                serde_json::from_str(row.signing.as_deref().unwrap_or("{}")).unwrap_or_default();
            let (secret, token) = aws_placeholders(placeholder);
            env.push((
                settings
                    .secret_variable
                    .unwrap_or_else(|| DEFAULT_SECRET_VARIABLE.into()),
                secret,
            ));
            if let Some(variable) = settings.session_token_variable {
                env.push((variable, token));
            }
        }
        env
    }

    /// Deletes a tenant's static secret. Refused while a sandbox holds a
    /// placeholder for it; the sidecar sandbox (`airlock up`'s own, which
    /// gets every default-tenant secret) loses its placeholder with it.
    pub async fn delete_secret(&self, tenant: &str, name: &str) -> Result<(), VaultError> {
        check_name("tenant", tenant)?;
        if self.store.secret(tenant, name).await?.is_none() {
            return Err(VaultError::NotFound(format!(
                "secret {name:?} of tenant {tenant}"
            )));
        }
        let sidecar = SandboxId::DEFAULT;
        let users: Vec<String> = self
            .store
            .sandboxes_with_secret(tenant, name)
            .await?
            .into_iter()
            .filter(|id| id != sidecar)
            .collect();
        if !users.is_empty() {
            return Err(VaultError::Conflict(format!(
                "secret {name:?} is still bound to {} sandbox(es): {}; delete them first (airlock sandbox delete ID)",
                users.len(),
                users.join(", ")
            )));
        }
        self.store.delete_secret(tenant, name, sidecar).await?;
        self.bump_generation();
        Ok(())
    }

    pub async fn secrets(&self) -> Result<Vec<serde_json::Value>, VaultError> {
        Ok(self
            .store
            .secrets()
            .await?
            .into_iter()
            .map(|s| secret_view(&s))
            .collect())
    }
}

/// What the admin API shows of a secret: never a value.
fn secret_view(s: &SecretRow) -> serde_json::Value {
    let mut view = serde_json::json!({ "tenant": s.tenant, "name": s.name, "kind": s.kind, "hosts": s.hosts, "swap_in": s.swap_in });
    if let Some(settings) = s
        .signing
        .as_deref()
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
    {
        view["signing"] = settings;
    }
    view
}

#[cfg(test)]
mod tests {
    use airlock_vault_client::{BindingKind, TokenSource};

    use super::*;
    use crate::crypto::{Kek, Keyring};
    use crate::store::tests::postgres_for;
    use crate::testing::{acme_vault, acme_vault_at, acme_vault_keyed};
    use crate::VaultSettings;

    fn aws(name: &str) -> NewSecret {
        NewSecret {
            tenant: "default".into(),
            name: name.into(),
            kind: SecretKind::AwsSigV4,
            hosts: vec!["s3.test".into()],
            access_key_id: Some(SecretString::from("AKIAREALKEY")),
            secret_access_key: Some(SecretString::from("real-secret-key\n")),
            session_token: Some(SecretString::from("real-session-token")),
            ..NewSecret::default()
        }
    }

    fn hmac(name: &str) -> NewSecret {
        NewSecret {
            tenant: "default".into(),
            name: name.into(),
            kind: SecretKind::Hmac,
            value: Some(SecretString::from("real-hmac-secret")),
            hosts: vec!["api.hmac.test".into()],
            signature_header: Some("X-Signature".into()),
            signature_template: Some("{method}\n{path}\n{body_sha256}".into()),
            signature_prefix: Some("sha256=".into()),
            ..NewSecret::default()
        }
    }

    /// A vault on SQLite, and one on PostgreSQL when there is one.
    async fn on_both_stores(what: &str) -> (Vec<Arc<Vault>>, tempfile::TempDir) {
        let (sqlite, dir) = acme_vault(9, VaultSettings::default()).await;
        let mut vaults = vec![sqlite];
        if let Some(url) = postgres_for(what).await {
            vaults.push(acme_vault_at(&url, 9, VaultSettings::default()).await);
        }
        (vaults, dir)
    }

    /// Stored sealed on SQLite and PostgreSQL, resolved with their keys, the
    /// sandbox given placeholders only, every real key guarded.
    #[tokio::test]
    async fn signing_secrets_round_trip_through_the_store_and_resolve_with_their_keys() {
        let (vaults, _dir) = on_both_stores("vault signing secrets").await;
        for v in vaults {
            v.put_secret(aws("AWS_ACCESS_KEY_ID")).await.unwrap();
            v.put_secret(hmac("HMAC_SECRET")).await.unwrap();
            v.add_secret(
                "default",
                "PLAIN",
                SecretString::from("plain-value"),
                vec!["a.test".into()],
                None,
            )
            .await
            .unwrap();
            let row = v
                .store
                .secret("default", "AWS_ACCESS_KEY_ID")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(row.kind, SecretKind::AwsSigV4);
            let stored = format!(
                "{} {:?} {:?} {:?}",
                row.value.encode(),
                row.secret_access_key,
                row.session_token,
                row.signing
            );
            assert!(
                !stored.contains("real") && !stored.contains("AKIA"),
                "{stored}"
            );
            let listed = serde_json::to_string(&v.secrets().await.unwrap()).unwrap();
            assert!(
                !listed.contains("real") && !listed.contains("AKIA"),
                "{listed}"
            );
            assert!(listed.contains(r#""kind":"aws_sigv4""#), "{listed}");

            let sidecar = SandboxId::default_sandbox();
            let env = v
                .ensure_sandbox(
                    sidecar.as_str(),
                    "default",
                    &[],
                    &[
                        "AWS_ACCESS_KEY_ID".into(),
                        "HMAC_SECRET".into(),
                        "PLAIN".into(),
                    ],
                )
                .await
                .unwrap();
            let var = |name: &str| {
                env.iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, p)| p.clone())
                    .unwrap_or_else(|| panic!("{name} in {env:?}"))
            };
            let key_id = var("AWS_ACCESS_KEY_ID");
            let (secret_ph, token_ph) = aws_placeholders(&key_id);
            assert_eq!(var("AWS_SECRET_ACCESS_KEY"), secret_ph);
            assert_eq!(var("AWS_SESSION_TOKEN"), token_ph);
            let shown = format!("{env:?}");
            assert!(
                !shown.contains("real") && !shown.contains("AKIA"),
                "{shown}"
            );

            let r = v.resolve(&sidecar, &key_id).await.unwrap();
            assert_eq!(r.binding.kind, BindingKind::AwsSigV4);
            assert_eq!(r.token.expose_secret(), "AKIAREALKEY");
            let Some(SigningKeys::AwsSigV4(k)) = r.signing.as_deref() else {
                panic!("AWS keys");
            };
            assert_eq!(k.secret_access_key.expose_secret(), "real-secret-key");
            assert_eq!(k.placeholder_secret.expose_secret(), secret_ph);
            let t = k.session_token.as_ref().unwrap();
            assert_eq!(
                (
                    t.variable.as_str(),
                    t.placeholder.as_str(),
                    t.token.expose_secret()
                ),
                ("AWS_SESSION_TOKEN", token_ph.as_str(), "real-session-token")
            );

            let hmac_ph = var("HMAC_SECRET");
            let r = v.resolve(&sidecar, &hmac_ph).await.unwrap();
            assert_eq!(r.binding.kind, BindingKind::Hmac);
            let Some(SigningKeys::Hmac(k)) = r.signing.as_deref() else {
                panic!("HMAC keys");
            };
            assert_eq!(
                (k.spec.header.as_str(), k.spec.prefix.as_str()),
                ("x-signature", "sha256=")
            );
            let policy = v
                .host_policy(sidecar.as_str(), "api.hmac.test")
                .await
                .unwrap();
            assert_eq!(policy.signers, vec![hmac_ph.clone()]);
            assert!(v
                .host_policy(sidecar.as_str(), "s3.test")
                .await
                .unwrap()
                .signers
                .is_empty());

            let plain = v.resolve(&sidecar, &var("PLAIN")).await.unwrap();
            assert_eq!(plain.binding.kind, BindingKind::Static);
            assert!(plain.signing.is_none());

            let guarded: Vec<(String, String)> = v
                .guarded_tokens(&sidecar)
                .await
                .unwrap()
                .into_iter()
                .map(|g| (g.placeholder, g.token.expose_secret().to_owned()))
                .collect();
            for pair in [
                (key_id.clone(), "AKIAREALKEY".to_owned()),
                (secret_ph.clone(), "real-secret-key".to_owned()),
                (token_ph.clone(), "real-session-token".to_owned()),
                (hmac_ph.clone(), "real-hmac-secret".to_owned()),
            ] {
                assert!(guarded.contains(&pair), "{} not guarded", pair.0);
            }
        }
    }

    /// The firewall's list of a sandbox's secrets (read in one query) holds
    /// its own tenant's value of a name two tenants use, and nothing once
    /// the sandbox is deleted; its bound hosts are its own tenant's too, and
    /// a secret it cannot read is left out, not the whole list.
    #[tokio::test]
    async fn a_sandbox_guards_its_own_tenants_secrets_and_nothing_once_deleted() {
        let (vaults, _dir) = on_both_stores("vault guarded secrets").await;
        for v in vaults {
            for (tenant, value, host) in [
                ("red", "red-value-0123", "red.test"),
                ("blue", "blue-value-0123", "blue.test"),
            ] {
                for name in ["API_KEY", "OTHER_KEY"] {
                    let value = SecretString::from(format!("{value}-{name}"));
                    v.add_secret(tenant, name, value, vec![host.into()], None)
                        .await
                        .unwrap();
                }
            }
            let names = ["API_KEY".to_owned(), "OTHER_KEY".to_owned()];
            let guarded = |sandbox: &'static str| {
                let v = &v;
                async move {
                    let mut tokens: Vec<String> = v
                        .guarded_tokens(&SandboxId::new(sandbox))
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|g| g.token.expose_secret().to_owned())
                        .collect();
                    tokens.sort();
                    tokens
                }
            };
            for (sandbox, tenant) in [("sb-red", "red"), ("sb-blue", "blue")] {
                v.create_sandbox(crate::NewSandbox {
                    tenant: tenant.into(),
                    workspace: None,
                    user: None,
                    providers: Vec::new(),
                    secrets: names.to_vec(),
                    id: Some(sandbox.into()),
                    rules: Default::default(),
                    consent_wait_secs: None,
                    environment: crate::DEFAULT_ENVIRONMENT.into(),
                    connections: Vec::new(),
                })
                .await
                .unwrap();
            }
            assert_eq!(
                guarded("sb-red").await,
                ["red-value-0123-API_KEY", "red-value-0123-OTHER_KEY"]
            );
            assert_eq!(
                guarded("sb-blue").await,
                ["blue-value-0123-API_KEY", "blue-value-0123-OTHER_KEY"]
            );
            // A secret of a kind this vault does not know (a newer
            // replica's) is left out; the rest of the list still comes.
            sqlx::query("UPDATE secrets SET kind = 'from_the_future' WHERE tenant = 'red' AND name = 'OTHER_KEY'")
                .execute(v.store.pool_for_tests())
                .await
                .unwrap();
            assert_eq!(guarded("sb-red").await, ["red-value-0123-API_KEY"]);
            sqlx::query(
                "UPDATE secrets SET kind = 'static' WHERE tenant = 'red' AND name = 'OTHER_KEY'",
            )
            .execute(v.store.pool_for_tests())
            .await
            .unwrap();
            // The hosts the sandbox is bound to come from the same query.
            let red = SandboxId::new("sb-red");
            assert!(TokenSource::is_bound_host(&*v, &red, "red.test").await);
            assert!(!TokenSource::is_bound_host(&*v, &red, "blue.test").await);
            v.delete_sandbox("sb-blue").await.unwrap();
            assert!(guarded("sb-blue").await.is_empty());
            assert_eq!(guarded("sb-red").await.len(), 2);
        }
    }

    /// Key rotation re-wraps a signing secret's every sealed key; after it
    /// the old master key is not needed to sign.
    #[tokio::test]
    async fn signing_secrets_survive_key_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
        let kek = |b: u8| Kek::from_bytes(&[b; 32]).unwrap();
        let old = acme_vault_keyed(
            &url,
            9,
            VaultSettings::default(),
            Keyring::new(kek(1), vec![]),
        )
        .await;
        old.put_secret(aws("AWS_ACCESS_KEY_ID")).await.unwrap();
        old.put_secret(hmac("HMAC_SECRET")).await.unwrap();
        drop(old);
        let rotating = acme_vault_keyed(
            &url,
            9,
            VaultSettings::default(),
            Keyring::new(kek(2), vec![kek(1)]),
        )
        .await;
        // The AWS secret's key id, secret key and session token; the HMAC secret.
        assert_eq!(rotating.rotate_keys().await.unwrap(), 4);
        drop(rotating);
        let new = acme_vault_keyed(
            &url,
            9,
            VaultSettings::default(),
            Keyring::new(kek(2), vec![]),
        )
        .await;
        let row = new
            .store
            .secret("default", "AWS_ACCESS_KEY_ID")
            .await
            .unwrap()
            .unwrap();
        let keys = new.secret_signing_keys(&row, "ph").unwrap().unwrap();
        let SigningKeys::AwsSigV4(k) = keys.as_ref() else {
            panic!("AWS keys");
        };
        assert_eq!(k.secret_access_key.expose_secret(), "real-secret-key");
        assert_eq!(
            k.session_token.as_ref().unwrap().token.expose_secret(),
            "real-session-token"
        );
        let key_id = new
            .keyring
            .open("secrets.value", &row.id, &row.value)
            .unwrap();
        assert_eq!(key_id.expose_secret(), "AKIAREALKEY");
        // What a log line of the row or the keys would show: no real key.
        let debug = format!("{row:?} {keys:?}");
        assert!(
            !debug.contains("real") && !debug.contains("AKIA"),
            "{debug}"
        );
    }

    #[tokio::test]
    async fn unknown_kinds_reserved_names_and_injection_are_refused() {
        let err =
            serde_json::from_str::<NewSecret>(r#"{"name":"A","kind":"sigv4","hosts":["s3.test"]}"#)
                .err()
                .unwrap()
                .to_string();
        assert!(
            err.contains("unknown variant `sigv4`, expected one of `static`, `aws_sigv4`, `hmac`"),
            "{err}"
        );
        let (v, _dir) = acme_vault(9, VaultSettings::default()).await;
        for (new, says) in [
            (
                NewSecret {
                    inject_when_absent: Some(true),
                    ..aws("A")
                },
                airlock_vault_client::secret_kind::INJECT_WHEN_ABSENT_SIGNING,
            ),
            (
                NewSecret {
                    inject_when_absent: Some(true),
                    ..hmac("H")
                },
                airlock_vault_client::secret_kind::INJECT_WHEN_ABSENT_SIGNING,
            ),
            (
                NewSecret {
                    tenant: "default".into(),
                    name: "S".into(),
                    value: Some(SecretString::from("v")),
                    hosts: vec!["a.test".into()],
                    inject_when_absent: Some(true),
                    ..NewSecret::default()
                },
                INJECT_WHEN_ABSENT_VAULT,
            ),
            (
                NewSecret {
                    name: "SSL_CERT_FILE".into(),
                    ..hmac("H")
                },
                "name SSL_CERT_FILE is a variable airlock sets itself",
            ),
            (
                NewSecret {
                    secret_variable: Some("AWS_ACCESS_KEY_ID".into()),
                    ..aws("AWS_ACCESS_KEY_ID")
                },
                "is the secret's own name",
            ),
            (
                NewSecret {
                    session_token: None,
                    session_token_variable: Some("TOKEN".into()),
                    ..aws("A")
                },
                "session_token_variable goes with session_token",
            ),
            (
                NewSecret {
                    signature_algorithm: Some("md5".into()),
                    ..hmac("H")
                },
                "signature_algorithm \"md5\" must be sha256, sha384, sha512 or sha1",
            ),
            (
                NewSecret {
                    access_key_id: Some(SecretString::from(" \n")),
                    ..aws("A")
                },
                "access_key_id is empty",
            ),
        ] {
            let err = v.put_secret(new).await.unwrap_err().to_string();
            assert!(err.contains(says), "{says}: {err}");
        }
        assert!(v.secrets().await.unwrap().is_empty());
    }

    /// A sandbox gets one value per variable, an AWS secret's extra ones
    /// included; its bindings' rules cannot inject.
    #[tokio::test]
    async fn signing_bindings_keep_to_one_value_per_variable_and_never_inject() {
        let (v, _dir) = acme_vault(9, VaultSettings::default()).await;
        v.put_secret(aws("AWS_ACCESS_KEY_ID")).await.unwrap();
        v.put_secret(aws("OTHER_KEY_ID")).await.unwrap();
        let sandbox = |secrets: &[&str]| crate::NewSandbox {
            tenant: "default".into(),
            workspace: None,
            user: None,
            providers: Vec::new(),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            id: None,
            rules: Default::default(),
            consent_wait_secs: None,
            environment: crate::DEFAULT_ENVIRONMENT.into(),
            connections: Vec::new(),
        };
        let err = v
            .create_sandbox(sandbox(&["AWS_ACCESS_KEY_ID", "OTHER_KEY_ID"]))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("two bindings would use the variable AWS_SECRET_ACCESS_KEY"),
            "{err}"
        );
        let created = v
            .create_sandbox(sandbox(&["AWS_ACCESS_KEY_ID"]))
            .await
            .unwrap();
        let names: Vec<&str> = created.env.iter().map(|(k, _)| k.as_str()).collect();
        for name in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ] {
            assert!(names.contains(&name), "{name} in {names:?}");
        }
        let spec: airlock_vault_client::RulesSpec =
            serde_json::from_str(r#"{"inject_when_absent": true}"#).unwrap();
        let err = v
            .set_binding_rules(&created.id, "AWS_ACCESS_KEY_ID", &spec)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(airlock_vault_client::secret_kind::INJECT_WHEN_ABSENT_SIGNING),
            "{err}"
        );
    }

    #[tokio::test]
    async fn bad_signing_secrets_are_refused_with_the_config_s_words_and_nothing_is_stored() {
        let (v, _dir) = acme_vault(9, VaultSettings::default()).await;
        let refused = |new: NewSecret| {
            let v = v.clone();
            async move {
                let name = new.name.clone();
                let err = v.put_secret(new).await.unwrap_err();
                assert!(matches!(err, VaultError::Invalid(_)), "{err}");
                assert!(v.store.secret("default", &name).await.unwrap().is_none());
                let text = err.to_string();
                assert!(!text.contains("real") && !text.contains("AKIA"), "{text}");
                text
            }
        };
        let err = refused(NewSecret {
            secret_access_key: None,
            ..aws("A")
        })
        .await;
        assert!(
            err.contains("kind = \"aws_sigv4\" needs secret_access_key"),
            "{err}"
        );
        let err = refused(NewSecret {
            role_arn: Some("arn:aws:iam::1:role/x".into()),
            ..aws("A")
        })
        .await;
        assert!(
            err.contains("role_arn (STS AssumeRole) is config-only"),
            "{err}"
        );
        let err = refused(NewSecret {
            value: Some(SecretString::from("x")),
            access_key_id: Some(SecretString::from("AKIA/REAL")),
            swap_in: Some(vec![SwapLocation::Body]),
            secret_variable: Some("HTTPS_PROXY".into()),
            ..aws("A")
        })
        .await;
        for says in [
            "takes access_key_id… and secret_access_key…, not value…",
            "access_key_id holds '/'",
            "swap_in does not apply to signing kinds",
            "variable \"HTTPS_PROXY\" must be a valid environment variable name",
        ] {
            assert!(err.contains(says), "{says}: {err}");
        }
        let err = refused(NewSecret {
            signature_template: Some("{nope}".into()),
            ..hmac("H")
        })
        .await;
        assert!(
            err.contains("signature_template: unknown template field {nope}"),
            "{err}"
        );
        let err = refused(NewSecret {
            signature_header: None,
            ..hmac("H")
        })
        .await;
        assert!(
            err.contains("kind = \"hmac\" needs signature_header"),
            "{err}"
        );
        let err = refused(NewSecret {
            signature_header: Some("X-S".into()),
            ..NewSecret {
                kind: SecretKind::Static,
                ..aws("S")
            }
        })
        .await;
        assert!(err.contains("go with kind = \"aws_sigv4\""), "{err}");
        assert!(err.contains("go with kind = \"hmac\""), "{err}");
        assert!(err.contains("kind = \"static\" needs value"), "{err}");
    }
}
