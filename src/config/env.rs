//! The `AIRLOCK__…` environment overlay: single keys over the file's.

use std::path::PathBuf;

use super::file::Config;

/// Prefix of environment variables that override single config keys:
/// `AIRLOCK__PROXY__ALLOWED_PORTS="[443, 8443]"`, `AIRLOCK__VAULT__PUBLIC_URL=https://…`,
/// `AIRLOCK__DATA_DIR=/var/lib/airlock`. Values are read as TOML, else as text.
pub const ENV_OVERRIDE_PREFIX: &str = "AIRLOCK__";

/// Applies `AIRLOCK__…` overrides; every bad one is reported, by the
/// variable's name and never its value (it may be a secret).
pub fn apply_env_overrides(
    config: &mut Config,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    for (name, text) in vars {
        let Some(path) = name.strip_prefix(ENV_OVERRIDE_PREFIX) else {
            continue;
        };
        if let Err(e) = apply_one(config, path, text) {
            errors.push(format!("environment variable {name}: {e}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn apply_one(config: &mut Config, path: &str, text: String) -> Result<(), String> {
    let path: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    match path.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["proxy", key] => override_section(&mut config.proxy, key, env_value(&text)),
        ["vault", key] => override_section(&mut config.vault, key, env_value(&text)),
        ["log", key] => override_section(&mut config.log, key, env_value(&text)),
        ["data_dir"] => {
            config.data_dir = Some(PathBuf::from(text));
            Ok(())
        }
        ["placeholder_prefix"] => {
            config.placeholder_prefix = Some(text);
            Ok(())
        }
        _ => Err("not a setting that can be overridden (use AIRLOCK__SECTION__KEY for [proxy], [vault], [log])".into()),
    }
}

fn env_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

/// The section goes through TOML and back with the key replaced, so the
/// override is checked by the same serde rules as the file.
fn override_section<T>(section: &mut T, key: &str, value: toml::Value) -> Result<(), String>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut table = toml::Table::try_from(&*section).map_err(|e| e.to_string())?;
    table.insert(key.to_owned(), value);
    *section = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| describe_rejected_value(e.message()))?;
    Ok(())
}

/// serde quotes the value it refused (`invalid type: string "…"`), and an
/// override's value may be a secret: keep only what was expected. Messages
/// about unknown keys name keys only and stay as they are.
fn describe_rejected_value(message: &str) -> String {
    if message.starts_with("unknown field") {
        return message.to_owned();
    }
    match message.split_once("expected ") {
        Some((_, expected)) => {
            format!("the value has the wrong type or form (expected {expected})")
        }
        None => "the value is not accepted for this key".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_proxy::InterceptMode;

    fn vars<'a>(list: &'a [(&str, &str)]) -> impl Iterator<Item = (String, String)> + 'a {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string()))
    }

    #[test]
    fn environment_overrides_single_keys() {
        let mut c = Config::default();
        apply_env_overrides(
            &mut c,
            vars(&[
                ("AIRLOCK__PROXY__ALLOWED_PORTS", "[443, 8443]"),
                ("AIRLOCK__PROXY__INTERCEPT", "bound"),
                ("AIRLOCK__VAULT__PUBLIC_URL", "https://vault.example"),
                ("AIRLOCK__DATA_DIR", "/var/lib/airlock"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.proxy.allowed_ports, Some(vec![443, 8443]));
        assert_eq!(c.proxy.intercept, Some(InterceptMode::Bound));
        assert_eq!(c.vault.public_url.as_deref(), Some("https://vault.example"));
        assert_eq!(c.data_dir, Some(PathBuf::from("/var/lib/airlock")));
    }

    #[test]
    fn an_override_keeps_the_other_keys_of_its_section() {
        let mut c: Config =
            toml::from_str("[proxy]\nadd_via = true\nallowed_ports = [443]\n").unwrap();
        apply_env_overrides(&mut c, vars(&[("AIRLOCK__PROXY__ALLOWED_PORTS", "[8443]")])).unwrap();
        assert_eq!(c.proxy.allowed_ports, Some(vec![8443]));
        assert_eq!(c.proxy.add_via, Some(true));
    }

    #[test]
    fn every_bad_override_is_reported_without_its_value() {
        let mut c = Config::default();
        let errors = apply_env_overrides(
            &mut c,
            vars(&[
                ("AIRLOCK__PROXY__NOPE", "1"),
                ("AIRLOCK__PROXY__ALLOWED_PORTS", "secretish"),
                ("AIRLOCK__LOG__FORMAT", "'literal-secretish'"),
                ("AIRLOCK__SECRET__X", "y"),
            ]),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(
            errors.iter().all(|e| !e.contains("secretish")),
            "{errors:?}"
        );
        assert!(errors[0].starts_with("environment variable AIRLOCK__PROXY__NOPE: unknown field"));
        assert!(errors[1].contains("the value has the wrong type or form (expected a sequence)"));
        assert!(errors[3].contains("not a setting that can be overridden"));
    }
}
