//! Opening the vault from the config: database, master key, credentials,
//! catalog, apps, and the sidecar sandbox's placeholders.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use airlock_vault::{Catalog, Kek, Keyring, Store, Vault, VaultSettings};
use airlock_vault_client::{generate_placeholder, ExposeSecret, SandboxId, SecretString};

use crate::config::{Loaded, Parsed, VaultFiles};
use crate::Error;

/// The master key: `AIRLOCK_MASTER_KEY`, else `master_key_command`, else the
/// key file (created 0600 on first run). Older keys from
/// `AIRLOCK_PREVIOUS_MASTER_KEY`, `previous_master_key_files` and `extra_previous`.
pub fn keyring(
    files: &VaultFiles,
    master_key_command: Option<&str>,
    extra_previous: Vec<Kek>,
) -> Result<Keyring, Error> {
    let key = |origin: &str, text: &str| {
        Kek::from_text(text).map_err(|source| Error::MasterKey {
            origin: origin.to_owned(),
            source,
        })
    };
    let current = if let Ok(text) = std::env::var("AIRLOCK_MASTER_KEY") {
        key("AIRLOCK_MASTER_KEY", &text)?
    } else if let Some(command) = master_key_command {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .output()
            .map_err(Error::KeyCommandSpawn)?;
        if !output.status.success() {
            return Err(Error::KeyCommandFailed(output.status));
        }
        let text = zeroize::Zeroizing::new(String::from_utf8_lossy(&output.stdout).into_owned());
        key("vault.master_key_command", &text)?
    } else {
        Kek::load_or_create_file(&files.master_key_file)?
    };
    let mut previous = extra_previous;
    if let Ok(text) = std::env::var("AIRLOCK_PREVIOUS_MASTER_KEY") {
        previous.push(key("AIRLOCK_PREVIOUS_MASTER_KEY", &text)?);
    }
    for path in &files.previous_master_key_files {
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            Error::File {
                path: path.clone(),
                source,
            }
        })?);
        previous.push(key(&path.display().to_string(), &text)?);
    }
    Ok(Keyring::new(current, previous))
}

/// A credential from `env`, else from `file` (created with a random value on first use).
fn credential(env: &str, file: &Path) -> Result<SecretString, Error> {
    if let Ok(value) = std::env::var(env) {
        if !value.is_empty() {
            return Ok(SecretString::from(value));
        }
    }
    match std::fs::read_to_string(file) {
        Ok(text) if !text.trim().is_empty() => Ok(SecretString::from(text.trim().to_owned())),
        _ => {
            let value = generate_placeholder("airlock-");
            write_private(file, value.as_bytes()).map_err(|source| Error::CreateCredential {
                path: file.to_owned(),
                source,
            })?;
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

pub fn admin_token(files: &VaultFiles) -> Result<SecretString, Error> {
    credential("AIRLOCK_ADMIN_TOKEN", &files.admin_token_file)
}

pub fn service_token(files: &VaultFiles) -> Result<SecretString, Error> {
    credential("AIRLOCK_SERVICE_TOKEN", &files.service_token_file)
}

/// The vault's settings: the file's timings plus where things are reached.
pub fn settings(
    loaded: &Loaded,
    proxy_url: String,
    vault_listen: SocketAddr,
    base_env: Vec<(String, String)>,
) -> VaultSettings {
    VaultSettings {
        public_url: loaded.config.vault.public_url(vault_listen),
        proxy_url,
        placeholder_prefix: loaded.prefix().to_owned(),
        base_env,
        ..loaded.config.vault.settings()
    }
}

pub struct OpenVault {
    pub vault: Arc<Vault>,
    pub admin_token: SecretString,
    pub service_token: SecretString,
}

/// Opens the store, registers the config file's providers and apps, and
/// reads (or creates) the two API credentials.
pub async fn open(
    loaded: &Loaded,
    parsed: &Parsed,
    files: &VaultFiles,
    settings: VaultSettings,
) -> Result<OpenVault, Error> {
    let store = Store::open(&files.database_url).await?;
    let keyring = keyring(
        files,
        loaded.config.vault.master_key_command.as_deref(),
        Vec::new(),
    )?;
    let catalog = catalog(files, &parsed.providers)?;
    let http = super::outbound::provider_client(&parsed.proxy.outbound)?;
    let vault = Vault::open(store, keyring, catalog, http, settings).await?;
    for app in &parsed.apps {
        vault
            .set_app(
                &app.tenant,
                &app.provider,
                &app.environment,
                &app.client_id,
                app.client_secret.clone(),
            )
            .await
            .map_err(|source| Error::App {
                provider: app.provider.clone(),
                source,
            })?;
    }
    for (tenant, settings) in &parsed.tenants {
        vault
            .set_tenant(tenant, settings.clone())
            .await
            .map_err(|source| Error::Tenant {
                tenant: tenant.clone(),
                source,
            })?;
    }
    let admin_token = admin_token(files)?;
    let service_token = service_token(files)?;
    if admin_token.expose_secret() == service_token.expose_secret() {
        return Err(Error::SameTokens);
    }
    Ok(OpenVault {
        vault,
        admin_token,
        service_token,
    })
}

/// The built-in catalog (or `catalog_file`) plus the file's `[[provider]]`s.
fn catalog(files: &VaultFiles, providers: &[airlock_vault::Provider]) -> Result<Catalog, Error> {
    let mut catalog = match &files.catalog_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::File {
                path: path.clone(),
                source,
            })?;
            Catalog::from_toml(&text).map_err(|source| Error::Catalog {
                path: path.clone(),
                source,
            })?
        }
        None => Catalog::built_in(),
    };
    for provider in providers {
        catalog.upsert(provider.clone())?;
    }
    Ok(catalog)
}

/// The sidecar sandbox's placeholders, in `environment`: every provider
/// with an app or a connection of the default tenant there, each
/// connection there with a variable of its own (pinned to it), and every
/// static secret of the tenant. A variable also claimed by a config-file
/// `[[secret]]` (`config_variables`: an AWS secret's three, say) is an error naming both: a sandbox gets
/// one value per name.
pub async fn sidecar_bindings(
    vault: &Vault,
    environment: &str,
    config_variables: &[String],
) -> Result<Vec<(String, String)>, Error> {
    let bindings = sidecar_bindings_unchecked(vault, environment).await?;
    let rows = vault.store().bindings_of(SandboxId::DEFAULT).await?;
    let mut claimed = Vec::new();
    for row in &rows {
        // Each variable of the binding: an AWS secret's secret key and
        // session token too.
        for (variable, _) in vault
            .binding_env(airlock_vault::DEFAULT_TENANT, row)
            .await?
        {
            claimed.push((variable, row));
        }
    }
    let mut errors = Vec::new();
    for name in config_variables {
        if let Some((_, row)) = claimed.iter().find(|(v, _)| v == name) {
            errors.push(format!(
                "variable {name} is claimed by a config file [[secret]] and by the vault's {} {:?}; \
                 a sandbox can get only one value for it (rename the secret, or set the provider's env)",
                row.target_kind, row.target
            ));
        }
    }
    if errors.is_empty() {
        Ok(bindings)
    } else {
        Err(Error::SidecarCollisions(errors))
    }
}

async fn sidecar_bindings_unchecked(
    vault: &Vault,
    environment: &str,
) -> Result<Vec<(String, String)>, Error> {
    let mut providers: Vec<String> = vault
        .apps()
        .await?
        .into_iter()
        .filter(|a| a.tenant == airlock_vault::DEFAULT_TENANT && a.environment == environment)
        .map(|a| a.provider)
        .collect();
    for c in vault.connections().await? {
        if c.tenant == airlock_vault::DEFAULT_TENANT
            && c.environment == environment
            && !providers.contains(&c.provider)
        {
            providers.push(c.provider);
        }
    }
    providers.sort();
    providers.dedup();
    let secrets: Vec<String> = vault
        .secrets()
        .await?
        .into_iter()
        .filter(|s| s["tenant"] == airlock_vault::DEFAULT_TENANT)
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect();
    Ok(vault
        .ensure_sandbox(SandboxId::DEFAULT, environment, &providers, &secrets)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_credential_file_is_created_private_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/admin.token");
        let var = "AIRLOCK_TEST_CREDENTIAL_NEVER_SET";
        let first = credential(var, &file).unwrap();
        let second = credential(var, &file).unwrap();
        assert_eq!(first.expose_secret(), second.expose_secret());
        assert!(first.expose_secret().starts_with("airlock-"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn vault_settings_take_the_file_s_timings_and_the_urls_given() {
        let loaded = crate::config::tests::load(
            "placeholder_prefix = \"tok-\"\n[vault]\nrefresh_window_secs = 5\npublic_url = \"https://v.test/\"\n",
        );
        let s = settings(
            &loaded,
            "http://proxy:8080".into(),
            "127.0.0.1:1".parse().unwrap(),
            vec![("NO_PROXY".into(), "x".into())],
        );
        assert_eq!(s.refresh_window, std::time::Duration::from_secs(5));
        assert_eq!(s.public_url, "https://v.test");
        assert_eq!(s.proxy_url, "http://proxy:8080");
        assert_eq!(s.placeholder_prefix, "tok-");
        assert_eq!(s.base_env.len(), 1);
    }
}
