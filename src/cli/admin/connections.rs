//! `airlock connect`, `connections`, `disconnect` and `machine-account`.

use std::time::{Duration, Instant};

use airlock_vault::{ConnectionStatus, FlowOutcome, FlowView, MAX_FLOW_WAIT};
use clap::Args;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{refusal, rows, AdminArgs, Api};
use crate::config::SecretSource;
use crate::Error;
use airlock_vault_client::ExposeSecret;

#[derive(Args)]
pub struct ConnectArgs {
    pub provider: String,
    /// Whose connection this is: tenant (the default), workspace:NAME or
    /// user:NAME. OAuth scopes go in --oauth-scope.
    #[arg(long, value_name = "OWNER", value_parser = owner_scope, conflicts_with = "scope")]
    pub owner: Option<String>,
    /// The same as --owner (its first name). A value that is also an OAuth
    /// scope (GitHub's user:email) is refused as ambiguous.
    #[arg(long, value_name = "OWNER", value_parser = owner_scope)]
    pub scope: Option<String>,
    #[arg(long, default_value = airlock_vault::DEFAULT_TENANT)]
    pub tenant: String,
    /// The environment the connection is made in, with that environment's
    /// OAuth app (default: `default`; with --sandbox, the sandbox's).
    #[arg(long)]
    pub environment: Option<String>,
    /// A name for the connection, so sandboxes can be pinned to it
    /// (`airlock sandbox create --connection github:work`); reconnecting a
    /// name replaces that connection's grant.
    #[arg(long)]
    pub name: Option<String>,
    /// Scopes to request (default: the provider's).
    #[arg(long = "oauth-scope")]
    pub scopes: Vec<String>,
    /// Connect at the scope this sandbox resolves (its user, else its
    /// workspace, else its tenant) instead of --owner/--tenant.
    #[arg(long, conflicts_with_all = ["owner", "scope", "tenant"])]
    pub sandbox: Option<String>,
    /// After printing the URL, wait for the consent and print the outcome
    /// (`connected: ID`, `denied: ERROR (…)`, `failed: …`, `expired`,
    /// `cancelled`); the exit code is 0 only for connected.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (default: until the
    /// flow expires).
    #[arg(long, requires = "wait", value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Where the browser goes after a successful consent: on the origin of
    /// the tenant's return_url (white-label).
    #[arg(long, value_name = "URL")]
    pub return_to: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `airlock connect-complete`: what a platform's own callback handler got
/// from the provider, passed on to `POST /v1/connect/complete`.
#[derive(Args)]
pub struct ConnectCompleteArgs {
    /// The `state` the provider sent back. States and codes are URL-safe
    /// base64, so they may begin with `-`.
    #[arg(long, allow_hyphen_values = true)]
    pub state: String,
    /// The authorization `code` the provider sent back.
    #[arg(
        long,
        allow_hyphen_values = true,
        required_unless_present = "error",
        conflicts_with = "error"
    )]
    pub code: Option<String>,
    /// The provider's `error` instead of a code (e.g. access_denied).
    #[arg(long)]
    pub error: Option<String>,
    #[arg(long, requires = "error")]
    pub error_description: Option<String>,
    /// Refuse unless the flow is this tenant's.
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

pub fn connect_complete(c: ConnectCompleteArgs) -> Result<(), Error> {
    let api = Api::new(&c.admin)?;
    let mut body = json!({ "state": c.state });
    for (key, value) in [
        ("code", &c.code),
        ("error", &c.error),
        ("error_description", &c.error_description),
        ("tenant", &c.tenant),
    ] {
        if let Some(v) = value {
            body[key] = json!(v);
        }
    }
    let value = api.call(reqwest::Method::POST, "/v1/connect/complete", Some(body))?;
    api.print(&value, |v| {
        format!(
            "connected: {} ({} of tenant {}, flow {})\n",
            v["connection"]["id"].as_str().unwrap_or(""),
            v["connection"]["provider"].as_str().unwrap_or(""),
            v["connection"]["tenant"].as_str().unwrap_or(""),
            v["flow_id"].as_str().unwrap_or("-")
        )
    });
    Ok(())
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

/// A machine account in one call: without --provider, --token-url,
/// --expose-as-env and --host make a provider of the account's name.
#[derive(Args)]
#[command(group = clap::ArgGroup::new("secret").required(true).args(["client_secret_env", "client_secret_file"]))]
pub struct MachineAccountArgs {
    pub name: String,
    /// An existing provider (its token URL, variable and hosts are the defaults).
    #[arg(long)]
    pub provider: Option<String>,
    #[arg(long)]
    pub client_id: String,
    /// Name of an environment variable holding the client secret.
    #[arg(long)]
    pub client_secret_env: Option<String>,
    /// A file holding the client secret.
    #[arg(long)]
    pub client_secret_file: Option<std::path::PathBuf>,
    #[arg(long)]
    pub token_url: Option<String>,
    #[arg(long = "oauth-scope")]
    pub scopes: Vec<String>,
    /// The sandbox's variable for this account (default: the provider's);
    /// several accounts of one provider each need their own.
    #[arg(long)]
    pub expose_as_env: Option<String>,
    /// A host its token may be sent to (repeat; default: the provider's).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    #[arg(long, default_value = airlock_vault::DEFAULT_TENANT)]
    pub tenant: String,
    #[arg(long, default_value = airlock_vault::DEFAULT_ENVIRONMENT)]
    pub environment: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `--scope` names an owner; a value that is not one is most often an OAuth
/// scope given to the wrong flag, so the error says where it belongs.
fn owner_scope(value: &str) -> Result<String, String> {
    airlock_vault::Scope::parse(value)
        .map(|_| value.to_owned())
        .map_err(|_| {
            format!(
                "{value:?} is not an owner: --owner (or --scope) says whose connection \
                 this is (tenant, workspace:NAME or user:NAME); to request the OAuth \
                 scope {value:?}, use --oauth-scope {value}"
            )
        })
}

/// OAuth scopes that read as owners (`user:NAME`): given to `--scope`, they
/// most likely meant `--oauth-scope`. GitHub's, plus any catalog default.
fn owner_shaped_oauth_scopes() -> Vec<String> {
    let mut known: Vec<String> = ["user:email", "user:follow"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    for p in airlock_vault::Catalog::built_in().all() {
        known.extend(
            p.scopes
                .iter()
                .filter(|s| airlock_vault::Scope::parse(s).is_ok())
                .cloned(),
        );
    }
    known
}

impl ConnectArgs {
    /// The owner: `--owner`, else `--scope` unless its value is also an
    /// OAuth scope, else the tenant.
    fn owner(&self) -> Result<String, Error> {
        if let Some(owner) = &self.owner {
            return Ok(owner.clone());
        }
        let Some(scope) = &self.scope else {
            return Ok("tenant".to_owned());
        };
        if owner_shaped_oauth_scopes().contains(scope) {
            return Err(Error::Usage(format!(
                "--scope {scope} is ambiguous: {scope} is an OAuth scope, and as --scope it would \
                 make the connection belong to {scope}. Say --oauth-scope {scope} to request the \
                 scope, or --owner {scope} for that owner"
            )));
        }
        Ok(scope.clone())
    }
}

pub fn connect(c: ConnectArgs) -> Result<(), Error> {
    let owner = c.owner()?;
    let api = Api::new(&c.admin)?;
    let (path, mut body) = match &c.sandbox {
        Some(sandbox) => (
            "/v1/connect-flows",
            json!({ "provider": c.provider, "sandbox": sandbox }),
        ),
        None => (
            "/v1/connections",
            json!({ "provider": c.provider, "scope": owner, "tenant": c.tenant }),
        ),
    };
    if !c.scopes.is_empty() {
        body["scopes"] = json!(c.scopes);
    }
    if let Some(environment) = &c.environment {
        body["environment"] = json!(environment);
    }
    if let Some(name) = &c.name {
        body["name"] = json!(name);
    }
    if let Some(return_to) = &c.return_to {
        body["return_to"] = json!(return_to);
    }
    let value = api.call(reqwest::Method::POST, path, Some(body))?;
    api.print(&value, |v| {
        format!("{}\n", v["authorization_url"].as_str().unwrap_or(""))
    });
    // stdout stays the URL alone (scripts capture it); the redirect URI the
    // provider's app settings must list goes beside it.
    if let (false, Some(redirect)) = (api.json, value["redirect_uri"].as_str()) {
        eprintln!("airlock: the provider's app must allow the redirect URI {redirect}");
    }
    if !c.wait {
        return Ok(());
    }
    let id = value["id"].as_str().unwrap_or_default().to_owned();
    let timeout = c.timeout.map_or_else(
        || {
            // Until the flow's state expires, when the vault says `expired`.
            let left = value["expires_at"].as_i64().unwrap_or(0) - airlock_vault::store::now();
            Duration::from_secs(left.max(0) as u64 + 2)
        },
        Duration::from_secs,
    );
    if !api.json {
        eprintln!(
            "airlock: waiting up to {} s for the consent (connect flow {id})",
            timeout.as_secs()
        );
    }
    let flow = wait_for_flow(&api, &id, timeout)?;
    api.print(&json!(flow), flow_line);
    match flow.outcome {
        FlowOutcome::Connected => Ok(()),
        outcome => Err(Error::ConnectNotCompleted { id, outcome }),
    }
}

/// Long-polls the flow until it ends or `timeout` runs out, in calls of at
/// most the vault's longest wait.
fn wait_for_flow(api: &Api, id: &str, timeout: Duration) -> Result<FlowView, Error> {
    let deadline = Instant::now() + timeout;
    let mut rounds = 0;
    loop {
        // Whole seconds, rounded up, so the last call still waits.
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        let value = api.call(
            reqwest::Method::GET,
            &format!(
                "/v1/connect-flows/{id}?wait={}",
                wait.min(MAX_FLOW_WAIT.as_secs())
            ),
            None,
        )?;
        let flow = FlowView::deserialize(&value).map_err(|e| {
            Error::Usage(format!(
                "the vault's answer about connect flow {id} is unreadable: {e}"
            ))
        })?;
        rounds += 1;
        // Bounded in time, and in calls should the vault answer early.
        let spent = rounds > timeout.as_secs() / MAX_FLOW_WAIT.as_secs() + 8;
        if flow.outcome != FlowOutcome::Pending || Instant::now() >= deadline || spent {
            return Ok(flow);
        }
    }
}

/// The outcome as one line: `connected: ID`, `denied: ERROR (DESCRIPTION)`,
/// `failed: REASON`, or the outcome's name.
fn flow_line(v: &Value) -> String {
    let text = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    let outcome = text("outcome");
    let line = match FlowOutcome::deserialize(&v["outcome"]) {
        Ok(FlowOutcome::Connected) => format!("{outcome}: {}", text("connection_id")),
        Ok(FlowOutcome::Denied) => match v["provider_error_description"].as_str() {
            Some(d) => format!("{outcome}: {} ({d})", text("provider_error")),
            None => format!("{outcome}: {}", text("provider_error")),
        },
        Ok(FlowOutcome::Failed) => format!("{outcome}: {}", text("reason")),
        _ => outcome,
    };
    line + "\n"
}

pub fn connections(args: AdminArgs) -> Result<(), Error> {
    let api = Api::new(&args)?;
    let value = api.call(reqwest::Method::GET, "/v1/connections", None)?;
    api.print(&value, connection_rows);
    Ok(())
}

/// One line per connection (id, provider, owner scope, status, kind, the
/// granted OAuth scopes, when the token expires), with warnings under it;
/// a sentence when there is none.
fn connection_rows(v: &Value) -> String {
    if v.as_array().is_some_and(Vec::is_empty) {
        return "no connections yet (start one with `airlock connect PROVIDER`)\n".to_owned();
    }
    rows(v, |c| {
        let scopes: Vec<&str> = c["scopes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let expires = c["expires_at"]
            .as_i64()
            .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .map_or_else(|| "no expiry".to_owned(), |t| format!("expires {t}"));
        // The provider, with the connection's name when it has one.
        let provider = match c["name"].as_str() {
            Some(name) => format!("{}/{name}", c["provider"].as_str().unwrap_or("")),
            None => c["provider"].as_str().unwrap_or("").to_owned(),
        };
        let mut line = format!(
            "{} {:<10} {:<12} {:<18} {:<16} {:<18} {} [{}]",
            c["id"].as_str().unwrap_or(""),
            c["environment"].as_str().unwrap_or(""),
            provider,
            c["scope"].as_str().unwrap_or(""),
            c["status"].as_str().unwrap_or(""),
            c["kind"].as_str().unwrap_or(""),
            expires,
            scopes.join(" ")
        );
        if let Some(variable) = c["variable"].as_str() {
            line.push_str(&format!("\n    variable: {variable}"));
        }
        if let Some(hosts) = c["hosts"].as_array() {
            let hosts: Vec<&str> = hosts.iter().filter_map(Value::as_str).collect();
            line.push_str(&format!("\n    hosts: {}", hosts.join(" ")));
        }
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
    let source =
        match (&c.client_secret_env, &c.client_secret_file) {
            (Some(var), _) => SecretSource::Env(var.clone()),
            (None, Some(path)) => SecretSource::File(path.clone()),
            (None, None) => return Err(Error::Usage(
                "give the client secret with --client-secret-env VAR or --client-secret-file PATH"
                    .into(),
            )),
        };
    let secret = source.read("--client-secret-file")?;
    let mut body = json!({
        "name": c.name, "client_id": c.client_id,
        "client_secret": secret.expose_secret(), "tenant": c.tenant, "scopes": c.scopes,
        "environment": c.environment,
    });
    if let Some(provider) = c.provider {
        body["provider"] = json!(provider);
    }
    if let Some(url) = c.token_url {
        body["token_url"] = json!(url);
    }
    if let Some(env) = c.expose_as_env {
        body["expose_as_env"] = json!(env);
    }
    if !c.hosts.is_empty() {
        body["hosts"] = json!(c.hosts);
    }
    let value = api.call(reqwest::Method::POST, "/v1/machine-accounts", Some(body))?;
    api.print(&value, machine_account_line);
    Ok(())
}

/// `machine account NAME (ID) of PROVIDER in ENVIRONMENT: STATUS`, and the
/// variable and hosts it has of its own.
fn machine_account_line(v: &Value) -> String {
    let text = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    let mut out = format!(
        "machine account {} ({}) of {} in environment {}: {}\n",
        text("name"),
        text("id"),
        text("provider"),
        text("environment"),
        text("status")
    );
    if let Some(variable) = v["variable"].as_str() {
        out.push_str(&format!(
            "  sandboxes get it as {variable} (airlock sandbox create --connection {}:{})\n",
            text("provider"),
            text("name")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oauth_scope_given_as_owner_says_where_it_belongs() {
        for ok in ["tenant", "workspace:eng", "user:alice"] {
            assert_eq!(owner_scope(ok).unwrap(), ok);
        }
        let err = owner_scope("repo").unwrap_err();
        assert!(err.contains("--oauth-scope repo"), "{err}");
        assert!(owner_scope("read:user").is_err());
    }

    #[test]
    fn owner_comes_from_owner_or_scope_and_an_oauth_scope_as_scope_is_refused() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            connect: ConnectArgs,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from([&["airlock", "github"], args].concat()).map(|c| c.connect)
        };
        let owner = |args: &[&str]| parse(args).unwrap().owner();
        assert_eq!(owner(&[]).unwrap(), "tenant");
        assert_eq!(owner(&["--owner", "user:alice"]).unwrap(), "user:alice");
        assert_eq!(
            owner(&["--scope", "workspace:eng"]).unwrap(),
            "workspace:eng"
        );
        // GitHub's user:email reads as the user "email": not guessed.
        let err = owner(&["--scope", "user:email"]).unwrap_err().to_string();
        assert!(
            err.contains("ambiguous")
                && err.contains("--oauth-scope user:email")
                && err.contains("--owner user:email"),
            "{err}"
        );
        // Said with --owner, it is the owner.
        assert_eq!(owner(&["--owner", "user:email"]).unwrap(), "user:email");
        // Not an owner at all: refused while parsing, pointing at --oauth-scope.
        let err = parse(&["--owner", "repo"]).err().unwrap().to_string();
        assert!(err.contains("--oauth-scope repo"), "{err}");
        // One of the two, and neither with --sandbox.
        assert!(parse(&["--owner", "tenant", "--scope", "tenant"]).is_err());
        assert!(parse(&["--owner", "user:a", "--sandbox", "sb"]).is_err());
    }

    #[test]
    fn a_state_and_code_that_begin_with_a_dash_are_values_not_flags() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            complete: ConnectCompleteArgs,
        }
        // URL-safe base64 starts with `-` one time in 64 (CI met one).
        let c = Cli::try_parse_from([
            "airlock",
            "--state",
            "-GimnngQXX6Q",
            "--code",
            "-9Ezny2o",
            "--tenant",
            "acme",
        ])
        .unwrap()
        .complete;
        assert_eq!(c.state, "-GimnngQXX6Q");
        assert_eq!(c.code.as_deref(), Some("-9Ezny2o"));
        assert_eq!(c.tenant.as_deref(), Some("acme"));
        // A missing value is still a clear refusal, not the next flag as a value.
        assert!(Cli::try_parse_from(["airlock", "--code", "x", "--state"]).is_err());
    }

    #[test]
    fn a_flow_s_outcome_is_one_line() {
        let line = |v: Value| flow_line(&v);
        assert_eq!(
            line(json!({ "outcome": "connected", "connection_id": "conn_1" })),
            "connected: conn_1\n"
        );
        assert_eq!(
            line(
                json!({ "outcome": "denied", "provider_error": "access_denied",
                         "provider_error_description": "the user said no" })
            ),
            "denied: access_denied (the user said no)\n"
        );
        assert_eq!(
            line(
                json!({ "outcome": "denied", "provider_error": "access_denied",
                         "provider_error_description": null })
            ),
            "denied: access_denied\n"
        );
        assert_eq!(
            line(json!({ "outcome": "failed", "reason": "code refused" })),
            "failed: code refused\n"
        );
        assert_eq!(line(json!({ "outcome": "expired" })), "expired\n");
        assert_eq!(line(json!({ "outcome": "cancelled" })), "cancelled\n");
    }

    #[test]
    fn a_machine_account_is_said_once_with_its_variable() {
        let out = machine_account_line(&json!({
            "id": "conn_1", "name": "ci", "provider": "acme", "environment": "default",
            "status": "connected", "kind": "client_credentials", "variable": "ACME_CI_TOKEN"
        }));
        assert_eq!(
            out,
            "machine account ci (conn_1) of acme in environment default: connected\n  \
             sandboxes get it as ACME_CI_TOKEN (airlock sandbox create --connection acme:ci)\n"
        );
        let plain = machine_account_line(&json!({
            "id": "conn_2", "name": "bot", "provider": "acme", "environment": "production",
            "status": "connected"
        }));
        assert_eq!(plain.lines().count(), 1, "{plain}");
        assert!(!plain.contains("connected (connected)"));
    }

    #[test]
    fn connections_show_environment_name_and_own_variable() {
        let out = connection_rows(&json!([{
            "id": "c1", "environment": "production", "provider": "acme", "name": "work",
            "scope": "tenant", "status": "connected", "kind": "client_credentials",
            "scopes": [], "expires_at": null, "warnings": [],
            "variable": "ACME_WORK_TOKEN", "hosts": ["api.acme.test"]
        }]));
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("c1 production acme/work "), "{out}");
        assert_eq!(lines[1], "    variable: ACME_WORK_TOKEN");
        assert_eq!(lines[2], "    hosts: api.acme.test");
    }

    #[test]
    fn connections_list_scopes_and_expiry_and_say_when_there_are_none() {
        assert_eq!(
            connection_rows(&json!([])),
            "no connections yet (start one with `airlock connect PROVIDER`)\n"
        );
        let out = connection_rows(&json!([{
            "id": "c1", "provider": "github", "scope": "tenant:default",
            "status": "connected", "kind": "user",
            "scopes": ["read:user", "repo"], "expires_at": 1_800_000_000,
            "warnings": []
        }, {
            "id": "c2", "provider": "acme", "scope": "machine:ci",
            "status": "connected", "kind": "client_credentials",
            "scopes": [], "expires_at": null, "warnings": []
        }]));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].contains("expires 2027-01-15T08:00:00Z"), "{out}");
        assert!(lines[0].ends_with("[read:user repo]"), "{out}");
        assert!(lines[1].contains("no expiry"), "{out}");
    }
}
