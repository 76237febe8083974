//! What every run mode and `airlock env` share: the parsed config, the data
//! dir, the CA and its files, the config file's secrets with placeholders.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use airlock_certs::{CertificateAuthority, CA_BUNDLE_FILE, CA_CERT_FILE};
use airlock_vault_client::{SandboxId, StaticSecrets};

use crate::config::{self, AppSecrets, Effective, Loaded, Parsed};
use crate::{sandbox_env, Error};

pub struct Prepared {
    pub parsed: Parsed,
    pub data_dir: PathBuf,
    pub ca: Arc<CertificateAuthority>,
    pub ca_path: PathBuf,
    pub bundle_path: PathBuf,
    pub secrets: Arc<StaticSecrets>,
}

impl Prepared {
    pub fn new(loaded: &Loaded, effective: &Effective) -> Result<Self, Error> {
        Self::new_with(loaded, effective, AppSecrets::Read)
    }

    /// [`new`](Self::new); `AppSecrets::Skip` for commands that never use
    /// an app's client secret (`airlock env`).
    pub fn new_with(
        loaded: &Loaded,
        effective: &Effective,
        app_secrets: AppSecrets,
    ) -> Result<Self, Error> {
        let mut parsed = loaded.parse_with(app_secrets)?;
        let data_dir = data_dir(effective)?;
        let ca = Arc::new(load_ca(loaded, &data_dir)?);
        let ca_path = data_dir.join(CA_CERT_FILE);
        if config::ca_files(loaded).is_some() {
            // Sandboxes read the CA from the data dir whichever file it came from.
            std::fs::write(&ca_path, ca.cert_pem()).map_err(|source| Error::File {
                path: ca_path.clone(),
                source,
            })?;
        }
        let bundle_path = data_dir.join(CA_BUNDLE_FILE);
        airlock_certs::write_bundle(&bundle_path, ca.cert_pem())?;
        let pending = std::mem::take(&mut parsed.secrets);
        let secrets = static_secrets(loaded, &data_dir, pending)?;
        Ok(Self {
            parsed,
            data_dir,
            ca,
            ca_path,
            bundle_path,
            secrets: Arc::new(secrets),
        })
    }

    /// CA variables and NO_PROXY: what every sandbox gets besides proxy and placeholders.
    pub fn base_env(&self) -> Vec<(String, String)> {
        sandbox_env::build("", &self.ca_path, &self.bundle_path, &[])
            .into_iter()
            .filter(|(k, _)| {
                !k.to_ascii_lowercase().ends_with("_proxy") || k.eq_ignore_ascii_case("no_proxy")
            })
            .collect()
    }

    /// Variables the config file's `[[secret]]`s claim.
    pub fn secret_variables(&self) -> Vec<String> {
        self.secrets
            .environment()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    /// The sidecar sandbox's whole environment.
    pub fn environment(
        &self,
        proxy_url: &str,
        placeholders: &[(String, String)],
    ) -> Vec<(String, String)> {
        let mut all = self.secrets.environment();
        all.extend(placeholders.iter().cloned());
        sandbox_env::build(proxy_url, &self.ca_path, &self.bundle_path, &all)
    }
}

/// The config file's secrets for the default sandbox, each with its placeholder.
pub fn static_secrets(
    loaded: &Loaded,
    data_dir: &Path,
    pending: Vec<config::PendingSecret>,
) -> Result<StaticSecrets, config::ConfigError> {
    let prefix = loaded.prefix().to_owned();
    let list = config::assign_placeholders(data_dir, &prefix, pending)?;
    Ok(StaticSecrets::new(
        prefix,
        SandboxId::default_sandbox(),
        list,
    ))
}

/// The effective data dir, created if missing: its owner's only (0700), as
/// it holds the CA key, the database and the master key. A dir that exists
/// keeps the mode its operator gave it (a group may need to read the CA).
pub fn data_dir(effective: &Effective) -> Result<PathBuf, Error> {
    let dir = effective.data_dir.clone().ok_or(Error::NoDataDir)?;
    create_private_dir(&dir).map_err(|source| Error::CreateDataDir {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// Creates `dir` 0700 if missing (its missing parents as usual).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    match builder.create(dir) {
        // Made by someone else meanwhile (another airlock starting): fine.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        other => other,
    }
}

/// `[proxy] ca_cert`/`ca_key`, else the data dir's CA (created on first run).
pub fn load_ca(loaded: &Loaded, data_dir: &Path) -> Result<CertificateAuthority, Error> {
    Ok(match config::ca_files(loaded) {
        Some((cert, key)) => CertificateAuthority::load(&cert, &key)?,
        None => CertificateAuthority::load_or_create(data_dir)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Flags;

    #[cfg(unix)]
    #[test]
    fn a_new_data_dir_is_its_owner_s_only_and_an_existing_one_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let root = tempfile::tempdir().unwrap();
        let effective = |dir: PathBuf| Effective {
            data_dir: Some(dir),
            ..crate::config::tests::load("").effective(&Flags::default())
        };
        let new = root.path().join("a/b/data");
        assert_eq!(data_dir(&effective(new.clone())).unwrap(), new);
        assert_eq!(mode(&new), 0o700);
        // Parents are ordinary folders; only the data dir is closed.
        assert_ne!(mode(&root.path().join("a")) & 0o077, 0);
        // Again: nothing to do.
        data_dir(&effective(new.clone())).unwrap();
        assert_eq!(mode(&new), 0o700);
        // The operator's own dir (a group reading the CA) is left as it is.
        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o750)).unwrap();
        data_dir(&effective(shared.clone())).unwrap();
        assert_eq!(mode(&shared), 0o750);
        // A file where the dir should be: a clear error naming it.
        let file = root.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = data_dir(&effective(file.clone())).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()), "{err}");
    }

    #[test]
    fn sandboxes_get_the_ca_files_and_the_config_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = crate::config::tests::load(
            "[[secret]]\nname = \"T\"\nvalue = \"v\"\nhosts = [\"a.test\"]\n",
        );
        let flags = Flags {
            data_dir: Some(dir.path().join("data")),
            ..Flags::default()
        };
        let prepared = Prepared::new(&loaded, &loaded.effective(&flags)).unwrap();
        assert!(prepared.ca_path.exists() && prepared.bundle_path.exists());
        assert_eq!(prepared.secret_variables(), vec!["T".to_owned()]);
        // Without the proxy variables, which depend on the sandbox.
        let base = prepared.base_env();
        assert!(base.iter().any(|(k, _)| k == "NO_PROXY"));
        assert!(base
            .iter()
            .all(|(k, _)| k != "HTTPS_PROXY" && k != "http_proxy"));
        let env = prepared.environment("http://p:1", &[("V".into(), "ph".into())]);
        assert!(env.contains(&("HTTPS_PROXY".into(), "http://p:1".into())));
        assert!(env.iter().any(|(k, _)| k == "T") && env.contains(&("V".into(), "ph".into())));
    }

    #[test]
    fn without_a_data_dir_the_error_says_how_to_give_one() {
        let effective = crate::config::tests::load("").effective(&Flags::default());
        let effective = Effective {
            data_dir: None,
            ..effective
        };
        let err = data_dir(&effective).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no data dir: pass --data-dir or set data_dir"
        );
    }
}
