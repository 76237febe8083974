//! A sandbox in its own network namespace reaches the world only through airlock.

use super::containment::*;
use crate::support::clients::Output;
use crate::support::{assert_not_leaked, blocking, netns, real_secret, Airlock, TestCa, Upstream};

/// A network namespace whose only way out is the proxy: the honest
/// containment test. Needs root and `ip` (iproute2); says so when skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_namespace_reaches_the_world_only_through_airlock() {
    if !netns::available() {
        crate::support::skip("the network-namespace test needs root and iproute2 (`ip`)");
        return;
    }
    let sandbox = netns::SandboxNamespace::create("sbx", 231);
    let (ns, host_ip) = (sandbox.name.clone(), sandbox.host_ip.clone());

    let ca = TestCa::new();
    let bound = Upstream::start(&ca, &[BOUND]).await;
    let other = Upstream::start(&ca, &[OTHER]).await;
    let real = real_secret("netns");
    let cfg = format!(
        "[proxy]\nintercept = \"all\"\nupstream_ca = [{:?}]\n[resolve]\n\"{BOUND}\" = \"127.0.0.1:{}\"\n\"{OTHER}\" = \"127.0.0.1:{}\"\n[[secret]]\nname = \"API_TOKEN\"\nvalue = {real:?}\nhosts = [\"{BOUND}\"]\n",
        ca.cert_pem_path().display().to_string(),
        bound.port(),
        other.port()
    );
    let airlock = Airlock::start_listening(&cfg, &format!("{host_ip}:0"));
    let env = airlock.env.clone();
    let placeholder = airlock.var("API_TOKEN");
    let (ns2, upstream_port) = (ns.clone(), bound.port());
    let (through, direct, outside, attack) = blocking(move || {
        let in_ns = |args: &[&str]| {
            let mut full = vec![
                "netns",
                "exec",
                ns2.as_str(),
                "curl",
                "-sS",
                "--max-time",
                "5",
            ];
            full.extend_from_slice(args);
            let mut cmd = std::process::Command::new("ip");
            cmd.args(&full)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default());
            for (k, v) in &env {
                cmd.env(k, v);
            }
            let out = cmd.output().expect("ip netns exec curl");
            Output {
                status: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        };
        let auth = format!("Authorization: Bearer {placeholder}");
        (
            in_ns(&[
                "-w",
                " %{http_code}",
                "-H",
                &auth,
                &format!("https://{BOUND}/from-the-sandbox"),
            ]),
            in_ns(&[
                "--noproxy",
                "*",
                "-k",
                &format!("https://127.0.0.1:{upstream_port}/direct"),
            ]),
            in_ns(&["--noproxy", "*", "-k", "https://1.1.1.1/"]),
            in_ns(&[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                &auth,
                &format!("https://{OTHER}/steal"),
            ]),
        )
    })
    .await;
    assert_eq!(
        through.stdout, "ok\n 200",
        "through the proxy: {}",
        through.stderr
    );
    assert_ne!(
        direct.status, 0,
        "a direct connection to the upstream must fail"
    );
    assert_ne!(outside.status, 0, "the sandbox has no route out");
    assert_eq!(attack.stdout, "403", "{}", attack.stderr);
    assert_eq!(
        bound.requests()[0].header("authorization"),
        Some(format!("Bearer {real}").as_str())
    );
    assert!(other.requests().is_empty());
    assert!(!bound
        .requests()
        .iter()
        .any(|r| r.path_and_query == "/direct"));
    assert_not_leaked(
        &real,
        &[
            &through.stdout,
            &through.stderr,
            &attack.stdout,
            &airlock.logs(),
        ],
    );
}
