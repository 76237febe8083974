//! The runnable examples in `examples/`, run as a user would run them: the
//! environment `airlock up` printed, plus the example's API URL variable
//! pointing at a fake upstream. Each fake records what it received, so the
//! tests see the real secret arrive and the placeholder stay behind.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::clients::{self, Output};
use crate::support::git_server::GitServer;
use crate::support::{
    assert_not_leaked, blocking, real_secret, skip, with_env, Airlock, TestCa, Upstream,
    NODE_MODULES,
};

const GITHUB: &str = "api.github.test";
const GIT: &str = "git.github.test";
const SLACK: &str = "slack.test";

/// Longest an example may run.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(60);

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// Runs `program args…` with a cleared environment: PATH, HOME (a fresh
/// temp dir), then `env`; in its own process group, killed after
/// [`EXAMPLE_TIMEOUT`] with everything it started.
fn run_example(program: &str, args: &[&str], env: &[(String, String)]) -> Output {
    let home = tempfile::tempdir().expect("temp HOME");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(home.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + EXAMPLE_TIMEOUT;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for example") {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            break child.wait().expect("wait for killed example");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = stderr.join().unwrap_or_default();
    if timed_out {
        stderr.push_str(&format!(
            "\n[killed after {}s timeout]\n",
            EXAMPLE_TIMEOUT.as_secs()
        ));
    }
    Output {
        status: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap_or_default(),
        stderr,
    }
}

/// Whether `program` can be started at all (for optional clients).
fn have(program: &str, probe: &[&str]) -> bool {
    Command::new(program)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A fake GitHub API, a fake Slack API and a git server, with static
/// `[[secret]]`s for both services, each bound to its own hosts.
struct World {
    _ca: TestCa,
    github: Upstream,
    slack: Upstream,
    git: GitServer,
    airlock: Airlock,
    github_real: String,
    slack_real: String,
    github_placeholder: String,
    slack_placeholder: String,
}

async fn world() -> World {
    let ca = TestCa::new();
    let github = Upstream::start(&ca, &[GITHUB]).await;
    let slack = Upstream::start(&ca, &[SLACK]).await;
    let github_real = real_secret("exgh");
    let slack_real = format!("xoxb-{}", real_secret("exslack"));
    let git = GitServer::start(&ca, &[GIT], &github_real).await;
    let cfg = format!(
        r#"[proxy]
upstream_ca = [{ca:?}]

[resolve]
{GITHUB:?} = "127.0.0.1:{github_port}"
{GIT:?} = "127.0.0.1:{git_port}"
{SLACK:?} = "127.0.0.1:{slack_port}"

[[secret]]
name = "GITHUB_TOKEN"
value = {github_real:?}
hosts = [{GITHUB:?}, {GIT:?}]

[[secret]]
name = "SLACK_TOKEN"
value = {slack_real:?}
hosts = [{SLACK:?}]
"#,
        ca = ca.cert_pem_path().display().to_string(),
        github_port = github.port(),
        git_port = git.port(),
        slack_port = slack.port(),
    );
    let airlock = Airlock::start(&cfg);
    let github_placeholder = airlock.var("GITHUB_TOKEN");
    let slack_placeholder = airlock.var("SLACK_TOKEN");
    World {
        _ca: ca,
        github,
        slack,
        git,
        airlock,
        github_real,
        slack_real,
        github_placeholder,
        slack_placeholder,
    }
}

impl World {
    /// The printed environment plus the examples' API URL variables.
    fn env(&self) -> Vec<(String, String)> {
        with_env(
            &self.airlock.env,
            &[
                ("GITHUB_API_URL", "https://api.github.test"),
                ("SLACK_API_URL", "https://slack.test/api"),
                ("GITHUB_REPOSITORY", "octo/hello"),
                ("SLACK_CHANNEL", "C0123456789"),
            ],
        )
    }

    /// The only request the fake GitHub got carried the real token and went
    /// to `path`.
    fn assert_github_got_the_token(&self, path: &str) {
        let requests = self.github.requests();
        assert_eq!(requests.len(), 1, "{requests:#?}");
        assert_eq!(requests[0].path_and_query, path);
        assert_eq!(
            requests[0].header("authorization"),
            Some(format!("Bearer {}", self.github_real).as_str())
        );
        assert!(
            !self.github.raw_contains(&self.github_placeholder),
            "the placeholder reached the upstream"
        );
    }

    fn assert_no_leak(&self, out: &Output) {
        let logs = self.airlock.logs();
        for real in [&self.github_real, &self.slack_real] {
            assert_not_leaked(real, &[&out.stdout, &out.stderr, &logs]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_example_sends_the_real_token() {
    let w = world().await;
    let env = w.env();
    let script = example("curl.sh");
    let out = blocking(move || run_example("bash", &[script.to_str().unwrap()], &env)).await;
    assert!(
        out.success(),
        "curl.sh failed: {}\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(out.stdout, "ok\n\nHTTP 200\n");
    w.assert_github_got_the_token("/user");
    let logs = w.airlock.wait_for_log("swapped=secret:GITHUB_TOKEN");
    assert!(logs.contains("path=/user"), "{logs}");
    w.assert_no_leak(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_example_clones_and_pushes_with_the_placeholder() {
    let w = world().await;
    let env = with_env(
        &w.env(),
        &[
            ("GIT_REPO_URL", "https://git.github.test/repo.git"),
            ("GIT_BRANCH", "airlock-example"),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_TERMINAL_PROMPT", "0"),
        ],
    );
    let script = example("git.sh");
    let out = blocking(move || run_example("bash", &[script.to_str().unwrap()], &env)).await;
    assert!(
        out.success(),
        "git.sh failed: {}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout.contains("pushed branch airlock-example"),
        "{}",
        out.stdout
    );
    // The server only answers a Basic password equal to the real token, so
    // the push landing means the swap happened; the branch is there now.
    let url = format!(
        "https://x-access-token:{}@git.github.test/repo.git",
        w.github_placeholder
    );
    let env = w.airlock.env.clone();
    let cwd = tempfile::tempdir().unwrap();
    let cwd_path = cwd.path().to_owned();
    let ls = blocking(move || clients::git(&env, &["ls-remote", &url], &cwd_path)).await;
    assert!(ls.success(), "git ls-remote failed: {}", ls.stderr);
    assert!(
        ls.stdout.contains("refs/heads/airlock-example"),
        "the pushed branch is missing: {}",
        ls.stdout
    );
    assert!(
        w.git
            .authorizations()
            .iter()
            .any(|a| a.starts_with("Basic ")),
        "git never sent Basic credentials"
    );
    assert!(
        !w.git.raw_contains(&w.github_placeholder),
        "the placeholder reached the git server"
    );
    assert!(w.github.requests().is_empty() && w.slack.requests().is_empty());
    w.assert_no_leak(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gh_example_calls_the_api_with_the_real_token() {
    if !have("gh", &["--version"]) {
        skip("the GitHub CLI `gh` is not installed (apt-get install gh)");
        return;
    }
    let w = world().await;
    // gh talks to a GitHub Enterprise host at https://HOST/api/v3/.
    let env = with_env(&w.env(), &[("GH_HOST", GITHUB)]);
    let script = example("gh.sh");
    let out = blocking(move || run_example("bash", &[script.to_str().unwrap()], &env)).await;
    assert!(
        out.success(),
        "gh.sh failed: {}\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(out.stdout.trim(), "ok");
    let requests = w.github.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0].path_and_query, "/api/v3/user");
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("token {}", w.github_real).as_str())
    );
    assert!(!w.github.raw_contains(&w.github_placeholder));
    w.assert_no_leak(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requests_example_sends_the_real_token() {
    let w = world().await;
    let env = w.env();
    let script = example("python_requests.py");
    let out = blocking(move || run_example("python3", &[script.to_str().unwrap()], &env)).await;
    assert!(out.success(), "python_requests.py failed: {}", out.stderr);
    assert_eq!(out.stdout.trim(), "GET /user -> 200: ok");
    w.assert_github_got_the_token("/user");
    w.assert_no_leak(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_httpx_example_sends_the_real_token() {
    if !have("python3", &["-c", "import httpx"]) {
        skip("the Python module httpx is not installed (scripts/test installs it in target/test-venv)");
        return;
    }
    let w = world().await;
    // httpx reads SSL_CERT_FILE, not REQUESTS_CA_BUNDLE: keep only what it reads.
    let env: Vec<(String, String)> = w
        .env()
        .into_iter()
        .filter(|(k, _)| k != "REQUESTS_CA_BUNDLE" && k != "CURL_CA_BUNDLE")
        .collect();
    let script = example("python_httpx.py");
    let out = blocking(move || run_example("python3", &[script.to_str().unwrap()], &env)).await;
    assert!(out.success(), "python_httpx.py failed: {}", out.stderr);
    assert_eq!(out.stdout.trim(), "GET /user -> 200 HTTP/1.1: ok");
    w.assert_github_got_the_token("/user");
    w.assert_no_leak(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_fetch_example_sends_the_real_token() {
    let w = world().await;
    let env = with_env(&w.env(), &[("NODE_PATH", NODE_MODULES)]);
    let script = example("node_fetch.mjs");
    let out = blocking(move || run_example("node", &[script.to_str().unwrap()], &env)).await;
    assert!(out.success(), "node_fetch.mjs failed: {}", out.stderr);
    assert_eq!(out.stdout.trim(), "GET /user -> 200: ok");
    w.assert_github_got_the_token("/user");
    w.assert_no_leak(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_example_uses_github_and_slack_each_with_its_own_token() {
    let w = world().await;
    let env = w.env();
    let script = example("agent.py");
    let out = blocking(move || run_example("python3", &[script.to_str().unwrap()], &env)).await;
    assert!(
        out.success(),
        "agent.py failed: {}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout.contains(
            "github: GET /repos/octo/hello/issues -> 200\nslack: POST /chat.postMessage -> 200\n"
        ),
        "{}",
        out.stdout
    );
    w.assert_github_got_the_token("/repos/octo/hello/issues?state=open&per_page=5");

    let posts = w.slack.requests();
    assert_eq!(posts.len(), 1, "{posts:#?}");
    let post = &posts[0];
    assert_eq!(post.method, "POST");
    assert_eq!(post.path_and_query, "/api/chat.postMessage");
    assert_eq!(
        post.header("authorization"),
        Some(format!("Bearer {}", w.slack_real).as_str())
    );
    let body: serde_json::Value = serde_json::from_slice(&post.body_sample).expect("JSON body");
    assert_eq!(body["channel"], "C0123456789");
    assert!(
        body["text"].as_str().unwrap_or("").contains("octo/hello"),
        "{body}"
    );
    assert!(!w.slack.raw_contains(&w.slack_placeholder));
    // Each token went only to its own service.
    assert!(!w.slack.raw_contains(&w.github_real));
    assert!(!w.github.raw_contains(&w.slack_real));
    let logs = w.airlock.wait_for_log("swapped=secret:SLACK_TOKEN");
    assert!(logs.contains("swapped=secret:GITHUB_TOKEN"), "{logs}");
    w.assert_no_leak(&out);
}

/// The status examples against the vault's fake provider: the account is
/// not connected until the "user" opens the link the example printed.
mod status {
    use super::*;
    use crate::vault::{world, API};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_sh_lists_credentials_and_exits_by_state() {
        let w = world("", "").await;
        let env = w.airlock.env.clone();
        let script = example("status.sh");
        let all = blocking({
            let (env, script) = (env.clone(), script.clone());
            move || run_example("bash", &[script.to_str().unwrap()], &env)
        })
        .await;
        assert!(all.success(), "{}", all.stderr);
        assert!(
            all.stdout.contains(r#""variable":"ACME_TOKEN""#),
            "{}",
            all.stdout
        );
        let one = blocking({
            let (env, script) = (env.clone(), script.clone());
            move || run_example("bash", &[script.to_str().unwrap(), "acme"], &env)
        })
        .await;
        assert_eq!(one.status, 3, "{}\n{}", one.stdout, one.stderr);
        assert!(
            one.stderr
                .contains("acme is not_connected: ask your user to open http://"),
            "{}",
            one.stderr
        );
        let missing =
            blocking(move || run_example("bash", &[script.to_str().unwrap(), "NOPE"], &env)).await;
        assert_eq!(missing.status, 1, "{}", missing.stderr);
        assert!(missing.stderr.contains("not_found"), "{}", missing.stderr);
        w.assert_no_secret_in(&[&all.stdout, &one.stdout]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn agent_status_py_shows_the_link_waits_for_the_user_then_calls_the_api() {
        let w = world("", "").await;
        let env = with_env(
            &w.airlock.env,
            &[
                ("CREDENTIAL", "ACME_TOKEN"),
                ("API_URL", &format!("https://{API}/api/me")),
                ("WAIT_SECS", "40"),
            ],
        );
        let script = example("agent_status.py");
        let agent = tokio::task::spawn_blocking(move || {
            run_example("python3", &[script.to_str().unwrap()], &env)
        });
        // The user opens the link the agent is showing (the status hands
        // out the same one to every reader).
        let link = loop {
            let env = w.airlock.env.clone();
            let out = blocking(move || {
                clients::curl(&env, &["https://airlock.internal/v1/status/ACME_TOKEN"])
            })
            .await;
            let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
            if let Some(link) = doc["credential"]["connect_url"].as_str() {
                break link.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let page = w.follow(&link).await;
        assert!(page.contains("Connected"), "{page}");
        let out = agent.await.unwrap();
        assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
        assert!(
            out.stdout.contains(&format!(
                "ACME_TOKEN is not_connected: ask your user to open {link}"
            )),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout
                .contains("ACME_TOKEN connected (scopes: read write); GET /api/me -> 200"),
            "{}",
            out.stdout
        );
        w.assert_no_secret_in(&[&out.stdout, &out.stderr]);
    }
}
