//! `airlock secret`: static secrets kept sealed in the vault.

use clap::Subcommand;
use serde_json::json;

use super::{rows, secret_from_env, AdminArgs, Api};
use crate::Error;

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Store a static secret (sealed) for sandboxes of a tenant.
    Add {
        name: String,
        /// Name of an environment variable holding the value.
        #[arg(long)]
        value_env: String,
        /// An allowed host (repeat).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        #[arg(long = "swap-in")]
        swap_in: Vec<String>,
        #[arg(long, default_value = airlock_vault::DEFAULT_TENANT)]
        tenant: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    List(AdminArgs),
    /// Delete a static secret (refused while a sandbox holds a placeholder for it).
    Delete {
        name: String,
        #[arg(long, default_value = airlock_vault::DEFAULT_TENANT)]
        tenant: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

pub fn secret(c: SecretCommand) -> Result<(), Error> {
    match c {
        SecretCommand::Add {
            name,
            value_env,
            hosts,
            swap_in,
            tenant,
            admin,
        } => {
            let api = Api::new(&admin)?;
            let mut body = json!({ "name": name, "value": secret_from_env(&value_env)?, "hosts": hosts, "tenant": tenant });
            if !swap_in.is_empty() {
                body["swap_in"] = json!(swap_in);
            }
            let value = api.call(reqwest::Method::POST, "/v1/secrets", Some(body))?;
            api.print(&value, |v| {
                format!(
                    "secret {} stored for hosts {}\n",
                    v["name"].as_str().unwrap_or(""),
                    v["hosts"]
                )
            });
        }
        SecretCommand::Delete {
            name,
            tenant,
            admin,
        } => {
            let api = Api::new(&admin)?;
            let path = format!("/v1/secrets/{name}?tenant={tenant}");
            let value = api.call(reqwest::Method::DELETE, &path, None)?;
            api.print(&value, |_| {
                format!("secret {name} deleted (tenant {tenant})\n")
            });
        }
        SecretCommand::List(admin) => {
            let api = Api::new(&admin)?;
            let value = api.call(reqwest::Method::GET, "/v1/secrets", None)?;
            api.print(&value, |v| {
                rows(v, |s| {
                    format!(
                        "{}/{} hosts={}",
                        s["tenant"].as_str().unwrap_or(""),
                        s["name"].as_str().unwrap_or(""),
                        s["hosts"]
                    )
                })
            });
        }
    }
    Ok(())
}
