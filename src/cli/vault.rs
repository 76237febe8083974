//! `airlock vault`: run the vault alone, or `rotate-key`.

use clap::{Args, Subcommand};

use super::run::{LogFormatArg, RunArgs};
use crate::app::{self, Mode};
use crate::config::Loaded;
use crate::Error;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct VaultArgs {
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

pub fn vault(args: VaultArgs, log_format: Option<LogFormatArg>) -> Result<(), Error> {
    match args.command {
        None => super::run::serve(args.run, log_format, Mode::Vault),
        Some(VaultCommand::RotateKey { run }) => rotate_key(run),
    }
}

fn rotate_key(args: RunArgs) -> Result<(), Error> {
    let loaded = Loaded::read(args.config.as_deref())?;
    let data_dir = app::data_dir(&loaded.effective(&args.flags(None)))?;
    let files = loaded.vault_files(&data_dir);
    let command = loaded.config.vault.master_key_command.as_deref();
    let default_file = std::env::var("AIRLOCK_MASTER_KEY").is_err() && command.is_none();
    let key_file = &files.master_key_file;
    // With the key file, make a new key and keep the old one beside it until done.
    let mut previous = Vec::new();
    let retired = if default_file && key_file.exists() {
        let old = airlock_vault::Kek::load_or_create_file(key_file)?;
        let retired = key_file.with_extension(format!("{}.retired", old.id()));
        std::fs::rename(key_file, &retired).map_err(|source| Error::File {
            path: key_file.clone(),
            source,
        })?;
        airlock_vault::Kek::load_or_create_file(key_file)?;
        previous.push(old);
        Some(retired)
    } else {
        None
    };
    app::runtime()?.block_on(async {
        let store = airlock_vault::Store::open(&files.database_url).await?;
        let keyring = app::vault::keyring(&files, command, previous)?;
        let vault = airlock_vault::Vault::open(
            store,
            keyring,
            airlock_vault::Catalog::built_in(),
            reqwest::Client::new(),
            airlock_vault::VaultSettings::default(),
        )
        .await?;
        let n = vault.rotate_keys().await?;
        println!("re-wrapped {n} sealed value(s) under the current master key");
        Ok::<_, Error>(())
    })?;
    if let Some(retired) = retired {
        std::fs::remove_file(&retired).map_err(|source| Error::File {
            path: retired.clone(),
            source,
        })?;
    }
    Ok(())
}
