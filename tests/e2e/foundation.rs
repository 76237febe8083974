//! The foundation: interception, header and Basic-auth swap for static
//! secrets, host binding, tunnelling, egress, and bad input.

use std::time::Duration;

use http_body_util::{BodyExt, Full};

use crate::support::clients::{curl, git, python};
use crate::support::git_server::GitServer;
use crate::support::tunnel;
use crate::support::{
    assert_not_leaked, blocking, real_secret, with_env, Airlock, TestCa, Upstream,
};

pub(crate) const API: &str = "api.github.test";
pub(crate) const OTHER: &str = "other.test";

/// `airlock.toml` for tests: the upstream CA as an extra root and resolve
/// overrides to the test servers (the egress guard stays on).
pub(crate) fn config(
    ca: &TestCa,
    resolve: &[(&str, u16)],
    proxy_extra: &str,
    secrets: &str,
) -> String {
    let mut out = format!(
        "[proxy]\nupstream_ca = [{:?}]\n{proxy_extra}\n\n[resolve]\n",
        ca.cert_pem_path().display().to_string()
    );
    for (name, port) in resolve {
        out.push_str(&format!("{name:?} = \"127.0.0.1:{port}\"\n"));
    }
    out.push('\n');
    out.push_str(secrets);
    out
}

pub(crate) fn github_secret(real: &str, hosts: &[&str]) -> String {
    format!("[[secret]]\nname = \"GITHUB_TOKEN\"\nvalue = {real:?}\nhosts = {hosts:?}\n")
}

pub(crate) struct World {
    pub(crate) ca: TestCa,
    pub(crate) api: Upstream,
    pub(crate) other: Upstream,
    pub(crate) airlock: Airlock,
    pub(crate) real: String,
    pub(crate) placeholder: String,
}

pub(crate) async fn world(proxy_extra: &str) -> World {
    let ca = TestCa::new();
    let api = Upstream::start(&ca, &[API, "fresh.github.test"]).await;
    let other = Upstream::start(&ca, &[OTHER]).await;
    let real = real_secret("found");
    let cfg = config(
        &ca,
        &[
            (API, api.port()),
            ("*.github.test", api.port()),
            (OTHER, other.port()),
        ],
        proxy_extra,
        &github_secret(&real, &[API, "*.github.test"]),
    );
    let airlock = Airlock::start(&cfg);
    let placeholder = airlock.var("GITHUB_TOKEN");
    World {
        ca,
        api,
        other,
        airlock,
        real,
        placeholder,
    }
}

impl World {
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        self.airlock.env.clone()
    }

    /// The proxy still serves a plain, correct request.
    pub(crate) async fn assert_still_serving(&self) {
        let env = self.env();
        let auth = format!("Authorization: Bearer {}", self.placeholder);
        let out = blocking(move || {
            curl(
                &env,
                &[
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-H",
                    &auth,
                    "https://api.github.test/alive",
                ],
            )
        })
        .await;
        assert_eq!(out.stdout, "200", "proxy stopped serving: {}", out.stderr);
    }

    pub(crate) fn assert_no_leak(&self, outputs: &[&str]) {
        let logs = self.airlock.logs();
        let mut all: Vec<&str> = outputs.to_vec();
        all.push(&logs);
        assert_not_leaked(&self.real, &all);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_swaps_the_bearer_placeholder_over_http1_and_http2() {
    let w = world("").await;
    for (flag, expect_version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let env = w.env();
        let auth = format!("Authorization: Bearer {}", w.placeholder);
        let out = blocking(move || {
            curl(
                &env,
                &[
                    flag,
                    "-w",
                    "\n%{http_code} %{http_version}",
                    "-H",
                    &auth,
                    "https://api.github.test/repos",
                ],
            )
        })
        .await;
        assert!(out.success(), "curl failed: {}", out.stderr);
        assert!(
            out.stdout.ends_with(&format!("200 {expect_version}")),
            "{}",
            out.stdout
        );
        w.assert_no_leak(&[&out.stdout, &out.stderr]);
    }
    let requests = w.api.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {}", w.real).as_str())
        );
        assert_eq!(r.sni.as_deref(), Some(API));
        assert!(r.header("proxy-authorization").is_none());
        assert!(r.header("via").is_none());
    }
    // `upstream_protocol = "auto"`: the upstream leg speaks what the sandbox spoke.
    assert_eq!(requests[0].version, "HTTP/1.1");
    assert_eq!(requests[1].version, "HTTP/2.0", "upstream offers h2");
    // On HTTP/2 the name is `:authority` only, never a second `Host` (nginx
    // refuses both); on HTTP/1.1 one `Host`.
    assert_eq!(requests[0].header("host"), Some(API));
    let hosts = requests[0].headers.iter().filter(|(n, _)| n == "host");
    assert_eq!(hosts.count(), 1, "{:?}", requests[0].headers);
    assert!(
        requests[1].header("host").is_none(),
        "{:?}",
        requests[1].headers
    );
    assert_eq!(requests[1].authority.as_deref(), Some(API));
    assert!(
        !w.api.raw_contains(&w.placeholder),
        "the placeholder reached the upstream"
    );
    let logs = w.airlock.wait_for_log("swapped=secret:GITHUB_TOKEN");
    assert!(logs.contains("airlock::audit"), "{logs}");
    assert!(logs.contains("path=/repos"), "{logs}");
}

/// `auto`: an upstream with traffic gets the wire it answers faster on. This
/// one's HTTP/2 is 300 ms slower: after the warm-up on the sandbox's own
/// HTTP/2 and the learning requests, an HTTP/2 client's requests reach it
/// over HTTP/1.1. Requests sent while 4 others await their answers offer
/// HTTP/2 all the same (that their times are not recorded is a unit test:
/// `wire_choice::tests`).
#[tokio::test(flavor = "multi_thread")]
async fn auto_moves_a_busy_upstream_to_the_wire_it_answers_faster_on() {
    use airlock_proxy::wire_choice::{MIN_SAMPLES, WARMUP};
    let w = world("").await;
    let total = WARMUP + 2 * MIN_SAMPLES + 20;
    let (env, auth) = (w.env(), format!("Authorization: Bearer {}", w.placeholder));
    let runs = blocking(move || {
        let options = ["--http2", "-H", &auth];
        // The warm-up is not measured: answered at once, to keep the test short.
        let warmup = curl_many(&env, &options, "https://api.github.test/slow-h2/0", WARMUP);
        // HTTP/2 answers 300 ms late: HTTP/1.1 wins unless its running mean
        // reaches 270 ms (the margin), its first answer, on a new upstream
        // connection, weighing most. Six busy loops beside the test made
        // that mean 25-30 ms, past the 18 ms a 20 ms delay allowed.
        let url = "https://api.github.test/slow-h2/300";
        let measured = curl_many(&env, &options, url, total - WARMUP);
        [warmup, measured]
    })
    .await;
    for run in &runs {
        assert!(run.success(), "curl failed: {}", run.stderr);
    }
    let answers = runs.iter().map(|r| r.stdout.matches("200").count());
    assert_eq!(answers.sum::<usize>() as u64, total, "{runs:?}");
    let versions: Vec<String> = w.api.requests().into_iter().map(|r| r.version).collect();
    assert_eq!(versions.len() as u64, total);
    let (warmup, rest) = versions.split_at(WARMUP as usize);
    assert!(warmup.iter().all(|v| v == "HTTP/2.0"), "{versions:?}");
    let (learning, settled) = rest.split_at(2 * MIN_SAMPLES as usize);
    assert_eq!(
        learning.iter().filter(|v| *v == "HTTP/1.1").count() as u64,
        MIN_SAMPLES,
        "{versions:?}"
    );
    assert!(settled.iter().all(|v| v == "HTTP/1.1"), "{versions:?}");
    // The operator is told what was chosen, and why.
    let logs = w.airlock.wait_for_log("upstream protocol measured");
    assert!(
        logs.contains("faster=\"http1\"") || logs.contains("faster=http1"),
        "{logs}"
    );
    // And the metrics endpoint shows the wire each answer came on, and how
    // many upstreams are measured faster on which wire.
    let value = |metrics: &str, name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let h1_answers = "airlock_upstream_answers_total{wire=\"http1\"}";
    let h2_answers = "airlock_upstream_answers_total{wire=\"h2\"}";
    // A request is counted when its answer's body ends, which may be just
    // after curl has read it: asked again for a while.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = w.airlock.scrape_metrics().await.stdout;
        if value(&metrics, h1_answers) + value(&metrics, h2_answers) == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        value(&metrics, "airlock_upstream_faster_wire{wire=\"http1\"}"),
        1,
        "{metrics}"
    );
    let (h1, h2) = (value(&metrics, h1_answers), value(&metrics, h2_answers));
    let on_h1 = versions.iter().filter(|v| *v == "HTTP/1.1").count() as u64;
    assert_eq!((h1, h2), (on_h1, total - on_h1), "{metrics}");

    // Busy: 12 requests at once on one HTTP/2 connection, each taking 1 s
    // over HTTP/1.1 and 20 ms over HTTP/2. The first few keep the verdict's
    // HTTP/1.1; those sent while BUSY await their heads offer HTTP/2 (a
    // loaded machine has that second to send them).
    use airlock_proxy::wire_choice::BUSY;
    let burst = 12u64;
    let (env, auth) = (w.env(), format!("Authorization: Bearer {}", w.placeholder));
    let burst_out = blocking(move || {
        let options = ["--http2", "--parallel", "--parallel-max", "12", "-H", &auth];
        let url = "https://api.github.test/slow-h2/20/1000";
        curl_many(&env, &options, url, burst)
    })
    .await;
    assert!(burst_out.success(), "curl failed: {}", burst_out.stderr);
    assert_eq!(burst_out.stdout.matches("200").count() as u64, burst);
    let all: Vec<String> = w.api.requests().into_iter().map(|r| r.version).collect();
    let burst_versions = &all[total as usize..];
    let burst_h2 = burst_versions.iter().filter(|v| *v == "HTTP/2.0").count() as u64;
    // Slack of one for a request that arrives after the first answers.
    assert!(
        burst_h2 >= burst - u64::from(BUSY) - 1 && burst_h2 < burst,
        "{burst_versions:?}"
    );
    w.assert_no_leak(&[
        &runs[0].stdout,
        &runs[0].stderr,
        &runs[1].stdout,
        &runs[1].stderr,
        &burst_out.stdout,
        &burst_out.stderr,
    ]);
}

/// `auto`, a host of large answers: its HTTP/1.1 answers its heads 30 ms
/// later, so time to the head alone would keep the sandbox's HTTP/2; but an
/// HTTP/2 upstream leg costs more CPU per byte, so once the host's answers
/// are large on average and it has answered on HTTP/1.1, its requests take
/// HTTP/1.1.
#[tokio::test(flavor = "multi_thread")]
async fn auto_takes_http1_to_a_host_of_large_answers() {
    use airlock_proxy::wire_choice::{MIN_SAMPLES, WARMUP};
    let w = world("").await;
    let total = WARMUP + 2 * MIN_SAMPLES + 20;
    let (env, auth) = (w.env(), format!("Authorization: Bearer {}", w.placeholder));
    let out = blocking(move || {
        let url = "https://api.github.test/download/1048576/30";
        curl_many(
            &env,
            &["--http2", "-o", "/dev/null", "-H", &auth],
            url,
            total,
        )
    })
    .await;
    assert!(out.success(), "curl failed: {}", out.stderr);
    assert_eq!(out.stdout.matches("200").count() as u64, total);
    let versions: Vec<String> = w.api.requests().into_iter().map(|r| r.version).collect();
    assert_eq!(versions.len() as u64, total);
    let (warmup, rest) = versions.split_at(WARMUP as usize);
    assert!(warmup.iter().all(|v| v == "HTTP/2.0"), "{versions:?}");
    let settled = &rest[2 * MIN_SAMPLES as usize..];
    assert!(settled.iter().all(|v| v == "HTTP/1.1"), "{versions:?}");
    w.assert_no_leak(&[&out.stdout, &out.stderr]);
}

/// One curl run fetching `url` `n` times with `options`, printing each status.
fn curl_many(
    env: &[(String, String)],
    options: &[&str],
    url: &str,
    n: u64,
) -> crate::support::clients::Output {
    let mut args: Vec<&str> = options.to_vec();
    args.extend(["-w", "%{http_code}\n"]);
    args.extend((0..n).map(|_| url));
    curl(env, &args)
}

/// The upstream versions of one HTTP/1.1 and one HTTP/2 request through
/// airlock with `proxy_extra`.
async fn upstream_versions(proxy_extra: &str) -> Vec<String> {
    let w = world(proxy_extra).await;
    for flag in ["--http1.1", "--http2"] {
        let env = w.env();
        let auth = format!("Authorization: Bearer {}", w.placeholder);
        let out = blocking(move || {
            curl(
                &env,
                &[
                    flag,
                    "-w",
                    "%{http_code}",
                    "-H",
                    &auth,
                    "https://api.github.test/repos",
                ],
            )
        })
        .await;
        assert!(out.stdout.ends_with("200"), "{} {}", out.stdout, out.stderr);
    }
    w.api.requests().into_iter().map(|r| r.version).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_protocol_can_be_fixed_for_every_host_or_some() {
    let h2 = "HTTP/2.0".to_owned();
    let h1 = "HTTP/1.1".to_owned();
    assert_eq!(
        upstream_versions("upstream_protocol = \"http2\"\n").await,
        [h2.clone(), h2.clone()]
    );
    assert_eq!(
        upstream_versions("upstream_protocol = \"http1\"\n").await,
        [h1.clone(), h1.clone()]
    );
    // A host list beats the default; other hosts keep it.
    assert_eq!(
        upstream_versions("upstream_http2_hosts = [\"*.github.test\"]\n").await,
        [h2.clone(), h2.clone()]
    );
    assert_eq!(
        upstream_versions(
            "upstream_protocol = \"http2\"\nupstream_http1_hosts = [\"api.github.test\"]\n"
        )
        .await,
        [h1.clone(), h1]
    );
    assert_eq!(
        upstream_versions(
            "upstream_protocol = \"http1\"\nupstream_http2_hosts = [\"other.test\"]\n"
        )
        .await[1],
        "HTTP/1.1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requests_uses_the_printed_environment() {
    let w = world("").await;
    let env = w.env();
    let script = r#"
import os, requests
r = requests.get("https://api.github.test/user?page=2",
                 headers={"Authorization": "token " + os.environ["GITHUB_TOKEN"], "X-Api-Key": os.environ["GITHUB_TOKEN"]})
print(r.status_code, r.text.strip())
"#;
    let out = blocking(move || python(&env, script)).await;
    assert!(out.success(), "python failed: {}", out.stderr);
    assert_eq!(out.stdout.trim(), "200 ok");
    let r = &w.api.requests()[0];
    assert_eq!(
        r.header("authorization"),
        Some(format!("token {}", w.real).as_str())
    );
    assert_eq!(r.header("x-api-key"), Some(w.real.as_str()));
    assert_eq!(r.path_and_query, "/user?page=2");
    assert!(!w.api.raw_contains(&w.placeholder));
    w.assert_no_leak(&[&out.stdout, &out.stderr]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clones_with_the_placeholder_as_basic_password() {
    let ca = TestCa::new();
    let real = real_secret("git");
    let server = GitServer::start(&ca, &["git.github.test"], &real).await;
    let cfg = config(
        &ca,
        &[("git.github.test", server.port())],
        "",
        &github_secret(&real, &["git.github.test"]),
    );
    let airlock = Airlock::start(&cfg);
    let placeholder = airlock.var("GITHUB_TOKEN");
    let url = format!("https://x-access-token:{placeholder}@git.github.test/repo.git");
    let env = airlock.env.clone();
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path().to_owned();
    let (ls, clone) = blocking(move || {
        let ls = git(&env, &["ls-remote", &url], &cwd);
        let clone = git(&env, &["clone", "-q", &url, "cloned"], &cwd);
        (ls, clone)
    })
    .await;
    assert!(ls.success(), "git ls-remote failed: {}", ls.stderr);
    assert!(ls.stdout.contains("refs/heads/main"), "{}", ls.stdout);
    assert!(clone.success(), "git clone failed: {}", clone.stderr);
    assert!(work.path().join("cloned/README").exists());
    let auths = server.authorizations();
    assert!(!auths.is_empty(), "git never sent credentials");
    assert!(
        !server.raw_contains(&placeholder),
        "the placeholder reached the git server"
    );
    let logs = airlock.logs();
    assert_not_leaked(
        &real,
        &[&ls.stdout, &ls.stderr, &clone.stdout, &clone.stderr, &logs],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mib_streams_both_ways_without_growing_the_proxy() {
    let w = world("").await;
    let baseline = w.airlock.memory_kib("VmRSS");
    let env = w.env();
    let auth = format!("Authorization: Bearer {}", w.placeholder);
    let upload = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(upload.path(), vec![b'a'; 50 << 20]).unwrap();
    let upload_path = upload.path().to_owned();
    let (down, up) = blocking(move || {
        let down = curl(
            &env,
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{size_download}",
                "-H",
                &auth,
                "https://api.github.test/download/52428800",
            ],
        );
        let up = curl(
            &env,
            &[
                "--http1.1",
                "-H",
                &auth,
                "-T",
                upload_path.to_str().unwrap(),
                "https://api.github.test/upload",
            ],
        );
        (down, up)
    })
    .await;
    assert_eq!(down.stdout, "52428800", "{}", down.stderr);
    assert!(
        up.stdout.contains("52428800"),
        "upload: {} {}",
        up.stdout,
        up.stderr
    );
    let peak = w.airlock.memory_kib("VmHWM");
    // Buffering either body whole would add 50 MiB.
    assert!(
        peak < baseline + 32 * 1024,
        "proxy peak RSS {peak} KiB grew too far from {baseline} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholder_for_an_unbound_host_is_refused_and_never_sent() {
    // Intercepting every host shows the refusal even where no binding exists.
    let w = world("intercept = \"all\"").await;
    let env = w.env();
    let auth = format!("Authorization: Bearer {}", w.placeholder);
    let out = blocking(move || curl(&env, &["-i", "-H", &auth, "https://other.test/steal"])).await;
    assert!(out.stdout.contains("HTTP/2 403"), "{}", out.stdout);
    assert!(
        out.stdout.contains("x-airlock-error: host_not_allowed"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("secret:GITHUB_TOKEN") && out.stdout.contains("other.test"),
        "{}",
        out.stdout
    );
    assert!(
        w.other.requests().is_empty(),
        "the unbound upstream saw a request"
    );
    let logs = w.airlock.wait_for_log("host_not_allowed");
    assert!(logs.contains("outcome=\"host_not_allowed\""), "{logs}");
    w.assert_no_leak(&[&out.stdout, &out.stderr]);
    w.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholder_in_the_url_needs_the_query_location() {
    let w = world("").await;
    let env = w.env();
    let url = format!("https://api.github.test/x?access_token={}", w.placeholder);
    let out = blocking(move || curl(&env, &["-i", &url])).await;
    assert!(out.stdout.contains(" 403"), "{}", out.stdout);
    assert!(
        out.stdout.contains("location_not_allowed"),
        "{}",
        out.stdout
    );
    assert!(w.api.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_hosts_are_tunnelled_with_the_upstream_certificate() {
    // Every host is intercepted by default; a passthrough host is tunnelled.
    let w = world("passthrough_hosts = [\"other.test\"]").await;
    // Trusting only the upstream's test CA: verification passes only if the
    // client sees the upstream's own certificate, not one airlock minted.
    let env = with_env(
        &w.env(),
        &[(
            "CURL_CA_BUNDLE",
            &w.ca.cert_pem_path().display().to_string(),
        )],
    );
    let out = blocking(move || {
        curl(
            &env,
            &["-w", " %{http_code}", "https://other.test/tunnelled"],
        )
    })
    .await;
    assert!(out.success(), "tunnel failed: {}", out.stderr);
    assert_eq!(out.stdout, "ok\n 200");
    assert_eq!(w.other.requests()[0].path_and_query, "/tunnelled");
    let logs = w.airlock.wait_for_log("mode=\"tunnel\"");
    assert!(logs.contains("mode=\"tunnel\""), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_sni_must_match_the_connect_target() {
    let w = world("").await;
    let env = w.env();
    let auth = format!("Authorization: Bearer {}", w.placeholder);
    let out = blocking(move || {
        curl(
            &env,
            &[
                "--http1.1",
                "-i",
                "-H",
                "Host: other.test",
                "-H",
                &auth,
                "https://api.github.test/",
            ],
        )
    })
    .await;
    assert!(out.stdout.contains("HTTP/1.1 421"), "{}", out.stdout);
    assert!(out.stdout.contains("misdirected"), "{}", out.stdout);

    // CONNECT to the bound host, but SNI names another: every request is refused.
    let tls = tunnel::tls_through_unverified(
        w.airlock.proxy_addr(),
        "api.github.test:443",
        "other.test",
        &[b"http/1.1"],
    )
    .await;
    let mut sender = tunnel::h1_client(tls).await;
    let req = http::Request::get("/")
        .header("host", "api.github.test")
        .header("authorization", format!("Bearer {}", w.placeholder))
        .body(Full::default())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 421);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("SNI"), "{body:?}");
    assert!(w.api.requests().is_empty());
    assert!(w.other.requests().is_empty());
    w.assert_no_leak(&[&out.stdout]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_never_carries_a_placeholder() {
    let w = world("").await;
    let env = w.env();
    // Port 80 (allowed); the override sends it to the test server's port.
    let url = "http://api.github.test/plain".to_owned();
    let auth = format!("Authorization: Bearer {}", w.placeholder);
    let out = blocking(move || curl(&env, &["-i", "-H", &auth, &url])).await;
    assert!(out.stdout.starts_with("HTTP/1.1 403"), "{}", out.stdout);
    assert!(
        out.stdout.contains("plain_http") && out.stdout.contains("secret:GITHUB_TOKEN"),
        "{}",
        out.stdout
    );
    assert!(w.api.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_trailers_and_expect_continue_pass_through() {
    let w = world("").await;
    let env = w.env();
    let auth = format!("Authorization: Bearer {}", w.placeholder);
    let out = blocking(move || {
        curl(
            &env,
            &[
                "--http1.1",
                "-w",
                "[%{http_code}]",
                "-H",
                &auth,
                "-I",
                "https://api.github.test/head",
                "--next",
                "-o",
                "/dev/null",
                "-w",
                "[%{http_code}]",
                "https://api.github.test/status/204",
                "--next",
                "-o",
                "/dev/null",
                "-w",
                "[%{http_code}]",
                "https://api.github.test/status/304",
                "--next",
                "-w",
                "[%{http_code}]",
                "-H",
                "Expect: 100-continue",
                "--data-binary",
                "hello",
                "https://api.github.test/upload",
            ],
        )
    })
    .await;
    assert!(out.stdout.contains("[200]"), "{}", out.stdout);
    assert!(out.stdout.contains("[204][304]"), "{}", out.stdout);
    assert!(
        out.stdout.contains("{\"received\":5}[200]"),
        "{} {}",
        out.stdout,
        out.stderr
    );

    // Trailers over h2 through the interception.
    let tls = tunnel::tls_through(
        w.airlock.proxy_addr(),
        "api.github.test:443",
        API,
        w.airlock.ca_path().as_path(),
        &[b"h2"],
    )
    .await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut sender = tunnel::h2_client(tls).await;
    let req = http::Request::get("https://api.github.test/trailers")
        .header("te", "trailers")
        .body(Full::default())
        .unwrap();
    let (status, _, _, trailers) = tunnel::collect(sender.send_request(req).await.unwrap()).await;
    assert_eq!(status, 200);
    let trailers = trailers.expect("trailers arrive");
    assert_eq!(trailers["x-trailer"], "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_connections_mint_one_certificate() {
    let w = world("").await;
    let proxy = w.airlock.proxy_addr();
    let ca = w.airlock.ca_path();
    let mut handshakes = tokio::task::JoinSet::new();
    for _ in 0..24 {
        let ca = ca.clone();
        handshakes.spawn(async move {
            let tls = tunnel::tls_through(
                proxy,
                "fresh.github.test:443",
                "fresh.github.test",
                &ca,
                &[b"http/1.1"],
            )
            .await;
            tls.get_ref().1.peer_certificates().map(|c| c[0].clone())
        });
    }
    let mut leaves = Vec::new();
    while let Some(leaf) = handshakes.join_next().await {
        leaves.push(leaf.unwrap().expect("a certificate"));
    }
    assert!(
        leaves.windows(2).all(|w| w[0] == w[1]),
        "every connection got the same leaf"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = w.airlock.logs();
    let minted = logs
        .lines()
        .filter(|l| l.contains("leaf certificate minted") && l.contains("fresh.github.test"))
        .count();
    assert_eq!(minted, 1, "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lines_can_be_json() {
    let ca = TestCa::new();
    let api = Upstream::start(&ca, &[API]).await;
    let real = real_secret("json");
    let cfg = config(&ca, &[(API, api.port())], "", &github_secret(&real, &[API]))
        + "\n[log]\nformat = \"json\"\n";
    let airlock = Airlock::start(&cfg);
    let env = airlock.env.clone();
    let auth = format!("Authorization: Bearer {}", airlock.var("GITHUB_TOKEN"));
    blocking(move || {
        curl(
            &env,
            &["-s", "-H", &auth, "https://api.github.test/json?secret=q"],
        )
    })
    .await;
    let logs = airlock.wait_for_log("\"target\":\"airlock::audit\"");
    let line = logs
        .lines()
        .find(|l| l.contains("\"target\":\"airlock::audit\"") && l.contains("/json"))
        .expect("an audit line");
    let audit: serde_json::Value = serde_json::from_str(line).expect("the audit line is JSON");
    assert_eq!(audit["host"], API);
    assert_eq!(audit["path"], "/json", "the query is not logged");
    assert_eq!(audit["status"], 200);
    assert_eq!(audit["swapped"], "secret:GITHUB_TOKEN");
    assert_not_leaked(&real, &[&logs]);
}
