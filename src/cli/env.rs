//! `airlock env`: the environment a sandbox needs.

use airlock_vault_client::SandboxId;
use clap::Args;

use super::run::RunArgs;
use crate::app::{self, vault, Prepared};
use crate::config::{AppSecrets, Loaded};
use crate::sandbox_env::{self, EnvFormat};
use crate::Error;

#[derive(Args)]
pub struct EnvArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Which sandbox's environment.
    #[arg(long, default_value = SandboxId::DEFAULT)]
    sandbox: String,
    #[arg(long, value_enum, default_value = "sh")]
    format: EnvFormat,
}

pub fn env(args: EnvArgs) -> Result<(), Error> {
    let loaded = Loaded::read(args.run.config.as_deref())?;
    let effective = loaded.effective(&args.run.flags(None));
    // Only placeholders are printed: no app's client secret is needed.
    let prepared = Prepared::new_with(&loaded, &effective, AppSecrets::Skip)?;
    let proxy = loaded.config.proxy.url(effective.proxy_listen);
    let env = app::runtime()?.block_on(async {
        let settings = vault::settings(
            &loaded,
            proxy.clone(),
            effective.vault_listen,
            prepared.base_env(),
        );
        let files = loaded.vault_files(&prepared.data_dir);
        let opened = vault::open(&loaded, &prepared.parsed, &files, settings).await?;
        if args.sandbox == SandboxId::DEFAULT {
            let bindings = vault::sidecar_bindings(&opened.vault, &prepared.secret_names()).await?;
            return Ok(prepared.environment(&proxy, &bindings));
        }
        let store = opened.vault.store();
        let bindings = store.bindings_of(&args.sandbox).await?;
        if store.sandbox(&args.sandbox).await?.is_none() {
            return Err(Error::UnknownSandbox(args.sandbox.clone()));
        }
        eprintln!(
            "airlock: the proxy secret of sandbox {} was shown once at creation; put it in the proxy URL as ID:SECRET@",
            args.sandbox
        );
        let url = match proxy.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{}@{rest}", args.sandbox),
            None => proxy.clone(),
        };
        let placeholders: Vec<(String, String)> = bindings
            .into_iter()
            .map(|b| (b.env_name, b.placeholder))
            .collect();
        Ok::<_, Error>(sandbox_env::build(
            &url,
            &prepared.ca_path,
            &prepared.bundle_path,
            &placeholders,
        ))
    })?;
    print!("{}", sandbox_env::render(&env, args.format));
    Ok(())
}
