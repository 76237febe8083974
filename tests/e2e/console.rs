//! The console in a real browser (Debian's chromium via playwright-core):
//! connect against the fake provider, see Connected; the provider refuses a
//! refresh, see Reconnect needed; reconnect; disconnect. Screenshots land in
//! `target/console-screenshots/`.

use std::path::PathBuf;
use std::time::Duration;

use super::vault::{acme_config, World};
use crate::support::clients::{curl, node};
use crate::support::oauth_provider::OAuthProvider;
use crate::support::{blocking, skip, Airlock, TestCa, NODE_MODULES};

fn browser_present() -> bool {
    let chromium = std::path::Path::new("/usr/bin/chromium").exists();
    let playwright = std::path::Path::new(NODE_MODULES)
        .join("playwright-core")
        .exists();
    if !(chromium && playwright) {
        skip("the console browser test needs /usr/bin/chromium and playwright-core (scripts/test installs both)");
    }
    chromium && playwright
}

async fn run_phase(w: &World, phase: &str, shots: &std::path::Path) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/console.test.mjs");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_reconnect_and_disconnect_in_a_browser() {
    if !browser_present() {
        return;
    }
    let ca = TestCa::new();
    let provider = OAuthProvider::start(
        &ca,
        &["auth.acme.test", "api.acme.test"],
        "airlock-test-client",
        "cs_REALCLIENTSECRET_0123456789",
    )
    .await;
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
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "screenshot {name}"
        );
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_locked_down() {
    let ca = TestCa::new();
    let provider = OAuthProvider::start(
        &ca,
        &["auth.acme.test", "api.acme.test"],
        "airlock-test-client",
        "cs_REALCLIENTSECRET_0123456789",
    )
    .await;
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
    let dashboard = blocking(move || {
        let login = format!("token={token}");
        curl(
            &[],
            &[
                "-s",
                "-o",
                "/dev/null",
                "-c",
                &j,
                "--data",
                &login,
                &format!("{b}/console/login"),
            ],
        );
        curl(&[], &["-s", "-b", &j, &format!("{b}/")])
    })
    .await
    .stdout;
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
