//! `airlock connect`, `connections`, `disconnect` and `machine-account`.

use airlock_vault::ConnectionStatus;
use clap::Args;
use serde_json::{json, Value};

use super::{refusal, rows, secret_from_env, AdminArgs, Api};
use crate::Error;

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
    /// Delete the connection even if the provider cannot confirm revocation
    /// (its tokens may stay live at the provider).
    #[arg(long)]
    pub force: bool,
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

pub fn connect(c: ConnectArgs) -> Result<(), Error> {
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

pub fn connections(args: AdminArgs) -> Result<(), Error> {
    let api = Api::new(&args)?;
    let value = api.call(reqwest::Method::GET, "/v1/connections", None)?;
    api.print(&value, |v| {
        rows(v, |c| {
            let mut line = format!(
                "{} {:<10} {:<18} {:<16} {}",
                c["id"].as_str().unwrap_or(""),
                c["provider"].as_str().unwrap_or(""),
                c["scope"].as_str().unwrap_or(""),
                c["status"].as_str().unwrap_or(""),
                c["kind"].as_str().unwrap_or("")
            );
            for w in c["warnings"].as_array().into_iter().flatten() {
                line.push_str(&format!("\n    warning: {}", w.as_str().unwrap_or("")));
            }
            if c["status"] == ConnectionStatus::RevokePending.as_str() {
                line.push_str(&format!(
                    "\n    revocation at the provider not confirmed yet (retried in the background): {}",
                    c["last_error"].as_str().unwrap_or("")
                ));
            }
            line
        })
    });
    Ok(())
}

pub fn disconnect(c: DisconnectArgs) -> Result<(), Error> {
    let api = Api::new(&c.admin)?;
    let path = format!(
        "/v1/connections/{}{}",
        c.connection_id,
        if c.force { "?force=true" } else { "" }
    );
    let (status, value) = api.call_raw(reqwest::Method::DELETE, &path, None)?;
    if !status.is_success() {
        if api.json {
            api.print(&value, |_| String::new());
        }
        // Non-zero exit with the provider's reason.
        return Err(refusal(status, &value));
    }
    api.print(&value, |v| {
        let revoked: Vec<&str> = v["revoked"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let revoked = if revoked.is_empty() {
            "nothing revoked".to_owned()
        } else {
            format!("revoked at the provider: {}", revoked.join(", "))
        };
        format!("disconnected {} ({revoked})\n", c.connection_id)
    });
    if let Some(w) = value["warning"].as_str() {
        eprintln!("airlock: warning: {w}");
    }
    Ok(())
}

pub fn machine_account(c: MachineAccountArgs) -> Result<(), Error> {
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
