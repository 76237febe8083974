//! `airlock.toml`, parsed once. The steps, each in its own module:
//!
//! - `file`: the file's serde shape, read from disk;
//! - `env`: the `AIRLOCK__…` overlay;
//! - `layers`: precedence, decided in one place: flag > `AIRLOCK__` env > file > default;
//! - `proxy`, `secrets`, `vault`, `collisions`: each section turned into its
//!   typed settings, with every problem of the whole file reported together
//!   (with line numbers where the file has them).
//!
//! `SecretSource` is where a secret comes from (`value` / `value_env` / `value_file`).

mod collisions;
mod env;
mod file;
mod layers;
mod proxy;
mod secret_source;
mod secrets;
mod vault;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use airlock_vault_client::DEFAULT_PREFIX;

pub use env::{apply_env_overrides, ENV_OVERRIDE_PREFIX};
pub use file::{
    AppSection, Config, LogFormat, LogSection, ProxySection, SecretSection, VaultSection,
};
pub use layers::{Effective, Flags};
pub use proxy::{
    ca_files, default_admin_listen, read_pem_certs, Outbound, ProxyConfig, ResolveEntry,
};
pub use secret_source::{SecretSource, SecretSourceError, SourceKeys};
pub use secrets::{assign_placeholders, AssumeRole, PendingAws, PendingSecret};
pub use vault::{default_vault_listen, PendingApp, VaultFiles};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path} has {} error(s):\n{}", .errors.len(), .errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: String, errors: Vec<String> },
    #[error("cannot keep generated placeholders in {path}: {source}")]
    Placeholders {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A config file read from disk with its `AIRLOCK__` overlay, with what is
/// needed to resolve relative paths and to point at lines.
pub struct Loaded {
    pub config: Config,
    pub path: Option<PathBuf>,
    source: String,
}

/// Everything the file says, typed. Placeholders the file does not give
/// are still to be assigned (`assign_placeholders`, which needs the data dir).
/// Whether parsing reads `[[app]]` client secrets. `airlock env` prints only
/// placeholders: it skips them (each app's `client_secret` is then `None`,
/// which keeps the vault's stored secret), so it needs no secret in its
/// environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppSecrets {
    Read,
    Skip,
}

pub struct Parsed {
    pub proxy: ProxyConfig,
    pub secrets: Vec<PendingSecret>,
    pub providers: Vec<airlock_vault::Provider>,
    pub apps: Vec<PendingApp>,
    /// `[[tenant]]`: white-label settings, checked.
    pub tenants: Vec<(String, airlock_vault::TenantSettings)>,
}

impl Loaded {
    fn display_path(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| "(defaults)".to_owned(), |p| p.display().to_string())
    }

    fn line_of(&self, offset: usize) -> usize {
        self.source[..offset.min(self.source.len())]
            .matches('\n')
            .count()
            + 1
    }

    /// Paths in the file are relative to the file's folder.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        match self.path.as_ref().and_then(|c| c.parent()) {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        self.config
            .placeholder_prefix
            .as_deref()
            .unwrap_or(DEFAULT_PREFIX)
    }

    /// Turns every section into its settings, without touching the data
    /// dir; all problems are reported together.
    pub fn parse(&self) -> Result<Parsed, ConfigError> {
        self.parse_with(AppSecrets::Read)
    }

    /// [`parse`](Self::parse), reading `[[app]]` client secrets or not.
    pub fn parse_with(&self, app_secrets: AppSecrets) -> Result<Parsed, ConfigError> {
        let mut errors = Vec::new();
        let prefix = self.prefix();
        if prefix.len() < 4
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            errors.push(format!(
                "placeholder_prefix {prefix:?} must be at least 4 characters of letters, digits, '-' or '_'"
            ));
        }
        let proxy = self.proxy_config(&mut errors);
        let secrets = self.pending_secrets(&mut errors);
        errors.extend(self.variable_collisions());
        self.check_vault(&mut errors);
        let providers = self.providers(&mut errors);
        let apps = self.pending_apps(&mut errors, app_secrets);
        let tenants = self.tenants(&mut errors);
        if !errors.is_empty() {
            return Err(ConfigError::Invalid {
                path: self.display_path(),
                errors,
            });
        }
        Ok(Parsed {
            proxy,
            secrets,
            providers,
            apps,
            tenants,
        })
    }
}

/// `http://ADDR`, with an unspecified address shown as loopback.
pub fn http_url(listen: SocketAddr) -> String {
    let host = match listen.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}", listen.port())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A config as if read from `/tmp/airlock-test.toml`, without overlay.
    pub fn load(text: &str) -> Loaded {
        Loaded {
            config: toml::from_str(text).unwrap(),
            path: Some(PathBuf::from("/tmp/airlock-test.toml")),
            source: text.to_owned(),
        }
    }

    #[test]
    fn every_error_of_every_section_is_reported_at_once() {
        let err = load(
            r#"placeholder_prefix = "ab"

[proxy]
allowed_ports = []

[resolve]
"api.github.test" = "not-an-ip"

[[secret]]
name = "GITHUB_TOKEN"
value = "x"
hosts = []

[vault]
refresh_fraction = -1.0
"#,
        )
        .parse()
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.starts_with(
                "/tmp/airlock-test.toml has 5 error(s):\n  - placeholder_prefix \"ab\""
            ),
            "{err}"
        );
        assert!(err.contains("line 7: resolve"), "{err}");
        assert!(
            err.contains("line 9: secret \"GITHUB_TOKEN\": hosts is empty"),
            "{err}"
        );
        assert!(err.contains("vault.refresh_fraction -1"), "{err}");
    }

    #[test]
    fn a_good_file_parses_into_settings() {
        let parsed = load(
            "[proxy]\nallowed_ports = [443]\n\n[[secret]]\nname = \"T\"\nvalue = \"v\"\nhosts = [\"a.test\"]\n",
        )
        .parse()
        .ok()
        .unwrap();
        assert_eq!(parsed.proxy.settings.allowed_ports, vec![443]);
        assert_eq!(parsed.secrets.len(), 1);
        assert!(parsed.apps.is_empty() && parsed.providers.is_empty());
    }

    #[test]
    fn http_urls_show_unspecified_as_loopback() {
        assert_eq!(
            http_url("0.0.0.0:80".parse().unwrap()),
            "http://127.0.0.1:80"
        );
        assert_eq!(http_url("[::1]:80".parse().unwrap()), "http://[::1]:80");
    }
}
