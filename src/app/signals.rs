//! SIGHUP reloads the config file's secrets; SIGTERM and Ctrl-C stop.

use std::path::PathBuf;
use std::sync::Arc;

use airlock_vault_client::Swappable;

use super::sts::AssumeRoles;

/// On SIGHUP, re-reads the config file's secrets and bindings and swaps them
/// in (role secrets with their temporary credentials); open connections keep
/// going. A config with errors changes nothing.
pub fn spawn_reloader(
    config: Option<PathBuf>,
    data_dir: PathBuf,
    secrets: Arc<Swappable>,
    roles: Option<Arc<AssumeRoles>>,
) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            let reloaded =
                super::sts::load_secrets(config.as_deref(), &data_dir, roles.as_deref()).await;
            match reloaded {
                Ok((count, fresh)) => {
                    secrets.replace(Arc::new(fresh));
                    tracing::info!(target: crate::LOG_TARGET, secrets = count, "configuration reloaded");
                }
                Err(error) => {
                    tracing::error!(target: crate::LOG_TARGET, %error, "configuration not reloaded; keeping the running one")
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (config, data_dir, secrets, roles);
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is
/// called, so call it before the listeners open: a signal that arrives right
/// after start is then a clean shutdown, not a kill.
pub fn shutdown() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
        async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
