//! The console in a real browser (Debian's chromium via playwright-core):
//! connect against the fake provider, see Connected; the provider refuses a
//! refresh, see Reconnect needed; reconnect; disconnect. And everything else
//! an operator does there (`tests/node/console_manage.test.mjs`): connect at
//! workspace level with chosen scopes, re-authorize, apps, providers (OAuth
//! 1.0a too), the config file's secrets, environments, sandboxes, tenants'
//! white-label settings and connecting for a tenant, machine accounts, vault
//! secrets deleted. Screenshots land in `target/console-screenshots/`; each
//! one's path is printed.

use std::path::PathBuf;
use std::time::Duration;

use super::vault::{acme_config, World};
use crate::support::clients::{curl, node};
use crate::support::oauth_provider::OAuthProvider;
use crate::support::{blocking, Airlock, TestCa, NODE_MODULES};

fn browser_present() -> bool {
    crate::support::browser_present("the console browser test")
}

/// Signs in to the console with the admin token (the session cookie kept in
/// `jar`) and returns the dashboard's HTML.
pub(crate) fn console_dashboard(base: &str, token: &str, jar: &str) -> String {
    curl(
        &[],
        &[
            "-s",
            "-o",
            "/dev/null",
            "-c",
            jar,
            "--data",
            &format!("token={token}"),
            &format!("{base}/console/login"),
        ],
    );
    curl(&[], &["-s", "-b", jar, &format!("{base}/")]).stdout
}

async fn run_phase(w: &World, phase: &str, shots: &std::path::Path) -> String {
    let script = if phase == "manage" {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/node/console_manage.test.mjs"
        )
    } else {
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/console.test.mjs")
    };
    let env = vec![
        (
            "CONSOLE_URL".to_owned(),
            format!("{}/", w.airlock.vault_url()),
        ),
        ("ADMIN_TOKEN".to_owned(), w.airlock.admin_token()),
        ("PHASE".to_owned(), phase.to_owned()),
        ("SCREENSHOTS".to_owned(), shots.display().to_string()),
        (
            "RESOLVER_RULES".to_owned(),
            "MAP auth.acme.test 127.0.0.1".to_owned(),
        ),
        ("NODE_PATH".to_owned(), NODE_MODULES.to_owned()),
    ];
    let out = blocking(move || node(&env, &format!("import({:?})", script))).await;
    assert!(
        out.success(),
        "console phase {phase} failed:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// The fake OAuth provider the console's `acme` app talks to.
async fn acme_provider(ca: &TestCa) -> OAuthProvider {
    OAuthProvider::start(
        ca,
        &["auth.acme.test", "api.acme.test"],
        "airlock-test-client",
        "cs_REALCLIENTSECRET_0123456789",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_reconnect_and_disconnect_in_a_browser() {
    if !browser_present() {
        return;
    }
    let ca = TestCa::new();
    let provider = acme_provider(&ca).await;
    let airlock = Airlock::start(&acme_config(
        &ca,
        provider.port(),
        "refresh_interval_secs = 3600",
        "",
    ));
    let w = World {
        ca,
        provider,
        airlock,
    };
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    assert!(run_phase(&w, "connect", &shots).await.contains("connected"));
    let (status, _) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 200);

    // The provider refuses the next refresh: the connection needs reconnecting.
    w.provider.set_refuse_refresh(true);
    w.provider.set_expire_all_access_tokens();
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 401, "{body}");
    w.provider.set_refuse_refresh(false);

    assert!(run_phase(&w, "reconnect", &shots)
        .await
        .contains("reconnected-and-disconnected"));
    let (status, _) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 401, "disconnected: no account");
    for name in [
        "connect-connected",
        "reconnect-reconnect-needed",
        "reconnect-disconnected",
    ] {
        let path = shots.join(format!("{name}.png"));
        assert!(path.exists(), "screenshot {name}");
        println!("screenshot: {}", path.display());
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_locked_down() {
    let ca = TestCa::new();
    let provider = acme_provider(&ca).await;
    let airlock = Airlock::start(&acme_config(&ca, provider.port(), "", ""));
    let base = airlock.vault_url();
    let token = airlock.admin_token();
    let out = blocking(move || {
        let jar = tempfile::NamedTempFile::new().unwrap();
        let jar_path = jar.path().display().to_string();
        let login = format!("token={token}");
        (
            curl(&[], &["-s", "-i", &format!("{base}/")]),
            curl(
                &[],
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--data",
                    "token=wrong",
                    &format!("{base}/console/login"),
                ],
            ),
            curl(
                &[],
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "-c",
                    &jar_path,
                    "--data",
                    &login,
                    &format!("{base}/console/login"),
                ],
            ),
            curl(
                &[],
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-b",
                    &jar_path,
                    "--data",
                    "provider=acme&client_id=x&csrf=forged",
                    &format!("{base}/console/apps"),
                ],
            ),
            curl(&[], &["-s", "-b", &jar_path, &format!("{base}/")]),
        )
    })
    .await;
    let (landing, wrong, _, forged, dashboard) = out;
    assert!(
        landing
            .stdout
            .contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{}",
        landing.stdout
    );
    assert!(landing.stdout.contains("x-frame-options: DENY"));
    assert!(landing.stdout.contains("Sign in"));
    assert_eq!(wrong.stdout, "401");
    assert_eq!(
        forged.stdout, "403",
        "a form without the session's CSRF token is refused"
    );
    assert!(
        dashboard.stdout.contains("Accounts") && dashboard.stdout.contains("acme"),
        "{}",
        dashboard.stdout
    );
    assert!(
        dashboard.stdout.contains("••••6789"),
        "the app secret shows only its last four"
    );
    assert!(
        !dashboard.stdout.contains("cs_REALCLIENTSECRET"),
        "the client secret never appears"
    );
    assert!(!dashboard.stdout.contains("<script>"), "no inline script");
}

/// Every state-changing form of the console refuses a request without the
/// session's CSRF token (403), or without a session (the sign-in page), and
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_form_needs_the_session_and_its_csrf_token() {
    let w = super::vault::world("", "").await;
    w.connect("tenant").await;
    let base = w.airlock.vault_url();
    let token = w.airlock.admin_token();
    let forms: [(&str, &str); 12] = [
        (
            "/console/connect",
            "provider=acme&owner=workspace&owner_name=ws1&scopes=read",
        ),
        (
            "/console/apps",
            "provider=acme&client_id=forged&environment=forged",
        ),
        (
            "/console/apps/delete",
            "provider=acme&tenant=default&environment=default",
        ),
        (
            "/console/providers",
            "name=forged&token_url=https%3A%2F%2Fa.test%2Ft&hosts=a.test&env=FORGED_TOKEN",
        ),
        (
            "/console/providers/duplicate",
            "source=acme&name=forged-copy",
        ),
        ("/console/providers/delete", "name=acme"),
        ("/console/sandboxes", "workspace=forged&provider=acme"),
        ("/console/sandboxes/delete", "id=default"),
        ("/console/secrets/delete", "name=FORGED&tenant=default"),
        (
            "/console/machine-accounts",
            "name=forged&provider=acme&client_id=airlock-test-client&client_secret=x",
        ),
        ("/console/tenants", "tenant=forged&display_name=Forged"),
        ("/console/tenants/delete", "tenant=forged"),
    ];
    let (_, before_sandboxes) =
        super::vault::api(&w.airlock, "GET", "/v1/sandboxes", None, None).await;
    let codes = blocking(move || {
        let jar = tempfile::NamedTempFile::new().unwrap();
        let jar_path = jar.path().display().to_string();
        curl(
            &[],
            &[
                "-s",
                "-o",
                "/dev/null",
                "-c",
                &jar_path,
                "--data",
                &format!("token={token}"),
                &format!("{base}/console/login"),
            ],
        );
        let mut codes = Vec::new();
        for (path, form) in forms {
            let status = |args: &[&str]| {
                let mut all = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}"];
                all.extend_from_slice(args);
                curl(&[], &all).stdout
            };
            let url = format!("{base}{path}");
            let forged = format!("{form}&csrf=forged");
            codes.push((
                path,
                status(&["-b", &jar_path, "--data", &forged, &url]),
                status(&["-b", &jar_path, "--data", form, &url]),
                status(&["--data", &forged, &url]),
            ));
        }
        codes
    })
    .await;
    for (path, forged, missing, no_session) in codes {
        assert_eq!(forged, "403", "{path}: a forged CSRF token");
        assert_eq!(missing, "403", "{path}: no CSRF token");
        assert_eq!(no_session, "401", "{path}: no session");
    }
    let (_, conns) = super::vault::api(&w.airlock, "GET", "/v1/connections", None, None).await;
    assert_eq!(conns.as_array().unwrap().len(), 1, "{conns}");
    assert_eq!(conns[0]["scope"], "tenant");
    let (_, apps) = super::vault::api(&w.airlock, "GET", "/v1/apps", None, None).await;
    assert_eq!(apps.as_array().unwrap().len(), 1, "{apps}");
    assert_eq!(apps[0]["client_id"], "airlock-test-client");
    let (_, providers) = super::vault::api(&w.airlock, "GET", "/v1/providers", None, None).await;
    assert!(
        providers
            .as_array()
            .unwrap()
            .iter()
            .all(|p| !p["name"].as_str().unwrap().starts_with("forged")),
        "{providers}"
    );
    let (_, sandboxes) = super::vault::api(&w.airlock, "GET", "/v1/sandboxes", None, None).await;
    assert_eq!(sandboxes, before_sandboxes);
    let (_, tenants) = super::vault::api(&w.airlock, "GET", "/v1/tenants", None, None).await;
    assert_eq!(
        tenants,
        serde_json::json!([]),
        "no tenant from a forged form"
    );
}

/// What an operator reads of a connection (granted scopes, expiry, last
/// refresh) and of the apps (the redirect URI to register), and an app
/// deleted from the console: refused while a connection uses it, then done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_what_a_connection_holds_and_deletes_apps() {
    let w = super::vault::world("", "").await;
    w.connect("tenant").await;
    let base = w.airlock.vault_url();
    let token = w.airlock.admin_token();
    let jar = tempfile::NamedTempFile::new().unwrap();
    let jar_path = jar.path().display().to_string();
    let (b, j) = (base.clone(), jar_path.clone());
    let dashboard = blocking(move || console_dashboard(&b, &token, &j)).await;
    assert!(
        dashboard.contains("<td class=\"scopes\">read write</td>"),
        "{dashboard}"
    );
    assert!(
        dashboard.contains(" UTC</td><td>never</td>"),
        "expiry, and no refresh yet: {dashboard}"
    );
    assert!(
        dashboard.contains(&format!(
            "<code class=\"redirect-uri\">{base}/oauth/callback</code>"
        )),
        "{dashboard}"
    );
    let csrf = dashboard
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token")
        .to_owned();
    let delete = move |b: String, j: String, csrf: String| {
        let form = format!("provider=acme&tenant=default&environment=default&csrf={csrf}");
        curl(
            &[],
            &[
                "-s",
                "-w",
                "\n%{http_code}",
                "-b",
                &j,
                "--data",
                &form,
                &format!("{b}/console/apps/delete"),
            ],
        )
    };
    let (b, j, c) = (base.clone(), jar_path.clone(), csrf.clone());
    let refused = blocking(move || delete(b, j, c)).await.stdout;
    assert!(
        refused.ends_with("\n409"),
        "refused while a connection uses it: {refused}"
    );
    let (_, apps) = super::vault::api(&w.airlock, "GET", "/v1/apps", None, None).await;
    assert_eq!(apps.as_array().unwrap().len(), 1, "nothing lost: {apps}");

    let (_, conns) = super::vault::api(&w.airlock, "GET", "/v1/connections", None, None).await;
    let id = conns[0]["id"].as_str().unwrap().to_owned();
    let (status, _) = super::vault::api(
        &w.airlock,
        "DELETE",
        &format!("/v1/connections/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (b, j, c) = (base.clone(), jar_path.clone(), csrf);
    let deleted = blocking(move || delete(b, j, c)).await.stdout;
    assert!(deleted.ends_with("\n303"), "{deleted}");
    let (_, apps) = super::vault::api(&w.airlock, "GET", "/v1/apps", None, None).await;
    assert!(apps.as_array().unwrap().is_empty(), "{apps}");
    w.assert_no_secret_in(&[&dashboard, &refused]);
}

/// A `[[secret]]` the console must list without its value.
const CONFIG_SECRET_VALUE: &str = "sk_config_REALVALUE_0123456789";

/// Everything an operator does in the console, in a browser; each change
/// checked through the admin API (in the script and here), each bad input
/// refused with a clear message and nothing changed, markup shown as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_does_everything_in_the_console() {
    if !browser_present() {
        return;
    }
    let ca = TestCa::new();
    let provider = acme_provider(&ca).await;
    let config = format!(
        "{}\n[[secret]]\nname = \"CONFIG_KEY\"\nvalue = \"{CONFIG_SECRET_VALUE}\"\nhosts = [\"api.config.test\"]\n",
        acme_config(&ca, provider.port(), "refresh_interval_secs = 3600", "")
    );
    let airlock = Airlock::start(&config);
    let w = World {
        ca,
        provider,
        airlock,
    };
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    let out = run_phase(&w, "manage", &shots).await;
    assert!(out.contains("\"done\":true"), "{out}");

    // What the browser did, read back through the API.
    let (_, conns) = super::vault::api(&w.airlock, "GET", "/v1/connections", None, None).await;
    let conns = conns.as_array().unwrap().clone();
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert_eq!(conns[0]["scope"], "workspace:ws1");
    assert_eq!(conns[0]["name"], "work");
    assert_eq!(
        conns[0]["scopes"],
        serde_json::json!(["read", "write", "extra"])
    );
    let (_, apps) = super::vault::api(&w.airlock, "GET", "/v1/apps", None, None).await;
    let mut apps: Vec<String> = apps
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}/{}", a["provider"], a["environment"], a["client_id"]))
        .collect();
    apps.sort();
    assert_eq!(
        apps,
        [
            "\"acme\"/\"default\"/\"airlock-test-client\"",
            "\"acme\"/\"staging\"/\"staging-client-2\"",
            "\"beta\"/\"default\"/\"beta-client\"",
        ]
    );
    let (_, envs) = super::vault::api(&w.airlock, "GET", "/v1/environments", None, None).await;
    assert_eq!(envs, serde_json::json!(["default", "staging"]));
    let (_, sandboxes) = super::vault::api(&w.airlock, "GET", "/v1/sandboxes", None, None).await;
    assert!(
        sandboxes
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["workspace"] != "ws1"),
        "the sandbox made in the browser was deleted there: {sandboxes}"
    );

    // The sidecar resolves at tenant level: the workspace's account is not its.
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 401, "the sidecar sees no tenant connection: {body}");

    let (_, tenants) = super::vault::api(&w.airlock, "GET", "/v1/tenants", None, None).await;
    assert_eq!(tenants[0]["tenant"], "acme-corp", "{tenants}");
    assert_eq!(tenants[0]["display_name"], "Acme <b>Corp</b>");
    assert_eq!(tenants[0]["use_default_apps"], true);
    let (_, secrets) = super::vault::api(&w.airlock, "GET", "/v1/secrets", None, None).await;
    assert_eq!(
        secrets,
        serde_json::json!([]),
        "the vault secret was deleted"
    );

    for name in [
        "signed-in",
        "connect-form",
        "connected-workspace",
        "reauthorized",
        "refused-connect-no-user",
        "refused-connect-markup-name",
        "refused-connect-bad-scope",
        "refused-empty-client-id",
        "refused-app-in-use",
        "refused-provider-bad-url",
        "refused-provider-bad-scope",
        "refused-provider-in-use",
        "refused-app-bad-url",
        "app-edit",
        "environment-staging",
        "provider-added",
        "provider-duplicated",
        "sandbox-created",
        "refused-provider-oauth1-no-authorize",
        "provider-oauth1",
        "tenant-form",
        "refused-tenant-settings",
        "tenant-saved",
        "tenant-edit",
        "connected-tenant",
        "refused-machine-account-wrong-secret",
        "refused-machine-account-no-token-url",
        "machine-account-form",
        "machine-account-added",
        "refused-secret-in-use",
        "secret-deleted",
        "done",
    ] {
        let path = shots.join(format!("manage-{name}.png"));
        assert!(path.exists(), "screenshot {name}");
        println!("screenshot: {}", path.display());
    }
    // No page the browser loaded held a secret: client secrets, tokens, the
    // config file's secret value.
    let pages = std::fs::read_to_string(shots.join("manage-pages.html")).unwrap();
    assert!(pages.contains("CONFIG_KEY"), "the pages were recorded");
    w.assert_no_secret_in(&[&pages]);
    for secret in [
        CONFIG_SECRET_VALUE,
        "cs_STAGING_secret_abcdef",
        "cs_WRONG_machine_secret",
        "sk_vault_REALVALUE_0123456789",
    ] {
        assert!(!pages.contains(secret), "{secret} appeared in a page");
    }
}

/// The console lists the config file's `[[secret]]`s as the proxy serves
/// them: after a SIGHUP reload, the new file's, never a value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_secrets_are_listed_read_only_and_follow_a_reload() {
    let ca = TestCa::new();
    let provider = acme_provider(&ca).await;
    let base_config = acme_config(&ca, provider.port(), "", "");
    let with_secret = |name: &str, value: &str, host: &str| {
        format!("{base_config}\n[[secret]]\nname = \"{name}\"\nvalue = \"{value}\"\nhosts = [\"{host}\"]\n")
    };
    let airlock = Airlock::start(&with_secret(
        "CONFIG_KEY",
        CONFIG_SECRET_VALUE,
        "api.config.test",
    ));
    let (base, token) = (airlock.vault_url(), airlock.admin_token());
    let jar = tempfile::NamedTempFile::new().unwrap();
    let jar_path = jar.path().display().to_string();
    let dashboard = move || {
        let (base, token, jar_path) = (base.clone(), token.clone(), jar_path.clone());
        blocking(move || console_dashboard(&base, &token, &jar_path))
    };
    let before = dashboard().await;
    let row = |page: &str, name: &str| {
        page.split(&format!("<tr data-secret=\"{name}\""))
            .nth(1)
            .and_then(|rest| rest.split("</tr>").next())
            .map(str::to_owned)
    };
    let listed = row(&before, "CONFIG_KEY").expect("the config secret is listed");
    assert!(listed.contains("class=\"config-secret\""), "{listed}");
    assert!(
        listed.contains("<td>static</td><td>api.config.test</td>"),
        "{listed}"
    );
    assert!(
        listed.contains("config file") && !listed.contains("<form"),
        "read-only: {listed}"
    );
    assert!(!before.contains(CONFIG_SECRET_VALUE), "never the value");

    let new_value = "sk_reloaded_REALVALUE_987654321";
    std::fs::write(
        &airlock.config_path,
        with_secret("RELOADED_KEY", new_value, "api.reloaded.test"),
    )
    .unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &airlock.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    airlock.wait_for_log("configuration reloaded");
    let after = dashboard().await;
    assert!(
        row(&after, "CONFIG_KEY").is_none(),
        "the old file's secret is gone"
    );
    let listed = row(&after, "RELOADED_KEY").expect("the reloaded secret is listed");
    assert!(listed.contains("api.reloaded.test"), "{listed}");
    assert!(!after.contains(new_value) && !after.contains(CONFIG_SECRET_VALUE));
}

/// Reconnect on a workspace connection asks again for that connection (its
/// owner, environment and granted scopes), not for a new tenant one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_in_the_console_keeps_the_connection_s_owner_and_scopes() {
    let w = super::vault::world("", "require_auth = true").await;
    let body = r#"{"provider":"acme","scope":"workspace:ws1","scopes":["read","extra"]}"#;
    let (status, started) = super::vault::api(
        &w.airlock,
        "POST",
        "/v1/connections",
        Some(body.into()),
        None,
    )
    .await;
    assert_eq!(status, 201, "{started}");
    w.follow(started["authorization_url"].as_str().unwrap())
        .await;
    let sandbox = r#"{"workspace":"ws1","providers":["acme"]}"#;
    let (status, created) = super::vault::api(
        &w.airlock,
        "POST",
        "/v1/sandboxes",
        Some(sandbox.into()),
        None,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let env: Vec<(String, String)> = created["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(w.sandbox_get(&env, "/api/me").await.0, 200);
    w.provider.set_refuse_refresh(true);
    w.provider.set_expire_all_access_tokens();
    let (status, body) = w.sandbox_get(&env, "/api/me").await;
    assert_eq!(status, 401, "{body}");
    w.provider.set_refuse_refresh(false);

    let (base, token) = (w.airlock.vault_url(), w.airlock.admin_token());
    let jar = tempfile::NamedTempFile::new().unwrap();
    let jar_path = jar.path().display().to_string();
    let (b, j) = (base.clone(), jar_path.clone());
    let dashboard = blocking(move || console_dashboard(&b, &token, &j)).await;
    assert!(dashboard.contains("Reconnect needed"), "{dashboard}");
    let link = dashboard
        .split("href=\"/console/connect/acme?")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a Reconnect link")
        .replace("&amp;", "&");
    assert!(
        link.contains("scope=workspace%3Aws1") && link.contains("scopes=read+extra"),
        "{link}"
    );
    let location = blocking(move || {
        curl(
            &[],
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{redirect_url}",
                "-b",
                &jar_path,
                &format!("{base}/console/connect/acme?{link}"),
            ],
        )
        .stdout
    })
    .await;
    assert!(location.contains("/authorize?"), "{location}");
    assert!(location.contains("scope=read+extra"), "{location}");
    w.follow(&location).await;

    let (_, conns) = super::vault::api(&w.airlock, "GET", "/v1/connections", None, None).await;
    let conns = conns.as_array().unwrap();
    assert_eq!(
        conns.len(),
        1,
        "the same connection, no tenant one: {conns:?}"
    );
    assert_eq!(conns[0]["scope"], "workspace:ws1");
    assert_eq!(conns[0]["status"], "connected");
    assert_eq!(conns[0]["scopes"], serde_json::json!(["read", "extra"]));
    assert_eq!(w.sandbox_get(&env, "/api/me").await.0, 200);
    w.assert_no_secret_in(&[&dashboard]);
}
