//! `[[secret]]` tables become `PendingSecret`s (placeholder maybe still to
//! generate), and `assign_placeholders` gives each its placeholder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use airlock_vault_client::secret_kind::{
    access_key_id_problem, is_env_name, misplaced_settings, signing_variable_problem,
    GivenSettings, RoleSupport,
};
use airlock_vault_client::{
    generate_placeholder, is_valid_placeholder, AwsSigV4Keys, ExposeSecret, ForeignBody, HmacKeys,
    HmacSpec, HostPattern, Injection, RequestRules, SecretString, SessionToken, SigningKeys,
    StaticSecret, SwapLocation,
};

use super::file::{SecretKind, SecretSection};
use super::secret_source::{SecretSource, SourceKeys};
use super::{ConfigError, Loaded};

static SECRET_KEYS: SourceKeys = SourceKeys {
    value: "value",
    env: "value_env",
    file: "value_file",
};
static ACCESS_KEY_ID_KEYS: SourceKeys = SourceKeys {
    value: "access_key_id",
    env: "access_key_id_env",
    file: "access_key_id_file",
};
static SECRET_ACCESS_KEY_KEYS: SourceKeys = SourceKeys {
    value: "secret_access_key",
    env: "secret_access_key_env",
    file: "secret_access_key_file",
};
static SESSION_TOKEN_KEYS: SourceKeys = SourceKeys {
    value: "session_token",
    env: "session_token_env",
    file: "session_token_file",
};

pub struct PendingSecret {
    pub name: String,
    pub value: SecretString,
    pub placeholder: Option<String>,
    pub hosts: Vec<HostPattern>,
    pub swap_in: BTreeSet<SwapLocation>,
    pub on_foreign_body: ForeignBody,
    pub rules: Arc<RequestRules>,
    /// `kind = "aws_sigv4"`: `value` is the real access key id; these are the rest.
    pub aws: Option<PendingAws>,
    /// `kind = "hmac"`: how requests are signed; `value` is the real secret.
    pub hmac: Option<HmacSpec>,
    /// `inject_when_absent = true`: the slot its placeholder goes into.
    pub inject_when_absent: Option<Injection>,
}

/// `role_arn` and the keys that go with it.
fn assume_role(s: &SecretSection, problems: &mut Vec<String>) -> Option<AssumeRole> {
    let Some(role_arn) = &s.role_arn else {
        if s.role_session_name.is_some()
            || s.role_duration_secs.is_some()
            || s.sts_endpoint.is_some()
            || s.sts_region.is_some()
        {
            problems.push(
                "role_session_name, role_duration_secs, sts_endpoint and sts_region go with role_arn"
                    .into(),
            );
        }
        return None;
    };
    let mut ok = true;
    if !role_arn.starts_with("arn:") || role_arn.contains(char::is_whitespace) {
        problems.push(format!(
            "role_arn {role_arn:?} must be a role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
        ));
        ok = false;
    }
    let session_name = s
        .role_session_name
        .clone()
        .unwrap_or_else(|| "airlock".into());
    if session_name.len() < 2
        || session_name.len() > 64
        || !session_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=,.@-_".contains(&b))
    {
        problems.push("role_session_name must be 2 to 64 of letters, digits and =,.@-_".into());
        ok = false;
    }
    let duration_secs = s.role_duration_secs.unwrap_or(3600);
    if !(900..=43_200).contains(&duration_secs) {
        problems.push("role_duration_secs must be 900 to 43200".into());
        ok = false;
    }
    let endpoint = s
        .sts_endpoint
        .clone()
        .unwrap_or_else(|| "https://sts.amazonaws.com".into());
    let host_part = endpoint.strip_prefix("https://").unwrap_or("");
    if host_part.is_empty() || host_part.contains(['/', '?', '#', '@']) {
        problems.push(format!(
            "sts_endpoint {endpoint:?} must be https://HOST or https://HOST:PORT"
        ));
        ok = false;
    }
    let region = s.sts_region.clone().unwrap_or_else(|| "us-east-1".into());
    ok.then(|| AssumeRole {
        role_arn: role_arn.clone(),
        session_name,
        duration_secs,
        endpoint,
        region,
    })
}

/// The slot `inject_when_absent` puts the placeholder in (`inject`, default
/// `bearer`): checked to be a form airlock knows and a place `swap_in` lets
/// the placeholder be swapped, else the injected request would be refused.
fn injection(
    s: &SecretSection,
    swap_in: &BTreeSet<SwapLocation>,
    problems: &mut Vec<String>,
) -> Option<Injection> {
    let inject = match s.inject.as_deref().map(Injection::parse) {
        None => Injection::Bearer,
        Some(Ok(inject)) => inject,
        Some(Err(e)) => {
            problems.push(e.to_string());
            return None;
        }
    };
    if !s.inject_when_absent {
        if s.inject.is_some() {
            problems.push("inject goes with inject_when_absent = true".into());
        }
        return None;
    }
    if s.kind != SecretKind::Static {
        // Said by `misplaced_settings`, shared with the vault.
        return None;
    }
    let needs = match inject {
        Injection::Basic { .. } => SwapLocation::Basic,
        _ => SwapLocation::Header,
    };
    if !swap_in.contains(&needs) {
        problems.push(format!(
            "inject_when_absent with inject = \"{inject}\" needs \"{}\" in swap_in",
            needs.as_str()
        ));
        return None;
    }
    Some(inject)
}

/// An `hmac` secret's signing rule, from its `signature_…` keys.
fn hmac_spec(s: &SecretSection, problems: &mut Vec<String>) -> Option<HmacSpec> {
    s.hmac_settings().spec(problems)
}

/// The real keys of an `aws_sigv4` secret, before its placeholders exist.
pub struct PendingAws {
    pub secret_variable: String,
    pub secret_access_key: SecretString,
    /// (variable, real session token)
    pub session_token: Option<(String, SecretString)>,
    /// The sandbox's variable for the session token placeholder.
    pub session_token_variable: String,
    /// Sign with this role's temporary credentials instead (src/app/sts.rs
    /// puts them in place of the keys above).
    pub assume_role: Option<AssumeRole>,
}

/// `role_arn` and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRole {
    pub role_arn: String,
    pub session_name: String,
    pub duration_secs: u64,
    /// `https://host[:port]`, no path.
    pub endpoint: String,
    pub region: String,
}

impl Loaded {
    /// Every `[[secret]]` with a usable value; problems go to `errors`.
    pub(super) fn pending_secrets(&self, errors: &mut Vec<String>) -> Vec<PendingSecret> {
        let prefix = self.prefix();
        let mut secrets = Vec::new();
        let mut placeholders = BTreeSet::new();
        for spanned in &self.config.secrets {
            let line = self.line_of(spanned.span().start);
            let s = spanned.get_ref();
            let at = format!("line {line}: secret {:?}", s.name);
            let mut problems = Vec::new();
            let (value, aws) = match s.kind {
                SecretKind::Static => (self.secret_value(s, &mut problems), None),
                SecretKind::AwsSigV4 => self.aws_keys(s, &mut problems),
                SecretKind::Hmac => (self.secret_value(s, &mut problems), None),
            };
            problems.extend(misplaced_settings(
                s.kind,
                GivenSettings {
                    value: s.value.is_some() || s.value_env.is_some() || s.value_file.is_some(),
                    aws: s.access_key_id.is_some()
                        || s.access_key_id_env.is_some()
                        || s.access_key_id_file.is_some()
                        || s.secret_access_key.is_some()
                        || s.secret_access_key_env.is_some()
                        || s.secret_access_key_file.is_some()
                        || s.has_session_token()
                        || s.secret_variable.is_some()
                        || s.session_token_variable.is_some(),
                    hmac: s.hmac_settings().any(),
                    swap_in: s.swap_in.is_some(),
                    role: false,
                    inject_when_absent: s.inject_when_absent,
                },
                RoleSupport::Allowed,
            ));
            let hmac = match s.kind {
                SecretKind::Hmac => hmac_spec(s, &mut problems),
                _ => None,
            };
            if let Some(placeholder) = &s.placeholder {
                if !is_valid_placeholder(prefix, placeholder) {
                    problems.push(format!(
                        "placeholder must be {prefix:?} followed by 22 to 128 letters or digits"
                    ));
                }
                if !placeholders.insert(placeholder.clone()) {
                    problems.push("placeholder is used by another secret".into());
                }
            }
            if s.hosts.is_empty() {
                problems.push("hosts is empty: the secret could never be sent anywhere".into());
            }
            let mut hosts = Vec::new();
            for h in &s.hosts {
                match HostPattern::parse(h) {
                    Ok(p) => hosts.push(p),
                    Err(e) => problems.push(e.to_string()),
                }
            }
            let rules = match RequestRules::compile(&s.rules_spec()) {
                Ok(rules) => Arc::new(rules),
                Err(bad) => {
                    problems.extend(bad.iter().map(|e| e.to_string()));
                    Arc::default()
                }
            };
            let swap_in = match s.kind {
                // A signing key is never swapped as text; the set only says
                // where the request names it (SigV4's Authorization).
                SecretKind::AwsSigV4 | SecretKind::Hmac => {
                    [SwapLocation::Header].into_iter().collect()
                }
                SecretKind::Static => s.swap_in.clone().unwrap_or_else(SwapLocation::defaults),
            };
            if swap_in.is_empty() {
                problems.push("swap_in is empty: the placeholder could never be swapped".into());
            }
            let inject_when_absent = injection(s, &swap_in, &mut problems);
            errors.extend(problems.into_iter().map(|p| format!("{at}: {p}")));
            if let Some(value) = value {
                secrets.push(PendingSecret {
                    name: s.name.clone(),
                    value,
                    placeholder: s.placeholder.clone(),
                    hosts,
                    swap_in,
                    on_foreign_body: s.on_foreign_body,
                    rules,
                    aws,
                    hmac,
                    inject_when_absent,
                });
            }
        }
        secrets
    }

    /// An `aws_sigv4` secret's real keys: the access key id (as the value),
    /// the secret access key, and maybe a session token.
    fn aws_keys(
        &self,
        s: &SecretSection,
        problems: &mut Vec<String>,
    ) -> (Option<SecretString>, Option<PendingAws>) {
        self.check_name(s, problems);
        for var in [s.secret_variable(), s.session_token_variable()] {
            problems.extend(signing_variable_problem(var));
        }
        let mut read = |keys: &'static SourceKeys,
                        value: Option<&SecretString>,
                        env: Option<&str>,
                        file: Option<&Path>,
                        required: bool| {
            let source = match SecretSource::at_most_one(keys, value, env, file) {
                Ok(Some(source)) => source,
                Ok(None) if !required => return None,
                Ok(None) => {
                    problems.push(format!(
                        "give exactly one of {}, {}, {}",
                        keys.value, keys.env, keys.file
                    ));
                    return None;
                }
                Err(e) => {
                    problems.push(e.to_string());
                    return None;
                }
            };
            match source.resolved(|p| self.resolve_path(p)).read(keys.file) {
                Ok(v) if v.expose_secret().bytes().any(|b| b.is_ascii_control()) => {
                    problems.push(format!(
                        "{} holds control characters (line breaks?)",
                        keys.value
                    ));
                    None
                }
                Ok(v) => Some(super::secret_source::trimmed(&v)),
                Err(e) => {
                    problems.push(e.to_string());
                    None
                }
            }
        };
        let key_id = read(
            &ACCESS_KEY_ID_KEYS,
            s.access_key_id.as_ref(),
            s.access_key_id_env.as_deref(),
            s.access_key_id_file.as_deref(),
            true,
        );
        let secret = read(
            &SECRET_ACCESS_KEY_KEYS,
            s.secret_access_key.as_ref(),
            s.secret_access_key_env.as_deref(),
            s.secret_access_key_file.as_deref(),
            true,
        );
        let token = read(
            &SESSION_TOKEN_KEYS,
            s.session_token.as_ref(),
            s.session_token_env.as_deref(),
            s.session_token_file.as_deref(),
            false,
        );
        if let Some(k) = &key_id {
            problems.extend(access_key_id_problem(k.expose_secret()).map(String::from));
        }
        let assume_role = assume_role(s, problems);
        match (key_id, secret) {
            (Some(k), Some(secret)) => (
                Some(k),
                Some(PendingAws {
                    secret_variable: s.secret_variable().to_owned(),
                    secret_access_key: secret,
                    session_token: token.map(|t| (s.session_token_variable().to_owned(), t)),
                    session_token_variable: s.session_token_variable().to_owned(),
                    assume_role,
                }),
            ),
            _ => (None, None),
        }
    }

    /// The name's checks, then the value from its one source.
    fn secret_value(&self, s: &SecretSection, problems: &mut Vec<String>) -> Option<SecretString> {
        self.check_name(s, problems);
        self.secret_value_from(s, problems)
    }

    fn check_name(&self, s: &SecretSection, problems: &mut Vec<String>) {
        if !is_env_name(&s.name) {
            problems
                .push("name must be a valid environment variable name (letters, digits, _)".into());
        }
        if crate::sandbox_env::is_reserved(&s.name) {
            problems.push(format!(
                "name {} is a variable airlock sets itself for sandboxes (proxy, CA); choose another",
                s.name
            ));
        }
    }

    fn secret_value_from(
        &self,
        s: &SecretSection,
        problems: &mut Vec<String>,
    ) -> Option<SecretString> {
        let value = SecretSource::exactly_one(
            &SECRET_KEYS,
            s.value.as_ref(),
            s.value_env.as_deref(),
            s.value_file.as_deref(),
        )
        .and_then(|source| {
            source
                .resolved(|p| self.resolve_path(p))
                .read(SECRET_KEYS.file)
        });
        match value {
            // Said without the value: only that it is unusable.
            Ok(v) if v.expose_secret().bytes().any(|b| b.is_ascii_control()) => {
                problems.push("the value holds control characters (line breaks?) and cannot be sent in a header".into());
                Some(v)
            }
            Ok(v) => Some(v),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        }
    }
}

const PLACEHOLDERS_FILE: &str = "placeholders.json";

/// Gives every secret its placeholder: the configured one, or one generated
/// earlier and kept in the data dir, or a new one (then kept).
pub fn assign_placeholders(
    data_dir: &Path,
    prefix: &str,
    pending: Vec<PendingSecret>,
) -> Result<Vec<StaticSecret>, ConfigError> {
    let path = data_dir.join(PLACEHOLDERS_FILE);
    let io_err = |source| ConfigError::Placeholders {
        path: path.clone(),
        source,
    };
    let mut kept: BTreeMap<String, String> = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_default(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(io_err(e)),
    };
    let mut changed = false;
    // The one kept under `key`, or a new one (then kept).
    let mut kept_or_new =
        |key: &str| match kept.get(key).filter(|p| is_valid_placeholder(prefix, p)) {
            Some(p) => p.clone(),
            None => {
                let p = generate_placeholder(prefix);
                kept.insert(key.to_owned(), p.clone());
                changed = true;
                p
            }
        };
    let secrets = pending
        .into_iter()
        .map(|s| {
            let placeholder = match s.placeholder {
                Some(p) => p,
                None => kept_or_new(&s.name),
            };
            // An AWS secret access key and session token get placeholders
            // of their own, kept like the key id's.
            let hmac = s
                .hmac
                .map(|spec| Arc::new(SigningKeys::Hmac(HmacKeys { spec })));
            let signing = s.aws.map(|aws| {
                Arc::new(SigningKeys::AwsSigV4(AwsSigV4Keys {
                    secret_variable: aws.secret_variable,
                    placeholder_secret: SecretString::from(kept_or_new(&format!(
                        "{}:secret_access_key",
                        s.name
                    ))),
                    secret_access_key: aws.secret_access_key,
                    // Temporary credentials always come with a token: until
                    // the first AssumeRole answers it is empty (and unused:
                    // the proxy starts after it).
                    session_token: match (aws.session_token, aws.assume_role.is_some()) {
                        (Some((variable, token)), _) => Some(SessionToken {
                            variable,
                            placeholder: kept_or_new(&format!("{}:session_token", s.name)),
                            token,
                        }),
                        (None, true) => Some(SessionToken {
                            variable: aws.session_token_variable,
                            placeholder: kept_or_new(&format!("{}:session_token", s.name)),
                            token: SecretString::from(""),
                        }),
                        (None, false) => None,
                    },
                }))
            });
            StaticSecret {
                name: s.name,
                value: s.value,
                placeholder,
                hosts: s.hosts,
                swap_in: s.swap_in,
                on_foreign_body: s.on_foreign_body,
                rules: s.rules,
                signing: signing.or(hmac),
                inject_when_absent: s.inject_when_absent,
            }
        })
        .collect();
    if changed {
        std::fs::create_dir_all(data_dir).map_err(io_err)?;
        let text = serde_json::to_string_pretty(&kept).expect("a string map serialises");
        std::fs::write(&path, text).map_err(io_err)?;
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use super::super::tests::load;
    use super::*;
    use airlock_vault_client::{HmacAlgorithm, SignatureEncoding, DEFAULT_PREFIX};

    fn errors_of(text: &str) -> (Vec<PendingSecret>, String) {
        let mut errors = Vec::new();
        let secrets = load(text).pending_secrets(&mut errors);
        (secrets, errors.join("\n"))
    }

    #[test]
    fn every_problem_is_named_with_the_line() {
        let (secrets, err) = errors_of(
            "[[secret]]\nname = \"GITHUB_TOKEN\"\nvalue = \"x\"\nhosts = []\n\n[[secret]]\nname = \"1BAD\"\nhosts = [\"*\"]\nplaceholder = \"miosa-tok-short\"\nswap_in = []\n",
        );
        assert!(
            err.contains("line 1: secret \"GITHUB_TOKEN\": hosts is empty"),
            "{err}"
        );
        assert!(
            err.contains("line 6: secret \"1BAD\": name must be"),
            "{err}"
        );
        assert!(
            err.contains("exactly one of value, value_env, value_file"),
            "{err}"
        );
        assert!(err.contains("placeholder must be"), "{err}");
        assert!(err.contains("invalid host pattern"), "{err}");
        assert!(err.contains("swap_in is empty"), "{err}");
        // The first has a value, so it is kept for the checks that follow.
        assert_eq!(secrets.len(), 1);
    }

    #[test]
    fn reserved_names_and_shared_placeholders_are_refused() {
        let p = format!("{DEFAULT_PREFIX}{}", "a".repeat(22));
        let (_, err) = errors_of(&format!(
            "[[secret]]\nname = \"HTTPS_PROXY\"\nvalue = \"x\"\nhosts = [\"a.test\"]\nplaceholder = \"{p}\"\n[[secret]]\nname = \"B\"\nvalue = \"y\"\nhosts = [\"a.test\"]\nplaceholder = \"{p}\"\n"
        ));
        assert!(
            err.contains("name HTTPS_PROXY is a variable airlock sets itself"),
            "{err}"
        );
        assert!(
            err.contains("line 6: secret \"B\": placeholder is used by another secret"),
            "{err}"
        );
    }

    #[test]
    fn secret_values_never_appear_in_errors() {
        let (_, err) = errors_of(
            "[[secret]]\nname = \"T\"\nvalue = \"hunter2\\r\\ninjected\"\nhosts = [\"a.test\"]\n",
        );
        assert!(err.contains("control characters"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn value_files_are_relative_to_the_config_file() {
        // `load` puts the config file in /tmp.
        let (_, err) = errors_of(
            "[[secret]]\nname = \"T\"\nvalue_file = \"airlock-no-such-secret.txt\"\nhosts = [\"a.test\"]\n",
        );
        assert!(
            err.contains("value_file /tmp/airlock-no-such-secret.txt: "),
            "{err}"
        );
    }

    #[test]
    fn aws_sigv4_secrets_take_their_own_keys() {
        let (secrets, err) = errors_of(
            "[[secret]]\nname = \"AWS_ACCESS_KEY_ID\"\nkind = \"aws_sigv4\"\naccess_key_id = \"AKIAREAL\"\nsecret_access_key = \"real-secret\"\nsession_token = \"real-token\"\nhosts = [\"s3.test\"]\n",
        );
        assert!(err.is_empty(), "{err}");
        let aws = secrets[0].aws.as_ref().expect("the AWS keys");
        assert_eq!(secrets[0].value.expose_secret(), "AKIAREAL");
        assert_eq!(aws.secret_variable, "AWS_SECRET_ACCESS_KEY");
        assert_eq!(aws.secret_access_key.expose_secret(), "real-secret");
        let (var, token) = aws.session_token.as_ref().unwrap();
        assert_eq!(
            (var.as_str(), token.expose_secret()),
            ("AWS_SESSION_TOKEN", "real-token")
        );
        assert_eq!(
            secrets[0].swap_in,
            [SwapLocation::Header].into_iter().collect()
        );

        let (_, err) = errors_of(
            "[[secret]]\nname = \"K\"\nkind = \"aws_sigv4\"\nvalue = \"x\"\naccess_key_id = \"A/B\"\nswap_in = [\"body\"]\nsecret_variable = \"HTTPS_PROXY\"\nhosts = [\"s3.test\"]\n",
        );
        assert!(
            err.contains("takes access_key_id… and secret_access_key…, not value…"),
            "{err}"
        );
        assert!(err.contains("give exactly one of secret_access_key, secret_access_key_env, secret_access_key_file"), "{err}");
        assert!(err.contains("access_key_id holds '/'"), "{err}");
        assert!(err.contains("swap_in does not apply"), "{err}");
        assert!(err.contains("variable \"HTTPS_PROXY\""), "{err}");
        let (_, err) = errors_of(
            "[[secret]]\nname = \"T\"\nvalue = \"x\"\nsecret_access_key = \"y\"\nhosts = [\"a.test\"]\n",
        );
        assert!(err.contains("go with kind = \"aws_sigv4\""), "{err}");
    }

    #[test]
    fn hmac_secrets_need_a_header_and_a_template() {
        let (secrets, err) = errors_of(
            "[[secret]]\nname = \"SIGNING\"\nkind = \"hmac\"\nvalue = \"real\"\nhosts = [\"a.test\"]\nsignature_header = \"X-Signature\"\nsignature_template = \"{method} {path}\"\nsignature_encoding = \"base64\"\n",
        );
        assert!(err.is_empty(), "{err}");
        let spec = secrets[0].hmac.as_ref().unwrap();
        assert_eq!(spec.header, "x-signature");
        assert_eq!(spec.encoding, SignatureEncoding::Base64);
        assert_eq!(spec.algorithm, HmacAlgorithm::Sha256);
        let (_, err) = errors_of(
            "[[secret]]\nname = \"SIGNING\"\nkind = \"hmac\"\nvalue = \"real\"\nhosts = [\"a.test\"]\nsignature_template = \"{nope}\"\n",
        );
        assert!(err.contains("needs signature_header"), "{err}");
        let (_, err) = errors_of(
            "[[secret]]\nname = \"SIGNING\"\nkind = \"hmac\"\nvalue = \"real\"\nhosts = [\"a.test\"]\nsignature_header = \"X-S\"\nsignature_template = \"{nope}\"\nsignature_algorithm = \"md5\"\n",
        );
        assert!(
            err.contains("signature_template: unknown template field {nope}"),
            "{err}"
        );
        let (_, err) = errors_of(
            "[[secret]]\nname = \"T\"\nvalue = \"x\"\nhosts = [\"a.test\"]\nsignature_header = \"X-S\"\n",
        );
        assert!(err.contains("go with kind = \"hmac\""), "{err}");
    }

    #[test]
    fn inject_when_absent_takes_a_known_slot_that_swap_in_allows() {
        let secret = |keys: &str| {
            format!("[[secret]]\nname = \"T\"\nvalue = \"x\"\nhosts = [\"a.test\"]\n{keys}\n")
        };
        let (ok, err) = errors_of(&secret("inject_when_absent = true"));
        assert_eq!(err, "");
        assert_eq!(ok[0].inject_when_absent, Some(Injection::Bearer));
        let (ok, err) = errors_of(&secret(
            "inject_when_absent = true\ninject = \"header:X-Api-Key\"",
        ));
        assert_eq!(err, "");
        assert_eq!(
            ok[0].inject_when_absent,
            Some(Injection::Header {
                name: "x-api-key".into()
            })
        );
        let (ok, err) = errors_of(&secret(""));
        assert_eq!((err.as_str(), &ok[0].inject_when_absent), ("", &None));
        for (keys, says) in [
            (
                "inject_when_absent = true\ninject = \"cookie\"",
                "inject \"cookie\" must be bearer, token, basic:USER or header:NAME",
            ),
            (
                "inject = \"bearer\"",
                "inject goes with inject_when_absent = true",
            ),
            (
                "inject_when_absent = true\ninject = \"basic:x\"\nswap_in = [\"header\"]",
                "inject = \"basic:x\" needs \"basic\" in swap_in",
            ),
            (
                "inject_when_absent = true\nswap_in = [\"body\"]",
                "inject = \"bearer\" needs \"header\" in swap_in",
            ),
        ] {
            let (_, err) = errors_of(&secret(keys));
            assert!(err.contains(says), "{keys}: {err}");
        }
        let (_, err) = errors_of(
            "[[secret]]\nname = \"T\"\nkind = \"hmac\"\nvalue = \"x\"\nhosts = [\"a.test\"]\nsignature_header = \"X-S\"\nsignature_template = \"{method}\"\ninject_when_absent = true\n",
        );
        assert!(err.contains("does not apply to signing kinds"), "{err}");
    }

    #[test]
    fn aws_placeholders_for_the_secret_and_token_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let pending = || {
            vec![PendingSecret {
                name: "AWS_ACCESS_KEY_ID".into(),
                value: SecretString::from("AKIAREAL"),
                placeholder: None,
                hosts: vec![HostPattern::parse("s3.test").unwrap()],
                swap_in: [SwapLocation::Header].into_iter().collect(),
                on_foreign_body: ForeignBody::Pass,
                rules: Default::default(),
                aws: Some(PendingAws {
                    secret_variable: "AWS_SECRET_ACCESS_KEY".into(),
                    secret_access_key: SecretString::from("real"),
                    session_token: Some(("AWS_SESSION_TOKEN".into(), SecretString::from("tok"))),
                    session_token_variable: "AWS_SESSION_TOKEN".into(),
                    assume_role: None,
                }),
                hmac: None,
                inject_when_absent: None,
            }]
        };
        let phs = |s: &StaticSecret| match s.signing.as_deref() {
            Some(SigningKeys::AwsSigV4(k)) => (
                s.placeholder.clone(),
                k.placeholder_secret.expose_secret().to_owned(),
                k.session_token.as_ref().unwrap().placeholder.clone(),
            ),
            _ => panic!("AWS signing keys"),
        };
        let first = phs(&assign_placeholders(dir.path(), DEFAULT_PREFIX, pending()).unwrap()[0]);
        let second = phs(&assign_placeholders(dir.path(), DEFAULT_PREFIX, pending()).unwrap()[0]);
        assert_eq!(first, second);
        assert!(first.0 != first.1 && first.1 != first.2);
        for p in [&first.0, &first.1, &first.2] {
            assert!(is_valid_placeholder(DEFAULT_PREFIX, p));
        }
    }

    #[test]
    fn generated_placeholders_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let pending = || {
            vec![PendingSecret {
                name: "T".into(),
                value: SecretString::from("v"),
                placeholder: None,
                hosts: vec![HostPattern::parse("a.test").unwrap()],
                swap_in: SwapLocation::defaults(),
                on_foreign_body: ForeignBody::Pass,
                rules: Default::default(),
                aws: None,
                hmac: None,
                inject_when_absent: None,
            }]
        };
        let first = assign_placeholders(dir.path(), DEFAULT_PREFIX, pending()).unwrap();
        let second = assign_placeholders(dir.path(), DEFAULT_PREFIX, pending()).unwrap();
        assert_eq!(first[0].placeholder, second[0].placeholder);
        assert!(is_valid_placeholder(DEFAULT_PREFIX, &first[0].placeholder));
    }
}
