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
        let store = opened.vault.store();
        let row = store.sandbox(&args.sandbox).await?;
        // An environment asked for must be the sandbox's: the placeholders
        // printed resolve the sandbox's environment, whatever is asked.
        if let (Some(asked), Some(row)) = (effective.environment.as_deref(), &row) {
            if asked != row.environment {
                return Err(Error::EnvironmentMismatch {
                    sandbox: args.sandbox.clone(),
                    has: row.environment.clone(),
                    asked: asked.to_owned(),
                });
            }
        }
        if args.sandbox == SandboxId::DEFAULT {
            // A new sidecar sandbox starts in the environment asked for.
            let environment = match (&effective.environment, &row) {
                (Some(asked), _) => asked.clone(),
                (None, Some(row)) => row.environment.clone(),
                (None, None) => airlock_vault::DEFAULT_ENVIRONMENT.to_owned(),
            };
            let bindings =
                vault::sidecar_bindings(&opened.vault, &environment, &prepared.secret_variables())
                    .await?;
            return Ok(prepared.environment(&proxy, &bindings));
        }
        let bindings = store.bindings_of(&args.sandbox).await?;
        let Some(row) = row else {
            return Err(Error::UnknownSandbox(args.sandbox.clone()));
        };
        eprintln!(
            "airlock: the proxy secret of sandbox {} was shown once at creation; put it in the proxy URL as ID:SECRET@",
            args.sandbox
        );
        let url = match proxy.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{}@{rest}", args.sandbox),
            None => proxy.clone(),
        };
        let placeholders = opened.vault.bindings_env(&row.tenant, &bindings).await?;
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
