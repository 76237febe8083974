//! `airlock sandbox`: create, list, delete.

use clap::Subcommand;
use serde_json::json;

use super::{rows, AdminArgs, Api};
use crate::Error;

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
        /// Whose connections it resolves (default: `default`).
        #[arg(long, default_value = airlock_vault::DEFAULT_ENVIRONMENT)]
        environment: String,
        /// A binding pinned to one named connection: `[VARIABLE=][PROVIDER:]NAME`
        /// (repeat; e.g. `github:work` gives GITHUB_TOKEN the work account,
        /// `GITHUB_PERSONAL_TOKEN=github:personal` another variable).
        #[arg(long = "connection", value_parser = connection_pin)]
        connections: Vec<airlock_vault::ConnectionPin>,
        /// Seconds its requests wait for a human (connect, reconnect, step-up)
        /// when they do not say (`Prefer: wait=N`).
        #[arg(long)]
        consent_wait: Option<u32>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    List(AdminArgs),
    /// Set the request rules of one of a sandbox's variables (replacing its
    /// provider's); no rule, default or flag goes back to the provider's.
    Rules {
        id: String,
        /// The variable, e.g. GITHUB_TOKEN.
        variable: String,
        /// `allow|deny METHOD /path-glob [query|mutation|subscription|* NAME]` (repeat; first match wins).
        #[arg(long = "rule")]
        rules: Vec<String>,
        /// When no rule matches (default: deny if a rule allows, else allow).
        #[arg(long, value_parser = ["allow", "deny"])]
        default: Option<String>,
        /// Refuse requests to the binding's hosts that do not carry its placeholder.
        #[arg(long)]
        require: bool,
        /// Log and audit what the rules would refuse; refuse nothing.
        #[arg(long)]
        dry_run: bool,
        /// Put the placeholder into requests to the binding's hosts that
        /// carry no credential at all (`on`), or never (`off`); left out:
        /// as the provider says. Alone, it keeps the provider's rules.
        #[arg(long, value_enum)]
        inject_when_absent: Option<Switch>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete a sandbox: its placeholders stop working.
    Delete {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `on` or `off`, for a binding's say that overrides its provider's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// `--connection [VARIABLE=][PROVIDER:]NAME`.
fn connection_pin(text: &str) -> Result<airlock_vault::ConnectionPin, String> {
    text.parse()
        .map_err(|e: airlock_vault::VaultError| e.to_string())
}

pub fn sandbox(c: SandboxCommand) -> Result<(), Error> {
    match c {
        SandboxCommand::Create {
            tenant,
            workspace,
            user,
            providers,
            secrets,
            environment,
            connections,
            consent_wait,
            admin,
        } => {
            let api = Api::new(&admin)?;
            let body = json!({ "tenant": tenant, "workspace": workspace, "user": user, "providers": providers, "secrets": secrets, "consent_wait_secs": consent_wait, "environment": environment, "connections": connections });
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
                        "{} tenant={} environment={} bindings={}",
                        s["id"].as_str().unwrap_or(""),
                        s["tenant"].as_str().unwrap_or(""),
                        s["environment"].as_str().unwrap_or(""),
                        s["bindings"]
                    )
                })
            });
        }
        SandboxCommand::Rules {
            id,
            variable,
            rules,
            default,
            require,
            dry_run,
            inject_when_absent,
            admin,
        } => {
            let api = Api::new(&admin)?;
            let mut body = json!({ "rules": rules, "require": require });
            if let Some(d) = default {
                body["default"] = json!(d);
            }
            if dry_run {
                body["mode"] = json!("dry_run");
            }
            if let Some(switch) = inject_when_absent {
                body["inject_when_absent"] = json!(switch == Switch::On);
            }
            let value = api.call(
                reqwest::Method::PUT,
                &format!("/v1/sandboxes/{id}/rules/{variable}"),
                Some(body),
            )?;
            api.print(&value, |v| {
                let mut spec = v["rules"].clone();
                let inject = spec
                    .as_object_mut()
                    .and_then(|o| o.remove("inject_when_absent"))
                    .and_then(|b| b.as_bool());
                let list = spec["rules"].as_array().map_or(0, Vec::len);
                let rules = if spec.as_object().is_some_and(|o| o.is_empty()) {
                    "the provider's rules".to_owned()
                } else {
                    format!("{list} rule(s) set")
                };
                let inject = match inject {
                    Some(true) => "; injects its placeholder when a request carries none",
                    Some(false) => "; never injects its placeholder",
                    None => "",
                };
                format!("{variable} of sandbox {id}: {rules}{inject}\n")
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

#[cfg(test)]
mod tests {
    use super::connection_pin;

    #[test]
    fn a_connection_pin_reads_variable_provider_and_name() {
        let pin = connection_pin("GITHUB_PERSONAL_TOKEN=github:personal").unwrap();
        assert_eq!(pin.variable.as_deref(), Some("GITHUB_PERSONAL_TOKEN"));
        assert_eq!(pin.provider.as_deref(), Some("github"));
        assert_eq!(pin.name, "personal");
        let pin = connection_pin("ci").unwrap();
        assert_eq!(
            (pin.variable, pin.provider, pin.name.as_str()),
            (None, None, "ci")
        );
        let err = connection_pin("github:").unwrap_err();
        assert!(err.contains("[VARIABLE=][PROVIDER:]NAME"), "{err}");
    }
}
