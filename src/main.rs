#![forbid(unsafe_code)]
//! The `airlock` command line: the clap tree and a call into `airlock::cli`.

use std::process::ExitCode;

use airlock::app::Mode;
use airlock::cli::admin::{self, AdminArgs};
use airlock::cli::run::{self as run, LogFormatArg, RunArgs};
use airlock::cli::{ca, config, docs, env, placeholder, transparent, vault};
use clap::{CommandFactory, Parser, Subcommand};

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
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run proxy and vault together (embedded SQLite, CA created on first run) and print the sandbox's environment.
    Up(RunArgs),
    /// Run the proxy alone; tokens come from [[secret]] and, with [vault] url, a remote vault.
    Proxy(RunArgs),
    /// Run the vault alone, or manage it.
    Vault(vault::VaultArgs),
    /// Manage airlock's certificate authority.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Print the environment a sandbox needs.
    Env(env::EnvArgs),
    /// Check a configuration file.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// List, duplicate or delete the OAuth providers the vault knows.
    #[command(subcommand)]
    Provider(admin::ProviderCommand),
    /// Register an OAuth app (client id and secret) for a provider.
    #[command(subcommand)]
    App(admin::AppCommand),
    /// Start connecting an account: prints the URL to open.
    Connect(admin::ConnectArgs),
    /// Finish a connect from your own callback handler: the state and code
    /// the provider sent to the tenant's redirect URI.
    ConnectComplete(admin::ConnectCompleteArgs),
    /// List connected accounts and their status.
    Connections(AdminArgs),
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
    /// A tenant's white-label settings: branding, redirect URI, return URL, default apps.
    #[command(subcommand)]
    Tenant(admin::TenantCommand),
    /// Narrow a placeholder offline into one that can do less.
    #[command(subcommand)]
    Placeholder(placeholder::PlaceholderCommand),
    /// Transparent mode: the iptables rules that redirect a sandbox's traffic to airlock.
    #[command(subcommand)]
    Transparent(transparent::TransparentCommand),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff): `airlock man > airlock.1`.
    Man,
}

// Bench builds only (`--features alloc-count`): every allocation counted.
#[cfg(feature = "alloc-count")]
#[global_allocator]
static ALLOCATOR: &airlock_alloc_count::StatsAlloc<std::alloc::System> =
    &airlock_alloc_count::COUNTING;

fn main() -> ExitCode {
    #[cfg(feature = "alloc-count")]
    airlock_alloc_count::start_reporting(&airlock_alloc_count::COUNTING);
    // One crypto provider for the whole process, chosen explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let log_format = cli.log_format;
    let result = match cli.command {
        Command::Up(args) => run::serve(args, log_format, Mode::Up),
        Command::Proxy(args) => run::serve(args, log_format, Mode::Proxy),
        Command::Vault(args) => vault::vault(args, log_format),
        Command::Ca(c) => ca::ca(c),
        Command::Env(args) => env::env(args),
        Command::Config(c) => config::config(c),
        Command::Provider(c) => admin::provider(c),
        Command::App(c) => admin::app(c),
        Command::Connect(c) => admin::connect(c),
        Command::ConnectComplete(c) => admin::connect_complete(c),
        Command::Connections(c) => admin::connections(c),
        Command::Disconnect(c) => admin::disconnect(c),
        Command::MachineAccount(c) => admin::machine_account(c),
        Command::Sandbox(c) => admin::sandbox(c),
        Command::Secret(c) => admin::secret(c),
        Command::Tenant(c) => admin::tenant(c),
        Command::Placeholder(c) => placeholder::placeholder(c),
        Command::Transparent(c) => transparent::transparent(c),
        Command::Completions { shell } => {
            docs::completions(shell, Cli::command());
            Ok(())
        }
        Command::Man => docs::man(Cli::command()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("airlock: {err}");
            ExitCode::FAILURE
        }
    }
}
