//! The operator's command line against a running airlock, key rotation, and
//! a proxy that gets its tokens from a remote vault.

use std::process::Command;

use serde_json::Value;

use super::vault::{acme_config, World};
use crate::support::oauth_provider::OAuthProvider;
use crate::support::{airlock, Airlock, TestCa};

const CLIENT_SECRET: &str = "cs_REALCLIENTSECRET_0123456789";

/// Runs `airlock ARGS` against `a`'s vault and data dir; returns stdout.
/// Runs an operator command against `a`'s vault.
pub(crate) fn run_cli(a: &Airlock, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let vault_url = a.vault_url();
    let mut cmd = Command::new(airlock::binary());
    cmd.args(args)
        .args([
            "--config",
            a.config_path.to_str().unwrap(),
            "--data-dir",
            a.data_dir.to_str().unwrap(),
        ])
        .args(["--vault-url", &vault_url])
        .env_remove("AIRLOCK_ADMIN_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run airlock")
}

pub(crate) fn cli(a: &Airlock, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run_cli(a, args, env);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "airlock {args:?} failed: {stderr}");
    assert!(!stdout.contains(CLIENT_SECRET) && !stderr.contains(CLIENT_SECRET));
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_drive_the_vault() {
    let ca = TestCa::new();
    let provider = OAuthProvider::start(
        &ca,
        &["auth.acme.test", "api.acme.test"],
        "airlock-test-client",
        CLIENT_SECRET,
    )
    .await;
    let airlock = Airlock::start(&acme_config(&ca, provider.port(), "", ""));
    let w = World {
        ca,
        provider,
        airlock,
    };
    let a = &w.airlock;

    let providers = cli(a, &["provider", "list"], &[]);
    for name in ["github", "google", "slack", "acme"] {
        assert!(providers.contains(name), "{providers}");
    }
    let saved = cli(
        a,
        &[
            "app",
            "set",
            "acme",
            "--client-id",
            "airlock-test-client",
            "--client-secret-env",
            "ACME_SECRET",
        ],
        &[("ACME_SECRET", CLIENT_SECRET)],
    );
    assert!(saved.contains("••••6789"), "{saved}");
    // Nothing connected yet: said, not an empty answer.
    assert_eq!(
        cli(a, &["connections"], &[]),
        "no connections yet (start one with `airlock connect PROVIDER`)\n"
    );
    // An OAuth scope given as the owner is refused, saying where it goes.
    let refused = cli_refused(a, &["connect", "acme", "--scope", "repo"]);
    assert!(
        refused.contains("\"repo\" is not an owner") && refused.contains("--oauth-scope repo"),
        "{refused}"
    );
    // An OAuth scope that reads as an owner is not guessed at.
    let refused = cli_refused(a, &["connect", "acme", "--scope", "user:email"]);
    assert!(
        refused.contains("ambiguous") && refused.contains("--oauth-scope user:email"),
        "{refused}"
    );
    // --owner is --scope's clearer name. stdout is the URL alone (scripts
    // read it); the redirect URI to list in the provider's app is beside it.
    let out = run_cli(a, &["connect", "acme", "--owner", "user:alice"], &[]);
    assert!(out.status.success());
    let url = String::from_utf8(out.stdout).unwrap();
    let said = String::from_utf8(out.stderr).unwrap();
    assert_eq!(url.lines().count(), 1, "{url}");
    assert!(
        said.contains(&format!(
            "the provider's app must allow the redirect URI {}/oauth/callback",
            a.vault_url()
        )),
        "{said}"
    );
    assert!(url.starts_with("https://auth.acme.test:"), "{url}");
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    let page = w.follow(url.trim()).await;
    assert!(page.contains("Connected"), "{page}");
    let listed = cli(a, &["connections"], &[]);
    assert!(
        listed.contains("acme") && listed.contains("user:alice") && listed.contains("connected"),
        "{listed}"
    );
    // With the granted scopes and when the token expires.
    assert!(
        listed.contains("[read write]") && listed.contains(" expires 20"),
        "{listed}"
    );

    let stored = cli(
        a,
        &[
            "secret",
            "add",
            "LINEAR_KEY",
            "--value-env",
            "VALUE",
            "--host",
            "api.linear.test",
        ],
        &[("VALUE", "lin_REAL_value_1234")],
    );
    assert!(stored.contains("LINEAR_KEY"), "{stored}");
    let created = cli(
        a,
        &[
            "sandbox",
            "create",
            "--user",
            "alice",
            "--provider",
            "acme",
            "--secret",
            "LINEAR_KEY",
            "--json",
        ],
        &[],
    );
    let created: Value = serde_json::from_str(&created).unwrap();
    assert!(created["env"]["ACME_TOKEN"]
        .as_str()
        .unwrap()
        .starts_with("miosa-tok-"));
    assert!(created["env"]["LINEAR_KEY"]
        .as_str()
        .unwrap()
        .starts_with("miosa-tok-"));
    assert!(created["proxy_url"]
        .as_str()
        .unwrap()
        .contains(created["id"].as_str().unwrap()));
    assert!(!created.to_string().contains("lin_REAL_value_1234"));
    // The sandbox holds a placeholder for the secret: not deleted under it.
    let sandbox_id = created["id"].as_str().unwrap().to_owned();
    let refused = cli_refused(a, &["secret", "delete", "LINEAR_KEY"]);
    assert!(
        refused.contains("still bound to 1 sandbox") && refused.contains(&sandbox_id),
        "{refused}"
    );
    assert!(cli(a, &["secret", "list"], &[]).contains("LINEAR_KEY"));

    let connections: Value =
        serde_json::from_str(&cli(a, &["connections", "--json"], &[])).unwrap();
    let id = connections[0]["id"].as_str().unwrap().to_owned();
    // The app refreshes and revokes that connection: not deleted under it.
    let refused = cli_refused(a, &["app", "delete", "acme"]);
    assert!(
        refused.contains("still used by 1 connection") && refused.contains(&id),
        "{refused}"
    );
    assert!(cli(a, &["app", "list"], &[]).contains("acme"));
    let gone = cli(a, &["disconnect", &id], &[]);
    assert!(
        gone.contains("refresh_token"),
        "revoked at the provider: {gone}"
    );
    assert!(!w.provider.revocations().is_empty());
    // Disconnected, the app goes; a second delete says it is not there.
    let deleted = cli(a, &["app", "delete", "acme"], &[]);
    assert!(deleted.contains("app for acme deleted"), "{deleted}");
    assert!(!cli(a, &["app", "list"], &[]).contains("acme"));
    let again = cli_refused(a, &["app", "delete", "acme"]);
    assert!(again.contains("not found"), "{again}");
    // The sandbox gone, so can the secret be.
    cli(a, &["sandbox", "delete", &sandbox_id], &[]);
    let deleted = cli(a, &["secret", "delete", "LINEAR_KEY"], &[]);
    assert!(deleted.contains("secret LINEAR_KEY deleted"), "{deleted}");
    assert!(!cli(a, &["secret", "list"], &[]).contains("LINEAR_KEY"));
    assert!(cli_refused(a, &["secret", "delete", "LINEAR_KEY"]).contains("not found"));
}

/// `airlock tenant`: white-label settings set piece by piece, shown, listed,
/// refused with the vault's reasons, and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_commands_keep_a_tenant_s_white_label_settings() {
    let w = super::vault::world("", "").await;
    let a = &w.airlock;
    assert!(cli(a, &["tenant", "list"], &[]).contains("no tenant has settings"));
    let saved = cli(
        a,
        &[
            "tenant",
            "set",
            "acme-corp",
            "--display-name",
            "Acme Corp",
            "--accent-color",
            "#0A7",
            "--support-url",
            "https://help.acme.example/",
            "--use-default-apps",
            "true",
        ],
        &[],
    );
    assert!(
        saved.contains("display_name: Acme Corp") && saved.contains("accent_color: #0a7"),
        "normalised by the vault: {saved}"
    );
    // Only what is given changes; an empty value unsets.
    cli(
        a,
        &[
            "tenant",
            "set",
            "acme-corp",
            "--redirect-uri",
            "https://app.acme.example/oauth/callback",
            "--support-url",
            "",
        ],
        &[],
    );
    let shown: Value =
        serde_json::from_str(&cli(a, &["tenant", "show", "acme-corp", "--json"], &[])).unwrap();
    assert_eq!(shown["display_name"], "Acme Corp");
    assert_eq!(shown["use_default_apps"], true);
    assert!(shown["support_url"].is_null(), "{shown}");
    assert_eq!(
        shown["effective_redirect_uri"],
        "https://app.acme.example/oauth/callback"
    );
    let text = cli(a, &["tenant", "show", "acme-corp"], &[]);
    assert!(
        text.contains("redirect URI its flows use: https://app.acme.example/oauth/callback"),
        "{text}"
    );
    // Every bad value is named at once; nothing changes.
    let refused = cli_refused(
        a,
        &[
            "tenant",
            "set",
            "acme-corp",
            "--accent-color",
            "red",
            "--return-url",
            "http://app.acme.example/",
        ],
    );
    assert!(
        refused.contains("accent_color \"red\" must be #rgb or #rrggbb")
            && refused.contains("return_url must be https://"),
        "{refused}"
    );
    assert!(cli(a, &["tenant", "show", "acme-corp"], &[]).contains("accent_color: #0a7"));
    let listed = cli(a, &["tenant", "list"], &[]);
    assert!(
        listed.contains("acme-corp") && listed.contains("name=Acme Corp"),
        "{listed}"
    );
    assert!(cli(a, &["tenant", "delete", "acme-corp"], &[]).contains("deleted"));
    assert!(cli_refused(a, &["tenant", "delete", "acme-corp"]).contains("not found"));
}

/// Runs a command that must fail; its stderr.
pub(crate) fn cli_refused(a: &Airlock, args: &[&str]) -> String {
    let out = run_cli(a, args, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "airlock {args:?} succeeded: {stderr}"
    );
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_master_key_keeps_every_token_usable() {
    let ca = TestCa::new();
    let provider = OAuthProvider::start(
        &ca,
        &["auth.acme.test", "api.acme.test"],
        "airlock-test-client",
        CLIENT_SECRET,
    )
    .await;
    let cfg = acme_config(&ca, provider.port(), "", "");
    let mut first = Airlock::start(&cfg);
    let data_dir = first.data_dir.clone();
    let w = World {
        ca,
        provider,
        airlock: Airlock::restart_in(&cfg, &data_dir),
    };
    first.stop();
    w.connect("tenant").await;
    let old_key = std::fs::read_to_string(data_dir.join("master.key")).unwrap();
    let World {
        ca,
        provider,
        mut airlock,
    } = w;
    airlock.stop();

    let out = Command::new(airlock::binary())
        .args([
            "vault",
            "rotate-key",
            "--config",
            airlock.config_path.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("re-wrapped"), "{said}");
    let new_key = std::fs::read_to_string(data_dir.join("master.key")).unwrap();
    assert_ne!(old_key, new_key);
    assert!(std::fs::read_dir(&data_dir).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("retired")));

    let again = Airlock::restart_in(&cfg, &data_dir);
    let w = World {
        ca,
        provider,
        airlock: again,
    };
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 200, "{body}");
    drop(first);
    drop(airlock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_alone_gets_tokens_from_a_remote_vault() {
    let ca = TestCa::new();
    let provider = OAuthProvider::start(
        &ca,
        &["auth.acme.test", "api.acme.test"],
        "airlock-test-client",
        CLIENT_SECRET,
    )
    .await;
    let env = [
        ("AIRLOCK_SERVICE_TOKEN", "service-token-remote-proxy-1"),
        ("AIRLOCK_ADMIN_TOKEN", "admin-token-remote-proxy-01"),
    ];
    let cfg = acme_config(&ca, provider.port(), "", "require_auth = true");
    let vault = Airlock::start_cmd("vault", &cfg, &env, None);
    let vault_url = vault.proxy_url.clone();
    let proxy_cfg = acme_config(
        &ca,
        provider.port(),
        &format!("url = {vault_url:?}"),
        "require_auth = true",
    );
    let proxy = Airlock::start_cmd("proxy", &proxy_cfg, &env, None);
    let w = World {
        ca,
        provider,
        airlock: vault,
    };
    w.connect("tenant").await;
    let (_, created) = super::vault::api(
        &w.airlock,
        "POST",
        "/v1/sandboxes",
        Some(r#"{"providers":["acme"]}"#.into()),
        None,
    )
    .await;
    // The proxy URL with the sandbox's credentials; the CA it trusts is the proxy's.
    let sandbox_env = super::fleet::through(&proxy, &created);
    let (status, body) = w.sandbox_get(&sandbox_env, "/api/me").await;
    assert_eq!(status, 200, "{body}");
    assert!(w.provider.api_authorizations()[0].starts_with("Bearer acme_at_"));
    // The sandbox's status comes from the remote vault too.
    let status_env = sandbox_env.clone();
    let out = crate::support::blocking(move || {
        crate::support::clients::curl(&status_env, &["https://airlock.internal/v1/status/acme"])
    })
    .await;
    let doc: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", out.stdout, out.stderr));
    assert_eq!(doc["sandbox"], created["id"]);
    assert_eq!(doc["credential"]["state"], "connected", "{doc}");
    assert!(!proxy.logs().contains(CLIENT_SECRET));
}

#[test]
fn version_help_completions_and_man_page() {
    let run = |args: &[&str]| {
        let out = Command::new(airlock::binary()).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "airlock {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(run(&["--version"]).starts_with("airlock "));
    let help = run(&["--help"]);
    for cmd in [
        "up", "proxy", "vault", "ca", "env", "connect", "sandbox", "config",
    ] {
        assert!(help.contains(cmd), "{help}");
    }
    assert!(run(&["completions", "bash"]).contains("_airlock"));
    assert!(run(&["man"]).contains(".TH airlock"));
}

#[test]
fn config_check_reports_every_error_with_lines() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[proxy]\nallowed_ports = []\n\n[[secret]]\nname = \"X\"\nvalue = \"super-secret-value\\n\"\nhosts = []\n").unwrap();
    let out = Command::new(airlock::binary())
        .args(["config", "check", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("allowed_ports is empty"), "{err}");
    assert!(
        err.contains("line 4: secret \"X\": hosts is empty"),
        "{err}"
    );
    assert!(err.contains("control characters"), "{err}");
    assert!(!err.contains("super-secret-value"), "{err}");
}

/// Runs `airlock up ARGS` in `dir` (no config from the environment, every
/// listener on port 0) until it has printed the environment block; that
/// block, and all it said on stderr.
fn up_block(dir: &std::path::Path, args: &[&str]) -> (Vec<String>, String) {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;

    let mut child = Command::new(airlock::binary())
        .current_dir(dir)
        .env_remove("AIRLOCK_CONFIG")
        .env_remove("AIRLOCK_DATA_DIR")
        .env("HOME", dir)
        .arg("up")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .args([
            "--vault-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut block = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .take(100)
    {
        let line = line.unwrap();
        if line.is_empty() {
            break;
        }
        block.push(line);
    }
    child.kill().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    child.wait().unwrap();
    (block, err)
}

/// A first `airlock up` with no config file, started with a relative data
/// dir: the environment it prints names the CA by an absolute path (a
/// sandbox resolves it from another directory), stderr says what to do next,
/// and the vault's database and data dir are its owner's only.
#[test]
fn a_first_up_without_config_prints_absolute_paths_and_the_next_step() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let (block, err) = up_block(dir.path(), &["--data-dir", "data"]);
    let data = dir.path().canonicalize().unwrap().join("data");
    let cert = block
        .iter()
        .find_map(|l| l.strip_prefix("export SSL_CERT_FILE="))
        .unwrap_or_else(|| panic!("no SSL_CERT_FILE in {block:?}; stderr: {err}"));
    let cert = cert.trim_matches('\'');
    assert!(
        std::path::Path::new(cert).is_absolute() && cert.starts_with(data.to_str().unwrap()),
        "{cert} is not under {}",
        data.display()
    );
    assert!(
        err.contains("the sandbox gets no credentials yet"),
        "stderr: {err}"
    );
    assert!(
        block.iter().all(|l| !l.contains("credentials")),
        "the hint is never in the environment block: {block:?}"
    );
    let db = std::fs::metadata(data.join("airlock.db")).unwrap();
    assert_eq!(db.permissions().mode() & 0o777, 0o600);
    let dir = std::fs::metadata(&data).unwrap();
    assert_eq!(dir.permissions().mode() & 0o777, 0o700, "the data dir");
}

/// `database_url = "sqlite:///path"` with no `?mode=rwc`: the database is
/// created (0600) rather than refused with "unable to open database file".
#[test]
fn a_sqlite_url_without_a_mode_creates_the_database() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("elsewhere/vault.db");
    std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
    let cfg = dir.path().join("airlock.toml");
    std::fs::write(
        &cfg,
        format!("[vault]\ndatabase_url = \"sqlite://{}\"\n", db.display()),
    )
    .unwrap();
    let (block, err) = up_block(
        dir.path(),
        &["--config", cfg.to_str().unwrap(), "--data-dir", "data"],
    );
    assert!(
        block.iter().any(|l| l.starts_with("export HTTPS_PROXY=")),
        "up did not start: {block:?}\n{err}"
    );
    assert!(!err.contains("unable to open database file"), "{err}");
    let meta = std::fs::metadata(&db).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert!(meta.len() > 0, "migrated");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(!dir.path().join("data/airlock.db").exists());
}

/// A config file named by a relative path that gives a relative `data_dir`
/// (relative to the file): `airlock env` names the CA files by absolute
/// paths, which a sandbox started elsewhere can open.
#[test]
fn env_with_a_relative_config_and_data_dir_prints_absolute_ca_paths() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    std::fs::write(
        dir.path().join("conf/airlock.toml"),
        "data_dir = \"state\"\n",
    )
    .unwrap();
    let out = Command::new(airlock::binary())
        .current_dir(dir.path())
        .env_remove("AIRLOCK_CONFIG")
        .env_remove("AIRLOCK_DATA_DIR")
        .env("HOME", dir.path())
        .args(["env", "--config", "conf/airlock.toml", "--format", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let env: Value = serde_json::from_slice(&out.stdout).unwrap();
    let state = dir.path().canonicalize().unwrap().join("conf/state");
    for var in ["SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO"] {
        let path = env[var]
            .as_str()
            .unwrap_or_else(|| panic!("{var} in {env}"));
        assert!(
            std::path::Path::new(path).is_absolute() && path.starts_with(state.to_str().unwrap()),
            "{var}={path} is not under {}",
            state.display()
        );
        assert!(std::path::Path::new(path).is_file(), "{var}={path} exists");
    }
}

/// `airlock env` prints placeholders only: it must not need the client
/// secret of an `[[app]]` (which `up` and `config check` do need).
#[test]
fn env_needs_no_app_client_secret() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("airlock.toml");
    std::fs::write(
        &cfg,
        "[[app]]\nprovider = \"github\"\nclient_id = \"Iv1.abc\"\nclient_secret_env = \"GH_APP_SECRET_FOR_ENV_TEST\"\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(airlock::binary())
            .current_dir(dir.path())
            .env_remove("GH_APP_SECRET_FOR_ENV_TEST")
            .env_remove("AIRLOCK_CONFIG")
            .env_remove("AIRLOCK_DATA_DIR")
            .env("HOME", dir.path())
            .args(args)
            .args(["--config", cfg.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = run(&["env", "--data-dir", "data"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("GITHUB_TOKEN="), "{stdout}");
    // The commands that use the secret still say it is missing.
    let check = run(&["config", "check"]);
    assert!(!check.status.success());
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("GH_APP_SECRET_FOR_ENV_TEST"),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
