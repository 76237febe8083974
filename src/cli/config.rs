//! `airlock config check`.

use std::path::PathBuf;

use clap::Subcommand;

use crate::config::Loaded;
use crate::Error;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Report every error in a configuration file at once.
    Check {
        #[arg(long, short, env = "AIRLOCK_CONFIG")]
        config: PathBuf,
    },
}

pub fn config(command: ConfigCommand) -> Result<(), Error> {
    let ConfigCommand::Check { config } = command;
    let parsed = Loaded::read(Some(&config))?.parse()?;
    println!(
        "{}: ok ({} secret(s), {} provider(s), {} app(s), {} upstream CA certificate(s))",
        config.display(),
        parsed.secrets.len(),
        parsed.providers.len(),
        parsed.apps.len(),
        parsed.proxy.settings.upstream_ca.len()
    );
    Ok(())
}
