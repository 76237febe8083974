#![forbid(unsafe_code)]
//! The `airlock` command line.

mod config;
mod sandbox_env;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use airlock_certs::{CertificateAuthority, LeafCache, CA_BUNDLE_FILE, CA_CERT_FILE};
use airlock_proxy::{Proxy, ProxySettings};
use airlock_vault_client::{SandboxId, StaticSecrets};
use clap::{Args, Parser, Subcommand};

use crate::config::{Loaded, LogFormat};
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
    /// Run the proxy for the sidecar sandbox (CA created on first run) and print its environment.
    Up(RunArgs),
    /// Run the proxy alone.
    Proxy(RunArgs),
    /// Manage airlock's certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Print the environment a sandbox needs.
    Env(EnvArgs),
    /// Check a configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Args)]
struct RunArgs {
    /// Configuration file (TOML).
    #[arg(long, short, env = "AIRLOCK_CONFIG")]
    config: Option<PathBuf>,
    /// Where the CA and kept placeholders live (overrides data_dir).
    #[arg(long, env = "AIRLOCK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Proxy listen address (overrides [proxy] listen).
    #[arg(long, env = "AIRLOCK_LISTEN")]
    listen: Option<SocketAddr>,
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
enum CliError {
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

fn run(cli: Cli) -> Result<(), CliError> {
    // One crypto provider for the whole process, chosen explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Up(args) => serve(args, cli.log_format, true),
        Command::Proxy(args) => serve(args, cli.log_format, false),
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
        Command::Env(args) => {
            let loaded = Loaded::read(args.run.config.as_deref())?;
            let prepared = prepare(&loaded, args.run.data_dir)?;
            if args.sandbox != SandboxId::DEFAULT {
                return Err(CliError::Other(format!(
                    "unknown sandbox {:?}: this configuration serves only the sidecar sandbox \"default\"",
                    args.sandbox
                )));
            }
            let listen = args.run.listen.unwrap_or(loaded.config.proxy.listen);
            let env = prepared.environment(&proxy_url(&loaded, listen));
            print!("{}", sandbox_env::render(&env, args.format));
            Ok(())
        }
        Command::Config(ConfigCommand::Check { config }) => {
            let loaded = Loaded::read(Some(&config))?;
            let validated = loaded.validate()?;
            println!(
                "{}: ok ({} secret(s), {} upstream CA certificate(s))",
                config.display(),
                validated.secrets.len(),
                validated.settings.upstream_ca.len()
            );
            Ok(())
        }
    }
}

/// Everything `up`, `proxy` and `env` share: data dir, CA, CA files, secrets.
struct Prepared {
    settings: ProxySettings,
    ca: Arc<CertificateAuthority>,
    ca_path: PathBuf,
    bundle_path: PathBuf,
    secrets: Arc<StaticSecrets>,
}

impl Prepared {
    fn environment(&self, proxy_url: &str) -> Vec<(String, String)> {
        sandbox_env::build(
            proxy_url,
            &self.ca_path,
            &self.bundle_path,
            &self.secrets.environment(),
        )
    }
}

fn prepare(loaded: &Loaded, data_dir: Option<PathBuf>) -> Result<Prepared, CliError> {
    let validated = loaded.validate()?;
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
    let secrets = config::assign_placeholders(&data_dir, &prefix, validated.secrets)?;
    let secrets = Arc::new(StaticSecrets::new(
        prefix,
        SandboxId::default_sandbox(),
        secrets,
    ));
    Ok(Prepared {
        settings: validated.settings,
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

fn proxy_url(loaded: &Loaded, listen: SocketAddr) -> String {
    if let Some(url) = &loaded.config.proxy.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = match listen.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}", listen.port())
}

fn init_logging(loaded: &Loaded, flag: Option<CliLogFormat>) {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn serve(args: RunArgs, log_format: Option<CliLogFormat>, print_env: bool) -> Result<(), CliError> {
    let loaded = Loaded::read(args.config.as_deref())?;
    init_logging(&loaded, log_format);
    let prepared = prepare(&loaded, args.data_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("airlock")
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        let listen = args.listen.unwrap_or(loaded.config.proxy.listen);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| CliError::Other(format!("cannot listen on {listen}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| CliError::Other(e.to_string()))?;
        let leaves = Arc::new(LeafCache::new(prepared.ca.clone(), 10_000));
        let proxy = Proxy::new(
            prepared.settings.clone(),
            prepared.secrets.clone(),
            leaves,
            local,
        );
        tracing::info!(listen = %local, "proxy listening");
        if print_env {
            let env = prepared.environment(&proxy_url(&loaded, local));
            let mut out = std::io::stdout().lock();
            // A blank line ends the block, so a wrapper can read it and go on.
            let _ = out.write_all(sandbox_env::render(&env, EnvFormat::Sh).as_bytes());
            let _ = out.write_all(b"\n");
            let _ = out.flush();
        }
        tokio::select! {
            result = proxy.serve(listener) => {
                result.map_err(|e| CliError::Other(format!("proxy stopped: {e}")))
            }
            _ = shutdown_signal() => {
                tracing::info!("shutting down");
                Ok(())
            }
        }
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
