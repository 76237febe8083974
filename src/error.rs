//! The command's one error type: what went wrong, with its cause kept.
//! `main` prints the top message; each message already says its cause.

use std::net::SocketAddr;
use std::path::PathBuf;

use airlock_vault::VaultError;

use crate::config::{ConfigError, SecretSourceError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Cert(#[from] airlock_certs::CertError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Secret(#[from] SecretSourceError),
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot render the manual page: {0}")]
    Manual(#[source] std::io::Error),
    /// A command's arguments cannot be used: the text says which and why.
    #[error("{0}")]
    Usage(String),
    #[error("no data dir: pass --data-dir or set data_dir")]
    NoDataDir,
    #[error("cannot create data dir {}: {source}", .path.display())]
    CreateDataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading, writing or renaming a file airlock keeps.
    #[error("{}: {source}", .path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {}: {source}", .path.display())]
    CreateCredential {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} ({listener}): {source}")]
    Listen {
        addr: SocketAddr,
        listener: Listener,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    LocalAddr(#[source] std::io::Error),
    #[error("{} stopped: {source}", .listener.server())]
    Stopped {
        listener: Listener,
        #[source]
        source: std::io::Error,
    },
    #[error("a server task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    /// A master key from `origin` (a variable, the command, a file) is unusable.
    #[error("{origin}: {source}")]
    MasterKey {
        origin: String,
        #[source]
        source: VaultError,
    },
    #[error("vault.master_key_command could not run: {0}")]
    KeyCommandSpawn(#[source] std::io::Error),
    #[error("vault.master_key_command exited with {0}")]
    KeyCommandFailed(std::process::ExitStatus),
    #[error("{}: {source}", .path.display())]
    Catalog {
        path: PathBuf,
        #[source]
        source: VaultError,
    },
    #[error("[[app]] for {provider}: {source}")]
    App {
        provider: String,
        #[source]
        source: VaultError,
    },
    #[error("[[tenant]] {tenant}: {source}")]
    Tenant {
        tenant: String,
        #[source]
        source: VaultError,
    },
    #[error("the admin and service tokens must differ")]
    SameTokens,
    /// Variables both the config file and the vault give the sidecar sandbox.
    #[error("{}", .0.join("\n"))]
    SidecarCollisions(Vec<String>),
    #[error("cannot build the provider HTTP client: {0}")]
    ProviderClient(#[source] reqwest::Error),
    #[error(transparent)]
    Sts(#[from] crate::app::sts::StsError),
    #[error("unknown sandbox {0:?}")]
    UnknownSandbox(String),
    #[error(
        "sandbox {sandbox} resolves environment {has}, not {asked}: its placeholders would reach {has}'s connections \
         (a sandbox's environment is set when it is made; the sidecar's by airlock up --environment or [vault] environment)"
    )]
    EnvironmentMismatch {
        sandbox: String,
        has: String,
        asked: String,
    },
    #[error("{0}")]
    AdminClient(#[source] reqwest::Error),
    #[error("cannot reach the vault at {url}: {source}")]
    VaultUnreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The vault's admin API refused; `message` is its `error` field, `code`
    /// the contract's error code when the answer carries one.
    #[error("vault answered {status}: {message}")]
    VaultAnswered {
        status: reqwest::StatusCode,
        code: Option<airlock_vault_client::ErrorCode>,
        message: String,
    },
    /// `airlock connect --wait`: the flow ended without a connection, or
    /// the wait ran out first (`pending`).
    #[error("{}", if *.outcome == airlock_vault::FlowOutcome::Pending {
        format!("connect flow {id} is still pending: the consent did not come back in time")
    } else {
        format!("connect flow {id} ended {outcome}: no account was connected")
    })]
    ConnectNotCompleted {
        id: String,
        outcome: airlock_vault::FlowOutcome,
    },
}

/// Which of airlock's listeners, in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Proxy,
    /// Redirected TLS connections (`[transparent] listen`).
    TransparentTls,
    /// Redirected plain-HTTP connections (`[transparent] http_listen`).
    TransparentHttp,
    Vault,
    Metrics,
}

impl Listener {
    /// The server behind the listener, as "… stopped" names it.
    fn server(self) -> &'static str {
        match self {
            Self::Metrics => "metrics endpoint",
            other => other.name(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Proxy => "proxy",
            Self::TransparentTls => "transparent TLS listener",
            Self::TransparentHttp => "transparent HTTP listener",
            Self::Vault => "vault",
            Self::Metrics => "metrics",
        }
    }
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::AddrInUse)
    }

    #[test]
    fn listener_messages_name_the_listener() {
        let err = Error::Listen {
            addr: "127.0.0.1:9090".parse().unwrap(),
            listener: Listener::Metrics,
            source: io(),
        };
        assert!(
            err.to_string()
                .starts_with("cannot listen on 127.0.0.1:9090 (metrics): "),
            "{err}"
        );
        let err = Error::Stopped {
            listener: Listener::Metrics,
            source: io(),
        };
        assert!(
            err.to_string().starts_with("metrics endpoint stopped: "),
            "{err}"
        );
        let err = Error::Stopped {
            listener: Listener::Proxy,
            source: io(),
        };
        assert!(err.to_string().starts_with("proxy stopped: "), "{err}");
    }

    #[test]
    fn causes_are_kept() {
        use std::error::Error as _;
        let err = Error::File {
            path: "/data/master.key".into(),
            source: io(),
        };
        assert!(err.source().is_some());
        assert!(err.to_string().starts_with("/data/master.key: "), "{err}");
    }
}
