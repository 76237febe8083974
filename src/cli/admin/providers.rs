//! `airlock provider` and `airlock app`: the catalog and OAuth client registrations.

use clap::Subcommand;
use serde_json::json;

use super::{rows, secret_from_env, AdminArgs, Api};
use crate::Error;

#[derive(Subcommand)]
pub enum ProviderCommand {
    /// List providers: the built-in catalog plus custom ones.
    List(AdminArgs),
    /// Delete a provider added through the API (refused while connections,
    /// apps or sandboxes use it, and for catalog or config-file providers).
    Delete {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Copy SOURCE's setup (endpoints, scopes, hosts, injection, rules)
    /// under the name NEW, as a provider of the API.
    Duplicate {
        /// The provider to copy: from the catalog, the config file or the API.
        source: String,
        /// The copy's name (lower-case letters, digits, '-' or '_').
        new: String,
        /// The copy's sandbox variable (default: from NEW, `github-work` →
        /// `GITHUB_WORK_TOKEN`).
        #[arg(long)]
        env: Option<String>,
        /// The copy's label in the console.
        #[arg(long)]
        display_name: Option<String>,
        /// Copy SOURCE's OAuth apps (client id and secret) too.
        #[arg(long)]
        with_apps: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
pub enum AppCommand {
    /// Register or update the OAuth client of PROVIDER.
    Set {
        provider: String,
        #[arg(long)]
        client_id: String,
        /// Name of an environment variable holding the client secret.
        #[arg(long)]
        client_secret_env: Option<String>,
        #[arg(long, default_value = airlock_vault::DEFAULT_TENANT)]
        tenant: String,
        #[arg(long, default_value = airlock_vault::DEFAULT_ENVIRONMENT)]
        environment: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List OAuth apps (secrets shown as ••••last4).
    List(AdminArgs),
    /// Delete the OAuth client of PROVIDER (refused while connections use it).
    Delete {
        provider: String,
        #[arg(long, default_value = airlock_vault::DEFAULT_TENANT)]
        tenant: String,
        #[arg(long, default_value = airlock_vault::DEFAULT_ENVIRONMENT)]
        environment: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

pub fn provider(c: ProviderCommand) -> Result<(), Error> {
    match c {
        ProviderCommand::List(args) => {
            let api = Api::new(&args)?;
            let value = api.call(reqwest::Method::GET, "/v1/providers", None)?;
            api.print(&value, |v| {
                rows(v, |p| {
                    format!(
                        "{:<12} {:<16} hosts: {}",
                        p["name"].as_str().unwrap_or(""),
                        p["env"].as_str().unwrap_or(""),
                        p["hosts"]
                    )
                })
            });
        }
        ProviderCommand::Delete { name, admin } => {
            let api = Api::new(&admin)?;
            let value = api.call(
                reqwest::Method::DELETE,
                &format!("/v1/providers/{name}"),
                None,
            )?;
            api.print(&value, |_| format!("provider {name} deleted\n"));
        }
        ProviderCommand::Duplicate {
            source,
            new,
            env,
            display_name,
            with_apps,
            admin,
        } => {
            let api = Api::new(&admin)?;
            let mut body = json!({ "name": new, "apps": with_apps });
            if let Some(env) = env {
                body["env"] = json!(env);
            }
            if let Some(label) = display_name {
                body["display_name"] = json!(label);
            }
            let value = api.call(
                reqwest::Method::POST,
                &format!("/v1/providers/{source}/duplicate"),
                Some(body),
            )?;
            api.print(&value, |v| {
                format!(
                    "provider {} copied from {source} (sandbox variable {}){}\n",
                    v["name"].as_str().unwrap_or(""),
                    v["env"].as_str().unwrap_or(""),
                    if with_apps { ", with its apps" } else { "" }
                )
            });
        }
    }
    Ok(())
}

pub fn app(c: AppCommand) -> Result<(), Error> {
    match c {
        AppCommand::Set {
            provider,
            client_id,
            client_secret_env,
            tenant,
            environment,
            admin,
        } => {
            let api = Api::new(&admin)?;
            let mut body = json!({ "provider": provider, "client_id": client_id, "tenant": tenant, "environment": environment });
            if let Some(var) = client_secret_env {
                body["client_secret"] = json!(secret_from_env(&var)?);
            }
            let value = api.call(reqwest::Method::PUT, "/v1/apps", Some(body))?;
            api.print(&value, |v| {
                format!(
                    "app for {} saved (client secret {})\n",
                    v["provider"].as_str().unwrap_or(""),
                    v["client_secret"].as_str().unwrap_or("not set")
                )
            });
        }
        AppCommand::Delete {
            provider,
            tenant,
            environment,
            admin,
        } => {
            let api = Api::new(&admin)?;
            let path = format!("/v1/apps/{provider}?tenant={tenant}&environment={environment}");
            let value = api.call(reqwest::Method::DELETE, &path, None)?;
            api.print(&value, |_| {
                format!("app for {provider} deleted (tenant {tenant}, environment {environment})\n")
            });
        }
        AppCommand::List(admin) => {
            let api = Api::new(&admin)?;
            let value = api.call(reqwest::Method::GET, "/v1/apps", None)?;
            api.print(&value, |v| {
                rows(v, |a| {
                    format!(
                        "{}/{} [{}] client_id={} secret={}",
                        a["tenant"].as_str().unwrap_or(""),
                        a["provider"].as_str().unwrap_or(""),
                        a["environment"].as_str().unwrap_or(""),
                        a["client_id"].as_str().unwrap_or(""),
                        a["client_secret"].as_str().unwrap_or("-")
                    )
                })
            });
        }
    }
    Ok(())
}
