//! The environment a sandbox needs: proxy variables, CA variables under every
//! name common runtimes read, and one variable per credential placeholder.

use std::path::Path;

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EnvFormat {
    /// `export KEY='value'` lines for a POSIX shell.
    Sh,
    /// `KEY=value` lines (docker `--env-file`, compose `env_file`).
    Dotenv,
    /// One JSON object.
    Json,
    /// A Kubernetes container `env:` list.
    K8s,
}

pub use airlock_vault_client::secret_kind::is_reserved_variable as is_reserved;
use airlock_vault_client::secret_kind::{ADDING_CA_VARS, REPLACING_CA_VARS};

pub const NO_PROXY: &str = "localhost,127.0.0.1,::1";

/// Names that occur more than once in `vars`, each once, in order.
pub fn duplicate_names(vars: &[(String, String)]) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut dups = Vec::new();
    for (k, _) in vars {
        if !seen.insert(k.as_str()) && !dups.contains(k) {
            dups.push(k.clone());
        }
    }
    dups
}

pub fn build(
    proxy_url: &str,
    ca_pem: &Path,
    bundle_pem: &Path,
    placeholders: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for var in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
        env.push((var.to_owned(), proxy_url.to_owned()));
    }
    for var in ["NO_PROXY", "no_proxy"] {
        env.push((var.to_owned(), NO_PROXY.to_owned()));
    }
    for var in REPLACING_CA_VARS {
        env.push((var.to_owned(), bundle_pem.display().to_string()));
    }
    for var in ADDING_CA_VARS {
        env.push((var.to_owned(), ca_pem.display().to_string()));
    }
    // One value per name, whatever callers pass: the first wins (callers
    // refuse collisions before this; see `duplicate_names`).
    for (k, v) in placeholders {
        if !env.iter().any(|(e, _)| e == k) {
            env.push((k.clone(), v.clone()));
        }
    }
    env
}

pub fn render(env: &[(String, String)], format: EnvFormat) -> String {
    match format {
        EnvFormat::Sh => env
            .iter()
            .map(|(k, v)| format!("export {k}='{}'\n", v.replace('\'', "'\\''")))
            .collect(),
        EnvFormat::Dotenv => env.iter().map(|(k, v)| format!("{k}={v}\n")).collect(),
        EnvFormat::Json => {
            let map: serde_json::Map<String, serde_json::Value> = env
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            serde_json::to_string_pretty(&map).expect("strings serialise") + "\n"
        }
        EnvFormat::K8s => {
            let mut out = String::from("env:\n");
            for (k, v) in env {
                // JSON strings are valid YAML double-quoted scalars.
                out.push_str(&format!(
                    "  - name: {k}\n    value: {}\n",
                    serde_json::Value::String(v.clone())
                ));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ca_variable_is_set_and_split_by_kind() {
        let env = build(
            "http://127.0.0.1:8080",
            Path::new("/d/ca.pem"),
            Path::new("/d/ca-bundle.pem"),
            &[("GITHUB_TOKEN".into(), "miosa-tok-x".into())],
        );
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("SSL_CERT_FILE"), Some("/d/ca-bundle.pem"));
        assert_eq!(get("NODE_EXTRA_CA_CERTS"), Some("/d/ca.pem"));
        assert_eq!(get("http_proxy"), Some("http://127.0.0.1:8080"));
        assert_eq!(get("GITHUB_TOKEN"), Some("miosa-tok-x"));
        assert!(
            render(&env, EnvFormat::Sh).contains("export HTTPS_PROXY='http://127.0.0.1:8080'\n")
        );
        assert!(render(&env, EnvFormat::K8s)
            .contains("  - name: GITHUB_TOKEN\n    value: \"miosa-tok-x\"\n"));
        let json: serde_json::Value = serde_json::from_str(&render(&env, EnvFormat::Json)).unwrap();
        assert_eq!(json["PIP_CERT"], "/d/ca-bundle.pem");
    }

    #[test]
    fn one_value_per_name() {
        let placeholders = [
            ("GITHUB_TOKEN".to_owned(), "miosa-tok-a".to_owned()),
            ("GITHUB_TOKEN".to_owned(), "miosa-tok-b".to_owned()),
            ("HTTPS_PROXY".to_owned(), "http://evil".to_owned()),
        ];
        assert_eq!(duplicate_names(&placeholders), vec!["GITHUB_TOKEN"]);
        let env = build("http://p", Path::new("/c"), Path::new("/b"), &placeholders);
        assert!(duplicate_names(&env).is_empty());
        assert!(env.contains(&("GITHUB_TOKEN".into(), "miosa-tok-a".into())));
        assert!(env.contains(&("HTTPS_PROXY".into(), "http://p".into())));
        assert!(is_reserved("ssl_cert_file") && !is_reserved("GITHUB_TOKEN"));
    }

    #[test]
    fn sh_quoting_survives_quotes() {
        let out = render(&[("A".into(), "it's".into())], EnvFormat::Sh);
        assert_eq!(out, "export A='it'\\''s'\n");
    }
}
