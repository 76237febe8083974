//! The file's shape: serde structs with `deny_unknown_fields`, nothing
//! checked yet. A key left out is `None` here; its default lives with the
//! settings it becomes (`ProxySettings::default()`, `VaultSettings::default()`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use airlock_proxy::settings::UpstreamProtocol;
use airlock_proxy::InterceptMode;
use airlock_vault_client::{
    ForeignBody, RulesMode, RulesSpec, SecretString, SwapLocation, Verdict,
};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::ConfigError;

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
    /// Tenants' white-label settings (branding, redirect URI, app fallback).
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<Spanned<TenantSection>>,
    /// Connections redirected to airlock by the sandbox's network (clients
    /// that ignore proxy settings).
    #[serde(default)]
    pub transparent: TransparentSection,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransparentSection {
    /// TLS connections redirected here; the destination is their SNI.
    pub listen: Option<SocketAddr>,
    /// Plain-HTTP connections redirected here; the destination is their `Host`.
    pub http_listen: Option<SocketAddr>,
    /// `verify` (default) or `ignore`.
    pub original_destination: Option<airlock_proxy::settings::OriginalDestination>,
    /// Source network (CIDR or address) → the sandbox its connections belong to.
    pub sources: IndexMap<String, String>,
    /// Host pattern → the addresses (or CIDRs) the sandbox's own DNS may
    /// give for it, besides what airlock resolves it to.
    pub addresses: IndexMap<String, Vec<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    pub listen: Option<SocketAddr>,
    /// Where Prometheus `/metrics`, `/healthz` and `/readyz` are served.
    pub admin_listen: Option<SocketAddr>,
    /// Serve the admin endpoint at all (default true).
    pub admin: Option<bool>,
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
    pub intercept: Option<InterceptMode>,
    /// Hosts tunnelled untouched in every mode (exact or `*.suffix`): clients that pin certificates.
    pub passthrough_hosts: Vec<String>,
    pub allowed_ports: Option<Vec<u16>>,
    pub allow_private_destinations: Option<bool>,
    pub upstream_ca: Vec<PathBuf>,
    pub require_auth: Option<bool>,
    /// Use this CA instead of the one in the data dir.
    pub ca_cert: Option<PathBuf>,
    pub ca_key: Option<PathBuf>,
    pub add_via: Option<bool>,
    /// HTTP version to upstreams: `auto` (the sandbox's), `http1` or `http2`.
    pub upstream_protocol: Option<UpstreamProtocol>,
    /// Hosts always reached over HTTP/1.1, whatever `upstream_protocol` says.
    pub upstream_http1_hosts: Vec<String>,
    /// Hosts reached over HTTP/2 where they offer it, whatever `upstream_protocol` says.
    pub upstream_http2_hosts: Vec<String>,
    pub connect_timeout_secs: Option<u64>,
    pub response_timeout_secs: Option<u64>,
    pub tls_handshake_timeout_secs: Option<u64>,
    pub header_read_timeout_secs: Option<u64>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    /// Request bodies up to this size are kept for a replay after a token refresh.
    pub replay_buffer_bytes: Option<usize>,
    /// Cap on compressed request bodies and on what they decode to.
    pub max_decoded_body_bytes: Option<usize>,
    /// Replace real tokens echoed by upstreams with their placeholders.
    pub scrub_responses: Option<bool>,
    /// Client connections one sandbox may hold open at once.
    pub max_connections_per_sandbox: Option<usize>,
    /// Client connections the whole proxy holds open at once; more get 503.
    pub max_connections: Option<usize>,
    /// Per-core runtimes connections are served on (default: the cores; 0: one shared runtime).
    pub workers: Option<usize>,
    /// Seconds a request body may send nothing before it is abandoned (408).
    pub body_read_timeout_secs: Option<u64>,
    /// Decoded compressed request bodies held at once, process-wide; more get 503.
    pub decompression_budget_bytes: Option<usize>,
    /// Failed proxy authentications per client address per minute before 429.
    pub auth_failures_per_minute: Option<u32>,
    /// Seconds a request that meets an account no one connected waits for a
    /// human when it does not say (`Prefer: wait=N`); 0 (default): it fails at once.
    pub consent_wait_secs: Option<u64>,
    /// The longest any request is held for consent (default 300).
    pub max_consent_wait_secs: Option<u64>,
    /// Requests held for consent at once; more get 503 (default 256).
    pub max_held_requests: Option<usize>,
    /// POSTed (HMAC-signed) when a request begins to wait for a human.
    pub consent_webhook_url: Option<String>,
    /// The webhook's signing key: exactly one of the three with a URL.
    #[serde(skip_serializing)]
    pub consent_webhook_secret: Option<SecretString>,
    pub consent_webhook_secret_env: Option<String>,
    pub consent_webhook_secret_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultSection {
    pub listen: Option<SocketAddr>,
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
    pub refresh_window_secs: Option<u64>,
    pub refresh_fraction: Option<f64>,
    /// How often the background refresher runs (default 30).
    pub refresh_interval_secs: Option<u64>,
    pub refresh_backoff_secs: Option<u64>,
    /// Cap of the exponential back-off after repeated refresh failures.
    pub refresh_backoff_max_secs: Option<u64>,
    /// After a successful refresh, a 401 with the new token does not refresh again for this long.
    pub refresh_cooldown_secs: Option<u64>,
    /// Refresh a grant whose tokens are older than this even far from expiry,
    /// so refresh tokens that lapse when unused stay alive (default 86400; 0 = off).
    pub keepalive_refresh_secs: Option<u64>,
    pub state_ttl_secs: Option<u64>,
    /// How long a one-time connect link from a sandbox's status works (default 3600).
    pub connect_link_ttl_secs: Option<u64>,
    /// How long one revocation request at a provider may take.
    pub revoke_timeout_secs: Option<u64>,
    /// A failed revocation is retried after this long, doubling up to `revoke_retry_max_secs`.
    pub revoke_retry_secs: Option<u64>,
    pub revoke_retry_max_secs: Option<u64>,
    /// API connections open at once (default 1024: a fleet's proxies each
    /// hold a change stream and a few pooled ones); one more gets 503.
    pub max_connections: Option<usize>,
    /// The sidecar sandbox's environment (`airlock up`, `airlock env`): it
    /// resolves that environment's connections only (default `default`).
    pub environment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSection {
    pub name: String,
    pub value: Option<SecretString>,
    pub value_env: Option<String>,
    pub value_file: Option<PathBuf>,
    pub placeholder: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    pub swap_in: Option<BTreeSet<SwapLocation>>,
    /// A placeholder of this secret in a body to another host: `pass` or `refuse`.
    #[serde(default)]
    pub on_foreign_body: ForeignBody,
    /// Request rules (`allow GET /repos/acme/**`), first match wins.
    #[serde(default)]
    pub rules: Vec<String>,
    /// When no rule matches; left out: `deny` if a rule allows, else `allow`.
    pub rules_default: Option<Verdict>,
    /// Refuse requests to `hosts` that do not carry this placeholder.
    #[serde(default)]
    pub require: bool,
    /// `enforce` (default) or `dry_run` (log and audit, refuse nothing).
    #[serde(default)]
    pub rules_mode: RulesMode,
    /// Where the token goes when airlock puts it in itself (`bearer`,
    /// `token`, `basic:USER`, `header:NAME`); default `bearer`.
    pub inject: Option<String>,
    /// Put the placeholder in the `inject` slot of requests to `hosts` that
    /// carry no credential at all, then swap it as usual.
    #[serde(default)]
    pub inject_when_absent: bool,
    /// `static` (default: `value…` is swapped for the placeholder) or
    /// `aws_sigv4` (airlock checks the sandbox's SigV4 signature made with
    /// placeholders and signs again with the real keys; docs/SIGNING.md).
    #[serde(default)]
    pub kind: SecretKind,
    /// `aws_sigv4`: the real access key id (or `_env` / `_file`).
    pub access_key_id: Option<SecretString>,
    pub access_key_id_env: Option<String>,
    pub access_key_id_file: Option<PathBuf>,
    /// `aws_sigv4`: the real secret access key (or `_env` / `_file`).
    pub secret_access_key: Option<SecretString>,
    pub secret_access_key_env: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    /// `aws_sigv4`: the real session token of temporary credentials (optional).
    pub session_token: Option<SecretString>,
    pub session_token_env: Option<String>,
    pub session_token_file: Option<PathBuf>,
    /// `aws_sigv4`: the sandbox's variable for the placeholder secret
    /// access key (default `AWS_SECRET_ACCESS_KEY`).
    pub secret_variable: Option<String>,
    /// `aws_sigv4`: the sandbox's variable for the placeholder session
    /// token, set when `session_token…` is (default `AWS_SESSION_TOKEN`).
    pub session_token_variable: Option<String>,
    /// `aws_sigv4`: sign with temporary credentials of this role (STS
    /// AssumeRole with the keys above), refreshed before they expire.
    pub role_arn: Option<String>,
    /// `aws_sigv4` with `role_arn`: the session name (default `airlock`).
    pub role_session_name: Option<String>,
    /// `aws_sigv4` with `role_arn`: how long each credential lives (900 to 43200, default 3600).
    pub role_duration_secs: Option<u64>,
    /// `aws_sigv4` with `role_arn`: the STS endpoint (default `https://sts.amazonaws.com`).
    pub sts_endpoint: Option<String>,
    /// `aws_sigv4` with `role_arn`: the region STS requests are signed for (default `us-east-1`).
    pub sts_region: Option<String>,
    /// `hmac`: the header carrying the signature (`X-Signature`).
    pub signature_header: Option<String>,
    /// `hmac`: the string signed, e.g. `{method}\n{path}\n{body_sha256}`.
    pub signature_template: Option<String>,
    /// `hmac`: `sha256` (default), `sha384`, `sha512` or `sha1`.
    pub signature_algorithm: Option<String>,
    /// `hmac`: `hex` (default) or `base64`.
    pub signature_encoding: Option<String>,
    /// `hmac`: text before the signature in its header (`sha256=`).
    pub signature_prefix: Option<String>,
    /// `hmac`: a header with the signing time in Unix seconds, checked
    /// against the clock (put it in the template too).
    pub timestamp_header: Option<String>,
}

/// What a `[[secret]]` is (shared with the vault's secrets).
pub use airlock_vault_client::SecretKind;

impl SecretSection {
    /// `hmac`: the `signature_…` keys as written.
    pub fn hmac_settings(&self) -> airlock_vault_client::HmacSettings {
        airlock_vault_client::HmacSettings {
            signature_header: self.signature_header.clone(),
            signature_template: self.signature_template.clone(),
            signature_algorithm: self.signature_algorithm.clone(),
            signature_encoding: self.signature_encoding.clone(),
            signature_prefix: self.signature_prefix.clone(),
            timestamp_header: self.timestamp_header.clone(),
        }
    }

    /// `aws_sigv4`: the variable of the placeholder secret access key.
    pub fn secret_variable(&self) -> &str {
        self.secret_variable
            .as_deref()
            .unwrap_or(airlock_vault_client::secret_kind::DEFAULT_SECRET_VARIABLE)
    }

    /// `aws_sigv4`: the variable of the placeholder session token.
    pub fn session_token_variable(&self) -> &str {
        self.session_token_variable
            .as_deref()
            .unwrap_or(airlock_vault_client::secret_kind::DEFAULT_SESSION_TOKEN_VARIABLE)
    }

    pub fn has_session_token(&self) -> bool {
        self.session_token.is_some()
            || self.session_token_env.is_some()
            || self.session_token_file.is_some()
    }

    pub fn rules_spec(&self) -> RulesSpec {
        RulesSpec {
            rules: self.rules.clone(),
            default: self.rules_default,
            require: self.require,
            mode: self.rules_mode,
            inject_when_absent: None,
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
    pub client_secret: Option<SecretString>,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<PathBuf>,
}

/// `[[tenant]]`: the fields of `PUT /v1/tenants/{name}`, written into the
/// vault at start.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSection {
    pub name: String,
    pub display_name: Option<String>,
    pub accent_color: Option<String>,
    pub logo_url: Option<String>,
    pub support_url: Option<String>,
    pub return_url: Option<String>,
    pub redirect_uri: Option<String>,
    #[serde(default)]
    pub use_default_apps: bool,
}

fn default_tenant() -> String {
    airlock_vault::DEFAULT_TENANT.into()
}

fn default_environment() -> String {
    airlock_vault::DEFAULT_ENVIRONMENT.into()
}

#[derive(Debug, Deserialize, Serialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter such as `info` or `airlock=debug`.
    pub level: Option<String>,
}

/// Reads and parses the file; its text is kept to point at lines later.
pub fn read(path: &Path) -> Result<(Config, String), ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let config = toml::from_str(&source).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        message: parse_error_message(&source, &e),
    })?;
    Ok((config, source))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Config>("[proxy]\nlisten_addr = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
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
        let err = read(&path).err().unwrap().to_string();
        assert!(err.contains("line 3, column"), "{err}");
        assert!(!err.contains("hunter2-secret"), "{err}");
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let err = read(Path::new("/nonexistent/airlock.toml"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("cannot read /nonexistent/airlock.toml:"),
            "{err}"
        );
    }
}
