//! Precedence, decided here only: flag > `AIRLOCK__` env > file > default.
//! `Loaded::read` lays the environment over the file (serde gives the
//! defaults of keys neither sets); `Loaded::effective` lays the flags over both.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::env::apply_env_overrides;
use super::file::{self, Config, LogFormat};
use super::{ConfigError, Loaded};

/// What the command line may set.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub vault_listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub log_format: Option<LogFormat>,
    /// The sidecar sandbox's environment.
    pub environment: Option<String>,
}

/// The values flags can change, after precedence.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// `None` when neither flag, file nor `XDG_DATA_HOME`/`HOME` gives one.
    pub data_dir: Option<PathBuf>,
    pub proxy_listen: SocketAddr,
    pub vault_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub log_format: LogFormat,
    /// A tracing filter: `AIRLOCK_LOG`, else `[log] level`, else `info`.
    pub log_level: String,
    /// The sidecar sandbox's environment: `--environment`, else `[vault]
    /// environment`; `None` when neither says (`default` for `airlock up`).
    pub environment: Option<String>,
}

impl Loaded {
    /// The file (or the defaults, without one) with the `AIRLOCK__` overlay.
    pub fn read(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::read_with(path, std::env::vars())
    }

    fn read_with(
        path: Option<&Path>,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (mut config, source) = match path {
            Some(path) => file::read(path)?,
            None => (Config::default(), String::new()),
        };
        let mut loaded = Self {
            config: Config::default(),
            // Absolute, so paths the file gives relative to itself are too.
            path: path.map(absolute),
            source,
        };
        apply_env_overrides(&mut config, vars).map_err(|errors| ConfigError::Invalid {
            path: loaded.display_path(),
            errors,
        })?;
        loaded.config = config;
        Ok(loaded)
    }

    pub fn effective(&self, flags: &Flags) -> Effective {
        self.effective_with(flags, |name| std::env::var_os(name).map(PathBuf::from))
    }

    fn effective_with(&self, flags: &Flags, env: impl Fn(&str) -> Option<PathBuf>) -> Effective {
        let c = &self.config;
        let data_dir = flags
            .data_dir
            .clone()
            .or_else(|| c.data_dir.as_deref().map(|d| self.resolve_path(d)))
            .or_else(|| default_data_dir(&env))
            // Printed into a sandbox's environment (the CA bundle): a path
            // relative to where airlock started means nothing there.
            .map(|d| absolute(&d));
        let log_level = env("AIRLOCK_LOG")
            .map(|v| v.to_string_lossy().into_owned())
            .or_else(|| c.log.level.clone())
            .unwrap_or_else(|| "info".to_owned());
        Effective {
            data_dir,
            proxy_listen: flags.listen.unwrap_or_else(|| c.proxy.listen()),
            vault_listen: flags.vault_listen.unwrap_or_else(|| c.vault.listen()),
            admin_listen: flags.admin_listen.unwrap_or_else(|| c.proxy.admin_listen()),
            log_format: flags.log_format.unwrap_or(c.log.format),
            log_level,
            environment: flags
                .environment
                .clone()
                .or_else(|| c.vault.environment.clone()),
        }
    }
}

/// `path` made absolute against the current directory, without touching the
/// file system (a data dir may not exist yet).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

fn default_data_dir(env: &impl Fn(&str) -> Option<PathBuf>) -> Option<PathBuf> {
    let set = |name: &str| env(name).filter(|v| !v.as_os_str().is_empty());
    if let Some(xdg) = set("XDG_DATA_HOME") {
        return Some(xdg.join("airlock"));
    }
    set("HOME").map(|home| home.join(".local/share/airlock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("airlock.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn vars(list: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn no_env(_: &str) -> Option<PathBuf> {
        None
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let (_dir, path) =
            write("[proxy]\nlisten = \"127.0.0.1:1001\"\nadmin_listen = \"127.0.0.1:2001\"\n");
        let env = [("AIRLOCK__PROXY__LISTEN", "127.0.0.1:1002")];
        let loaded = Loaded::read_with(Some(&path), vars(&env)).unwrap();
        let flags = Flags {
            listen: Some("127.0.0.1:1003".parse().unwrap()),
            ..Flags::default()
        };
        // flag over env
        let e = loaded.effective_with(&flags, no_env);
        assert_eq!(e.proxy_listen.port(), 1003);
        // env over file
        let e = loaded.effective_with(&Flags::default(), no_env);
        assert_eq!(e.proxy_listen.port(), 1002);
        // file over default
        assert_eq!(e.admin_listen.port(), 2001);
        // default
        assert_eq!(e.vault_listen, super::super::default_vault_listen());
        assert_eq!(e.log_format, LogFormat::Text);
        assert_eq!(e.log_level, "info");
    }

    #[test]
    fn the_sidecar_environment_from_flag_then_file() {
        let (_dir, path) = write("[vault]\nenvironment = \"staging\"\n");
        let loaded = Loaded::read_with(Some(&path), vars(&[])).unwrap();
        let e = loaded.effective_with(&Flags::default(), no_env);
        assert_eq!(e.environment.as_deref(), Some("staging"));
        let flags = Flags {
            environment: Some("production".into()),
            ..Flags::default()
        };
        let e = loaded.effective_with(&flags, no_env);
        assert_eq!(e.environment.as_deref(), Some("production"));
        let defaults = Loaded::read_with(None, vars(&[])).unwrap();
        assert_eq!(
            defaults
                .effective_with(&Flags::default(), no_env)
                .environment,
            None
        );
    }

    #[test]
    fn data_dir_from_flag_file_or_home() {
        let (dir, path) = write("data_dir = \"state\"\n");
        let loaded = Loaded::read_with(Some(&path), vars(&[])).unwrap();
        let e = loaded.effective_with(&Flags::default(), no_env);
        // A relative path in the file is relative to the file.
        assert_eq!(e.data_dir, Some(dir.path().join("state")));
        let flags = Flags {
            data_dir: Some("rel".into()),
            ..Flags::default()
        };
        // A relative flag is made absolute: it ends up in `SSL_CERT_FILE` paths.
        assert_eq!(
            loaded.effective_with(&flags, no_env).data_dir,
            Some(std::env::current_dir().unwrap().join("rel"))
        );
        let defaults = Loaded::read_with(None, vars(&[])).unwrap();
        let home = |name: &str| (name == "HOME").then(|| PathBuf::from("/home/u"));
        assert_eq!(
            defaults.effective_with(&Flags::default(), home).data_dir,
            Some(PathBuf::from("/home/u/.local/share/airlock"))
        );
        let xdg = |name: &str| match name {
            "XDG_DATA_HOME" => Some(PathBuf::from("/x")),
            "HOME" => Some(PathBuf::from("/home/u")),
            _ => None,
        };
        assert_eq!(
            defaults.effective_with(&Flags::default(), xdg).data_dir,
            Some(PathBuf::from("/x/airlock"))
        );
        assert_eq!(
            defaults.effective_with(&Flags::default(), no_env).data_dir,
            None
        );
    }

    #[test]
    fn log_level_from_airlock_log_then_file() {
        let (_dir, path) = write("[log]\nlevel = \"debug\"\nformat = \"json\"\n");
        let loaded = Loaded::read_with(Some(&path), vars(&[])).unwrap();
        let e = loaded.effective_with(&Flags::default(), no_env);
        assert_eq!(
            (e.log_level.as_str(), e.log_format),
            ("debug", LogFormat::Json)
        );
        let env = |name: &str| (name == "AIRLOCK_LOG").then(|| PathBuf::from("warn"));
        let flags = Flags {
            log_format: Some(LogFormat::Text),
            ..Flags::default()
        };
        let e = loaded.effective_with(&flags, env);
        assert_eq!(
            (e.log_level.as_str(), e.log_format),
            ("warn", LogFormat::Text)
        );
    }

    #[test]
    fn overlay_errors_name_the_file_or_the_defaults() {
        let (_dir, path) = write("");
        let bad = [("AIRLOCK__NOPE", "1")];
        let err = Loaded::read_with(Some(&path), vars(&bad))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with(&format!("{} has 1 error(s):", path.display())),
            "{err}"
        );
        let err = Loaded::read_with(None, vars(&bad))
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("(defaults) has 1 error(s):"), "{err}");
    }
}
