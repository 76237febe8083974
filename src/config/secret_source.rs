//! Where a secret's value comes from: the file itself, an environment
//! variable, or a file. One type for `[[secret]]`'s `value` / `value_env` /
//! `value_file`, `[[app]]`'s `client_secret` / `…_env` / `…_file` and the
//! CLI's `--…-env` flags.

use std::path::{Path, PathBuf};

use airlock_vault_client::{ExposeSecret, SecretString};

#[derive(Debug, Clone)]
pub enum SecretSource {
    Value(SecretString),
    Env(String),
    File(PathBuf),
}

/// The names of the three keys in one section, for messages.
#[derive(Debug)]
pub struct SourceKeys {
    pub value: &'static str,
    pub env: &'static str,
    pub file: &'static str,
}

/// Said without the value: only which source failed and why.
#[derive(Debug, thiserror::Error)]
pub enum SecretSourceError {
    #[error("give exactly one of {}, {}, {}", .0.value, .0.env, .0.file)]
    NotExactlyOne(&'static SourceKeys),
    #[error("give at most one of {}, {}, {}", .0.value, .0.env, .0.file)]
    MoreThanOne(&'static SourceKeys),
    #[error("environment variable {0} is not set or empty")]
    EnvUnset(String),
    #[error("{key} {} is empty", .path.display())]
    FileEmpty { key: &'static str, path: PathBuf },
    #[error("{key} {}: {source}", .path.display())]
    FileUnreadable {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SecretSource {
    /// At most one of the three keys; `None` when none is given.
    pub fn at_most_one(
        keys: &'static SourceKeys,
        value: Option<&SecretString>,
        env: Option<&str>,
        file: Option<&Path>,
    ) -> Result<Option<Self>, SecretSourceError> {
        match (value, env, file) {
            (None, None, None) => Ok(None),
            (Some(v), None, None) => Ok(Some(Self::Value(v.clone()))),
            (None, Some(var), None) => Ok(Some(Self::Env(var.to_owned()))),
            (None, None, Some(path)) => Ok(Some(Self::File(path.to_owned()))),
            _ => Err(SecretSourceError::MoreThanOne(keys)),
        }
    }

    /// Exactly one of the three keys.
    pub fn exactly_one(
        keys: &'static SourceKeys,
        value: Option<&SecretString>,
        env: Option<&str>,
        file: Option<&Path>,
    ) -> Result<Self, SecretSourceError> {
        Self::at_most_one(keys, value, env, file)
            .ok()
            .flatten()
            .ok_or(SecretSourceError::NotExactlyOne(keys))
    }

    /// The value, with a file's trailing line break removed. `file_key`
    /// names the file key in messages; relative paths are the caller's to resolve.
    pub fn read(&self, file_key: &'static str) -> Result<SecretString, SecretSourceError> {
        match self {
            Self::Value(v) => Ok(v.clone()),
            Self::Env(var) => Self::read_env(var),
            Self::File(path) => match std::fs::read_to_string(path) {
                Ok(v) if !v.trim().is_empty() => {
                    let v = zeroize::Zeroizing::new(v);
                    Ok(SecretString::from(v.trim_end_matches(['\r', '\n'])))
                }
                Ok(_) => Err(SecretSourceError::FileEmpty {
                    key: file_key,
                    path: path.clone(),
                }),
                Err(source) => Err(SecretSourceError::FileUnreadable {
                    key: file_key,
                    path: path.clone(),
                    source,
                }),
            },
        }
    }

    /// The value of environment variable `var`, which must be set and not empty.
    pub fn read_env(var: &str) -> Result<SecretString, SecretSourceError> {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
            _ => Err(SecretSourceError::EnvUnset(var.to_owned())),
        }
    }

    /// A file path made absolute by `resolve` (the config file's folder).
    pub fn resolved(self, resolve: impl FnOnce(&Path) -> PathBuf) -> Self {
        match self {
            Self::File(path) => Self::File(resolve(&path)),
            other => other,
        }
    }
}

/// Trims surrounding whitespace, keeping the value secret.
pub fn trimmed(value: &SecretString) -> SecretString {
    SecretString::from(value.expose_secret().trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    static KEYS: SourceKeys = SourceKeys {
        value: "value",
        env: "value_env",
        file: "value_file",
    };

    #[test]
    fn one_key_makes_a_source() {
        let v = SecretString::from("x");
        assert!(matches!(
            SecretSource::exactly_one(&KEYS, Some(&v), None, None),
            Ok(SecretSource::Value(_))
        ));
        assert!(matches!(
            SecretSource::at_most_one(&KEYS, None, Some("VAR"), None),
            Ok(Some(SecretSource::Env(var))) if var == "VAR"
        ));
        assert!(matches!(
            SecretSource::at_most_one(&KEYS, None, None, None),
            Ok(None)
        ));
    }

    #[test]
    fn none_or_two_keys_are_refused_by_name() {
        let v = SecretString::from("x");
        let err = SecretSource::exactly_one(&KEYS, None, None, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "give exactly one of value, value_env, value_file"
        );
        let err = SecretSource::exactly_one(&KEYS, Some(&v), Some("V"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "give exactly one of value, value_env, value_file"
        );
        let err =
            SecretSource::at_most_one(&KEYS, None, Some("V"), Some(Path::new("f"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "give at most one of value, value_env, value_file"
        );
    }

    #[test]
    fn files_lose_their_line_break_and_empty_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("full");
        std::fs::write(&full, " s3cret \r\n").unwrap();
        let value = SecretSource::File(full).read("value_file").unwrap();
        assert_eq!(value.expose_secret(), " s3cret ");
        assert_eq!(trimmed(&value).expose_secret(), "s3cret");

        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n  \n").unwrap();
        let err = SecretSource::File(empty.clone())
            .read("client_secret_file")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("client_secret_file {} is empty", empty.display())
        );
        let missing = dir.path().join("missing");
        let err = SecretSource::File(missing.clone())
            .read("value_file")
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("value_file {}: ", missing.display())),
            "{err}"
        );
    }

    #[test]
    fn an_unset_variable_is_named() {
        let err = SecretSource::read_env("AIRLOCK_TEST_SURELY_UNSET_VAR").unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable AIRLOCK_TEST_SURELY_UNSET_VAR is not set or empty"
        );
    }

    #[test]
    fn relative_files_are_resolved_and_others_kept() {
        let s = SecretSource::File("s.txt".into()).resolved(|p| Path::new("/etc/airlock").join(p));
        assert!(matches!(s, SecretSource::File(p) if p == Path::new("/etc/airlock/s.txt")));
        let s = SecretSource::Env("V".into()).resolved(|_| unreachable!());
        assert!(matches!(s, SecretSource::Env(v) if v == "V"));
    }
}
