//! `airlock up`, `airlock proxy` and the flags every run mode shares.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::app::{self, Mode, RunOptions};
use crate::config::{Flags, LogFormat};
use crate::Error;

#[derive(Args, Clone)]
pub struct RunArgs {
    /// Configuration file (TOML).
    #[arg(long, short, env = "AIRLOCK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the CA, database, keys and kept placeholders live (overrides data_dir).
    #[arg(long, env = "AIRLOCK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Proxy listen address (overrides [proxy] listen).
    #[arg(long, env = "AIRLOCK_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Vault listen address (overrides [vault] listen).
    #[arg(long, env = "AIRLOCK_VAULT_LISTEN")]
    pub vault_listen: Option<SocketAddr>,
    /// Metrics and health endpoint address (overrides [proxy] admin_listen).
    #[arg(long, env = "AIRLOCK_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// The sidecar sandbox's environment: it resolves that environment's
    /// connections only (overrides [vault] environment; default `default`).
    #[arg(long, env = "AIRLOCK_ENVIRONMENT")]
    pub environment: Option<String>,
}

/// `--log-format`, global to every command.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(arg: LogFormatArg) -> Self {
        match arg {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

impl RunArgs {
    pub fn flags(&self, log_format: Option<LogFormatArg>) -> Flags {
        Flags {
            data_dir: self.data_dir.clone(),
            listen: self.listen,
            vault_listen: self.vault_listen,
            admin_listen: self.admin_listen,
            log_format: log_format.map(LogFormat::from),
            environment: self.environment.clone(),
        }
    }

    pub fn options(self, log_format: Option<LogFormatArg>) -> RunOptions {
        RunOptions {
            flags: self.flags(log_format),
            config: self.config,
        }
    }
}

pub fn serve(args: RunArgs, log_format: Option<LogFormatArg>, mode: Mode) -> Result<(), Error> {
    app::serve(args.options(log_format), mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_flags_become_config_flags() {
        let args = RunArgs {
            config: Some("a.toml".into()),
            data_dir: Some("/d".into()),
            listen: Some("127.0.0.1:1".parse().unwrap()),
            vault_listen: None,
            admin_listen: Some("127.0.0.1:3".parse().unwrap()),
            environment: Some("production".into()),
        };
        let options = args.options(Some(LogFormatArg::Json));
        assert_eq!(options.config, Some(PathBuf::from("a.toml")));
        let f = options.flags;
        assert_eq!(f.data_dir, Some(PathBuf::from("/d")));
        assert_eq!(f.listen.map(|a| a.port()), Some(1));
        assert_eq!(f.vault_listen, None);
        assert_eq!(f.admin_listen.map(|a| a.port()), Some(3));
        assert_eq!(f.log_format, Some(LogFormat::Json));
        assert_eq!(f.environment.as_deref(), Some("production"));
    }
}
