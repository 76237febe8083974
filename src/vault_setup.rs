//! Opening the vault from the config: database, master key, credentials,
//! catalog, the HTTP client that reaches OAuth providers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use airlock_proxy::egress::ResolveOverrides;
use airlock_vault::{Catalog, Kek, Keyring, Store, Vault, VaultSettings};
use airlock_vault_client::{generate_placeholder, normalize_host, SecretString};
use secrecy::ExposeSecret;

use crate::CliError;
use airlock::config::{Loaded, Validated};

pub const DEFAULT_SANDBOX: &str = airlock_vault_client::SandboxId::DEFAULT;

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

pub fn database_url(loaded: &Loaded, data_dir: &Path) -> String {
    loaded.config.vault.database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            data_dir.join("airlock.db").display()
        )
    })
}

/// The master key: `AIRLOCK_MASTER_KEY`, else `master_key_command`, else the
/// key file (created 0600 on first run). Older keys from
/// `AIRLOCK_PREVIOUS_MASTER_KEY` and `previous_master_key_files`.
pub fn keyring(
    loaded: &Loaded,
    data_dir: &Path,
    extra_previous: Vec<Kek>,
) -> Result<Keyring, CliError> {
    let v = &loaded.config.vault;
    let current = if let Ok(text) = std::env::var("AIRLOCK_MASTER_KEY") {
        Kek::from_text(&text).map_err(|e| other(format!("AIRLOCK_MASTER_KEY: {e}")))?
    } else if let Some(command) = &v.master_key_command {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .output()
            .map_err(|e| other(format!("vault.master_key_command could not run: {e}")))?;
        if !output.status.success() {
            return Err(other(format!(
                "vault.master_key_command exited with {}",
                output.status
            )));
        }
        let text = zeroize::Zeroizing::new(String::from_utf8_lossy(&output.stdout).into_owned());
        Kek::from_text(&text).map_err(|e| other(format!("vault.master_key_command: {e}")))?
    } else {
        Kek::load_or_create_file(&master_key_file(loaded, data_dir)).map_err(other)?
    };
    let mut previous = extra_previous;
    if let Ok(text) = std::env::var("AIRLOCK_PREVIOUS_MASTER_KEY") {
        previous.push(
            Kek::from_text(&text)
                .map_err(|e| other(format!("AIRLOCK_PREVIOUS_MASTER_KEY: {e}")))?,
        );
    }
    for file in &v.previous_master_key_files {
        let path = loaded.resolve_path(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| other(format!("{}: {e}", path.display())))?;
        previous
            .push(Kek::from_text(&text).map_err(|e| other(format!("{}: {e}", path.display())))?);
    }
    Ok(Keyring::new(current, previous))
}

pub fn master_key_file(loaded: &Loaded, data_dir: &Path) -> PathBuf {
    loaded
        .config
        .vault
        .master_key_file
        .as_ref()
        .map(|f| loaded.resolve_path(f))
        .unwrap_or_else(|| data_dir.join("master.key"))
}

/// A credential from `env`, else from `file` (created with a random value on first use).
pub fn credential(env: &str, file: &Path) -> Result<SecretString, CliError> {
    if let Ok(value) = std::env::var(env) {
        if !value.is_empty() {
            return Ok(SecretString::from(value));
        }
    }
    match std::fs::read_to_string(file) {
        Ok(text) if !text.trim().is_empty() => Ok(SecretString::from(text.trim().to_owned())),
        _ => {
            let value = generate_placeholder("airlock-");
            write_private(file, value.as_bytes())
                .map_err(|e| other(format!("cannot create {}: {e}", file.display())))?;
            Ok(SecretString::from(value))
        }
    }
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents)
}

pub fn admin_token(loaded: &Loaded, data_dir: &Path) -> Result<SecretString, CliError> {
    let file = loaded
        .config
        .vault
        .admin_token_file
        .as_ref()
        .map(|f| loaded.resolve_path(f))
        .unwrap_or_else(|| data_dir.join("admin.token"));
    credential("AIRLOCK_ADMIN_TOKEN", &file)
}

pub fn service_token(loaded: &Loaded, data_dir: &Path) -> Result<SecretString, CliError> {
    let file = loaded
        .config
        .vault
        .service_token_file
        .as_ref()
        .map(|f| loaded.resolve_path(f))
        .unwrap_or_else(|| data_dir.join("service.token"));
    credential("AIRLOCK_SERVICE_TOKEN", &file)
}

/// Where browsers reach the vault.
pub fn public_url(loaded: &Loaded, listen: SocketAddr) -> String {
    loaded
        .config
        .vault
        .public_url
        .clone()
        .unwrap_or_else(|| crate::http_url(listen))
        .trim_end_matches('/')
        .to_owned()
}

/// Where the CLI and remote proxies reach the vault.
pub fn api_url(loaded: &Loaded) -> String {
    let v = &loaded.config.vault;
    v.url
        .clone()
        .or_else(|| v.public_url.clone())
        .unwrap_or_else(|| crate::http_url(v.listen))
        .trim_end_matches('/')
        .to_owned()
}

/// The client the vault uses to reach OAuth providers: verified TLS (system
/// roots plus `upstream_ca`), the operator's `[resolve]` overrides, never an
/// environment proxy, never following redirects.
pub fn provider_http_client(validated: &Validated) -> Result<reqwest::Client, CliError> {
    let (roots, _) = airlock_proxy::upstream::root_store(&validated.settings.upstream_ca);
    let tls = airlock_proxy::upstream::client_tls_config(roots);
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .dns_resolver(Arc::new(OverrideResolver(
            validated.settings.resolve.clone(),
        )))
        .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| other(format!("cannot build the provider HTTP client: {e}")))
}

/// `[resolve]` for the vault's own requests; other names go to the system resolver.
struct OverrideResolver(ResolveOverrides);

impl reqwest::dns::Resolve for OverrideResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = normalize_host(name.as_str()).unwrap_or_default();
        if let Some(target) = self.0.lookup(&host) {
            let addr = SocketAddr::new(target.ip, target.port.unwrap_or(0));
            return Box::pin(
                async move { Ok(Box::new(std::iter::once(addr)) as reqwest::dns::Addrs) },
            );
        }
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

pub struct OpenVault {
    pub vault: Arc<Vault>,
    pub admin_token: SecretString,
    pub service_token: SecretString,
}

pub async fn open(
    loaded: &Loaded,
    validated: &Validated,
    data_dir: &Path,
    settings: VaultSettings,
) -> Result<OpenVault, CliError> {
    let store = Store::open(&database_url(loaded, data_dir))
        .await
        .map_err(other)?;
    let keyring = keyring(loaded, data_dir, Vec::new())?;
    let mut catalog = match &loaded.config.vault.catalog_file {
        Some(file) => {
            let path = loaded.resolve_path(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| other(format!("{}: {e}", path.display())))?;
            Catalog::from_toml(&text).map_err(|e| other(format!("{}: {e}", path.display())))?
        }
        None => Catalog::built_in(),
    };
    for provider in &validated.providers {
        catalog.upsert(provider.clone()).map_err(other)?;
    }
    let http = provider_http_client(validated)?;
    let vault = Vault::open(store, keyring, catalog, http, settings)
        .await
        .map_err(other)?;
    for app in &validated.apps {
        vault
            .set_app(
                &app.tenant,
                &app.provider,
                &app.environment,
                &app.client_id,
                app.client_secret.clone(),
            )
            .await
            .map_err(|e| other(format!("[[app]] for {}: {e}", app.provider)))?;
    }
    let admin_token = admin_token(loaded, data_dir)?;
    let service_token = service_token(loaded, data_dir)?;
    if admin_token.expose_secret() == service_token.expose_secret() {
        return Err(other("the admin and service tokens must differ"));
    }
    Ok(OpenVault {
        vault,
        admin_token,
        service_token,
    })
}

/// The sidecar sandbox's placeholders: every provider with an app or a
/// connection in the default tenant, and every static secret of it.
pub async fn sidecar_bindings(vault: &Vault) -> Result<Vec<(String, String)>, CliError> {
    let mut providers: Vec<String> = vault
        .apps()
        .await
        .map_err(other)?
        .into_iter()
        .filter(|a| a.tenant == airlock_vault::DEFAULT_TENANT)
        .map(|a| a.provider)
        .collect();
    for c in vault.connections().await.map_err(other)? {
        if c.tenant == airlock_vault::DEFAULT_TENANT && !providers.contains(&c.provider) {
            providers.push(c.provider);
        }
    }
    providers.sort();
    providers.dedup();
    let secrets: Vec<String> = vault
        .secrets()
        .await
        .map_err(other)?
        .into_iter()
        .filter(|s| s["tenant"] == airlock_vault::DEFAULT_TENANT)
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect();
    vault
        .ensure_sandbox(DEFAULT_SANDBOX, &providers, &secrets)
        .await
        .map_err(other)
}
