//! Choosing the account, end to end: development and production side by
//! side, a sandbox pinned to two named accounts of one provider, machine
//! accounts with variables of their own (one made in one call), renewal;
//! each bad input refused clearly. Every scenario runs on SQLite and on
//! PostgreSQL.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::vault::{acme_config, World, API, AUTH, CLIENT_ID, CLIENT_SECRET};
use super::vault_postgres::{fresh_database, TestDatabase};
use crate::support::clients::{curl, python};
use crate::support::oauth_provider::OAuthProvider;
use crate::support::{airlock, blocking, Airlock, TestCa};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// Where the vault keeps its data.
enum Backend {
    Sqlite,
    Postgres(TestDatabase),
}

impl Backend {
    /// The config lines and environment the backend needs.
    fn setup(&self) -> (String, Vec<(&'static str, &'static str)>) {
        match self {
            Self::Sqlite => (String::new(), Vec::new()),
            Self::Postgres(db) => (
                format!("database_url = {:?}", db.url()),
                vec![
                    ("AIRLOCK_MASTER_KEY", KEY),
                    ("AIRLOCK_ADMIN_TOKEN", "admin-token-for-accounts-001"),
                    ("AIRLOCK_SERVICE_TOKEN", "service-token-for-accounts-01"),
                ],
            ),
        }
    }
}

/// The fake provider's app in production as well as in default.
const PRODUCTION_APP: &str = r#"
[[app]]
provider = "acme"
environment = "production"
client_id = "airlock-test-client"
client_secret = "cs_REALCLIENTSECRET_0123456789"
"#;

struct Accounts {
    w: World,
    env: Vec<(&'static str, &'static str)>,
}

async fn start(backend: &Backend, vault_extra: &str) -> Accounts {
    let (db, env) = backend.setup();
    let ca = TestCa::new();
    let provider = OAuthProvider::start(&ca, &[AUTH, API], CLIENT_ID, CLIENT_SECRET).await;
    // A shared gateway: each sandbox is known by its proxy credential.
    let config = acme_config(
        &ca,
        provider.port(),
        &format!("{db}\n{vault_extra}"),
        "require_auth = true",
    ) + PRODUCTION_APP;
    let airlock = Airlock::start_with_env(&config, &env);
    Accounts {
        w: World {
            ca,
            provider,
            airlock,
        },
        env,
    }
}

impl Accounts {
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let a = &self.w.airlock;
        let mut cmd = Command::new(airlock::binary());
        cmd.args(args)
            .args(["--config", a.config_path.to_str().unwrap()])
            .args(["--data-dir", a.data_dir.to_str().unwrap()])
            .env("AIRLOCK_ADMIN_TOKEN", a.admin_token());
        for (k, v) in self.env.iter().chain(env) {
            cmd.env(k, v);
        }
        cmd
    }

    /// `airlock ARGS` against the vault: (ok, stdout, stderr), checked for leaks.
    fn run(&self, args: &[&str], env: &[(&str, &str)], admin: bool) -> (bool, String, String) {
        let mut cmd = self.command(args, env);
        if admin {
            cmd.args(["--vault-url", &self.w.airlock.vault_url()]);
        }
        let out = cmd.output().expect("run airlock");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        self.w.assert_no_secret_in(&[&stdout, &stderr]);
        (out.status.success(), stdout, stderr)
    }

    fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let (ok, stdout, stderr) = self.run(args, env, true);
        assert!(ok, "airlock {args:?} failed: {stderr}");
        stdout
    }

    /// A command that must fail: its stderr.
    fn refused(&self, args: &[&str]) -> String {
        let (ok, _, stderr) = self.run(args, &[], true);
        assert!(!ok, "airlock {args:?} succeeded");
        stderr
    }

    /// `airlock connect ARGS`, then the browser's consent: the token issued.
    async fn connect(&self, args: &[&str]) -> String {
        let mut all = vec!["connect", "acme"];
        all.extend_from_slice(args);
        let url = self.cli(&all, &[]);
        let page = self.w.follow(url.trim()).await;
        assert!(page.contains("Connected"), "{page}");
        self.w
            .provider
            .issued_access_tokens()
            .last()
            .expect("a token was issued")
            .clone()
    }

    /// `airlock sandbox create ARGS --json`: its environment.
    fn sandbox(&self, args: &[&str]) -> Vec<(String, String)> {
        let mut all = vec!["sandbox", "create", "--json"];
        all.extend_from_slice(args);
        let created: Value = serde_json::from_str(&self.cli(&all, &[])).unwrap();
        created["env"]
            .as_object()
            .expect("env")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect()
    }

    fn sandbox_count(&self) -> usize {
        let list = self.cli(&["sandbox", "list", "--json"], &[]);
        serde_json::from_str::<Value>(&list)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    }

    /// curl in the sandbox, with the placeholder of `variable`: the status
    /// and the authorization the upstream saw (none when it saw nothing).
    async fn call(&self, env: &[(String, String)], variable: &str) -> (u16, Option<String>) {
        let before = self.w.provider.api_authorizations().len();
        let placeholder = value(env, variable).to_owned();
        let env = env.to_vec();
        let url = format!("https://{API}/api/me");
        let out = blocking(move || {
            let auth = format!("Authorization: Bearer {placeholder}");
            curl(
                &env,
                &["-o", "/dev/null", "-w", "%{http_code}", "-H", &auth, &url],
            )
        })
        .await;
        let seen = self.w.provider.api_authorizations();
        (
            out.stdout.trim().parse().unwrap_or(0),
            seen.get(before..).and_then(|s| s.last()).cloned(),
        )
    }
}

impl Accounts {
    /// The `x-airlock-connect-url` of a refused request with `variable`.
    async fn connect_link_header(&self, env: &[(String, String)], variable: &str) -> String {
        let placeholder = value(env, variable).to_owned();
        let env = env.to_vec();
        let url = format!("https://{API}/api/me");
        let out = blocking(move || {
            let auth = format!("Authorization: Bearer {placeholder}");
            curl(&env, &["-D", "-", "-H", &auth, &url])
        })
        .await;
        out.stdout
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("x-airlock-connect-url")
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no connect link in {}", out.stdout))
    }

    /// The sandbox's own status document (`airlock.internal`).
    async fn sandbox_status(&self, env: &[(String, String)]) -> Value {
        let env = env.to_vec();
        let out = blocking(move || curl(&env, &["http://airlock.internal/v1/status"])).await;
        serde_json::from_str(&out.stdout).unwrap_or_else(|_| panic!("status: {}", out.stdout))
    }
}

fn value<'a>(env: &'a [(String, String)], name: &str) -> &'a str {
    &env.iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in the sandbox's environment"))
        .1
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

async fn environments_side_by_side(backend: Backend) {
    let s = start(&backend, "").await;
    let dev = s.connect(&[]).await;
    let prod = s.connect(&["--environment", "production"]).await;
    assert_ne!(dev, prod);
    let listed = s.cli(&["connections"], &[]);
    let lines: Vec<&str> = listed.lines().filter(|l| l.contains("acme")).collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(lines.iter().any(|l| l.contains(" default ")), "{listed}");
    assert!(lines.iter().any(|l| l.contains(" production ")), "{listed}");

    let dev_env = s.sandbox(&["--provider", "acme"]);
    let prod_env = s.sandbox(&["--provider", "acme", "--environment", "production"]);
    assert_eq!(s.call(&dev_env, "ACME_TOKEN").await, (200, bearer(&dev)));
    assert_eq!(s.call(&prod_env, "ACME_TOKEN").await, (200, bearer(&prod)));
    // The sidecar of `airlock up` stays in default.
    let sidecar: Vec<(String, String)> = s.w.airlock.env.clone();
    // The production sandbox's placeholder in the development sandbox's
    // hands: refused, nothing reaches the upstream.
    let crossed =
        crate::support::with_env(&dev_env, &[("ACME_TOKEN", value(&prod_env, "ACME_TOKEN"))]);
    let (status, seen) = s.call(&crossed, "ACME_TOKEN").await;
    assert_eq!((status, seen), (403, None));

    let list: Value = serde_json::from_str(&s.cli(&["sandbox", "list", "--json"], &[])).unwrap();
    let environments: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["environment"].as_str().unwrap())
        .collect();
    assert!(environments.contains(&"production"), "{list}");
    let sidecar_row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "default")
        .expect("the sidecar sandbox");
    assert_eq!(sidecar_row["environment"], "default");

    // `airlock env` for the production sandbox; the sidecar's environment
    // is its own, and asking for another is refused, naming both.
    let prod_id = value(&prod_env, "HTTPS_PROXY")
        .split("//")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap()
        .to_owned();
    let (ok, printed, stderr) = s.run(
        &["env", "--sandbox", &prod_id, "--environment", "production"],
        &[],
        false,
    );
    assert!(ok, "{stderr}");
    assert!(
        printed.contains(value(&prod_env, "ACME_TOKEN")),
        "{printed}"
    );
    let (ok, _, stderr) = s.run(&["env", "--environment", "production"], &[], false);
    assert!(!ok);
    assert!(
        stderr.contains("sandbox default resolves environment default, not production"),
        "{stderr}"
    );
    let (ok, printed, stderr) = s.run(&["env", "--environment", "default"], &[], false);
    assert!(ok, "{stderr}");
    assert!(printed.contains(value(&sidecar, "ACME_TOKEN")), "{printed}");

    // Unknown environments, refused with the known ones; nothing made.
    let before = s.sandbox_count();
    let refused = s.refused(&[
        "sandbox",
        "create",
        "--provider",
        "acme",
        "--environment",
        "prodution",
    ]);
    assert!(
        refused.contains("unknown environment \"prodution\" (known: default, production)"),
        "{refused}"
    );
    let refused = s.refused(&["connect", "acme", "--environment", "staging"]);
    assert!(
        refused.contains("unknown environment \"staging\""),
        "{refused}"
    );
    assert_eq!(s.sandbox_count(), before);
    assert_eq!(s.w.provider.authorize_count(), 2);
    s.w.assert_no_secret_in(&[&s.w.airlock.logs()]);
}

async fn two_accounts_pinned(backend: Backend) {
    let s = start(&backend, "").await;
    let work = s.connect(&["--name", "work"]).await;
    let personal = s
        .connect(&["--name", "personal", "--scope", "user:alice"])
        .await;
    let listed = s.cli(&["connections"], &[]);
    assert!(
        listed.contains("acme/work") && listed.contains("acme/personal"),
        "{listed}"
    );

    let env = s.sandbox(&[
        "--user",
        "alice",
        "--connection",
        "acme:work",
        "--connection",
        "ACME_PERSONAL_TOKEN=acme:personal",
    ]);
    // Python in the sandbox, reading both variables.
    let before = s.w.provider.api_authorizations().len();
    let script = format!(
        "import os, requests\n\
         for var in ['ACME_TOKEN', 'ACME_PERSONAL_TOKEN']:\n    \
         r = requests.get('https://{API}/api/me', headers={{'Authorization': 'Bearer ' + os.environ[var]}})\n    \
         print(var, r.status_code)"
    );
    let sandbox_env = env.clone();
    let out = blocking(move || python(&sandbox_env, &script)).await;
    assert_eq!(
        out.stdout.trim(),
        "ACME_TOKEN 200\nACME_PERSONAL_TOKEN 200",
        "{}",
        out.stderr
    );
    let seen = s.w.provider.api_authorizations();
    assert_eq!(
        seen[before..],
        [bearer(&work).unwrap(), bearer(&personal).unwrap()]
    );

    // Bad pins and names: each refused with what was wrong; nothing made.
    let sandboxes = s.sandbox_count();
    let cases: &[(&[&str], &str)] = &[
        (&["--connection", "acme:nope"], "no acme connection is called \"nope\" in environment default"),
        (
            &["--connection", "acme:work", "--environment", "production"],
            "no acme connection is called \"work\" in environment production of tenant default; that name is acme in environment default",
        ),
        (&["--connection", "github:work"], "no github connection is called \"work\""),
        (&["--connection", "acme:personal"], "belongs to user:alice"),
        (&["--connection", "acme:work", "--provider", "acme"], "two bindings would use the variable ACME_TOKEN"),
        (&["--connection", "lower=acme:work"], "must be an upper-case environment variable name"),
        (&["--connection", "acme:"], "[VARIABLE=][PROVIDER:]NAME"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["sandbox", "create"];
        all.extend_from_slice(args);
        let refused = s.refused(&all);
        assert!(refused.contains(expected), "{args:?}: {refused}");
    }
    assert_eq!(s.sandbox_count(), sandboxes);
    let refused = s.refused(&["connect", "acme", "--name", "work", "--scope", "user:bob"]);
    assert!(refused.contains("409"), "{refused}");
    assert!(
        refused.contains("already used by another acme connection"),
        "{refused}"
    );
    assert_eq!(s.w.provider.authorize_count(), 2, "no consent was started");

    // Reconnecting a name replaces that connection's grant in place.
    let again = s.connect(&["--name", "work"]).await;
    assert_eq!(s.call(&env, "ACME_TOKEN").await, (200, bearer(&again)));
    let conns: Value = serde_json::from_str(&s.cli(&["connections", "--json"], &[])).unwrap();
    assert_eq!(conns.as_array().unwrap().len(), 2, "{conns}");

    // Work goes: its variable is not connected and never falls back to
    // another account; the personal one goes on.
    let work_id = conns
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "work")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.cli(&["disconnect", &work_id], &[]);
    let (status, seen) = s.call(&env, "ACME_TOKEN").await;
    assert_ne!(status, 200);
    assert_eq!(seen, None, "nothing went upstream");
    assert_eq!(
        s.call(&env, "ACME_PERSONAL_TOKEN").await,
        (200, bearer(&personal))
    );

    // The refusal carries the connect link of that pinned account (the one
    // the sandbox's status gives ACME_TOKEN), and opening it connects
    // "work" again, for this variable only.
    let status = s.sandbox_status(&env).await;
    let link = s.connect_link_header(&env, "ACME_TOKEN").await;
    let credentials = status["credentials"].as_array().unwrap();
    let pinned = credentials
        .iter()
        .find(|c| c["variable"] == "ACME_TOKEN")
        .unwrap();
    assert_eq!(pinned["connection"], "work", "{status}");
    assert_eq!(pinned["state"], "not_connected", "{status}");
    assert_eq!(
        pinned["connect_url"].as_str(),
        Some(link.as_str()),
        "{status}"
    );
    let page = s.w.follow(&link).await;
    assert!(page.contains("Connected"), "{page}");
    let back = s.w.provider.issued_access_tokens().last().unwrap().clone();
    assert_eq!(s.call(&env, "ACME_TOKEN").await, (200, bearer(&back)));
    assert_eq!(
        s.call(&env, "ACME_PERSONAL_TOKEN").await,
        (200, bearer(&personal))
    );
    let conns: Value = serde_json::from_str(&s.cli(&["connections", "--json"], &[])).unwrap();
    let work_again = conns
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "work")
        .unwrap();
    assert_eq!(
        work_again["scope"], "user:alice",
        "a link connects at the sandbox's own scope"
    );
    s.w.assert_no_secret_in(&[&s.w.airlock.logs(), &status.to_string()]);
}

async fn machine_accounts(backend: Backend) {
    // Due in the last 2 s of a token's life; the background pass every second.
    let s = start(
        &backend,
        "refresh_interval_secs = 1\nrefresh_window_secs = 2\nrefresh_fraction = 1.0",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).unwrap();
    let secret_env = [("ACME_CLIENT_SECRET", CLIENT_SECRET)];
    let added = s.cli(
        &[
            "machine-account",
            "ci",
            "--provider",
            "acme",
            "--client-id",
            CLIENT_ID,
            "--client-secret-env",
            "ACME_CLIENT_SECRET",
            "--expose-as-env",
            "ACME_CI_TOKEN",
        ],
        &secret_env,
    );
    assert!(added.contains("machine account ci (conn_"), "{added}");
    assert!(
        added.contains("in environment default: connected"),
        "{added}"
    );
    assert!(
        added.contains("sandboxes get it as ACME_CI_TOKEN"),
        "{added}"
    );
    s.cli(
        &[
            "machine-account",
            "deploy",
            "--provider",
            "acme",
            "--client-id",
            CLIENT_ID,
            "--client-secret-file",
            secret_file.to_str().unwrap(),
            "--expose-as-env",
            "ACME_DEPLOY_TOKEN",
        ],
        &[],
    );
    // One call, no provider first: a token URL, a variable and hosts.
    let token_url = format!("https://{AUTH}:{}/token", s.w.provider.port());
    let refused = s.run(
        &[
            "machine-account",
            "billing",
            "--client-id",
            CLIENT_ID,
            "--client-secret-env",
            "ACME_CLIENT_SECRET",
            "--expose-as-env",
            "BILLING_TOKEN",
            "--host",
            API,
        ],
        &secret_env,
        true,
    );
    assert!(!refused.0);
    assert!(refused.2.contains("needs token_url"), "{}", refused.2);
    let refused = s.run(
        &[
            "machine-account",
            "third",
            "--provider",
            "acme",
            "--client-id",
            CLIENT_ID,
            "--client-secret-env",
            "ACME_CLIENT_SECRET",
            "--expose-as-env",
            "ACME_CI_TOKEN",
        ],
        &secret_env,
        true,
    );
    assert!(
        refused.2.contains("already gives sandboxes ACME_CI_TOKEN"),
        "{}",
        refused.2
    );
    s.cli(
        &[
            "machine-account",
            "billing",
            "--client-id",
            CLIENT_ID,
            "--client-secret-env",
            "ACME_CLIENT_SECRET",
            "--token-url",
            &token_url,
            "--expose-as-env",
            "BILLING_TOKEN",
            "--host",
            API,
        ],
        &secret_env,
    );
    assert_eq!(s.w.provider.token_requests("client_credentials"), 3);
    let issued = s.w.provider.issued_access_tokens();
    let listed = s.cli(&["connections"], &[]);
    assert!(!listed.contains("connected (connected)"), "{listed}");
    assert!(listed.contains("variable: ACME_CI_TOKEN"), "{listed}");

    let env = s.sandbox(&[
        "--connection",
        "acme:ci",
        "--connection",
        "acme:deploy",
        "--connection",
        "billing",
    ]);
    assert_eq!(
        s.call(&env, "ACME_CI_TOKEN").await,
        (200, bearer(&issued[0]))
    );
    assert_eq!(
        s.call(&env, "ACME_DEPLOY_TOKEN").await,
        (200, bearer(&issued[1]))
    );
    assert_eq!(
        s.call(&env, "BILLING_TOKEN").await,
        (200, bearer(&issued[2]))
    );

    // After a 401: a new token by client credentials, and the request replayed.
    s.w.provider.set_expire_all_access_tokens();
    let (status, seen) = s.call(&env, "ACME_DEPLOY_TOKEN").await;
    assert_eq!(status, 200);
    let renewed = s.w.provider.issued_access_tokens().last().unwrap().clone();
    assert!(!issued.contains(&renewed));
    assert_eq!(seen, bearer(&renewed));
    assert_eq!(s.w.provider.token_requests("client_credentials"), 4);

    // Before expiry, with no traffic: a 3 s token is renewed by the
    // background pass (due in its last 2 s).
    s.w.provider
        .set_access_token_lifetime(Duration::from_secs(3));
    s.w.provider.set_expire_all_access_tokens();
    let (status, short) = s.call(&env, "ACME_CI_TOKEN").await;
    let short_ends = Instant::now() + Duration::from_secs(4);
    assert_eq!(status, 200);
    s.w.provider
        .set_access_token_lifetime(Duration::from_secs(3600));
    let grants = s.w.provider.token_requests("client_credentials");
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.w.provider.token_requests("client_credentials") == grants && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        s.w.provider.token_requests("client_credentials") > grants,
        "the background pass renewed the machine account"
    );
    // Once the short token is over, the proxy's cache cannot hold it either.
    tokio::time::sleep(short_ends.saturating_duration_since(Instant::now())).await;
    let (status, seen) = s.call(&env, "ACME_CI_TOKEN").await;
    assert_eq!(status, 200);
    assert_ne!(seen, short, "the renewed token is used");
    s.w.assert_no_secret_in(&[&s.w.airlock.logs(), &listed]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_and_production_side_by_side() {
    environments_side_by_side(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_pinned_to_two_accounts_of_one_provider() {
    two_accounts_pinned(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_accounts_with_their_own_variables_are_renewed() {
    machine_accounts(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_development_and_production_side_by_side() {
    if let Some(db) = fresh_database() {
        environments_side_by_side(Backend::Postgres(db)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_sandbox_pinned_to_two_accounts_of_one_provider() {
    if let Some(db) = fresh_database() {
        two_accounts_pinned(Backend::Postgres(db)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_machine_accounts_with_their_own_variables_are_renewed() {
    if let Some(db) = fresh_database() {
        machine_accounts(Backend::Postgres(db)).await;
    }
}
