//! `airlock.toml`: one typed struct, loaded once, validated with every error
//! reported together (with line numbers where the file has them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_proxy::egress::{OverrideTarget, ResolveOverrides};
use airlock_proxy::{InterceptMode, ProxySettings};
use airlock_vault_client::{
    generate_placeholder, is_valid_placeholder, HostPattern, SecretString, StaticSecret,
    SwapLocation, DEFAULT_PREFIX,
};
use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// CA, generated placeholders, and (with the vault) the SQLite file.
    pub data_dir: Option<PathBuf>,
    pub placeholder_prefix: Option<String>,
    #[serde(default)]
    pub proxy: ProxySection,
    /// Operator overrides, first match wins: `"api.github.test" = "127.0.0.1"`.
    #[serde(default)]
    pub resolve: IndexMap<String, Spanned<String>>,
    #[serde(default, rename = "secret")]
    pub secrets: Vec<Spanned<SecretSection>>,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub vault: VaultSection,
    /// Custom OAuth2 providers, same fields as the built-in catalog.
    #[serde(default, rename = "provider")]
    pub providers: Vec<Spanned<airlock_vault::Provider>>,
    /// OAuth client registrations.
    #[serde(default, rename = "app")]
    pub apps: Vec<Spanned<AppSection>>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultSection {
    pub listen: SocketAddr,
    /// Where browsers reach the vault; the OAuth redirect is `{public_url}/oauth/callback`.
    pub public_url: Option<String>,
    /// Where `airlock proxy` and the CLI reach the vault (default: public_url).
    pub url: Option<String>,
    /// `sqlite://FILE` (default `sqlite://DATA_DIR/airlock.db`) or `postgres://…`.
    pub database_url: Option<String>,
    /// Key-encryption key file (created 0600 on first run); AIRLOCK_MASTER_KEY wins over it.
    pub master_key_file: Option<PathBuf>,
    /// A command that prints the master key (a secrets manager's CLI).
    pub master_key_command: Option<String>,
    /// Older master keys, kept until `airlock vault rotate-key` has re-wrapped everything.
    pub previous_master_key_files: Vec<PathBuf>,
    /// Admin API credential file (created on first run); AIRLOCK_ADMIN_TOKEN wins over it.
    pub admin_token_file: Option<PathBuf>,
    /// Credential remote proxies use for the service API; AIRLOCK_SERVICE_TOKEN wins over it.
    pub service_token_file: Option<PathBuf>,
    /// A catalog file replacing the built-in one.
    pub catalog_file: Option<PathBuf>,
    pub refresh_window_secs: u64,
    pub refresh_fraction: f64,
    pub refresh_interval_secs: u64,
    pub refresh_backoff_secs: u64,
    pub state_ttl_secs: u64,
}

impl Default for VaultSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            public_url: None,
            url: None,
            database_url: None,
            master_key_file: None,
            master_key_command: None,
            previous_master_key_files: Vec::new(),
            admin_token_file: None,
            service_token_file: None,
            catalog_file: None,
            refresh_window_secs: 300,
            refresh_fraction: 0.1,
            refresh_interval_secs: 30,
            refresh_backoff_secs: 30,
            state_ttl_secs: 600,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    pub provider: String,
    #[serde(default = "default_tenant")]
    pub tenant: String,
    #[serde(default = "default_environment")]
    pub environment: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<PathBuf>,
}

fn default_tenant() -> String {
    airlock_vault::DEFAULT_TENANT.into()
}

fn default_environment() -> String {
    airlock_vault::DEFAULT_ENVIRONMENT.into()
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    pub listen: SocketAddr,
    /// Where Prometheus `/metrics`, `/healthz` and `/readyz` are served.
    pub admin_listen: SocketAddr,
    /// Serve the admin endpoint at all.
    pub admin: bool,
    /// Names never reached (exact or `*.suffix`).
    pub deny_hosts: Vec<String>,
    /// When not empty, the only names that may be reached.
    pub allow_hosts: Vec<String>,
    /// Addresses never dialled.
    pub deny_cidrs: Vec<String>,
    /// Private addresses that may be dialled anyway.
    pub allow_cidrs: Vec<String>,
    /// The proxy URL handed to sandboxes, when it differs from `listen`
    /// (a sidecar reached as `http://airlock:8080`).
    pub public_url: Option<String>,
    pub intercept: InterceptMode,
    pub allowed_ports: Vec<u16>,
    pub allow_private_destinations: bool,
    pub upstream_ca: Vec<PathBuf>,
    pub require_auth: bool,
    /// Use this CA instead of the one in the data dir.
    pub ca_cert: Option<PathBuf>,
    pub ca_key: Option<PathBuf>,
    pub add_via: bool,
    pub connect_timeout_secs: u64,
    pub response_timeout_secs: u64,
    pub tls_handshake_timeout_secs: u64,
    pub header_read_timeout_secs: u64,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// Request bodies up to this size are kept for a replay after a token refresh.
    pub replay_buffer_bytes: usize,
    /// Cap on compressed request bodies and on what they decode to.
    pub max_decoded_body_bytes: usize,
    /// Replace real tokens echoed by upstreams with their placeholders.
    pub scrub_responses: bool,
    /// CONNECT tunnels one sandbox may hold open at once.
    pub max_connections_per_sandbox: usize,
    /// Failed proxy authentications per client address per minute before 429.
    pub auth_failures_per_minute: u32,
}

impl Default for ProxySection {
    fn default() -> Self {
        let d = ProxySettings::default();
        Self {
            listen: airlock_proxy::settings::default_listen(),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            admin: true,
            deny_hosts: Vec::new(),
            allow_hosts: Vec::new(),
            deny_cidrs: Vec::new(),
            allow_cidrs: Vec::new(),
            public_url: None,
            intercept: d.intercept,
            allowed_ports: d.allowed_ports,
            allow_private_destinations: d.allow_private_destinations,
            upstream_ca: Vec::new(),
            require_auth: d.require_auth,
            ca_cert: None,
            ca_key: None,
            add_via: d.add_via,
            connect_timeout_secs: d.connect_timeout.as_secs(),
            response_timeout_secs: d.response_timeout.as_secs(),
            tls_handshake_timeout_secs: d.tls_handshake_timeout.as_secs(),
            header_read_timeout_secs: d.header_read_timeout.as_secs(),
            max_header_bytes: d.max_header_bytes,
            max_headers: d.max_headers,
            replay_buffer_bytes: d.replay_buffer_bytes,
            max_decoded_body_bytes: d.max_decoded_body,
            scrub_responses: d.scrub_responses,
            max_connections_per_sandbox: d.max_connections_per_sandbox,
            auth_failures_per_minute: d.auth_failures_per_minute,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSection {
    pub name: String,
    pub value: Option<String>,
    pub value_env: Option<String>,
    pub value_file: Option<PathBuf>,
    pub placeholder: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    pub swap_in: Option<BTreeSet<SwapLocation>>,
}

#[derive(Debug, Deserialize, serde::Serialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter such as `info` or `airlock=debug`.
    pub level: Option<String>,
}

/// A config file read from disk, with what is needed to resolve relative
/// paths and to point at lines.
pub struct Loaded {
    pub config: Config,
    pub path: Option<PathBuf>,
    source: String,
}

impl Loaded {
    pub fn read(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            let mut config = Config::default();
            apply_env_overrides(&mut config, std::env::vars()).map_err(|errors| {
                ConfigError::Invalid {
                    path: "(defaults)".into(),
                    errors,
                }
            })?;
            return Ok(Self {
                config,
                path: None,
                source: String::new(),
            });
        };
        let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&source).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: parse_error_message(&source, &e),
        })?;
        apply_env_overrides(&mut config, std::env::vars()).map_err(|errors| {
            ConfigError::Invalid {
                path: path.display().to_string(),
                errors,
            }
        })?;
        Ok(Self {
            config,
            path: Some(path.to_owned()),
            source,
        })
    }

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

    /// Checks everything that can be checked without touching the data dir.
    /// Returns the proxy settings and the secrets (placeholders still unset
    /// where the file gives none).
    pub fn validate(&self) -> Result<Validated, ConfigError> {
        let mut errors = Vec::new();
        let c = &self.config;
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
        let p = &c.proxy;
        if p.allowed_ports.is_empty() {
            errors.push("proxy.allowed_ports is empty: no CONNECT could succeed".into());
        }
        if p.ca_cert.is_some() != p.ca_key.is_some() {
            errors.push("proxy.ca_cert and proxy.ca_key must be given together".into());
        }
        if let Some(url) = &p.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                errors.push(format!(
                    "proxy.public_url {url:?} must start with http:// or https://"
                ));
            }
        }
        let mut upstream_ca = Vec::new();
        for path in &p.upstream_ca {
            let full = self.resolve_path(path);
            match read_pem_certs(&full) {
                Ok(certs) if certs.is_empty() => errors.push(format!(
                    "proxy.upstream_ca {}: no PEM certificate in the file",
                    full.display()
                )),
                Ok(certs) => upstream_ca.extend(certs),
                Err(e) => errors.push(format!("proxy.upstream_ca {}: {e}", full.display())),
            }
        }
        let mut overrides = Vec::new();
        for (pattern, target) in &c.resolve {
            let line = self.line_of(target.span().start);
            match target.get_ref().parse::<OverrideTarget>() {
                Ok(t) => overrides.push((pattern.as_str(), t)),
                Err(e) => errors.push(format!("line {line}: resolve {pattern:?}: {e}")),
            }
        }
        let mut egress = airlock_proxy::egress::EgressLists::default();
        for (field, list, out) in [
            ("deny_hosts", &p.deny_hosts, &mut egress.deny_hosts),
            ("allow_hosts", &p.allow_hosts, &mut egress.allow_hosts),
        ] {
            for h in list {
                match HostPattern::parse(h) {
                    Ok(pattern) => out.push(pattern),
                    Err(e) => errors.push(format!("proxy.{field}: {e}")),
                }
            }
        }
        for (field, list, out) in [
            ("deny_cidrs", &p.deny_cidrs, &mut egress.deny_cidrs),
            ("allow_cidrs", &p.allow_cidrs, &mut egress.allow_cidrs),
        ] {
            for c in list {
                match c
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                {
                    Ok(net) => out.push(net),
                    Err(_) => errors.push(format!(
                        "proxy.{field}: {c:?} is not a CIDR (e.g. 10.0.0.0/8) or an address"
                    )),
                }
            }
        }
        let resolve = match ResolveOverrides::new(overrides) {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("resolve: {e}"));
                ResolveOverrides::default()
            }
        };
        let mut secrets = Vec::new();
        let mut names = BTreeSet::new();
        let mut placeholders = BTreeSet::new();
        for spanned in &c.secrets {
            let line = self.line_of(spanned.span().start);
            let s = spanned.get_ref();
            let at = format!("line {line}: secret {:?}", s.name);
            let mut push = |msg: String| errors.push(format!("{at}: {msg}"));
            if s.name.is_empty()
                || !s
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                || s.name.as_bytes()[0].is_ascii_digit()
            {
                push("name must be a valid environment variable name (letters, digits, _)".into());
            }
            if !names.insert(s.name.clone()) {
                push("name is used by another secret".into());
            }
            let sources = [
                s.value.is_some(),
                s.value_env.is_some(),
                s.value_file.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            let value = if sources != 1 {
                push("give exactly one of value, value_env, value_file".into());
                None
            } else if let Some(v) = &s.value {
                Some(v.clone())
            } else if let Some(var) = &s.value_env {
                match std::env::var(var) {
                    Ok(v) if !v.is_empty() => Some(v),
                    _ => {
                        push(format!("environment variable {var} is not set or empty"));
                        None
                    }
                }
            } else {
                let path = self.resolve_path(s.value_file.as_deref().unwrap_or(Path::new("")));
                match std::fs::read_to_string(&path) {
                    Ok(v) if !v.trim().is_empty() => {
                        Some(v.trim_end_matches(['\r', '\n']).to_owned())
                    }
                    Ok(_) => {
                        push(format!("value_file {} is empty", path.display()));
                        None
                    }
                    Err(e) => {
                        push(format!("value_file {}: {e}", path.display()));
                        None
                    }
                }
            };
            if let Some(v) = &value {
                // Said without the value: only that it is unusable.
                if v.bytes().any(|b| b.is_ascii_control()) {
                    push("the value holds control characters (line breaks?) and cannot be sent in a header".into());
                }
            }
            if let Some(placeholder) = &s.placeholder {
                if !is_valid_placeholder(prefix, placeholder) {
                    push(format!(
                        "placeholder must be {prefix:?} followed by at least 22 letters or digits"
                    ));
                }
                if !placeholders.insert(placeholder.clone()) {
                    push("placeholder is used by another secret".into());
                }
            }
            if s.hosts.is_empty() {
                push("hosts is empty: the secret could never be sent anywhere".into());
            }
            let mut hosts = Vec::new();
            for h in &s.hosts {
                match HostPattern::parse(h) {
                    Ok(p) => hosts.push(p),
                    Err(e) => push(e.to_string()),
                }
            }
            let swap_in = s.swap_in.clone().unwrap_or_else(SwapLocation::defaults);
            if swap_in.is_empty() {
                push("swap_in is empty: the placeholder could never be swapped".into());
            }
            if let Some(value) = value {
                secrets.push(PendingSecret {
                    name: s.name.clone(),
                    value: SecretString::from(value),
                    placeholder: s.placeholder.clone(),
                    hosts,
                    swap_in,
                });
            }
        }
        let v = &c.vault;
        if !(0.0..=1.0).contains(&v.refresh_fraction) {
            errors.push(format!(
                "vault.refresh_fraction {} must be between 0 and 1",
                v.refresh_fraction
            ));
        }
        if let Some(url) = &v.database_url {
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                errors.push("vault.database_url must start with sqlite:// or postgres://".into());
            }
        }
        for (field, url) in [("vault.public_url", &v.public_url), ("vault.url", &v.url)] {
            if let Some(url) = url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    errors.push(format!(
                        "{field} {url:?} must start with http:// or https://"
                    ));
                }
            }
        }
        let mut providers = Vec::new();
        for spanned in &c.providers {
            let line = self.line_of(spanned.span().start);
            let p = spanned.get_ref();
            for problem in p.problems() {
                errors.push(format!("line {line}: provider {:?}: {problem}", p.name));
            }
            providers.push(p.clone());
        }
        let mut apps = Vec::new();
        for spanned in &c.apps {
            let line = self.line_of(spanned.span().start);
            let a = spanned.get_ref();
            let at = format!("line {line}: app for provider {:?}", a.provider);
            let known = airlock_vault::Catalog::built_in()
                .get(&a.provider)
                .is_some()
                || c.providers.iter().any(|p| p.get_ref().name == a.provider);
            if !known && c.vault.catalog_file.is_none() {
                errors.push(format!(
                    "{at}: unknown provider (not in the catalog or [[provider]])"
                ));
            }
            if a.client_id.trim().is_empty() {
                errors.push(format!("{at}: client_id is empty"));
            }
            let sources = [
                a.client_secret.is_some(),
                a.client_secret_env.is_some(),
                a.client_secret_file.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            let secret = if sources > 1 {
                errors.push(format!("{at}: give at most one of client_secret, client_secret_env, client_secret_file"));
                None
            } else if let Some(v) = &a.client_secret {
                Some(v.clone())
            } else if let Some(var) = &a.client_secret_env {
                match std::env::var(var) {
                    Ok(v) if !v.is_empty() => Some(v),
                    _ => {
                        errors.push(format!(
                            "{at}: environment variable {var} is not set or empty"
                        ));
                        None
                    }
                }
            } else if let Some(f) = &a.client_secret_file {
                let path = self.resolve_path(f);
                match std::fs::read_to_string(&path) {
                    Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
                    Ok(_) => {
                        errors.push(format!(
                            "{at}: client_secret_file {} is empty",
                            path.display()
                        ));
                        None
                    }
                    Err(e) => {
                        errors.push(format!("{at}: client_secret_file {}: {e}", path.display()));
                        None
                    }
                }
            } else {
                None
            };
            apps.push(PendingApp {
                provider: a.provider.clone(),
                tenant: a.tenant.clone(),
                environment: a.environment.clone(),
                client_id: a.client_id.clone(),
                client_secret: secret.map(SecretString::from),
            });
        }
        if !errors.is_empty() {
            return Err(ConfigError::Invalid {
                path: self.display_path(),
                errors,
            });
        }
        let settings = ProxySettings {
            intercept: p.intercept,
            allowed_ports: p.allowed_ports.clone(),
            allow_private_destinations: p.allow_private_destinations,
            upstream_ca,
            require_auth: p.require_auth,
            resolve,
            egress,
            add_via: p.add_via,
            connect_timeout: Duration::from_secs(p.connect_timeout_secs.max(1)),
            response_timeout: Duration::from_secs(p.response_timeout_secs.max(1)),
            tls_handshake_timeout: Duration::from_secs(p.tls_handshake_timeout_secs.max(1)),
            header_read_timeout: Duration::from_secs(p.header_read_timeout_secs.max(1)),
            max_header_bytes: p.max_header_bytes,
            max_headers: p.max_headers,
            replay_buffer_bytes: p.replay_buffer_bytes,
            max_decoded_body: p.max_decoded_body_bytes,
            scrub_responses: p.scrub_responses,
            max_connections_per_sandbox: p.max_connections_per_sandbox.max(1),
            auth_failures_per_minute: p.auth_failures_per_minute.max(1),
            ..ProxySettings::default()
        };
        Ok(Validated {
            settings,
            secrets,
            providers,
            apps,
        })
    }
}

/// Where and what, without the snippet of the file toml's own message quotes:
/// that line could hold a secret value.
fn parse_error_message(source: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &source[..span.start.min(source.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}

/// Prefix of environment variables that override single config keys:
/// `AIRLOCK__PROXY__ALLOWED_PORTS="[443, 8443]"`, `AIRLOCK__VAULT__PUBLIC_URL=https://…`,
/// `AIRLOCK__DATA_DIR=/var/lib/airlock`. Values are read as TOML, else as text.
pub const ENV_OVERRIDE_PREFIX: &str = "AIRLOCK__";

fn env_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

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

/// Applies `AIRLOCK__…` overrides; every bad one is reported.
pub fn apply_env_overrides(
    config: &mut Config,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    for (name, text) in vars {
        let Some(path) = name.strip_prefix(ENV_OVERRIDE_PREFIX) else {
            continue;
        };
        let path: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        let value = env_value(&text);
        let result = match path.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["proxy", key] => override_section(&mut config.proxy, key, value),
            ["vault", key] => override_section(&mut config.vault, key, value),
            ["log", key] => override_section(&mut config.log, key, value),
            ["data_dir"] => {
                config.data_dir = Some(PathBuf::from(text.clone()));
                Ok(())
            }
            ["placeholder_prefix"] => {
                config.placeholder_prefix = Some(text.clone());
                Ok(())
            }
            _ => Err("not a setting that can be overridden (use AIRLOCK__SECTION__KEY for [proxy], [vault], [log])".into()),
        };
        // The message names the variable, never its value (it may be a secret).
        if let Err(e) = result {
            errors.push(format!("environment variable {name}: {e}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

pub struct Validated {
    pub settings: ProxySettings,
    pub secrets: Vec<PendingSecret>,
    pub providers: Vec<airlock_vault::Provider>,
    pub apps: Vec<PendingApp>,
}

pub struct PendingApp {
    pub provider: String,
    pub tenant: String,
    pub environment: String,
    pub client_id: String,
    pub client_secret: Option<SecretString>,
}

pub struct PendingSecret {
    pub name: String,
    pub value: SecretString,
    pub placeholder: Option<String>,
    pub hosts: Vec<HostPattern>,
    pub swap_in: BTreeSet<SwapLocation>,
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
                None => {
                    let existing = kept
                        .get(&s.name)
                        .filter(|p| is_valid_placeholder(prefix, p));
                    match existing {
                        Some(p) => p.clone(),
                        None => {
                            let p = generate_placeholder(prefix);
                            kept.insert(s.name.clone(), p.clone());
                            changed = true;
                            p
                        }
                    }
                }
            };
            StaticSecret {
                name: s.name,
                value: s.value,
                placeholder,
                hosts: s.hosts,
                swap_in: s.swap_in,
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

pub fn read_pem_certs(
    path: &Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Loaded {
        Loaded {
            config: toml::from_str(text).unwrap(),
            path: Some(PathBuf::from("/tmp/airlock-test.toml")),
            source: text.to_owned(),
        }
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let l = load(
            r#"
[resolve]
"api.github.test" = "not-an-ip"

[[secret]]
name = "GITHUB_TOKEN"
value = "x"
hosts = []

[[secret]]
name = "1BAD"
hosts = ["*"]
placeholder = "miosa-tok-short"
"#,
        );
        let err = l.validate().err().unwrap().to_string();
        assert!(err.contains("line 3: resolve"), "{err}");
        assert!(
            err.contains("line 5: secret \"GITHUB_TOKEN\": hosts is empty"),
            "{err}"
        );
        assert!(
            err.contains("line 10: secret \"1BAD\": name must be"),
            "{err}"
        );
        assert!(err.contains("exactly one of value"), "{err}");
        assert!(err.contains("placeholder must be"), "{err}");
        assert!(err.contains("invalid host pattern"), "{err}");
    }

    #[test]
    fn environment_overrides_single_keys() {
        let mut c = Config::default();
        let vars = [
            ("AIRLOCK__PROXY__ALLOWED_PORTS", "[443, 8443]"),
            ("AIRLOCK__PROXY__INTERCEPT", "all"),
            ("AIRLOCK__VAULT__PUBLIC_URL", "https://vault.example"),
            ("AIRLOCK__DATA_DIR", "/var/lib/airlock"),
            ("UNRELATED", "x"),
        ];
        apply_env_overrides(
            &mut c,
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap();
        assert_eq!(c.proxy.allowed_ports, vec![443, 8443]);
        assert_eq!(c.proxy.intercept, InterceptMode::All);
        assert_eq!(c.vault.public_url.as_deref(), Some("https://vault.example"));
        assert_eq!(c.data_dir, Some(PathBuf::from("/var/lib/airlock")));
        let bad = [
            ("AIRLOCK__PROXY__NOPE", "1"),
            ("AIRLOCK__PROXY__ALLOWED_PORTS", "secretish"),
            ("AIRLOCK__LOG__FORMAT", "'literal-secretish'"),
            ("AIRLOCK__SECRET__X", "y"),
        ];
        let errors = apply_env_overrides(
            &mut c,
            bad.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(
            errors.iter().all(|e| !e.contains("secretish")),
            "{errors:?}"
        );
    }

    #[test]
    fn parse_errors_do_not_quote_the_file() {
        // Found by the `config` fuzz target: toml's message quotes the line.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[[secret]]\nname = \"T\"\nvalue = \"hunter2-secret\" oops\n",
        )
        .unwrap();
        let err = Loaded::read(Some(&path)).err().unwrap().to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(!err.contains("hunter2-secret"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Config>("[proxy]\nlisten_addr = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn secret_values_never_appear_in_errors() {
        let l = load(
            "[[secret]]\nname = \"T\"\nvalue = \"hunter2\\r\\ninjected\"\nhosts = [\"a.test\"]\n",
        );
        let err = l.validate().err().unwrap().to_string();
        assert!(err.contains("control characters"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
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
            }]
        };
        let first = assign_placeholders(dir.path(), DEFAULT_PREFIX, pending()).unwrap();
        let second = assign_placeholders(dir.path(), DEFAULT_PREFIX, pending()).unwrap();
        assert_eq!(first[0].placeholder, second[0].placeholder);
        assert!(is_valid_placeholder(DEFAULT_PREFIX, &first[0].placeholder));
    }
}
