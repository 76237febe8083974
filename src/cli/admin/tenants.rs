//! `airlock tenant`: a tenant's white-label settings (branding, its own
//! redirect URI, where a connect may return, the default tenant's apps).

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{rows, AdminArgs, Api};
use crate::Error;

#[derive(Subcommand)]
pub enum TenantCommand {
    /// List the tenants that have settings.
    List(AdminArgs),
    /// Show a tenant's settings and the redirect URI its flows use.
    Show {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Change a tenant's settings: only the options given change; an empty
    /// value (`--logo-url ""`) unsets one. The vault checks them all.
    Set {
        name: String,
        #[command(flatten)]
        settings: TenantSettingsArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Forget a tenant's settings (its apps and connections stay).
    Delete {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// The settings `airlock tenant set` changes; `None`: left as they are.
#[derive(Args, Debug, Default, PartialEq)]
pub struct TenantSettingsArgs {
    /// The name its pages show instead of "airlock".
    #[arg(long)]
    pub display_name: Option<String>,
    /// `#rgb` or `#rrggbb`.
    #[arg(long)]
    pub accent_color: Option<String>,
    /// `https://…`, or a `data:image/…;base64,…` of at most 64 KiB.
    #[arg(long)]
    pub logo_url: Option<String>,
    /// A help page its pages link to.
    #[arg(long)]
    pub support_url: Option<String>,
    /// The platform's page a connect may return to (`return_to` must be on its origin).
    #[arg(long)]
    pub return_url: Option<String>,
    /// Its own OAuth redirect URI (its handler calls `airlock connect-complete`
    /// or `POST /v1/connect/complete`); empty: the vault's callback.
    #[arg(long)]
    pub redirect_uri: Option<String>,
    /// Whether its connects may use the default tenant's OAuth apps.
    #[arg(long, value_name = "true|false")]
    pub use_default_apps: Option<bool>,
}

/// The fields `PUT /v1/tenants/NAME` takes (it replaces them all).
const FIELDS: [&str; 7] = [
    "display_name",
    "accent_color",
    "logo_url",
    "support_url",
    "return_url",
    "redirect_uri",
    "use_default_apps",
];

impl TenantSettingsArgs {
    /// The body of the `PUT`: `current` (a `GET`'s answer) with the given
    /// options over it; an empty text unsets its field.
    pub fn over(&self, current: &Value) -> Value {
        let mut body = serde_json::Map::new();
        for field in FIELDS {
            if let Some(v) = current.get(field).filter(|v| !v.is_null()) {
                body.insert(field.to_owned(), v.clone());
            }
        }
        for (field, given) in [
            ("display_name", &self.display_name),
            ("accent_color", &self.accent_color),
            ("logo_url", &self.logo_url),
            ("support_url", &self.support_url),
            ("return_url", &self.return_url),
            ("redirect_uri", &self.redirect_uri),
        ] {
            match given.as_deref() {
                None => {}
                Some("") => {
                    body.remove(field);
                }
                Some(v) => {
                    body.insert(field.to_owned(), json!(v));
                }
            }
        }
        if let Some(on) = self.use_default_apps {
            body.insert("use_default_apps".to_owned(), json!(on));
        }
        Value::Object(body)
    }
}

/// A tenant's settings, one per line.
fn describe(v: &Value) -> String {
    let mut out = format!("tenant {}\n", v["tenant"].as_str().unwrap_or(""));
    for field in FIELDS {
        let text = match &v[field] {
            Value::Null => "-".to_owned(),
            Value::String(s) if s.starts_with("data:") => {
                format!("inline image ({} bytes)", s.len())
            }
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.push_str(&format!("  {field}: {text}\n"));
    }
    out.push_str(&format!(
        "  redirect URI its flows use: {}\n",
        v["effective_redirect_uri"].as_str().unwrap_or("")
    ));
    out
}

pub fn tenant(c: TenantCommand) -> Result<(), Error> {
    match c {
        TenantCommand::List(admin) => {
            let api = Api::new(&admin)?;
            let value = api.call(reqwest::Method::GET, "/v1/tenants", None)?;
            api.print(&value, |v| {
                let lines = rows(v, |t| {
                    format!(
                        "{:<16} name={} redirect_uri={} default_apps={}",
                        t["tenant"].as_str().unwrap_or(""),
                        t["display_name"].as_str().unwrap_or("-"),
                        t["effective_redirect_uri"].as_str().unwrap_or(""),
                        t["use_default_apps"]
                    )
                });
                if lines.is_empty() {
                    "no tenant has settings; add some with: airlock tenant set NAME --display-name …\n"
                        .to_owned()
                } else {
                    lines
                }
            });
        }
        TenantCommand::Show { name, admin } => {
            let api = Api::new(&admin)?;
            let value = api.call(reqwest::Method::GET, &format!("/v1/tenants/{name}"), None)?;
            api.print(&value, describe);
        }
        TenantCommand::Set {
            name,
            settings,
            admin,
        } => {
            let api = Api::new(&admin)?;
            let path = format!("/v1/tenants/{name}");
            // A tenant never set answers its defaults.
            let current = api.call(reqwest::Method::GET, &path, None)?;
            let value = api.call(reqwest::Method::PUT, &path, Some(settings.over(&current)))?;
            api.print(&value, |v| format!("saved\n{}", describe(v)));
        }
        TenantCommand::Delete { name, admin } => {
            let api = Api::new(&admin)?;
            let value = api.call(
                reqwest::Method::DELETE,
                &format!("/v1/tenants/{name}"),
                None,
            )?;
            api.print(&value, |_| format!("settings of tenant {name} deleted\n"));
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
        tenant: TenantCommand,
    }

    fn parse(args: &[&str]) -> Result<TenantCommand, clap::Error> {
        Cli::try_parse_from([&["airlock"], args].concat()).map(|c| c.tenant)
    }

    #[test]
    fn set_takes_each_setting_and_a_boolean_for_the_default_apps() {
        let Ok(TenantCommand::Set { name, settings, .. }) = parse(&[
            "set",
            "acme",
            "--display-name",
            "Acme Corp",
            "--accent-color",
            "#0a7",
            "--logo-url",
            "",
            "--use-default-apps",
            "true",
        ]) else {
            panic!("set parses");
        };
        assert_eq!(name, "acme");
        assert_eq!(
            settings,
            TenantSettingsArgs {
                display_name: Some("Acme Corp".into()),
                accent_color: Some("#0a7".into()),
                logo_url: Some(String::new()),
                use_default_apps: Some(true),
                ..TenantSettingsArgs::default()
            }
        );
        assert!(parse(&["set", "acme", "--use-default-apps", "maybe"]).is_err());
        assert!(parse(&["set"]).is_err(), "the tenant is required");
        assert!(matches!(
            parse(&["show", "acme"]),
            Ok(TenantCommand::Show { name, .. }) if name == "acme"
        ));
        assert!(matches!(parse(&["list"]), Ok(TenantCommand::List(_))));
        assert!(matches!(
            parse(&["delete", "acme"]),
            Ok(TenantCommand::Delete { .. })
        ));
    }

    #[test]
    fn set_changes_only_what_it_is_given_and_an_empty_value_unsets() {
        let current = json!({
            "tenant": "acme", "display_name": "Old", "accent_color": "#111111",
            "logo_url": "https://acme.example/logo.png", "support_url": null,
            "return_url": "https://app.acme.example/", "redirect_uri": null,
            "use_default_apps": true, "effective_redirect_uri": "https://v/oauth/callback",
        });
        let args = TenantSettingsArgs {
            display_name: Some("New".into()),
            logo_url: Some(String::new()),
            ..TenantSettingsArgs::default()
        };
        assert_eq!(
            args.over(&current),
            json!({
                "display_name": "New", "accent_color": "#111111",
                "return_url": "https://app.acme.example/", "use_default_apps": true,
            }),
            "no read-only field is sent back"
        );
        let off = TenantSettingsArgs {
            use_default_apps: Some(false),
            ..TenantSettingsArgs::default()
        };
        assert_eq!(off.over(&current)["use_default_apps"], json!(false));
    }
}
