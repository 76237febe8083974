//! Operator commands over the vault's admin API, with the admin token
//! (`AIRLOCK_ADMIN_TOKEN`, or the data dir's `admin.token`).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::{data_dir_for, runtime, vault_setup, CliError};
use airlock::config::Loaded;

#[derive(Args, Clone)]
pub struct AdminArgs {
    #[arg(long, short, env = "AIRLOCK_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "AIRLOCK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The vault's URL (default: [vault] url, public_url, or listen).
    #[arg(long, env = "AIRLOCK_VAULT_URL")]
    pub vault_url: Option<String>,
    /// Print the raw JSON answer.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum ProviderCommand {
    /// List providers: the built-in catalog plus custom ones.
    List(AdminArgs),
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
}

#[derive(Args)]
pub struct ConnectArgs {
    pub provider: String,
    /// tenant, workspace:NAME or user:NAME
    #[arg(long, default_value = "tenant")]
    pub scope: String,
    #[arg(long, default_value = airlock_vault::DEFAULT_TENANT)]
    pub tenant: String,
    /// Scopes to request (default: the provider's).
    #[arg(long = "oauth-scope")]
    pub scopes: Vec<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args)]
pub struct DisconnectArgs {
    pub connection_id: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args)]
pub struct MachineAccountArgs {
    pub name: String,
    #[arg(long)]
    pub provider: String,
    #[arg(long)]
    pub client_id: String,
    /// Name of an environment variable holding the client secret.
    #[arg(long)]
    pub client_secret_env: String,
    #[arg(long)]
    pub token_url: Option<String>,
    #[arg(long = "oauth-scope")]
    pub scopes: Vec<String>,
    #[arg(long, default_value = airlock_vault::DEFAULT_TENANT)]
    pub tenant: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Subcommand)]
pub enum SandboxCommand {
    /// Create a sandbox: prints its id, proxy URL and environment.
    Create {
        #[arg(long, default_value = airlock_vault::DEFAULT_TENANT)]
        tenant: String,
        #[arg(long)]
        workspace: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// A provider the sandbox may use (repeat).
        #[arg(long = "provider")]
        providers: Vec<String>,
        /// A static secret the sandbox may use (repeat).
        #[arg(long = "secret")]
        secrets: Vec<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    List(AdminArgs),
    /// Delete a sandbox: its placeholders stop working.
    Delete {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

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
}

struct Api {
    base: String,
    token: secrecy::SecretString,
    json: bool,
}

impl Api {
    fn new(args: &AdminArgs) -> Result<Self, CliError> {
        let loaded = Loaded::read(args.config.as_deref())?;
        let data_dir = data_dir_for(&loaded, args.data_dir.clone())?;
        Ok(Self {
            base: args
                .vault_url
                .clone()
                .unwrap_or_else(|| vault_setup::api_url(&loaded)),
            token: vault_setup::admin_token(&loaded, &data_dir)?,
            json: args.json,
        })
    }

    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        runtime()?.block_on(async {
            let client = reqwest::Client::builder()
                .no_proxy()
                .build()
                .map_err(|e| CliError::Other(e.to_string()))?;
            let mut request = client
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(self.token.expose_secret());
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.map_err(|e| {
                CliError::Other(format!("cannot reach the vault at {}: {e}", self.base))
            })?;
            let status = response.status();
            let value: Value = response.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                Ok(value)
            } else {
                Err(CliError::Other(format!(
                    "vault answered {status}: {}",
                    value["error"].as_str().unwrap_or("no details")
                )))
            }
        })
    }

    fn print(&self, value: &Value, text: impl FnOnce(&Value) -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).expect("JSON prints")
            );
        } else {
            print!("{}", text(value));
        }
    }
}

fn secret_from_env(var: &str) -> Result<String, CliError> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| CliError::Other(format!("environment variable {var} is not set or empty")))
}

fn rows(value: &Value, f: impl Fn(&Value) -> String) -> String {
    value
        .as_array()
        .map(|a| a.iter().map(|v| f(v) + "\n").collect())
        .unwrap_or_default()
}

pub fn provider(c: ProviderCommand) -> Result<(), CliError> {
    let ProviderCommand::List(args) = c;
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
    Ok(())
}

pub fn app(c: AppCommand) -> Result<(), CliError> {
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

pub fn connect(c: ConnectArgs) -> Result<(), CliError> {
    let api = Api::new(&c.admin)?;
    let mut body = json!({ "provider": c.provider, "scope": c.scope, "tenant": c.tenant });
    if !c.scopes.is_empty() {
        body["scopes"] = json!(c.scopes);
    }
    let value = api.call(reqwest::Method::POST, "/v1/connections", Some(body))?;
    api.print(&value, |v| {
        format!("{}\n", v["authorization_url"].as_str().unwrap_or(""))
    });
    Ok(())
}

pub fn connections(args: AdminArgs) -> Result<(), CliError> {
    let api = Api::new(&args)?;
    let value = api.call(reqwest::Method::GET, "/v1/connections", None)?;
    api.print(&value, |v| {
        rows(v, |c| {
            format!(
                "{} {:<10} {:<18} {:<16} {}",
                c["id"].as_str().unwrap_or(""),
                c["provider"].as_str().unwrap_or(""),
                c["scope"].as_str().unwrap_or(""),
                c["status"].as_str().unwrap_or(""),
                c["kind"].as_str().unwrap_or("")
            )
        })
    });
    Ok(())
}

pub fn disconnect(c: DisconnectArgs) -> Result<(), CliError> {
    let api = Api::new(&c.admin)?;
    let value = api.call(
        reqwest::Method::DELETE,
        &format!("/v1/connections/{}", c.connection_id),
        None,
    )?;
    api.print(&value, |v| {
        format!(
            "disconnected {} (revoked: {})\n",
            c.connection_id, v["revoked"]
        )
    });
    Ok(())
}

pub fn machine_account(c: MachineAccountArgs) -> Result<(), CliError> {
    let api = Api::new(&c.admin)?;
    let mut body = json!({
        "name": c.name, "provider": c.provider, "client_id": c.client_id,
        "client_secret": secret_from_env(&c.client_secret_env)?, "tenant": c.tenant, "scopes": c.scopes,
    });
    if let Some(url) = c.token_url {
        body["token_url"] = json!(url);
    }
    let value = api.call(reqwest::Method::POST, "/v1/machine-accounts", Some(body))?;
    api.print(&value, |v| {
        format!(
            "machine account {} connected ({})\n",
            v["id"].as_str().unwrap_or(""),
            v["status"].as_str().unwrap_or("")
        )
    });
    Ok(())
}

pub fn sandbox(c: SandboxCommand) -> Result<(), CliError> {
    match c {
        SandboxCommand::Create {
            tenant,
            workspace,
            user,
            providers,
            secrets,
            admin,
        } => {
            let api = Api::new(&admin)?;
            let body = json!({ "tenant": tenant, "workspace": workspace, "user": user, "providers": providers, "secrets": secrets });
            let value = api.call(reqwest::Method::POST, "/v1/sandboxes", Some(body))?;
            api.print(&value, |v| {
                let mut out = format!("# sandbox {}\n", v["id"].as_str().unwrap_or(""));
                if let Some(env) = v["env"].as_object() {
                    for (k, val) in env {
                        out.push_str(&format!(
                            "export {k}='{}'\n",
                            val.as_str().unwrap_or("").replace('\'', "'\\''")
                        ));
                    }
                }
                out
            });
        }
        SandboxCommand::List(admin) => {
            let api = Api::new(&admin)?;
            let value = api.call(reqwest::Method::GET, "/v1/sandboxes", None)?;
            api.print(&value, |v| {
                rows(v, |s| {
                    format!(
                        "{} tenant={} bindings={}",
                        s["id"].as_str().unwrap_or(""),
                        s["tenant"].as_str().unwrap_or(""),
                        s["bindings"]
                    )
                })
            });
        }
        SandboxCommand::Delete { id, admin } => {
            let api = Api::new(&admin)?;
            let value = api.call(
                reqwest::Method::DELETE,
                &format!("/v1/sandboxes/{id}"),
                None,
            )?;
            api.print(&value, |_| format!("deleted sandbox {id}\n"));
        }
    }
    Ok(())
}

pub fn secret(c: SecretCommand) -> Result<(), CliError> {
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
