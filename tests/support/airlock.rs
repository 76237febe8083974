//! Runs the real `airlock` binary as a child process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `airlock up`, killed on drop. Its stderr (the log) goes to a file
/// the test can read.
pub struct Airlock {
    child: Child,
    /// The environment `airlock up` printed for the sandbox.
    pub env: Vec<(String, String)>,
    pub proxy_url: String,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    log_path: PathBuf,
    admin_token_env: Option<String>,
    _dir: tempfile::TempDir,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_airlock")
}

/// `airlock config check` on `config`: (ok, stderr).
pub fn config_check(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airlock.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(binary())
        .args(["config", "check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `airlock ARGS` with nothing else: (ok, stdout, stderr).
pub fn run(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(binary())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Airlock {
    /// Starts `airlock up` with `config` (TOML without `[proxy] listen`, which
    /// is set to an ephemeral loopback port).
    pub fn start(config: &str) -> Airlock {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, extra_env: &[(&str, &str)]) -> Airlock {
        Self::start_full(config, extra_env, None)
    }

    /// Starts airlock on an existing data dir (a restart keeps CA, database and keys).
    pub fn restart_in(config: &str, data_dir: &Path) -> Airlock {
        Self::start_full(config, &[], Some(data_dir.to_owned()))
    }

    pub fn start_full(
        config: &str,
        extra_env: &[(&str, &str)],
        data_dir: Option<PathBuf>,
    ) -> Airlock {
        Self::start_cmd("up", config, extra_env, data_dir)
    }

    /// `airlock up` with the proxy on `listen` (e.g. a veth address).
    pub fn start_listening(config: &str, listen: &str) -> Airlock {
        Self::start_args("up", config, &[], None, listen)
    }

    /// Runs `airlock SUBCOMMAND` (`up`, `proxy` or `vault`). Only `up` prints
    /// an environment; the others are ready when they log that they listen.
    pub fn start_cmd(
        subcommand: &str,
        config: &str,
        extra_env: &[(&str, &str)],
        data_dir: Option<PathBuf>,
    ) -> Airlock {
        Self::start_args(subcommand, config, extra_env, data_dir, "127.0.0.1:0")
    }

    /// `airlock up` with its proxy, vault and metrics listeners on given addresses.
    pub fn start_on(config: &str, listen: &str, vault_listen: &str, admin_listen: &str) -> Airlock {
        Self::start_addrs(
            "up",
            config,
            &[],
            None,
            [listen, vault_listen, admin_listen],
            None,
        )
    }

    fn start_args(
        subcommand: &str,
        config: &str,
        extra_env: &[(&str, &str)],
        data_dir: Option<PathBuf>,
        listen: &str,
    ) -> Airlock {
        Self::start_addrs(
            subcommand,
            config,
            extra_env,
            data_dir,
            [listen, "127.0.0.1:0", "127.0.0.1:0"],
            None,
        )
    }

    /// `airlock up` allowed only `open_files` descriptors (run under
    /// util-linux's `prlimit`, which sets the limit and becomes airlock).
    pub fn start_with_open_files(config: &str, open_files: u64) -> Airlock {
        Self::start_addrs(
            "up",
            config,
            &[],
            None,
            ["127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"],
            Some(open_files),
        )
    }

    fn start_addrs(
        subcommand: &str,
        config: &str,
        extra_env: &[(&str, &str)],
        data_dir: Option<PathBuf>,
        [listen, vault_listen, admin_listen]: [&str; 3],
        open_files: Option<u64>,
    ) -> Airlock {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("airlock.toml");
        std::fs::write(&config_path, config).expect("write config");
        let data_dir = data_dir.unwrap_or_else(|| dir.path().join("data"));
        let log_path = dir.path().join("airlock.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut cmd = match open_files {
            Some(n) => {
                let mut prlimit = Command::new("prlimit");
                prlimit
                    .arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(binary());
                prlimit
            }
            None => Command::new(binary()),
        };
        cmd.args([subcommand, "--config"])
            .arg(&config_path)
            .arg("--data-dir")
            .arg(&data_dir)
            .args([
                "--listen",
                listen,
                "--vault-listen",
                vault_listen,
                "--admin-listen",
                admin_listen,
            ])
            .env("AIRLOCK_LOG", "info")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn airlock");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut env = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.is_empty() {
                    break;
                }
                if let Some(rest) = line.strip_prefix("export ") {
                    if let Some((k, v)) = rest.split_once('=') {
                        env.push((k.to_owned(), v.trim_matches('\'').to_owned()));
                    }
                }
            }
            let _ = tx.send(env);
        });
        let printed = if subcommand == "up" {
            rx.recv_timeout(Duration::from_secs(30))
        } else {
            Ok(Vec::new())
        };
        let env = match printed {
            Ok(env) if !env.is_empty() || subcommand != "up" => env,
            _ => {
                let _ = child.kill();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("airlock did not print its environment; log:\n{log}");
            }
        };
        let proxy_url = match env.iter().find(|(k, _)| k == "HTTPS_PROXY") {
            Some((_, v)) => v.clone(),
            None => wait_for_listen(
                &log_path,
                if subcommand == "vault" {
                    "vault listening"
                } else {
                    "proxy listening"
                },
            ),
        };
        Airlock {
            child,
            env,
            proxy_url,
            data_dir,
            config_path,
            log_path,
            admin_token_env: extra_env
                .iter()
                .find(|(k, _)| *k == "AIRLOCK_ADMIN_TOKEN")
                .map(|(_, v)| v.to_string()),
            _dir: dir,
        }
    }

    pub fn var(&self, name: &str) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} not in the sandbox environment"))
    }

    pub fn proxy_addr(&self) -> std::net::SocketAddr {
        self.proxy_url
            .trim_start_matches("http://")
            .parse()
            .expect("proxy address")
    }

    pub fn ca_path(&self) -> PathBuf {
        self.data_dir.join("ca.pem")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log holds `needle` (audit lines are written when a
    /// response body ends, which can be just after the client returns).
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if logs.contains(needle) || Instant::now() > deadline {
                return logs;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the process (SIGKILL) and waits for it; the data dir stays.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The vault's base URL, from its "vault listening" log line.
    pub fn vault_url(&self) -> String {
        let logs = self.wait_for_log("vault listening");
        let line = logs
            .lines()
            .find(|l| l.contains("vault listening"))
            .expect("vault listening line");
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("listen="))
            .expect("listen= field");
        format!("http://{addr}")
    }

    /// The metrics endpoint's base URL, from its "metrics listening" log line.
    pub fn metrics_url(&self) -> String {
        wait_for_listen(&self.log_path, "metrics listening")
    }

    /// The metrics endpoint's text, fetched with curl off the runtime.
    pub async fn scrape_metrics(&self) -> super::clients::Output {
        let url = format!("{}/metrics", self.metrics_url());
        super::blocking(move || super::clients::curl(&[], &["-s", &url])).await
    }

    /// The admin API credential airlock created in its data dir.
    pub fn admin_token(&self) -> String {
        if let Some(token) = &self.admin_token_env {
            return token.clone();
        }
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

/// `http://ADDR` from a "… listening listen=ADDR" log line.
fn wait_for_listen(log_path: &Path, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = std::fs::read_to_string(log_path).unwrap_or_default();
        if let Some(addr) = logs
            .lines()
            .filter(|l| l.contains(what))
            .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("listen=")))
        {
            return format!("http://{addr}");
        }
        assert!(
            Instant::now() < deadline,
            "airlock never logged {what:?}:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Airlock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
