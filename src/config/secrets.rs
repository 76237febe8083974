//! `[[secret]]` tables become `PendingSecret`s (placeholder maybe still to
//! generate), and `assign_placeholders` gives each its placeholder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use airlock_vault_client::{
    generate_placeholder, is_valid_placeholder, ExposeSecret, ForeignBody, HostPattern,
    RequestRules, SecretString, StaticSecret, SwapLocation,
};

use super::file::SecretSection;
use super::secret_source::{SecretSource, SourceKeys};
use super::{ConfigError, Loaded};

static SECRET_KEYS: SourceKeys = SourceKeys {
    value: "value",
    env: "value_env",
    file: "value_file",
};

pub struct PendingSecret {
    pub name: String,
    pub value: SecretString,
    pub placeholder: Option<String>,
    pub hosts: Vec<HostPattern>,
    pub swap_in: BTreeSet<SwapLocation>,
    pub on_foreign_body: ForeignBody,
    pub rules: Arc<RequestRules>,
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
            let value = self.secret_value(s, &mut problems);
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
            let swap_in = s.swap_in.clone().unwrap_or_else(SwapLocation::defaults);
            if swap_in.is_empty() {
                problems.push("swap_in is empty: the placeholder could never be swapped".into());
            }
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
                });
            }
        }
        secrets
    }

    /// The name's checks, then the value from its one source.
    fn secret_value(&self, s: &SecretSection, problems: &mut Vec<String>) -> Option<SecretString> {
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

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
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
    let secrets = pending
        .into_iter()
        .map(|s| {
            let placeholder = match s.placeholder {
                Some(p) => p,
                None => match kept
                    .get(&s.name)
                    .filter(|p| is_valid_placeholder(prefix, p))
                {
                    Some(p) => p.clone(),
                    None => {
                        let p = generate_placeholder(prefix);
                        kept.insert(s.name.clone(), p.clone());
                        changed = true;
                        p
                    }
                },
            };
            StaticSecret {
                name: s.name,
                value: s.value,
                placeholder,
                hosts: s.hosts,
                swap_in: s.swap_in,
                on_foreign_body: s.on_foreign_body,
                rules: s.rules,
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
    use airlock_vault_client::DEFAULT_PREFIX;

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
            }]
        };
        let first = assign_placeholders(dir.path(), DEFAULT_PREFIX, pending()).unwrap();
        let second = assign_placeholders(dir.path(), DEFAULT_PREFIX, pending()).unwrap();
        assert_eq!(first[0].placeholder, second[0].placeholder);
        assert!(is_valid_placeholder(DEFAULT_PREFIX, &first[0].placeholder));
    }
}
