//! `[vault]`, `[[provider]]` and `[[app]]`: the vault's timings (defaults
//! from `VaultSettings::default()`), its files, and the apps to register.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_vault::VaultSettings;
use airlock_vault_client::SecretString;

use super::file::{AppSection, VaultSection};
use super::proxy::is_http_url;
use super::secret_source::{trimmed, SecretSource, SourceKeys};
use super::Loaded;

static CLIENT_SECRET_KEYS: SourceKeys = SourceKeys {
    value: "client_secret",
    env: "client_secret_env",
    file: "client_secret_file",
};

/// Where the vault listens unless `[vault] listen` says otherwise.
pub fn default_vault_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8090))
}

pub struct PendingApp {
    pub provider: String,
    pub tenant: String,
    pub environment: String,
    pub client_id: String,
    pub client_secret: Option<SecretString>,
}

/// The vault's files, relative paths resolved, defaults in the data dir.
pub struct VaultFiles {
    pub database_url: String,
    pub master_key_file: PathBuf,
    pub previous_master_key_files: Vec<PathBuf>,
    pub admin_token_file: PathBuf,
    pub service_token_file: PathBuf,
    pub catalog_file: Option<PathBuf>,
}

impl VaultSection {
    pub fn listen(&self) -> SocketAddr {
        self.listen.unwrap_or_else(default_vault_listen)
    }

    /// Where browsers reach the vault listening on `listen`.
    pub fn public_url(&self, listen: SocketAddr) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| super::http_url(listen))
            .trim_end_matches('/')
            .to_owned()
    }

    /// Where the CLI and remote proxies reach the vault.
    pub fn api_url(&self) -> String {
        self.url
            .clone()
            .or_else(|| self.public_url.clone())
            .unwrap_or_else(|| super::http_url(self.listen()))
            .trim_end_matches('/')
            .to_owned()
    }

    /// The timings; the caller fills in URLs, prefix and base environment.
    pub fn settings(&self) -> VaultSettings {
        let d = VaultSettings::default();
        let secs =
            |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_secs);
        let at_least_one = |value: Option<u64>, default: Duration| {
            value.map_or(default, |v| Duration::from_secs(v.max(1)))
        };
        VaultSettings {
            state_ttl: at_least_one(self.state_ttl_secs, d.state_ttl),
            connect_link_ttl: at_least_one(self.connect_link_ttl_secs, d.connect_link_ttl),
            refresh_window: secs(self.refresh_window_secs, d.refresh_window),
            refresh_fraction: self.refresh_fraction.unwrap_or(d.refresh_fraction),
            refresh_backoff: secs(self.refresh_backoff_secs, d.refresh_backoff),
            refresh_backoff_max: secs(self.refresh_backoff_max_secs, d.refresh_backoff_max),
            refresh_cooldown: secs(self.refresh_cooldown_secs, d.refresh_cooldown),
            keepalive_refresh: secs(self.keepalive_refresh_secs, d.keepalive_refresh),
            revoke_timeout: at_least_one(self.revoke_timeout_secs, d.revoke_timeout),
            revoke_retry_base: at_least_one(self.revoke_retry_secs, d.revoke_retry_base),
            revoke_retry_max: at_least_one(self.revoke_retry_max_secs, d.revoke_retry_max),
            ..d
        }
    }

    /// API connections the vault holds open at once.
    pub fn max_connections(&self) -> usize {
        self.max_connections.unwrap_or(1024).max(1)
    }

    /// How often the background refresher passes.
    pub fn refresh_interval(&self) -> Duration {
        Duration::from_secs(self.refresh_interval_secs.unwrap_or(30).max(1))
    }
}

impl Loaded {
    pub fn vault_files(&self, data_dir: &Path) -> VaultFiles {
        let v = &self.config.vault;
        let in_data_dir = |file: &Option<PathBuf>, default: &str| {
            file.as_ref()
                .map(|f| self.resolve_path(f))
                .unwrap_or_else(|| data_dir.join(default))
        };
        VaultFiles {
            database_url: v.database_url.clone().unwrap_or_else(|| {
                format!(
                    "sqlite://{}?mode=rwc",
                    data_dir.join("airlock.db").display()
                )
            }),
            master_key_file: in_data_dir(&v.master_key_file, "master.key"),
            previous_master_key_files: v
                .previous_master_key_files
                .iter()
                .map(|f| self.resolve_path(f))
                .collect(),
            admin_token_file: in_data_dir(&v.admin_token_file, "admin.token"),
            service_token_file: in_data_dir(&v.service_token_file, "service.token"),
            catalog_file: v.catalog_file.as_ref().map(|f| self.resolve_path(f)),
        }
    }

    pub(super) fn check_vault(&self, errors: &mut Vec<String>) {
        let v = &self.config.vault;
        let fraction = v.settings().refresh_fraction;
        if !(0.0..=1.0).contains(&fraction) {
            errors.push(format!(
                "vault.refresh_fraction {fraction} must be between 0 and 1"
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
        if let Some(env) = v
            .environment
            .as_deref()
            .filter(|e| !airlock_vault::valid_name(e))
        {
            errors.push(format!(
                "vault.environment {env:?} must be 1-128 letters, digits, '-', '_', '.' or '@'"
            ));
        }
        for (field, url) in [("vault.public_url", &v.public_url), ("vault.url", &v.url)] {
            if let Some(url) = url.as_ref().filter(|u| !is_http_url(u)) {
                errors.push(format!(
                    "{field} {url:?} must start with http:// or https://"
                ));
            }
        }
    }

    pub(super) fn providers(&self, errors: &mut Vec<String>) -> Vec<airlock_vault::Provider> {
        let mut providers = Vec::new();
        for spanned in &self.config.providers {
            let line = self.line_of(spanned.span().start);
            let p = spanned.get_ref();
            for problem in p.problems() {
                errors.push(format!("line {line}: provider {:?}: {problem}", p.name));
            }
            providers.push(p.clone());
        }
        providers
    }

    /// `[[tenant]]` entries, each checked as the API checks them.
    pub(super) fn tenants(
        &self,
        errors: &mut Vec<String>,
    ) -> Vec<(String, airlock_vault::TenantSettings)> {
        let mut out: Vec<(String, airlock_vault::TenantSettings)> = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for spanned in &self.config.tenants {
            let line = self.line_of(spanned.span().start);
            let t = spanned.get_ref();
            let at = format!("line {line}: tenant {:?}", t.name);
            if !airlock_vault::valid_name(&t.name) {
                errors.push(format!(
                    "{at}: name must be 1-128 letters, digits, '-', '_', '.' or '@'"
                ));
                continue;
            }
            if seen.contains(&t.name.as_str()) {
                errors.push(format!("{at}: given twice"));
                continue;
            }
            seen.push(&t.name);
            let settings = airlock_vault::TenantSettings {
                display_name: t.display_name.clone(),
                accent_color: t.accent_color.clone(),
                logo_url: t.logo_url.clone(),
                support_url: t.support_url.clone(),
                return_url: t.return_url.clone(),
                redirect_uri: t.redirect_uri.clone(),
                use_default_apps: t.use_default_apps,
            };
            match settings.validated() {
                Ok(s) => out.push((t.name.clone(), s)),
                Err(e) => errors.push(format!("{at}: {e}")),
            }
        }
        out
    }

    pub(super) fn pending_apps(
        &self,
        errors: &mut Vec<String>,
        app_secrets: super::AppSecrets,
    ) -> Vec<PendingApp> {
        let c = &self.config;
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
            let client_secret = match self.client_secret(a, app_secrets) {
                Ok(secret) => secret,
                Err(e) => {
                    errors.push(format!("{at}: {e}"));
                    None
                }
            };
            apps.push(PendingApp {
                provider: a.provider.clone(),
                tenant: a.tenant.clone(),
                environment: a.environment.clone(),
                client_id: a.client_id.clone(),
                client_secret,
            });
        }
        apps
    }

    /// A file's client secret is trimmed; the other sources are taken as they are.
    fn client_secret(
        &self,
        a: &AppSection,
        app_secrets: super::AppSecrets,
    ) -> Result<Option<SecretString>, super::SecretSourceError> {
        let source = SecretSource::at_most_one(
            &CLIENT_SECRET_KEYS,
            a.client_secret.as_ref(),
            a.client_secret_env.as_deref(),
            a.client_secret_file.as_deref(),
        )?;
        if app_secrets == super::AppSecrets::Skip {
            return Ok(None);
        }
        let Some(source) = source.map(|s| s.resolved(|p| self.resolve_path(p))) else {
            return Ok(None);
        };
        let value = source.read(CLIENT_SECRET_KEYS.file)?;
        Ok(Some(match source {
            SecretSource::File(_) => trimmed(&value),
            _ => value,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::load;
    use super::*;
    use airlock_vault_client::ExposeSecret;

    #[test]
    fn tenants_are_checked_like_the_api_checks_them() {
        let loaded = load(
            "[[tenant]]\nname = \"acme\"\ndisplay_name = \"Acme\"\naccent_color = \"#FF5500\"\n\
             redirect_uri = \"https://connect.acme.example/oauth/callback\"\nuse_default_apps = true\n",
        );
        let mut errors = Vec::new();
        let tenants = loaded.tenants(&mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(tenants.len(), 1);
        assert_eq!(tenants[0].1.accent_color.as_deref(), Some("#ff5500"));
        assert!(tenants[0].1.use_default_apps);

        let loaded = load(
            "[[tenant]]\nname = \"acme\"\nlogo_url = \"javascript:x\"\n\n\
             [[tenant]]\nname = \"acme\"\n\n[[tenant]]\nname = \"no spaces\"\n",
        );
        let mut errors = Vec::new();
        assert!(loaded.tenants(&mut errors).is_empty());
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("line 1: tenant \"acme\": invalid request: logo_url"),
            "{errors:?}"
        );
        assert!(errors[1].contains("given twice"), "{errors:?}");
        assert!(errors[2].contains("name must be"), "{errors:?}");
    }

    #[test]
    fn left_out_timings_keep_the_vault_defaults() {
        let s = load("").config.vault.settings();
        let d = VaultSettings::default();
        assert_eq!(s.refresh_window, d.refresh_window);
        assert_eq!(s.revoke_retry_max, d.revoke_retry_max);
        let s = load("[vault]\nstate_ttl_secs = 0\nrefresh_window_secs = 0\n")
            .config
            .vault
            .settings();
        assert_eq!(s.state_ttl, Duration::from_secs(1));
        assert_eq!(s.refresh_window, Duration::ZERO);
    }

    #[test]
    fn urls_fall_back_in_order() {
        let l = load("[vault]\nlisten = \"0.0.0.0:8090\"\n");
        assert_eq!(l.config.vault.api_url(), "http://127.0.0.1:8090");
        let l = load("[vault]\npublic_url = \"https://v.example/\"\n");
        assert_eq!(l.config.vault.api_url(), "https://v.example");
        let l = load("[vault]\npublic_url = \"https://v.example\"\nurl = \"http://vault:8090\"\n");
        assert_eq!(l.config.vault.api_url(), "http://vault:8090");
        assert_eq!(
            l.config.vault.public_url(default_vault_listen()),
            "https://v.example"
        );
    }

    #[test]
    fn files_default_to_the_data_dir_and_resolve_against_the_config() {
        let l = load("[vault]\nmaster_key_file = \"k/master.key\"\n");
        let f = l.vault_files(Path::new("/data"));
        assert_eq!(f.master_key_file, Path::new("/tmp/k/master.key"));
        assert_eq!(f.admin_token_file, Path::new("/data/admin.token"));
        assert_eq!(f.database_url, "sqlite:///data/airlock.db?mode=rwc");
    }

    #[test]
    fn each_bad_vault_key_is_one_error() {
        let l = load(
            "[vault]\nrefresh_fraction = 2.0\ndatabase_url = \"mysql://x\"\nurl = \"vault:8090\"\nenvironment = \"prod env\"\n",
        );
        let mut errors = Vec::new();
        l.check_vault(&mut errors);
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert_eq!(
            errors[0],
            "vault.refresh_fraction 2 must be between 0 and 1"
        );
        assert!(errors[2].starts_with("vault.environment \"prod env\" must be"));
        assert!(errors[3].starts_with("vault.url \"vault:8090\""));
    }

    #[test]
    fn apps_take_their_secret_from_one_source() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "  s3cret \n").unwrap();
        let file = dir.path().join("secret");
        let l = load(&format!(
            "[[app]]\nprovider = \"github\"\nclient_id = \"id\"\nclient_secret_file = {file:?}\n\n[[app]]\nprovider = \"nope\"\nclient_id = \" \"\nclient_secret = \"a\"\nclient_secret_env = \"B\"\n"
        ));
        let mut errors = Vec::new();
        let apps = l.pending_apps(&mut errors, crate::config::AppSecrets::Read);
        assert_eq!(
            apps[0].client_secret.as_ref().unwrap().expose_secret(),
            "s3cret"
        );
        let all = errors.join("\n");
        assert!(
            all.contains("line 6: app for provider \"nope\": unknown provider"),
            "{all}"
        );
        assert!(all.contains("client_id is empty"), "{all}");
        assert!(
            all.contains(
                "give at most one of client_secret, client_secret_env, client_secret_file"
            ),
            "{all}"
        );
    }
}
