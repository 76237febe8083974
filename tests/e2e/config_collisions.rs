//! One value per sandbox variable: a `[[secret]]` and a provider (or two
//! secrets) claiming the same name is a config error, and `airlock up`
//! refuses to start rather than export the name twice.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::vault::{acme_config, api};
use crate::support::oauth_provider::OAuthProvider;
use crate::support::{airlock, Airlock, TestCa};

use crate::support::airlock::config_check as check;

/// Runs `airlock up` and expects it to exit with an error within 30 s: its stderr.
fn up_refuses(config: &std::path::Path, data_dir: &std::path::Path) -> String {
    let mut child = Command::new(airlock::binary())
        .args(["up", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--vault-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            assert!(!status.success(), "airlock up started");
            assert!(
                !String::from_utf8_lossy(&out.stdout).contains("export "),
                "no environment printed"
            );
            return String::from_utf8_lossy(&out.stderr).into_owned();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("airlock up kept running despite a variable collision");
}

const SECRET_VALUE: &str = "ghp_REALSTATICSECRETVALUE0123456789";

#[test]
fn a_secret_and_a_provider_claiming_one_variable_is_a_config_error() {
    let config = format!(
        r#"
[[secret]]
name = "GITHUB_TOKEN"
value = "{SECRET_VALUE}"
hosts = ["api.github.com"]

[[app]]
provider = "github"
client_id = "Iv1.abc"
client_secret = "cs_github_secret_value_0000"
"#
    );
    let (ok, err) = check(&config);
    assert!(!ok, "{err}");
    assert!(
        err.contains("variable GITHUB_TOKEN is claimed by [[secret]] \"GITHUB_TOKEN\" (line 2)")
            && err.contains("provider \"github\" (built-in catalog, env \"GITHUB_TOKEN\"; its [[app]] is at line 7)"),
        "{err}"
    );
    assert!(!err.contains(SECRET_VALUE) && !err.contains("cs_github_secret_value"));

    // Without the app, the catalog's github is not in use: no collision.
    let alone = config.split("[[app]]").next().unwrap().to_owned();
    let (ok, err) = check(&alone);
    assert!(ok, "{err}");

    // `airlock up` refuses too, before printing any environment.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airlock.toml");
    std::fs::write(&path, &config).unwrap();
    let err = up_refuses(&path, &dir.path().join("data"));
    assert!(err.contains("variable GITHUB_TOKEN is claimed by"), "{err}");
}

#[test]
fn two_secrets_or_a_custom_provider_env_colliding_name_both() {
    let config = r#"
[[secret]]
name = "API_KEY"
value = "one-value-aaaaaaaaaaaa"
hosts = ["a.example.com"]

[[secret]]
name = "API_KEY"
value = "two-value-bbbbbbbbbbbb"
hosts = ["b.example.com"]

[[provider]]
name = "acme"
authorize_url = "https://auth.acme.test/authorize"
token_url = "https://auth.acme.test/token"
hosts = ["api.acme.test"]
inject = "bearer"
env = "API_KEY"

[[secret]]
name = "HTTPS_PROXY"
value = "three-value-cccccccccc"
hosts = ["c.example.com"]
"#;
    let (ok, err) = check(config);
    assert!(!ok, "{err}");
    assert!(
        err.contains("variable API_KEY is claimed by [[secret]] \"API_KEY\" (line 2) and by [[secret]] \"API_KEY\" (line 7) and by [[provider]] \"acme\" (line 12, env = \"API_KEY\")"),
        "{err}"
    );
    assert!(
        err.contains("HTTPS_PROXY is a variable airlock sets itself"),
        "{err}"
    );
    for v in ["one-value", "two-value", "three-value"] {
        assert!(!err.contains(v), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_secret_colliding_with_a_provider_stops_up() {
    let ca = TestCa::new();
    let provider = OAuthProvider::start(
        &ca,
        &["auth.acme.test", "api.acme.test"],
        "airlock-test-client",
        "cs_REALCLIENTSECRET_0123456789",
    )
    .await;
    let config = acme_config(&ca, provider.port(), "", "");
    let mut a = Airlock::start(&config);
    // Stored through the API, so the config file cannot see it.
    let body =
        format!(r#"{{"name":"ACME_TOKEN","value":"{SECRET_VALUE}","hosts":["api.acme.test"]}}"#);
    let (status, answer) = api(&a, "POST", "/v1/secrets", Some(body), None).await;
    assert_eq!(status, 201, "{answer}");
    a.stop();
    let err = up_refuses(&a.config_path, &a.data_dir);
    assert!(
        err.contains(
            "variable ACME_TOKEN is claimed by secret \"ACME_TOKEN\" and by provider \"acme\""
        ),
        "{err}"
    );
    assert!(!err.contains(SECRET_VALUE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_secret_colliding_with_a_provider_added_through_the_api_stops_up() {
    let config = format!(
        "[[secret]]\nname = \"GITHUB_TOKEN\"\nvalue = \"{SECRET_VALUE}\"\nhosts = [\"api.github.com\"]\n"
    );
    let mut a = Airlock::start(&config);
    let body = r#"{"provider":"github","client_id":"Iv1.abc","client_secret":"cs_github_secret_value_0000"}"#;
    let (status, answer) = api(&a, "PUT", "/v1/apps", Some(body.into()), None).await;
    assert_eq!(status, 200, "{answer}");
    a.stop();
    let err = up_refuses(&a.config_path, &a.data_dir);
    assert!(
        err.contains("variable GITHUB_TOKEN is claimed by a config file [[secret]] and by the vault's provider \"github\""),
        "{err}"
    );
    assert!(!err.contains(SECRET_VALUE) && !err.contains("cs_github_secret_value"));
}
