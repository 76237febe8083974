#![allow(dead_code)] // each test binary uses part of the fixtures

//! Fixtures for end-to-end tests: real servers on 127.0.0.1:0, the real
//! `airlock` binary, and real clients.

pub mod airlock;
pub mod clients;
pub mod git_server;
pub mod netns;
pub mod oauth_provider;
pub mod oidc;
pub mod private_pg;
pub mod python_fake;
pub mod test_ca;
pub mod tunnel;
pub mod upstream;

pub use airlock::Airlock;
pub use test_ca::TestCa;
pub use upstream::Upstream;

/// Node modules for the Node clients (undici), installed by `scripts/test`.
pub const NODE_MODULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/node_modules");

/// Whether the tests run as root (namespaces, iptables, a server run as another user).
pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

/// Whether this run is CI (`CI=true`), where a test must not skip.
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// A test that cannot run here because `why` (a tool is missing): prints
/// `SKIPPED: why` and returns, so the caller returns early; under `CI=true`
/// it fails instead, so a missing tool never passes as green.
pub fn skip(why: &str) {
    assert!(!in_ci(), "CI=true and this test cannot run: {why}");
    eprintln!("SKIPPED: {why}");
}

/// Debian's chromium and playwright-core (tests/node) are there; says the
/// test (`what`) is skipped when not, which fails under CI.
pub fn browser_present(what: &str) -> bool {
    let chromium = std::path::Path::new("/usr/bin/chromium").exists();
    let playwright = std::path::Path::new(NODE_MODULES)
        .join("playwright-core")
        .exists();
    if !(chromium && playwright) {
        skip(&format!(
            "{what} needs /usr/bin/chromium and playwright-core (scripts/test installs both)"
        ));
    }
    chromium && playwright
}

/// The `x-airlock-error` code in a response head (any case of the name).
pub fn airlock_error(head: &str) -> Option<&str> {
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-airlock-error")
            .then(|| value.trim())
    })
}

/// A TCP listener on 127.0.0.1 that accepts and never answers: its port,
/// and the task holding what it accepted (abort it to close them).
pub async fn silent_listener() -> (u16, tokio::task::JoinHandle<()>) {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    (port, hold)
}

/// The value of the sample `name` (no labels) in a metrics scrape.
pub fn metric(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Runs a blocking client (curl, git, python) off the runtime's threads, so
/// the servers of the same test keep answering.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking client panicked")
}

/// A real-looking secret, distinct per test, that must never leak.
pub fn real_secret(tag: &str) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("ghp_REAL{tag}{nanos:09}x{}", std::process::id())
}

/// Asserts that `secret` appears in none of `texts` (logs, outputs, bodies).
pub fn assert_not_leaked(secret: &str, texts: &[&str]) {
    for (i, text) in texts.iter().enumerate() {
        assert!(
            !text.contains(secret),
            "a real secret leaked into text #{i} (length {})",
            text.len()
        );
    }
}

/// Adds `extra` to an environment, replacing existing keys.
pub fn with_env(base: &[(String, String)], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = base
        .iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .cloned()
        .collect();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}
