//! `airlock secret`: static secrets kept sealed in the vault.

use airlock_vault_client::SecretKind;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{rows, secret_from_env, AdminArgs, Api};
use crate::Error;

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Store a secret (sealed) for sandboxes of a tenant: a static token, AWS
    /// SigV4 keys or an HMAC signing secret (docs/SIGNING.md). Real values
    /// are read from the environment variables named, never from the command line.
    Add(Box<AddArgs>),
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

#[derive(Args)]
pub struct AddArgs {
    name: String,
    /// static (default), aws_sigv4 or hmac.
    #[arg(long, value_parser = parse_kind, default_value = "static")]
    kind: SecretKind,
    /// static, hmac: name of an environment variable holding the value.
    #[arg(long)]
    value_env: Option<String>,
    /// An allowed host (repeat).
    #[arg(long = "host", required = true)]
    hosts: Vec<String>,
    #[arg(long = "swap-in")]
    swap_in: Vec<String>,
    #[arg(long, default_value = airlock_vault::DEFAULT_TENANT)]
    tenant: String,
    #[command(flatten)]
    aws: AwsArgs,
    #[command(flatten)]
    hmac: HmacArgs,
    #[command(flatten)]
    admin: AdminArgs,
}

/// `--kind aws_sigv4`: the real keys, each read from the variable named.
#[derive(Args)]
pub struct AwsArgs {
    /// aws_sigv4: variable holding the real access key id.
    #[arg(long)]
    access_key_id_env: Option<String>,
    /// aws_sigv4: variable holding the real secret access key.
    #[arg(long)]
    secret_access_key_env: Option<String>,
    /// aws_sigv4: variable holding the real session token (temporary credentials).
    #[arg(long)]
    session_token_env: Option<String>,
    /// aws_sigv4: the sandbox's variable for the placeholder secret access
    /// key (default AWS_SECRET_ACCESS_KEY).
    #[arg(long)]
    secret_variable: Option<String>,
    /// aws_sigv4: the sandbox's variable for the placeholder session token
    /// (default AWS_SESSION_TOKEN).
    #[arg(long)]
    session_token_variable: Option<String>,
    /// Refused by the vault: STS roles are config-only (docs/SIGNING.md).
    #[arg(long, hide = true)]
    role_arn: Option<String>,
}

/// `--kind hmac`: how requests are signed (as a config `[[secret]]` says it).
#[derive(Args)]
pub struct HmacArgs {
    /// hmac: the header carrying the signature (X-Signature).
    #[arg(long)]
    signature_header: Option<String>,
    /// hmac: the string signed, with real line breaks (bash:
    /// $'{method}\n{path}\n{body_sha256}'); fields as in docs/SIGNING.md.
    #[arg(long)]
    signature_template: Option<String>,
    /// hmac: sha256 (default), sha384, sha512 or sha1.
    #[arg(long)]
    signature_algorithm: Option<String>,
    /// hmac: hex (default) or base64.
    #[arg(long)]
    signature_encoding: Option<String>,
    /// hmac: text before the signature in its header (sha256=).
    #[arg(long)]
    signature_prefix: Option<String>,
    /// hmac: a header with the signing time in Unix seconds.
    #[arg(long)]
    timestamp_header: Option<String>,
}

fn parse_kind(s: &str) -> Result<SecretKind, String> {
    SecretKind::parse(s).ok_or_else(|| format!("kind {s:?} must be static, aws_sigv4 or hmac"))
}

/// The body of `POST /v1/secrets`: the settings given, real values read
/// from their variables. The vault checks them all.
fn add_body(a: AddArgs) -> Result<Value, Error> {
    let AddArgs {
        name,
        kind,
        value_env,
        hosts,
        swap_in,
        tenant,
        aws,
        hmac,
        admin: _,
    } = a;
    let mut body = json!({ "name": name, "kind": kind, "hosts": hosts, "tenant": tenant });
    for (key, var) in [
        ("value", value_env),
        ("access_key_id", aws.access_key_id_env),
        ("secret_access_key", aws.secret_access_key_env),
        ("session_token", aws.session_token_env),
    ] {
        if let Some(var) = var {
            body[key] = json!(secret_from_env(&var)?);
        }
    }
    for (key, setting) in [
        ("secret_variable", aws.secret_variable),
        ("session_token_variable", aws.session_token_variable),
        ("role_arn", aws.role_arn),
        ("signature_header", hmac.signature_header),
        ("signature_template", hmac.signature_template),
        ("signature_algorithm", hmac.signature_algorithm),
        ("signature_encoding", hmac.signature_encoding),
        ("signature_prefix", hmac.signature_prefix),
        ("timestamp_header", hmac.timestamp_header),
    ] {
        if let Some(setting) = setting {
            body[key] = json!(setting);
        }
    }
    if !swap_in.is_empty() {
        body["swap_in"] = json!(swap_in);
    }
    Ok(body)
}

pub fn secret(c: SecretCommand) -> Result<(), Error> {
    match c {
        SecretCommand::Add(add) => {
            let api = Api::new(&add.admin)?;
            let body = add_body(*add)?;
            let value = api.call(reqwest::Method::POST, "/v1/secrets", Some(body))?;
            api.print(&value, |v| {
                format!(
                    "secret {} ({}) stored for hosts {}\n",
                    v["name"].as_str().unwrap_or(""),
                    v["kind"].as_str().unwrap_or("static"),
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
                        "{}/{} kind={} hosts={}",
                        s["tenant"].as_str().unwrap_or(""),
                        s["name"].as_str().unwrap_or(""),
                        s["kind"].as_str().unwrap_or("static"),
                        s["hosts"]
                    )
                })
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        secret: SecretCommand,
    }

    fn add(args: &[&str]) -> Result<AddArgs, clap::Error> {
        match Cli::try_parse_from([&["airlock", "add"], args].concat())?.secret {
            SecretCommand::Add(a) => Ok(*a),
            _ => unreachable!("add parses as add"),
        }
    }

    #[test]
    fn an_unknown_kind_is_refused_naming_the_known_ones() {
        let err = add(&["K", "--kind", "sigv4", "--host", "s3.test"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("kind \"sigv4\" must be static, aws_sigv4 or hmac"),
            "{err}"
        );
    }

    #[test]
    fn signing_flags_become_the_api_s_fields_and_values_come_from_variables() {
        // PATH: a variable every test process has, standing in for a key.
        let path = std::env::var("PATH").unwrap();
        let body = add_body(
            add(&[
                "AWS_ACCESS_KEY_ID",
                "--kind",
                "aws_sigv4",
                "--access-key-id-env",
                "PATH",
                "--secret-access-key-env",
                "PATH",
                "--secret-variable",
                "MY_SECRET",
                "--host",
                "s3.test",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(body["kind"], "aws_sigv4");
        assert_eq!(body["access_key_id"], path.as_str());
        assert_eq!(body["secret_access_key"], path.as_str());
        assert_eq!(body["secret_variable"], "MY_SECRET");
        assert!(body.get("value").is_none() && body.get("session_token").is_none());

        let body = add_body(
            add(&[
                "SIGNING",
                "--kind",
                "hmac",
                "--value-env",
                "PATH",
                "--signature-header",
                "X-Signature",
                "--signature-template",
                "{method}\n{path}",
                "--signature-prefix",
                "sha256=",
                "--host",
                "api.test",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(body["kind"], "hmac");
        assert_eq!(body["signature_header"], "X-Signature");
        assert_eq!(body["signature_template"], "{method}\n{path}");
        assert_eq!(body["signature_prefix"], "sha256=");

        // An unset variable is named; nothing is sent.
        let err = add_body(
            add(&[
                "K",
                "--kind",
                "aws_sigv4",
                "--access-key-id-env",
                "AIRLOCK_TEST_NEVER_SET_KEY_ID",
                "--host",
                "s3.test",
            ])
            .unwrap(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("AIRLOCK_TEST_NEVER_SET_KEY_ID"), "{err}");
    }
}
