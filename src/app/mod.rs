//! Assembly: proxy, vault, metrics endpoint and reload, wired from a parsed
//! config. `serve` runs `airlock up`, `airlock proxy` and `airlock vault`.

pub mod logging;
mod metrics;
pub mod outbound;
mod prepare;
mod report;
mod signals;
pub mod sts;
pub mod vault;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use airlock_certs::LeafCache;
use airlock_proxy::limits::Descriptors;
use airlock_proxy::Proxy;
use airlock_vault::Vault;
use airlock_vault_client::{CachedTokenSource, Layered, RemoteVault, Swappable, TokenSource};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use prepare::{data_dir, load_ca, Prepared};

use crate::config::{Effective, Flags, Loaded};
use crate::error::Listener;
use crate::sandbox_env::{self, EnvFormat};
use crate::Error;

/// A vault API connection that sends no request head for this long is
/// closed (remote proxies keep idle connections 30 s).
const VAULT_API_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Which servers run in this process.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Proxy and vault; prints the sidecar sandbox's environment.
    Up,
    /// The proxy alone; tokens from `[[secret]]` and a remote vault.
    Proxy,
    /// The vault alone.
    Vault,
}

impl Mode {
    fn runs_proxy(self) -> bool {
        self != Self::Vault
    }

    fn runs_vault(self) -> bool {
        self != Self::Proxy
    }
}

/// A run mode's inputs: the config file and the command line's overrides.
pub struct RunOptions {
    pub config: Option<PathBuf>,
    pub flags: Flags,
}

pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    runtime_with(None)
}

/// A runtime of `threads` workers, or one per core.
fn runtime_with(threads: Option<usize>) -> Result<tokio::runtime::Runtime, Error> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        builder.worker_threads(threads);
    }
    builder
        .enable_all()
        .thread_name("airlock")
        .build()
        .map_err(Error::Runtime)
}

/// Threads for the main runtime when the proxy serves its clients on
/// `proxy_workers` runtimes of its own: what is left there (the accept loop,
/// the vault, the admin endpoint, background tasks) is a small share, so one
/// thread per four workers instead of one per core, which would mostly idle,
/// each with its stack and allocator arena. `None` (one per core) when the
/// main runtime serves the proxy's clients too.
fn main_runtime_threads(mode: Mode, proxy_workers: usize) -> Option<usize> {
    (mode.runs_proxy() && proxy_workers > 0).then(|| proxy_workers.div_ceil(4))
}

/// Runs `mode` until a server stops or a shutdown signal arrives.
pub fn serve(options: RunOptions, mode: Mode) -> Result<(), Error> {
    let loaded = Loaded::read(options.config.as_deref())?;
    let effective = loaded.effective(&options.flags);
    let runtime = runtime_with(main_runtime_threads(mode, loaded.proxy_workers()))?;
    {
        let _entered = runtime.enter();
        logging::init(&effective);
    }
    let prepared = Prepared::new(&loaded, &effective)?;
    let app = App {
        mode,
        config_path: options.config,
        loaded,
        effective,
        prepared,
        telemetry: airlock_proxy::Telemetry::default(),
        descriptors: Arc::new(Descriptors::for_process()),
    };
    let result = runtime.block_on(app.run());
    logging::shutdown();
    result
}

struct App {
    mode: Mode,
    config_path: Option<PathBuf>,
    loaded: Loaded,
    effective: Effective,
    prepared: Prepared,
    /// The proxy's metrics and recent requests, read by the console and `/metrics`.
    telemetry: airlock_proxy::Telemetry,
    /// Sockets under the open-files limit: the proxy's, client and upstream,
    /// and the vault API's connections.
    descriptors: Arc<Descriptors>,
}

/// The listeners a mode opens, bound before anything is served so port 0
/// works and the real addresses are known.
struct Listeners {
    proxy: Option<ProxyListeners>,
    vault: Option<TcpListener>,
    /// The vault's bound address, or the configured one without a listener.
    vault_addr: SocketAddr,
}

/// The proxy's listener and, in transparent mode, those for redirected connections.
struct ProxyListeners {
    main: TcpListener,
    addr: SocketAddr,
    transparent_tls: Option<TcpListener>,
    transparent_http: Option<TcpListener>,
}

/// The vault running in this process.
struct LocalVault {
    vault: Arc<Vault>,
    /// The sidecar sandbox's vault placeholders (`up` only).
    bindings: Vec<(String, String)>,
}

type Tasks = JoinSet<Result<(), Error>>;

impl App {
    async fn run(mut self) -> Result<(), Error> {
        let shutdown = signals::shutdown();
        let listeners = self.listen().await?;
        let proxy_addr = listeners
            .proxy
            .as_ref()
            .map_or(self.effective.proxy_listen, |p| p.addr);
        let proxy_url = self.loaded.config.proxy.url(proxy_addr);
        let mut tasks = Tasks::new();
        // Config-file secrets can be reloaded on SIGHUP.
        let static_secrets = Arc::new(Swappable::new(self.prepared.secrets.clone()));
        let vault = match listeners.vault {
            Some(listener) => Some(
                self.start_vault(
                    listener,
                    listeners.vault_addr,
                    &proxy_url,
                    &static_secrets,
                    &mut tasks,
                )
                .await?,
            ),
            None => None,
        };
        // Role secrets sign with STS credentials, fetched before the proxy starts.
        let roles = self.assume_roles(&static_secrets).await?;
        let tokens = self.token_source(&static_secrets, vault.as_ref())?;
        if let Some(proxy_listeners) = listeners.proxy {
            let vault = vault.as_ref().map(|v| v.vault.clone());
            self.start_proxy(
                proxy_listeners,
                listeners.vault_addr,
                tokens,
                vault,
                &mut tasks,
            )
            .await?;
        }
        if self.mode == Mode::Up {
            let bindings = vault.map(|v| v.bindings).unwrap_or_default();
            self.print_sandbox_env(&proxy_url, &bindings);
        }
        signals::spawn_reloader(
            self.config_path.clone(),
            self.prepared.data_dir.clone(),
            static_secrets,
            roles,
        );
        wait(tasks, shutdown).await
    }

    /// When a `[[secret]]` names a `role_arn`: its first temporary
    /// credentials, swapped in, and the task that keeps them fresh.
    async fn assume_roles(
        &self,
        static_secrets: &Arc<Swappable>,
    ) -> Result<Option<Arc<sts::AssumeRoles>>, Error> {
        let any = self
            .loaded
            .config
            .secrets
            .iter()
            .any(|s| s.get_ref().role_arn.is_some());
        if !any {
            return Ok(None);
        }
        let outbound = self.loaded.parse()?.proxy.outbound;
        let roles = Arc::new(sts::AssumeRoles::new(outbound::provider_client(&outbound)?));
        let (_, fresh) = sts::load_secrets(
            self.config_path.as_deref(),
            &self.prepared.data_dir,
            Some(&roles),
        )
        .await?;
        static_secrets.replace(Arc::new(fresh));
        sts::spawn_refresher(
            self.config_path.clone(),
            self.prepared.data_dir.clone(),
            roles.clone(),
            static_secrets.clone(),
        );
        Ok(Some(roles))
    }

    async fn listen(&self) -> Result<Listeners, Error> {
        let e = &self.effective;
        let proxy = if self.mode.runs_proxy() {
            let main = bind(e.proxy_listen, Listener::Proxy).await?;
            let addr = main.local_addr().map_err(Error::LocalAddr)?;
            let transparent = &self.loaded.config.transparent;
            let transparent_tls = match transparent.listen {
                Some(at) => Some(bind(at, Listener::TransparentTls).await?),
                None => None,
            };
            let transparent_http = match transparent.http_listen {
                Some(at) => Some(bind(at, Listener::TransparentHttp).await?),
                None => None,
            };
            Some(ProxyListeners {
                main,
                addr,
                transparent_tls,
                transparent_http,
            })
        } else {
            None
        };
        let vault = if self.mode.runs_vault() {
            Some(bind(e.vault_listen, Listener::Vault).await?)
        } else {
            None
        };
        let vault_addr = vault
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .unwrap_or(e.vault_listen);
        Ok(Listeners {
            proxy,
            vault,
            vault_addr,
        })
    }

    /// The console's list of the config file's `[[secret]]`s: names and
    /// hosts as the proxy serves them now (after reloads too), kinds as the
    /// file said at start.
    fn config_secrets_feed(&self, secrets: &Arc<Swappable>) -> airlock_vault::api::ConfigSecrets {
        let kinds: std::collections::HashMap<String, String> = self
            .loaded
            .config
            .secrets
            .iter()
            .map(|s| {
                let s = s.get_ref();
                (s.name.clone(), s.kind.as_str().to_owned())
            })
            .collect();
        let kinds = Arc::new(kinds);
        let secrets = secrets.clone();
        Arc::new(move || {
            let (secrets, kinds) = (secrets.clone(), kinds.clone());
            Box::pin(async move {
                let sandbox = airlock_vault_client::SandboxId::default_sandbox();
                let status = secrets.status(&sandbox).await.unwrap_or_else(|error| {
                    tracing::warn!(target: crate::LOG_TARGET, %error, "cannot list the config file's secrets");
                    airlock_vault_client::contract::SandboxStatus::empty(&sandbox)
                });
                status
                    .credentials
                    .into_iter()
                    .map(|c| airlock_vault::api::ConfigSecretView {
                        kind: kinds
                            .get(&c.variable)
                            .cloned()
                            .unwrap_or_else(|| "static".into()),
                        name: c.variable,
                        hosts: c.hosts,
                    })
                    .collect()
            })
        })
    }

    async fn start_vault(
        &self,
        listener: TcpListener,
        addr: SocketAddr,
        proxy_url: &str,
        static_secrets: &Arc<Swappable>,
        tasks: &mut Tasks,
    ) -> Result<LocalVault, Error> {
        let (loaded, prepared) = (&self.loaded, &self.prepared);
        let settings = vault::settings(loaded, proxy_url.to_owned(), addr, prepared.base_env());
        let files = loaded.vault_files(&prepared.data_dir);
        let opened = vault::open(loaded, &prepared.parsed, &files, settings).await?;
        let vault = opened.vault.clone();
        vault.spawn_refresher(loaded.config.vault.refresh_interval());
        // PostgreSQL: replicas tell each other of changes (LISTEN/NOTIFY).
        vault.spawn_change_sync();
        // Passes as often as the shortest retry wait; each connection keeps its own back-off.
        vault.spawn_revoker(loaded.config.vault.settings().revoke_retry_base);
        let mut bindings = Vec::new();
        let mut state = airlock_vault::api::ApiState::new(
            vault.clone(),
            &opened.admin_token,
            &opened.service_token,
        );
        if self.mode == Mode::Up {
            let environment = self
                .effective
                .environment
                .as_deref()
                .unwrap_or(airlock_vault::DEFAULT_ENVIRONMENT);
            bindings =
                vault::sidecar_bindings(&vault, environment, &prepared.secret_variables()).await?;
            // The console shows what the in-process proxy did.
            let recent = self.telemetry.recent.clone();
            let held = self.telemetry.held.clone();
            state = state.with_proxy_feeds(
                Arc::new(move || {
                    recent
                        .newest_first()
                        .into_iter()
                        .filter_map(|r| serde_json::to_value(r).ok())
                        .collect()
                }),
                Arc::new(move || {
                    held.all()
                        .into_iter()
                        .filter_map(|h| serde_json::to_value(h).ok())
                        .collect()
                }),
            );
            state = state.with_config_secrets(self.config_secrets_feed(static_secrets));
        }
        tracing::info!(target: crate::LOG_TARGET, listen = %addr, public_url = %loaded.config.vault.public_url(addr), "vault listening");
        let descriptors = self.descriptors.clone();
        let limits = airlock_vault::api::Limits {
            max_connections: loaded.config.vault.max_connections(),
            idle_timeout: VAULT_API_IDLE,
            admit: move || descriptors.client(),
        };
        tasks.spawn(async move {
            airlock_vault::api::serve(listener, state, limits)
                .await
                .map_err(|source| Error::Stopped {
                    listener: Listener::Vault,
                    source,
                })
        });
        Ok(LocalVault { vault, bindings })
    }

    /// Where the proxy's tokens come from: the config file's secrets, then
    /// the in-process vault (`up`) or a remote one (`proxy` with `[vault] url`).
    fn token_source(
        &mut self,
        static_secrets: &Arc<Swappable>,
        vault: Option<&LocalVault>,
    ) -> Result<Arc<dyn TokenSource>, Error> {
        let first = static_secrets.clone();
        Ok(match (self.mode, vault) {
            (Mode::Up, Some(local)) => Arc::new(Layered {
                first,
                second: local.vault.clone(),
            }),
            (Mode::Proxy, None) if self.loaded.config.vault.url.is_some() => {
                let files = self.loaded.vault_files(&self.prepared.data_dir);
                let remote = RemoteVault::new(
                    &self.loaded.config.vault.api_url(),
                    vault::service_token(&files)?,
                    outbound::tls_config(&self.prepared.parsed.proxy.outbound.extra_roots),
                    self.loaded.prefix(),
                );
                // A disconnect on any replica reaches this proxy's caches at once.
                remote.follow_changes();
                let remote = Arc::new(remote);
                // The console's recent requests cover this proxy too.
                let (outbox, reports) = airlock_proxy::telemetry::Outbox::bounded(report::QUEUE);
                self.telemetry.outbox = outbox;
                report::spawn(remote.clone(), reports, self.telemetry.metrics.clone());
                Arc::new(Layered {
                    first,
                    second: remote,
                })
            }
            _ => first,
        })
    }

    async fn start_proxy(
        &self,
        listeners: ProxyListeners,
        vault_addr: SocketAddr,
        tokens: Arc<dyn TokenSource>,
        vault: Option<Arc<Vault>>,
        tasks: &mut Tasks,
    ) -> Result<(), Error> {
        let leaves = Arc::new(LeafCache::new(self.prepared.ca.clone(), 10_000));
        let cache = Arc::new(CachedTokenSource::new(tokens));
        let mut settings = self.prepared.parsed.proxy.settings.clone();
        // The proxy never dials airlock's own listeners, even through an override.
        settings
            .own_addrs
            .extend([vault_addr, self.loaded.config.vault.listen()]);
        if self.loaded.config.proxy.admin() {
            let sampler = metrics::sampler(leaves.clone(), cache.clone(), vault);
            let admin_addr = self.start_metrics(sampler, tasks).await?;
            settings.own_addrs.push(admin_addr);
        }
        let transparent = [
            (listeners.transparent_tls, Listener::TransparentTls),
            (listeners.transparent_http, Listener::TransparentHttp),
        ];
        let transparent: Vec<_> = transparent
            .into_iter()
            .filter_map(|(l, which)| Some((l?, which)))
            .collect();
        for (listener, _) in &transparent {
            settings.own_addrs.extend(listener.local_addr().ok());
        }
        let addr = listeners.addr;
        let proxy = Proxy::new(
            settings,
            cache,
            leaves,
            addr,
            self.telemetry.clone(),
            self.descriptors.clone(),
        );
        // The workers started, not those asked for (a warning says why).
        let workers = proxy.workers();
        // The rest: accept loop, vault, admin endpoint (`main_runtime_threads`).
        let main_threads = tokio::runtime::Handle::current().metrics().num_workers();
        tracing::info!(
            target: crate::LOG_TARGET,
            listen = %addr,
            workers,
            main_threads,
            "proxy listening"
        );
        for (listener, which) in transparent {
            let proxy = proxy.clone();
            let at = listener.local_addr().map_err(Error::LocalAddr)?;
            tracing::info!(target: crate::LOG_TARGET, listen = %at, "{which} listening");
            tasks.spawn(async move {
                let served = match which {
                    Listener::TransparentHttp => proxy.serve_transparent_http(listener).await,
                    _ => proxy.serve_transparent_tls(listener).await,
                };
                served.map_err(|source| Error::Stopped {
                    listener: which,
                    source,
                })
            });
        }
        let listener = listeners.main;
        tasks.spawn(async move {
            proxy
                .serve(listener)
                .await
                .map_err(|source| Error::Stopped {
                    listener: Listener::Proxy,
                    source,
                })
        });
        Ok(())
    }

    /// `/metrics`, `/healthz`, `/readyz`; returns the bound address.
    async fn start_metrics(
        &self,
        sampler: airlock_proxy::metrics::Sampler,
        tasks: &mut Tasks,
    ) -> Result<SocketAddr, Error> {
        let listener = bind(self.effective.admin_listen, Listener::Metrics).await?;
        let addr = listener.local_addr().map_err(Error::LocalAddr)?;
        tracing::info!(target: crate::LOG_TARGET, listen = %addr, "metrics listening");
        let metrics = self.telemetry.metrics.clone();
        tasks.spawn(async move {
            airlock_proxy::metrics::serve_admin(listener, metrics, sampler)
                .await
                .map_err(|source| Error::Stopped {
                    listener: Listener::Metrics,
                    source,
                })
        });
        Ok(addr)
    }

    fn print_sandbox_env(&self, proxy_url: &str, bindings: &[(String, String)]) {
        let env = self.prepared.environment(proxy_url, bindings);
        if self.prepared.secret_variables().is_empty() && bindings.is_empty() {
            // On stderr (stdout is the environment block a wrapper reads),
            // and before it, so whoever has read the block has this too.
            eprintln!("{NO_CREDENTIALS_YET}");
        }
        let mut out = std::io::stdout().lock();
        // A blank line ends the block, so a wrapper can read it and go on.
        let _ = out.write_all(sandbox_env::render(&env, EnvFormat::Sh).as_bytes());
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
}

/// What `up` says when the sandbox would get the proxy and the CA but no
/// credential at all (a first run without a config file).
const NO_CREDENTIALS_YET: &str = "airlock: the sandbox gets no credentials yet. \
Give it a static secret (a [[secret]] with name, value_env and hosts in a config file, \
then `airlock up --config airlock.toml`; README: \"A secret, end to end\"), \
or connect an OAuth account (`airlock app set PROVIDER …`, then `airlock connect PROVIDER`; \
README: \"Connecting an OAuth account\"). `airlock env` prints the new placeholders.";

async fn bind(addr: SocketAddr, listener: Listener) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen {
            addr,
            listener,
            source,
        })
}

/// The first server to stop ends the run, as does a shutdown signal.
async fn wait(
    mut tasks: Tasks,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    tokio::select! {
        Some(result) = tasks.join_next() => result.map_err(Error::Task)?,
        _ = shutdown => {
            tracing::info!(target: crate::LOG_TARGET, "shutting down");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_runtime_keeps_a_thread_per_four_workers_or_one_per_core_without_them() {
        for (workers, threads) in [(1, 1), (2, 1), (4, 1), (5, 2), (64, 16)] {
            assert_eq!(main_runtime_threads(Mode::Up, workers), Some(threads));
            assert_eq!(main_runtime_threads(Mode::Proxy, workers), Some(threads));
        }
        // Clients on the main runtime, or no proxy at all: one per core.
        assert_eq!(main_runtime_threads(Mode::Up, 0), None);
        assert_eq!(main_runtime_threads(Mode::Vault, 8), None);
    }
}
