//! Request rules per binding, end to end: `gh`, curl and Python against a
//! fake GitHub-shaped API through the real `airlock up`.

use crate::support::airlock::{config_check, run};
use crate::support::clients::{curl, python};
use crate::support::upstream::Upstream;
use crate::support::{assert_not_leaked, blocking, real_secret, skip, with_env, Airlock, TestCa};

use super::vault::{api, world as vault_world, World as VaultWorld, API};

const GITHUB: &str = "api.github.test";

struct World {
    _ca: TestCa,
    github: Upstream,
    airlock: Airlock,
    real: String,
    placeholder: String,
}

/// One `[[secret]]` for the fake GitHub, with `rules_keys` added to it.
async fn world(rules_keys: &str) -> World {
    let ca = TestCa::new();
    let github = Upstream::start(&ca, &[GITHUB]).await;
    let real = real_secret("rules");
    let cfg = format!(
        r#"[proxy]
upstream_ca = [{ca:?}]

[resolve]
{GITHUB:?} = "127.0.0.1:{port}"

[[secret]]
name = "GITHUB_TOKEN"
value = {real:?}
hosts = [{GITHUB:?}]
swap_in = ["header", "basic", "body"]
{rules_keys}
"#,
        ca = ca.cert_pem_path().display().to_string(),
        port = github.port(),
    );
    let airlock = Airlock::start(&cfg);
    let placeholder = airlock.var("GITHUB_TOKEN");
    World {
        _ca: ca,
        github,
        airlock,
        real,
        placeholder,
    }
}

struct Answer {
    status: u16,
    error: String,
    body: String,
    raw: String,
}

impl World {
    /// curl through airlock: `extra` goes before the URL.
    async fn curl(&self, method: &str, path: &str, extra: &[&str]) -> Answer {
        let env = self.airlock.env.clone();
        let url = format!("https://{GITHUB}{path}");
        let mut args: Vec<String> = ["-sS", "-D", "-", "-X", method, "-w", "\n%{http_code}"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(url);
        let out = blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            curl(&env, &args)
        })
        .await;
        let (rest, status) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
        let error = crate::support::airlock_error(rest).unwrap_or("").to_owned();
        let body = rest.split("\r\n\r\n").last().unwrap_or("").to_owned();
        Answer {
            status: status.trim().parse().unwrap_or(0),
            error,
            body,
            raw: format!("{}{}", out.stdout, out.stderr),
        }
    }

    fn bearer(&self) -> String {
        format!("authorization: Bearer {}", self.placeholder)
    }

    fn upstream_paths(&self) -> Vec<String> {
        self.github
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path_and_query))
            .collect()
    }

    fn assert_no_leak(&self, texts: &[&str]) {
        let logs = self.airlock.logs();
        let mut all = texts.to_vec();
        all.push(&logs);
        assert_not_leaked(&self.real, &all);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_allow_one_repository_and_refuse_the_rest_with_curl() {
    let w = world(
        r#"rules = ["deny DELETE /**", "allow GET,HEAD /repos/acme/web/**", "allow GET /user"]"#,
    )
    .await;
    let auth = w.bearer();
    let ok = w
        .curl("GET", "/repos/acme/web/pulls?state=open", &["-H", &auth])
        .await;
    assert_eq!(ok.status, 200, "{}", ok.raw);
    let refused = w.curl("DELETE", "/repos/acme/web", &["-H", &auth]).await;
    assert_eq!(refused.status, 403, "{}", refused.raw);
    assert_eq!(refused.error, "rule_denied");
    assert_eq!(
        refused.body.trim(),
        "airlock: the rules of binding secret:GITHUB_TOKEN refuse this request: rule 1 (deny DELETE /**)"
    );
    let other = w.curl("GET", "/repos/acme/api", &["-H", &auth]).await;
    assert_eq!((other.status, other.error.as_str()), (403, "rule_denied"));
    assert!(other.body.contains("the default (deny)"), "{}", other.body);
    // Spellings the server reads as another path are refused, not matched.
    let dots = w
        .curl(
            "GET",
            "/repos/acme/web/../api",
            &["--path-as-is", "-H", &auth],
        )
        .await;
    assert_eq!((dots.status, dots.error.as_str()), (403, "rule_denied"));
    assert!(dots.body.contains("the path check"), "{}", dots.body);
    let case = w.curl("DELETE", "/Repos/ACME/web", &["-H", &auth]).await;
    assert_eq!(case.error, "rule_denied");
    // Only the allowed request reached the upstream, with the real token.
    assert_eq!(w.upstream_paths(), ["GET /repos/acme/web/pulls?state=open"]);
    let sent = w.github.requests();
    assert_eq!(
        sent[0].header("authorization"),
        Some(format!("Bearer {}", w.real).as_str())
    );
    let logs = w.airlock.wait_for_log("outcome=\"rule_denied\"");
    assert!(
        logs.contains(
            "refused=\"the rules of binding secret:GITHUB_TOKEN refuse this request: rule 1"
        ),
        "{logs}"
    );
    // A request without the placeholder is not this binding's business.
    let anonymous = w.curl("DELETE", "/repos/acme/web", &[]).await;
    assert_eq!(anonymous.status, 200, "{}", anonymous.raw);
    w.assert_no_leak(&[&ok.raw, &refused.raw, &other.raw, &dots.raw]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gh_reads_the_allowed_repository_and_cannot_delete_it() {
    if !have_gh() {
        return;
    }
    let w = world(r#"rules = ["allow GET /api/v3/repos/acme/web/**"]"#).await;
    let env = with_env(
        &w.airlock.env,
        &[
            ("GH_HOST", GITHUB),
            ("GH_ENTERPRISE_TOKEN", &w.placeholder),
            ("GH_NO_UPDATE_NOTIFIER", "1"),
            ("GH_PROMPT_DISABLED", "1"),
        ],
    );
    let gh = |args: &'static [&'static str]| {
        let env = env.clone();
        blocking(move || {
            let out = std::process::Command::new("gh")
                .args(args)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", std::env::temp_dir())
                .envs(env)
                .output()
                .expect("gh runs");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let (ok, stdout, stderr) = gh(&["api", "repos/acme/web"]).await;
    assert!(ok, "gh api failed: {stdout}{stderr}");
    let (ok, stdout, stderr) = gh(&["api", "-X", "DELETE", "repos/acme/web"]).await;
    assert!(!ok, "the delete went through: {stdout}");
    assert!(stderr.contains("403"), "{stderr}");
    assert_eq!(w.upstream_paths(), ["GET /api/v3/repos/acme/web"]);
    w.assert_no_leak(&[&stdout, &stderr]);
}

fn have_gh() -> bool {
    let present = std::process::Command::new("gh")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        skip("the GitHub CLI `gh` is not installed (apt-get install gh)");
    }
    present
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_refuses_a_request_that_brings_its_own_token() {
    let w = world("require = true").await;
    let own = "authorization: Bearer ghp_agents_own_token_0123456789";
    let refused = w.curl("GET", "/user", &["-H", own]).await;
    assert_eq!(
        (refused.status, refused.error.as_str()),
        (403, "rule_denied")
    );
    assert!(
        refused
            .body
            .contains("require: requests to api.github.test must carry its placeholder"),
        "{}",
        refused.body
    );
    assert!(
        !refused.raw.contains("ghp_agents_own"),
        "the refusal echoes no credential"
    );
    let basic = w.curl("GET", "/user", &["-u", "x:ghp_agents_own"]).await;
    assert_eq!(basic.error, "rule_denied");
    let ok = w.curl("GET", "/user", &["-H", &w.bearer()]).await;
    assert_eq!(ok.status, 200, "{}", ok.raw);
    assert_eq!(
        w.upstream_paths(),
        ["GET /user"],
        "nothing refused was sent"
    );
    w.assert_no_leak(&[&refused.raw, &ok.raw]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_sends_everything_and_audits_what_it_would_refuse() {
    let w = world("rules = [\"allow GET /user\"]\nrules_mode = \"dry_run\"").await;
    let out = w
        .curl("DELETE", "/repos/acme/web", &["-H", &w.bearer()])
        .await;
    assert_eq!(out.status, 200, "{}", out.raw);
    assert_eq!(w.upstream_paths(), ["DELETE /repos/acme/web"]);
    let logs = w
        .airlock
        .wait_for_log("rules_dry_run=secret:GITHUB_TOKEN: the default (deny)");
    assert!(
        logs.contains("dry run: the binding's rules would refuse this request"),
        "{logs}"
    );
    w.assert_no_leak(&[&out.raw]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_queries_pass_and_mutations_are_refused_with_python() {
    let w = world(
        r#"rules = ["deny POST /graphql mutation delete*", "allow POST /graphql query *", "allow POST /graphql mutation addComment"]"#,
    )
    .await;
    let script = format!(
        r#"
import json, os, requests
url = "https://{GITHUB}/graphql"
auth = {{"Authorization": "Bearer " + os.environ["GITHUB_TOKEN"]}}
def send(body, **kw):
    r = requests.post(url, headers=auth, timeout=20, **kw, **({{"json": body}} if not isinstance(body, str) else {{"data": body}}))
    print(r.status_code, r.headers.get("x-airlock-error", "-"), r.text.strip().replace("\n", " "))
send({{"query": "query Viewer {{ viewer {{ login }} }}"}})
send({{"query": "mutation addComment {{ addComment(input: {{}}) {{ id }} }}"}})
send({{"query": "mutation deleteRepo {{ deleteRepository(id: 1) }}"}})
send([{{"query": "{{ viewer {{ login }} }}"}}, {{"query": "mutation Sneaky {{ updateRepository }}"}}])
send({{"query": "query Safe {{ a }} mutation deleteHidden {{ b }}", "operationName": "Safe"}})
send({{"extensions": {{"persistedQuery": {{"sha256Hash": "abc"}}}}}})
send("not json")
"#
    );
    let env = w.airlock.env.clone();
    let out = blocking(move || python(&env, &script)).await;
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{}", out.stdout);
    assert!(lines[0].starts_with("200 -"), "{}", lines[0]);
    assert!(lines[1].starts_with("200 -"), "{}", lines[1]);
    assert!(
        lines[2].starts_with("403 rule_denied")
            && lines[2].contains(
                "rule 1 (deny POST /graphql mutation delete*): GraphQL mutation deleteRepo"
            ),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].starts_with("403 rule_denied") && lines[3].contains("mutation Sneaky"),
        "a batch is judged operation by operation: {}",
        lines[3]
    );
    assert!(
        lines[4].starts_with("403 rule_denied") && lines[4].contains("deleteHidden"),
        "every operation of a document counts: {}",
        lines[4]
    );
    for line in &lines[5..] {
        assert!(
            line.starts_with("403 rule_denied")
                && line.contains("cannot read the GraphQL operation"),
            "{line}"
        );
    }
    assert_eq!(w.upstream_paths(), ["POST /graphql", "POST /graphql"]);
    w.assert_no_leak(&[&out.stdout, &out.stderr]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rules_in_the_config_are_named_and_airlock_does_not_start() {
    let (ok, stderr) = config_check(
        "[[secret]]\nname = \"T\"\nvalue = \"v\"\nhosts = [\"a.test\"]\nrules = [\"deny * /**\", \"allow GET /x\", \"allow get /y\", \"allow POST /graphql mutate *\"]\n",
    );
    assert!(!ok);
    for expected in [
        "line 1: secret \"T\": rule 2 (\"allow GET /x\"): can never match: rule 1 (deny * /**) matches every request before it",
        "rule 3 (\"allow get /y\"): method \"get\": write methods in capitals",
        "rule 4 (\"allow POST /graphql mutate *\"): \"mutate\" is not a GraphQL operation type",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_rules_apply_and_a_sandbox_binding_gets_its_own_through_the_api() {
    let w: VaultWorld = vault_world_with_rules().await;
    w.connect("tenant").await;
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/other").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("the rules of binding provider:acme refuse this request: the default (deny)"),
        "{body}"
    );
    // Bad rules through the API: a clear 400, nothing changed.
    let (status, err) = api(
        &w.airlock,
        "PUT",
        "/v1/sandboxes/default/rules/ACME_TOKEN",
        Some(r#"{"rules":["allow GET api/other"]}"#.into()),
        None,
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"].as_str().unwrap().contains("rule 1"), "{err}");
    let (status, _) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 200, "the provider's rules still apply");
    let (status, err) = api(
        &w.airlock,
        "PUT",
        "/v1/sandboxes/default/rules/NO_SUCH_VAR",
        Some(r#"{"rules":["allow GET /x"]}"#.into()),
        None,
    )
    .await;
    assert_eq!(status, 404, "{err}");
    // The binding's own rules replace the provider's, at once (the CLI).
    let said = super::cli::cli(
        &w.airlock,
        &[
            "sandbox",
            "rules",
            "default",
            "ACME_TOKEN",
            "--rule",
            "allow GET /api/other",
            "--require",
        ],
        &[],
    );
    assert_eq!(said, "ACME_TOKEN of sandbox default: 1 rule(s) set\n");
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/other").await;
    assert_ne!(status, 403, "{body}");
    let (_, sandboxes) = api(&w.airlock, "GET", "/v1/sandboxes", None, None).await;
    assert_eq!(
        sandboxes[0]["rules"]["ACME_TOKEN"]["rules"][0], "allow GET /api/other",
        "{sandboxes}"
    );
    // require: the same host without the placeholder is refused.
    let env = w.airlock.env.clone();
    let out = blocking(move || {
        curl(
            &env,
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("https://{API}/api/me"),
            ],
        )
    })
    .await;
    assert_eq!(out.stdout, "403");
    let logs = w.airlock.logs();
    w.assert_no_secret_in(&[&logs]);
}

async fn vault_world_with_rules() -> VaultWorld {
    let w = vault_world("", "").await;
    // Same world, restarted with rules on the provider.
    let cfg = std::fs::read_to_string(&w.airlock.config_path)
        .unwrap()
        .replace(
            "env = \"ACME_TOKEN\"",
            "env = \"ACME_TOKEN\"\nrules = [\"allow GET /api/me\"]",
        );
    let VaultWorld {
        ca,
        provider,
        mut airlock,
    } = w;
    airlock.stop();
    VaultWorld {
        ca,
        provider,
        airlock: Airlock::start(&cfg),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_reload_on_sighup_on_a_connection_that_stays_open() {
    use crate::support::tunnel;
    let w = world("rules = [\"allow GET /a\"]").await;
    let tls = tunnel::tls_through(
        w.airlock.proxy_addr(),
        &format!("{GITHUB}:443"),
        GITHUB,
        w.airlock.ca_path().as_path(),
        &[b"http/1.1"],
    )
    .await;
    let mut conn = tunnel::h1_client(tls).await;
    let mut get = async |path: &str| {
        let req = http::Request::get(path)
            .header("host", GITHUB)
            .header("authorization", format!("Bearer {}", w.placeholder))
            .body(http_body_util::Full::<bytes::Bytes>::default())
            .unwrap();
        conn.ready().await.expect("connection ready");
        let answer = conn.send_request(req).await.expect("answer");
        tunnel::collect(answer).await.0.as_u16()
    };
    assert_eq!(get("/b").await, 403);
    let cfg = std::fs::read_to_string(&w.airlock.config_path)
        .unwrap()
        .replace(
            "rules = [\"allow GET /a\"]",
            "rules = [\"allow GET /a\", \"allow GET /b\"]",
        );
    std::fs::write(&w.airlock.config_path, cfg).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &w.airlock.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    w.airlock.wait_for_log("configuration reloaded");
    assert_eq!(get("/b").await, 200, "the same connection, the new rules");
    assert_eq!(w.upstream_paths(), ["GET /b"]);
}

/// `examples/narrow.py`, the documented recipe, run with the sandbox's Python.
async fn narrow_py(env: &[(String, String)], placeholder: &str, caveats: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/narrow.py");
    let mut args = vec![script.to_owned(), placeholder.to_owned()];
    args.extend(caveats.iter().map(|c| c.to_string()));
    let env = env.to_vec();
    let out = blocking(move || {
        std::process::Command::new("python3")
            .args(&args)
            .envs(env)
            .output()
            .expect("python3 runs")
    })
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placeholder_narrowed_in_python_works_within_its_caveats_only() {
    let w = world("").await;
    let env = w.airlock.env.clone();
    let p = &w.placeholder;
    let read_web = narrow_py(&env, p, &["allow=GET /repos/acme/web/**"]).await;
    assert!(
        !read_web.contains(&p["miosa-tok-".len()..]),
        "the parent is not in it"
    );
    let bearer = |ph: &str| format!("authorization: Bearer {ph}");
    let ok = w
        .curl("GET", "/repos/acme/web/pulls", &["-H", &bearer(&read_web)])
        .await;
    assert_eq!(ok.status, 200, "{}", ok.raw);
    let sent = w.github.requests();
    assert_eq!(
        sent[0].header("authorization"),
        Some(format!("Bearer {}", w.real).as_str()),
        "the narrowed placeholder carries the parent's token"
    );
    // Outside its caveats: method, path.
    for (method, path) in [("DELETE", "/repos/acme/web"), ("GET", "/repos/acme/api")] {
        let refused = w.curl(method, path, &["-H", &bearer(&read_web)]).await;
        assert_eq!(
            (refused.status, refused.error.as_str()),
            (403, "narrowed_refused"),
            "{}",
            refused.raw
        );
        assert!(
            refused
                .body
                .contains("caveat \"allow=GET /repos/acme/web/**\" refuses this request"),
            "{}",
            refused.body
        );
    }
    // Expired.
    let expired = narrow_py(&env, p, &[&format!("expires={}", unix_now() - 60)]).await;
    let refused = w.curl("GET", "/user", &["-H", &bearer(&expired)]).await;
    assert_eq!(refused.error, "narrowed_refused");
    assert!(refused.body.contains("expired at"), "{}", refused.body);
    // Uses: two, then spent.
    let twice = narrow_py(&env, p, &["uses=2"]).await;
    for _ in 0..2 {
        assert_eq!(
            w.curl("GET", "/user", &["-H", &bearer(&twice)])
                .await
                .status,
            200
        );
    }
    let spent = w.curl("GET", "/user", &["-H", &bearer(&twice)]).await;
    assert_eq!(spent.error, "narrowed_refused");
    assert!(spent.body.contains("2 uses are spent"), "{}", spent.body);
    // Narrowed again with the CLI: narrower still.
    let (ok, once_more, stderr) = run(&[
        "placeholder",
        "narrow",
        &read_web,
        "--allow",
        "GET /repos/acme/web/pulls",
    ]);
    assert!(ok, "{stderr}");
    let narrower = once_more.trim();
    let refused = w
        .curl("GET", "/repos/acme/web/issues", &["-H", &bearer(narrower)])
        .await;
    assert_eq!(refused.error, "narrowed_refused", "{}", refused.raw);
    let ok = w
        .curl("GET", "/repos/acme/web/pulls", &["-H", &bearer(narrower)])
        .await;
    assert_eq!(ok.status, 200, "{}", ok.raw);
    // Tampered: a caveat rewritten with the old signature kept.
    let tamper = format!(
        r#"
import sys
sys.path.insert(0, {dir:?})
from narrow import A
ph = {ph:?}
n = 0
for c in ph[len("miosa-tok-"):]:
    n = n * 62 + A.index(c)
raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
raw = raw[:49] + b"allow=* /**"
n = int.from_bytes(raw, "big")
out = ""
while n:
    n, r = divmod(n, 62)
    out = A[r] + out
print("miosa-tok-" + out)
"#,
        dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples"),
        ph = read_web
    );
    let env2 = env.clone();
    let forged = blocking(move || python(&env2, &tamper)).await;
    let forged = forged.stdout.trim().to_owned();
    let refused = w
        .curl("DELETE", "/repos/acme/web", &["-H", &bearer(&forged)])
        .await;
    assert_eq!(refused.error, "narrowed_refused", "{}", refused.raw);
    assert!(refused.body.contains("does not verify"), "{}", refused.body);
    // An echo of the token comes back as the narrowed placeholder, never the parent.
    let echo_only = narrow_py(&env, p, &["allow=GET /echo-headers"]).await;
    let echo = w
        .curl("GET", "/echo-headers", &["-H", &bearer(&echo_only)])
        .await;
    assert_eq!(echo.status, 200, "{}", echo.raw);
    assert!(echo.body.contains(&echo_only), "{}", echo.body);
    assert!(
        !echo.raw.contains(p.as_str()),
        "the parent placeholder came back: {}",
        echo.raw
    );
    // Nothing refused reached the upstream.
    assert_eq!(
        w.upstream_paths(),
        [
            "GET /repos/acme/web/pulls",
            "GET /user",
            "GET /user",
            "GET /repos/acme/web/pulls",
            "GET /echo-headers"
        ]
    );
    w.assert_no_leak(&[&echo.raw, &refused.raw]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowing_with_bad_caveats_is_refused_by_the_cli() {
    let parent = "miosa-tok-Parent0123456789abcdefghijkl";
    let (ok, _, stderr) = run(&[
        "placeholder",
        "narrow",
        parent,
        "--allow",
        "get /x",
        "--ttl",
        "10m",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("malformed caveat \"allow=get /x\""),
        "{stderr}"
    );
    let (ok, _, stderr) = run(&["placeholder", "narrow", parent, "--ttl", "soon"]);
    assert!(!ok && stderr.contains("--ttl \"soon\""), "{stderr}");
    let (ok, _, stderr) = run(&["placeholder", "narrow", parent]);
    assert!(
        !ok && stderr.contains("give at least one caveat"),
        "{stderr}"
    );
}

/// The audit lines of narrowed refusals, once the first is written.
fn narrowed_audit_lines(w: &World) -> Vec<String> {
    w.airlock
        .wait_for_log("outcome=\"narrowed_refused\"")
        .lines()
        .filter(|l| l.contains("outcome=\"narrowed_refused\""))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrowed_body_cap_passes_small_bodies_and_refuses_larger_ones_with_an_audit_line() {
    let w = world("").await;
    let env = w.airlock.env.clone();
    let capped = narrow_py(&env, &w.placeholder, &["body_max=64"]).await;
    let bearer = format!("authorization: Bearer {capped}");
    let small = "s".repeat(64);
    let ok = w
        .curl("POST", "/upload", &["-H", &bearer, "--data-binary", &small])
        .await;
    assert_eq!(ok.status, 200, "{}", ok.raw);
    let large = "L".repeat(65);
    let refused = w
        .curl("POST", "/upload", &["-H", &bearer, "--data-binary", &large])
        .await;
    assert_eq!(
        (refused.status, refused.error.as_str()),
        (403, "narrowed_refused"),
        "{}",
        refused.raw
    );
    assert!(
        refused
            .body
            .contains("allows bodies up to 64 bytes; this request's is larger"),
        "{}",
        refused.body
    );
    // Chunked, with no length announced: this binding swaps in bodies, so
    // airlock reads it whole and judges its real length.
    let chunked = async |data: &str| {
        w.curl(
            "POST",
            "/upload",
            &[
                "--http1.1",
                "-H",
                &bearer,
                "-H",
                "transfer-encoding: chunked",
                "--data-binary",
                data,
            ],
        )
        .await
    };
    let small_chunked = chunked("tiny").await;
    assert_eq!(small_chunked.status, 200, "{}", small_chunked.raw);
    let large_chunked = chunked(&large).await;
    assert_eq!(
        large_chunked.error, "narrowed_refused",
        "{}",
        large_chunked.raw
    );
    // Only the small bodies reached the upstream, with the parent's token.
    let sent = w.github.requests();
    assert_eq!(w.upstream_paths(), ["POST /upload", "POST /upload"]);
    assert_eq!((sent[0].body_len, sent[1].body_len), (64, 4));
    assert_eq!(
        sent[0].header("authorization"),
        Some(format!("Bearer {}", w.real).as_str())
    );
    // Each refusal has its audit line: binding and reason, no placeholder.
    let lines = narrowed_audit_lines(&w);
    assert!(!lines.is_empty());
    assert!(
        lines.iter().any(|l| l.contains(
            "refused=\"narrowed placeholder of binding secret:GITHUB_TOKEN: the narrowed placeholder allows bodies up to 64 bytes"
        ) && l.contains("status=403")
            && l.contains("path=/upload")),
        "{lines:#?}"
    );
    for line in &lines {
        assert!(!line.contains(&capped), "{line}");
        assert!(!line.contains(&w.placeholder), "{line}");
    }
    w.assert_no_leak(&[&ok.raw, &refused.raw, &large_chunked.raw]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correctly_signed_narrowing_with_a_malformed_caveat_is_refused_and_nothing_is_sent() {
    let w = world("").await;
    let env = w.airlock.env.clone();
    // The documented recipe signs anything: each chain below verifies, but
    // one caveat in it cannot be read.
    for (caveats, named) in [
        (vec!["colour=blue"], "unknown caveat"),
        (
            vec!["allow=GET /user", "expires=soon"],
            "expires takes unix seconds",
        ),
        (vec!["uses=0"], "uses takes a whole number above 0"),
        (
            vec!["allow=get /user"],
            "malformed caveat \"allow=get /user\"",
        ),
        (vec!["body_max=-1"], "body_max takes a number of bytes"),
    ] {
        let bad = narrow_py(&env, &w.placeholder, &caveats).await;
        let refused = w
            .curl(
                "GET",
                "/user",
                &["-H", &format!("authorization: Bearer {bad}")],
            )
            .await;
        assert_eq!(
            (refused.status, refused.error.as_str()),
            (403, "narrowed_refused"),
            "{caveats:?}: {}",
            refused.raw
        );
        assert!(
            refused.body.contains("malformed caveat") && refused.body.contains(named),
            "{caveats:?}: {}",
            refused.body
        );
        w.assert_no_leak(&[&refused.raw]);
    }
    assert!(w.upstream_paths().is_empty(), "{:?}", w.upstream_paths());
    let lines = narrowed_audit_lines(&w);
    assert!(
        lines.iter().any(|l| l.contains("malformed caveat")),
        "{lines:#?}"
    );
}

/// `inject_when_absent` on a `[[secret]]`: Python `requests` with no
/// credential at all gets the real token upstream for the secret that opted
/// in, in its own slot; another secret's host stays bare; an echo of the
/// header comes back as the placeholder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_that_injects_when_absent_serves_a_bare_requests_call_and_only_its_own() {
    const OTHER: &str = "api.other.test";
    let ca = TestCa::new();
    let upstream = Upstream::start(&ca, &[GITHUB, OTHER]).await;
    let real = real_secret("inject");
    let other_real = real_secret("bare");
    let cfg = format!(
        r#"[proxy]
upstream_ca = [{ca:?}]

[resolve]
{GITHUB:?} = "127.0.0.1:{port}"
{OTHER:?} = "127.0.0.1:{port}"

[[secret]]
name = "API_KEY"
value = {real:?}
hosts = [{GITHUB:?}]
inject = "header:X-Api-Key"
inject_when_absent = true
rules = ["allow GET /echo-headers"]

[[secret]]
name = "OTHER_TOKEN"
value = {other_real:?}
hosts = [{OTHER:?}]
"#,
        ca = ca.cert_pem_path().display().to_string(),
        port = upstream.port(),
    );
    let airlock = Airlock::start(&cfg);
    let placeholder = airlock.var("API_KEY");
    let script = format!(
        r#"
import requests
for url in ["https://{GITHUB}/echo-headers", "https://{OTHER}/echo-headers", "https://{GITHUB}/denied"]:
    r = requests.get(url, timeout=20)
    print(r.status_code, r.headers.get("x-airlock-error", "-"), r.json().get("x-api-key", "-") if r.status_code == 200 else "-")
"#
    );
    let env = airlock.env.clone();
    let out = blocking(move || python(&env, &script)).await;
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!("200 - {placeholder}").as_str(),
            "200 - -",
            "403 rule_denied -"
        ],
        "injected and echoed back as the placeholder; the other host bare; rules apply"
    );
    let sent = upstream.requests();
    assert_eq!(sent.len(), 2, "the refused request was not sent");
    assert_eq!(sent[0].header("x-api-key"), Some(real.as_str()));
    assert_eq!(sent[0].header("authorization"), None);
    assert_eq!(sent[1].header("x-api-key"), None);
    assert_eq!(sent[1].header("authorization"), None, "no token for OTHER");
    let logs = airlock.logs();
    assert_not_leaked(&real, &[&out.stdout, &out.stderr, &logs]);
    assert_not_leaked(&other_real, &[&out.stdout, &out.stderr, &logs]);
}
