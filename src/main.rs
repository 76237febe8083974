#![forbid(unsafe_code)]
//! The `airlock` command line.

mod admin;
mod vault_setup;

use airlock::{config, sandbox_env};

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use airlock_certs::{CertificateAuthority, LeafCache, CA_BUNDLE_FILE, CA_CERT_FILE};
use airlock_proxy::{Proxy, ProxySettings};
use airlock_vault::VaultSettings;
use airlock_vault_client::{
    CachedTokenSource, Layered, RemoteVault, SandboxId, StaticSecrets, Swappable, TokenSource,
};
use clap::{Args, Parser, Subcommand};

use crate::config::{Loaded, LogFormat, Validated};
use crate::sandbox_env::EnvFormat;

#[derive(Parser)]
#[command(
    name = "airlock",
    version,
    about = "Egress gateway for AI-agent sandboxes: swaps placeholder credentials for real tokens on the way out",
    propagate_version = true
)]
struct Cli {
    /// Log format on stderr (overrides [log] format).
    #[arg(long, global = true, value_enum)]
    log_format: Option<CliLogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CliLogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run proxy and vault together (embedded SQLite, CA created on first run) and print the sandbox's environment.
    Up(RunArgs),
    /// Run the proxy alone; tokens come from [[secret]] and, with [vault] url, a remote vault.
    Proxy(RunArgs),
    /// Run the vault alone, or manage it.
    Vault(VaultArgs),
    /// Manage airlock's certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Print the environment a sandbox needs.
    Env(EnvArgs),
    /// Check a configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// List the OAuth providers the vault knows.
    #[command(subcommand)]
    Provider(admin::ProviderCommand),
    /// Register an OAuth app (client id and secret) for a provider.
    #[command(subcommand)]
    App(admin::AppCommand),
    /// Start connecting an account: prints the URL to open.
    Connect(admin::ConnectArgs),
    /// List connected accounts and their status.
    Connections(admin::AdminArgs),
    /// Revoke and delete a connection.
    Disconnect(admin::DisconnectArgs),
    /// Add a machine account (OAuth client credentials).
    MachineAccount(admin::MachineAccountArgs),
    /// Create, list or delete sandboxes.
    #[command(subcommand)]
    Sandbox(admin::SandboxCommand),
    /// Store a static secret in the vault.
    #[command(subcommand)]
    Secret(admin::SecretCommand),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff): `airlock man > airlock.1`.
    Man,
}

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
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct VaultArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<VaultCommand>,
}

#[derive(Subcommand)]
enum VaultCommand {
    /// Re-wrap every data key under the current master key. With the default
    /// key file, first creates a new master key and keeps the old one until done.
    RotateKey {
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create ca.pem and ca-key.pem (mode 0600) in DIR.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Replace an existing CA.
        #[arg(long)]
        force: bool,
    },
    /// Write system roots plus airlock's CA as one PEM file.
    Bundle {
        #[arg(long, short, env = "AIRLOCK_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "AIRLOCK_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Output file (default: DATA_DIR/ca-bundle.pem).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args)]
struct EnvArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Which sandbox's environment.
    #[arg(long, default_value = SandboxId::DEFAULT)]
    sandbox: String,
    #[arg(long, value_enum, default_value = "sh")]
    format: EnvFormat,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Report every error in a configuration file at once.
    Check {
        #[arg(long, short, env = "AIRLOCK_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Cert(#[from] airlock_certs::CertError),
    #[error("{0}")]
    Other(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("airlock: {err}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("airlock")
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the runtime: {e}")))
}

fn run(cli: Cli) -> Result<(), CliError> {
    // One crypto provider for the whole process, chosen explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Up(args) => serve(args, cli.log_format, Mode::Up),
        Command::Proxy(args) => serve(args, cli.log_format, Mode::Proxy),
        Command::Vault(VaultArgs { command: None, run }) => serve(run, cli.log_format, Mode::Vault),
        Command::Vault(VaultArgs {
            command: Some(VaultCommand::RotateKey { run }),
            ..
        }) => rotate_key(run),
        Command::Ca(CaCommand::Init { dir, force }) => {
            let ca = CertificateAuthority::generate("airlock sandbox CA")?;
            ca.write_dir(&dir, force)?;
            println!("{}", dir.join(CA_CERT_FILE).display());
            Ok(())
        }
        Command::Ca(CaCommand::Bundle {
            config,
            data_dir,
            out,
        }) => {
            let loaded = Loaded::read(config.as_deref())?;
            let data_dir = data_dir_for(&loaded, data_dir)?;
            let ca = load_ca(&loaded, &data_dir)?;
            let out = out.unwrap_or_else(|| data_dir.join(CA_BUNDLE_FILE));
            let roots = airlock_certs::write_bundle(&out, ca.cert_pem())?;
            eprintln!("wrote {roots} system roots plus airlock's CA");
            println!("{}", out.display());
            Ok(())
        }
        Command::Env(args) => print_env(args),
        Command::Config(ConfigCommand::Check { config }) => {
            let loaded = Loaded::read(Some(&config))?;
            let validated = loaded.validate()?;
            println!(
                "{}: ok ({} secret(s), {} provider(s), {} app(s), {} upstream CA certificate(s))",
                config.display(),
                validated.secrets.len(),
                validated.providers.len(),
                validated.apps.len(),
                validated.settings.upstream_ca.len()
            );
            Ok(())
        }
        Command::Provider(c) => admin::provider(c),
        Command::App(c) => admin::app(c),
        Command::Connect(c) => admin::connect(c),
        Command::Connections(c) => admin::connections(c),
        Command::Disconnect(c) => admin::disconnect(c),
        Command::MachineAccount(c) => admin::machine_account(c),
        Command::Sandbox(c) => admin::sandbox(c),
        Command::Secret(c) => admin::secret(c),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "airlock", &mut script);
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = std::io::stdout().write_all(&script);
            Ok(())
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .map_err(|e| CliError::Other(format!("cannot render the manual page: {e}")))?;
            let _ = std::io::stdout().write_all(&page);
            Ok(())
        }
    }
}

/// Everything the run modes and `env` share: data dir, CA, CA files, secrets.
struct Prepared {
    validated: Validated,
    data_dir: PathBuf,
    ca: Arc<CertificateAuthority>,
    ca_path: PathBuf,
    bundle_path: PathBuf,
    secrets: Arc<StaticSecrets>,
}

impl Prepared {
    fn settings(&self) -> &ProxySettings {
        &self.validated.settings
    }

    /// CA variables and NO_PROXY: what every sandbox gets besides proxy and placeholders.
    fn base_env(&self) -> Vec<(String, String)> {
        sandbox_env::build("", &self.ca_path, &self.bundle_path, &[])
            .into_iter()
            .filter(|(k, _)| {
                !k.to_ascii_lowercase().ends_with("_proxy") || k.eq_ignore_ascii_case("no_proxy")
            })
            .collect()
    }

    fn environment(
        &self,
        proxy_url: &str,
        placeholders: &[(String, String)],
    ) -> Vec<(String, String)> {
        let mut all = self.secrets.environment();
        all.extend(placeholders.iter().cloned());
        sandbox_env::build(proxy_url, &self.ca_path, &self.bundle_path, &all)
    }
}

fn prepare(loaded: &Loaded, data_dir: Option<PathBuf>) -> Result<Prepared, CliError> {
    let mut validated = loaded.validate()?;
    let data_dir = data_dir_for(loaded, data_dir)?;
    let ca = Arc::new(load_ca(loaded, &data_dir)?);
    let ca_path = data_dir.join(CA_CERT_FILE);
    if loaded.config.proxy.ca_cert.is_some() {
        // Sandboxes read the CA from the data dir whichever file it came from.
        std::fs::write(&ca_path, ca.cert_pem())
            .map_err(|e| CliError::Other(format!("{}: {e}", ca_path.display())))?;
    }
    let bundle_path = data_dir.join(CA_BUNDLE_FILE);
    airlock_certs::write_bundle(&bundle_path, ca.cert_pem())?;
    let prefix = loaded.prefix().to_owned();
    let pending = std::mem::take(&mut validated.secrets);
    let secrets = config::assign_placeholders(&data_dir, &prefix, pending)?;
    let secrets = Arc::new(StaticSecrets::new(
        prefix,
        SandboxId::default_sandbox(),
        secrets,
    ));
    Ok(Prepared {
        validated,
        data_dir,
        ca,
        ca_path,
        bundle_path,
        secrets,
    })
}

fn data_dir_for(loaded: &Loaded, flag: Option<PathBuf>) -> Result<PathBuf, CliError> {
    let dir = flag
        .or_else(|| {
            loaded
                .config
                .data_dir
                .as_deref()
                .map(|d| loaded.resolve_path(d))
        })
        .or_else(default_data_dir)
        .ok_or_else(|| CliError::Other("no data dir: pass --data-dir or set data_dir".into()))?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::Other(format!("cannot create data dir {}: {e}", dir.display())))?;
    Ok(dir)
}

fn default_data_dir() -> Option<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(xdg).join("airlock"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join(".local/share/airlock"))
}

fn load_ca(loaded: &Loaded, data_dir: &Path) -> Result<CertificateAuthority, CliError> {
    let proxy = &loaded.config.proxy;
    Ok(match (&proxy.ca_cert, &proxy.ca_key) {
        (Some(cert), Some(key)) => {
            CertificateAuthority::load(&loaded.resolve_path(cert), &loaded.resolve_path(key))?
        }
        _ => CertificateAuthority::load_or_create(data_dir)?,
    })
}

/// `http://ADDR`, with an unspecified address shown as loopback.
pub fn http_url(listen: SocketAddr) -> String {
    let host = match listen.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}", listen.port())
}

fn proxy_url(loaded: &Loaded, listen: SocketAddr) -> String {
    match &loaded.config.proxy.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => http_url(listen),
    }
}

fn init_logging(loaded: &Loaded, flag: Option<CliLogFormat>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let format = match flag {
        Some(CliLogFormat::Json) => LogFormat::Json,
        Some(CliLogFormat::Text) => LogFormat::Text,
        None => loaded.config.log.format,
    };
    let filter = std::env::var("AIRLOCK_LOG")
        .ok()
        .or_else(|| loaded.config.log.level.clone())
        .unwrap_or_else(|| "info".to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = match format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    #[cfg(feature = "otel")]
    let registry = registry.with(otel::layer());
    registry.init();
}

/// OpenTelemetry trace export, built with `--features otel` and switched on
/// by `OTEL_EXPORTER_OTLP_ENDPOINT` (OTLP over HTTP).
#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    use tracing_subscriber::registry::LookupSpan;

    pub fn layer<S>(
    ) -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())?;
        let http = reqwest::Client::builder().no_proxy().build().ok()?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(http)
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .build()
            .map_err(|e| eprintln!("airlock: OpenTelemetry export disabled: {e}"))
            .ok()?;
        let provider = opentelemetry_sdk::trace::TracerProvider::builder()
            .with_batch_exporter(exporter, opentelemetry_sdk::runtime::Tokio)
            .with_resource(opentelemetry_sdk::Resource::new(vec![
                opentelemetry::KeyValue::new("service.name", "airlock"),
            ]))
            .build();
        let tracer = provider.tracer("airlock");
        opentelemetry::global::set_tracer_provider(provider);
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    }

    /// Sends what is still buffered.
    pub fn shutdown() {
        opentelemetry::global::shutdown_tracer_provider();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Up,
    Proxy,
    Vault,
}

fn vault_settings(
    loaded: &Loaded,
    prepared: &Prepared,
    proxy_url: String,
    vault_listen: SocketAddr,
) -> VaultSettings {
    let v = &loaded.config.vault;
    VaultSettings {
        public_url: vault_setup::public_url(loaded, vault_listen),
        proxy_url,
        placeholder_prefix: loaded.prefix().to_owned(),
        state_ttl: Duration::from_secs(v.state_ttl_secs.max(1)),
        refresh_window: Duration::from_secs(v.refresh_window_secs),
        refresh_fraction: v.refresh_fraction,
        refresh_backoff: Duration::from_secs(v.refresh_backoff_secs),
        base_env: prepared.base_env(),
    }
}

async fn bind(addr: SocketAddr, what: &str) -> Result<tokio::net::TcpListener, CliError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::Other(format!("cannot listen on {addr} ({what}): {e}")))
}

fn serve(args: RunArgs, log_format: Option<CliLogFormat>, mode: Mode) -> Result<(), CliError> {
    let loaded = Loaded::read(args.config.as_deref())?;
    let runtime = runtime()?;
    {
        // Trace exporters start tasks on the runtime.
        let _entered = runtime.enter();
        init_logging(&loaded, log_format);
    }
    let prepared = prepare(&loaded, args.data_dir.clone())?;
    let result = runtime.block_on(async move {
        let shutdown = shutdown_signal();
        let proxy_listen = args.listen.unwrap_or(loaded.config.proxy.listen);
        let vault_listen = args.vault_listen.unwrap_or(loaded.config.vault.listen);
        let proxy_listener = match mode {
            Mode::Vault => None,
            _ => Some(bind(proxy_listen, "proxy").await?),
        };
        let vault_listener = match mode {
            Mode::Proxy => None,
            _ => Some(bind(vault_listen, "vault").await?),
        };
        let proxy_local = proxy_listener.as_ref().and_then(|l| l.local_addr().ok());
        let vault_local = vault_listener.as_ref().and_then(|l| l.local_addr().ok()).unwrap_or(vault_listen);
        let public_proxy_url = proxy_url(&loaded, proxy_local.unwrap_or(proxy_listen));

        let mut tasks = tokio::task::JoinSet::new();
        let mut vault_bindings = Vec::new();
        // Config-file secrets can be reloaded on SIGHUP.
        let static_secrets = Arc::new(Swappable::new(prepared.secrets.clone()));
        let mut tokens: Arc<dyn TokenSource> = static_secrets.clone();
        if let Some(listener) = vault_listener {
            let settings = vault_settings(&loaded, &prepared, public_proxy_url.clone(), vault_local);
            let opened = vault_setup::open(&loaded, &prepared.validated, &prepared.data_dir, settings).await?;
            let vault = opened.vault.clone();
            vault.spawn_refresher(Duration::from_secs(loaded.config.vault.refresh_interval_secs.max(1)));
            if mode == Mode::Up {
                vault_bindings = vault_setup::sidecar_bindings(&vault).await?;
                tokens = Arc::new(Layered { first: static_secrets.clone(), second: vault.clone() });
            }
            let mut state = airlock_vault::api::ApiState::new(vault, &opened.admin_token, &opened.service_token);
            if mode == Mode::Up {
                // The console shows what the in-process proxy did.
                state = state.with_recent_requests(Arc::new(|| {
                    airlock_proxy::audit::recent()
                        .into_iter()
                        .filter_map(|r| serde_json::to_value(r).ok())
                        .collect()
                }));
            }
            tracing::info!(listen = %vault_local, public_url = %vault_setup::public_url(&loaded, vault_local), "vault listening");
            tasks.spawn(async move {
                airlock_vault::api::serve(listener, state)
                    .await
                    .map_err(|e| CliError::Other(format!("vault stopped: {e}")))
            });
        } else if mode == Mode::Proxy && loaded.config.vault.url.is_some() {
            let (roots, _) = airlock_proxy::upstream::root_store(&prepared.settings().upstream_ca);
            let remote = RemoteVault::new(
                &vault_setup::api_url(&loaded),
                vault_setup::service_token(&loaded, &prepared.data_dir)?,
                airlock_proxy::upstream::client_tls_config(roots),
                loaded.prefix(),
            );
            tokens = Arc::new(Layered { first: static_secrets.clone(), second: Arc::new(remote) });
        }
        if let (Some(listener), Some(local)) = (proxy_listener, proxy_local) {
            let leaves = Arc::new(LeafCache::new(prepared.ca.clone(), 10_000));
            let cache = Arc::new(CachedTokenSource::new(tokens));
            if loaded.config.proxy.admin {
                let admin_addr = args.admin_listen.unwrap_or(loaded.config.proxy.admin_listen);
                let admin = bind(admin_addr, "metrics").await?;
                let admin_local = admin.local_addr().map_err(|e| CliError::Other(e.to_string()))?;
                tracing::info!(listen = %admin_local, "metrics listening");
                let (leaves, cache) = (leaves.clone(), cache.clone());
                let sampler: airlock_proxy::metrics::Sampler = Box::new(move || {
                    let (hits, misses) = cache.stats();
                    vec![
                        ("certificates_minted", leaves.minted() as i64),
                        ("token_cache_hits", hits as i64),
                        ("token_cache_misses", misses as i64),
                    ]
                });
                tasks.spawn(async move {
                    airlock_proxy::metrics::serve_admin(admin, sampler)
                        .await
                        .map_err(|e| CliError::Other(format!("metrics endpoint stopped: {e}")))
                });
            }
            let cached: Arc<dyn TokenSource> = cache;
            let proxy = Proxy::new(prepared.settings().clone(), cached, leaves, local);
            tracing::info!(listen = %local, "proxy listening");
            tasks.spawn(async move {
                proxy.serve(listener).await.map_err(|e| CliError::Other(format!("proxy stopped: {e}")))
            });
        }
        if mode == Mode::Up {
            let env = prepared.environment(&public_proxy_url, &vault_bindings);
            let mut out = std::io::stdout().lock();
            // A blank line ends the block, so a wrapper can read it and go on.
            let _ = out.write_all(sandbox_env::render(&env, EnvFormat::Sh).as_bytes());
            let _ = out.write_all(b"\n");
            let _ = out.flush();
        }
        spawn_reloader(args.config.clone(), prepared.data_dir.clone(), static_secrets);
        tokio::select! {
            Some(result) = tasks.join_next() => {
                result.map_err(|e| CliError::Other(format!("a server task failed: {e}")))?
            }
            _ = shutdown => {
                tracing::info!("shutting down");
                Ok(())
            }
        }
    });
    #[cfg(feature = "otel")]
    otel::shutdown();
    result
}

fn print_env(args: EnvArgs) -> Result<(), CliError> {
    let loaded = Loaded::read(args.run.config.as_deref())?;
    let prepared = prepare(&loaded, args.run.data_dir.clone())?;
    let listen = args.run.listen.unwrap_or(loaded.config.proxy.listen);
    let vault_listen = args.run.vault_listen.unwrap_or(loaded.config.vault.listen);
    let proxy = proxy_url(&loaded, listen);
    runtime()?.block_on(async {
        let settings = vault_settings(&loaded, &prepared, proxy.clone(), vault_listen);
        let opened = vault_setup::open(&loaded, &prepared.validated, &prepared.data_dir, settings).await?;
        let env = if args.sandbox == SandboxId::DEFAULT {
            let bindings = vault_setup::sidecar_bindings(&opened.vault).await?;
            prepared.environment(&proxy, &bindings)
        } else {
            let bindings = opened
                .vault
                .store()
                .bindings_of(&args.sandbox)
                .await
                .map_err(|e| CliError::Other(e.to_string()))?;
            if opened.vault.store().sandbox(&args.sandbox).await.map_err(|e| CliError::Other(e.to_string()))?.is_none() {
                return Err(CliError::Other(format!("unknown sandbox {:?}", args.sandbox)));
            }
            eprintln!(
                "airlock: the proxy secret of sandbox {} was shown once at creation; put it in the proxy URL as ID:SECRET@",
                args.sandbox
            );
            let url = match proxy.split_once("://") {
                Some((scheme, rest)) => format!("{scheme}://{}@{rest}", args.sandbox),
                None => proxy.clone(),
            };
            let placeholders: Vec<(String, String)> = bindings.into_iter().map(|b| (b.env_name, b.placeholder)).collect();
            sandbox_env::build(&url, &prepared.ca_path, &prepared.bundle_path, &placeholders)
        };
        print!("{}", sandbox_env::render(&env, args.format));
        Ok(())
    })
}

fn rotate_key(args: RunArgs) -> Result<(), CliError> {
    let loaded = Loaded::read(args.config.as_deref())?;
    let data_dir = data_dir_for(&loaded, args.data_dir)?;
    let default_file = std::env::var("AIRLOCK_MASTER_KEY").is_err()
        && loaded.config.vault.master_key_command.is_none();
    let key_file = vault_setup::master_key_file(&loaded, &data_dir);
    // With the key file, make a new key and keep the old one beside it until done.
    let mut previous = Vec::new();
    let retired = if default_file && key_file.exists() {
        let old = airlock_vault::Kek::load_or_create_file(&key_file)
            .map_err(|e| CliError::Other(e.to_string()))?;
        let retired = key_file.with_extension(format!("{}.retired", old.id()));
        std::fs::rename(&key_file, &retired)
            .map_err(|e| CliError::Other(format!("{}: {e}", key_file.display())))?;
        airlock_vault::Kek::load_or_create_file(&key_file)
            .map_err(|e| CliError::Other(e.to_string()))?;
        previous.push(old);
        Some(retired)
    } else {
        None
    };
    runtime()?.block_on(async {
        let store = airlock_vault::Store::open(&vault_setup::database_url(&loaded, &data_dir))
            .await
            .map_err(|e| CliError::Other(e.to_string()))?;
        let keyring = vault_setup::keyring(&loaded, &data_dir, previous)?;
        let vault = airlock_vault::Vault::open(
            store,
            keyring,
            airlock_vault::Catalog::built_in(),
            reqwest::Client::new(),
            VaultSettings::default(),
        )
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
        let n = vault
            .rotate_keys()
            .await
            .map_err(|e| CliError::Other(e.to_string()))?;
        println!("re-wrapped {n} sealed value(s) under the current master key");
        Ok::<_, CliError>(())
    })?;
    if let Some(retired) = retired {
        std::fs::remove_file(&retired)
            .map_err(|e| CliError::Other(format!("{}: {e}", retired.display())))?;
    }
    Ok(())
}

/// On SIGHUP, re-reads the config file's secrets and bindings and swaps them
/// in; open connections keep going. A config with errors changes nothing.
fn spawn_reloader(config: Option<PathBuf>, data_dir: PathBuf, secrets: Arc<Swappable>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            let reloaded = Loaded::read(config.as_deref()).and_then(|loaded| {
                let validated = loaded.validate()?;
                let prefix = loaded.prefix().to_owned();
                let list = config::assign_placeholders(&data_dir, &prefix, validated.secrets)?;
                Ok((
                    list.len(),
                    StaticSecrets::new(prefix, SandboxId::default_sandbox(), list),
                ))
            });
            match reloaded {
                Ok((n, fresh)) => {
                    secrets.replace(Arc::new(fresh));
                    tracing::info!(secrets = n, "configuration reloaded");
                }
                Err(error) => {
                    tracing::error!(%error, "configuration not reloaded; keeping the running one")
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (config, data_dir, secrets);
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is
/// called, so call it before the listeners open: a signal that arrives right
/// after start is then a clean shutdown, not a kill.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
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
