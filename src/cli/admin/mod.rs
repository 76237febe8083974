//! Operator commands over the vault's admin API, with the admin token
//! (`AIRLOCK_ADMIN_TOKEN`, or the data dir's `admin.token`).

mod connections;
mod providers;
mod sandboxes;
mod secrets;
mod tenants;

use std::path::PathBuf;

use airlock_vault_client::contract::ErrorAnswer;
use clap::Args;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::Value;

pub use connections::{
    connect, connect_complete, connections, disconnect, machine_account, ConnectArgs,
    ConnectCompleteArgs, DisconnectArgs, MachineAccountArgs,
};
pub use providers::{app, provider, AppCommand, ProviderCommand};
pub use sandboxes::{sandbox, SandboxCommand};
pub use secrets::{secret, SecretCommand};
pub use tenants::{tenant, TenantCommand};

use crate::app;
use crate::config::{Flags, Loaded, SecretSource};
use crate::Error;

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

/// The admin API at `base`, called with the admin token.
struct Api {
    base: String,
    token: secrecy::SecretString,
    json: bool,
}

impl Api {
    fn new(args: &AdminArgs) -> Result<Self, Error> {
        let loaded = Loaded::read(args.config.as_deref())?;
        let flags = Flags {
            data_dir: args.data_dir.clone(),
            ..Flags::default()
        };
        let data_dir = app::data_dir(&loaded.effective(&flags))?;
        Ok(Self {
            base: args
                .vault_url
                .clone()
                .unwrap_or_else(|| loaded.config.vault.api_url()),
            token: app::vault::admin_token(&loaded.vault_files(&data_dir))?,
            json: args.json,
        })
    }

    /// The JSON answer of a successful call; a refusal is an error.
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Error> {
        let (status, value) = self.call_raw(method, path, body)?;
        if status.is_success() {
            Ok(value)
        } else {
            Err(refusal(status, &value))
        }
    }

    /// The status and JSON body, whatever the status.
    fn call_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(reqwest::StatusCode, Value), Error> {
        app::runtime()?.block_on(async {
            let client = reqwest::Client::builder()
                .no_proxy()
                .build()
                .map_err(Error::AdminClient)?;
            let mut request = client
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(self.token.expose_secret());
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request
                .send()
                .await
                .map_err(|source| Error::VaultUnreachable {
                    url: self.base.clone(),
                    source,
                })?;
            let status = response.status();
            let value: Value = response.json().await.unwrap_or(Value::Null);
            Ok((status, value))
        })
    }

    /// The raw JSON with `--json`, else `text` of it.
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

/// The vault's error answer, read through the shared contract.
fn refusal(status: reqwest::StatusCode, value: &Value) -> Error {
    let answer = ErrorAnswer::deserialize(value).ok();
    Error::VaultAnswered {
        status,
        code: answer.as_ref().and_then(|a| a.code),
        message: answer.map_or_else(|| "no details".to_owned(), |a| a.error),
    }
}

/// A secret the operator passes by naming the variable that holds it.
fn secret_from_env(var: &str) -> Result<String, Error> {
    Ok(SecretSource::read_env(var)?.expose_secret().to_owned())
}

/// One line per element of a JSON array.
fn rows(value: &Value, f: impl Fn(&Value) -> String) -> String {
    value
        .as_array()
        .map(|a| a.iter().map(|v| f(v) + "\n").collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_refusal_carries_the_vault_s_reason() {
        let err = refusal(
            reqwest::StatusCode::NOT_FOUND,
            &json!({ "error": "no such connection" }),
        );
        assert_eq!(
            err.to_string(),
            "vault answered 404 Not Found: no such connection"
        );
        let err = refusal(
            reqwest::StatusCode::UNAUTHORIZED,
            &json!({ "code": "reconnect_needed", "error": "reconnect the account" }),
        );
        assert!(matches!(
            err,
            Error::VaultAnswered {
                code: Some(airlock_vault_client::ErrorCode::ReconnectNeeded),
                ..
            }
        ));
        let err = refusal(reqwest::StatusCode::BAD_GATEWAY, &Value::Null);
        assert_eq!(
            err.to_string(),
            "vault answered 502 Bad Gateway: no details"
        );
    }

    #[test]
    fn rows_are_one_line_each() {
        let out = rows(&json!([{ "n": "a" }, { "n": "b" }]), |v| {
            v["n"].as_str().unwrap().to_owned()
        });
        assert_eq!(out, "a\nb\n");
        assert_eq!(rows(&json!({}), |_| unreachable!()), "");
    }
}
