#![allow(dead_code)] // each integration-test binary uses only part of the fixtures

//! Runs real client programs (curl, python3, git, node) with a controlled
//! environment and a hard timeout.
//!
//! These block the calling thread. From an async test whose servers run on the
//! same runtime, call them via `tokio::task::spawn_blocking` (or use a
//! multi-thread runtime), or the servers will never get to answer.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code; -1 if the process was killed by a signal (including our timeout).
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// `curl -sS <args>` with only `env` plus PATH and HOME.
pub fn curl(env: &[(String, String)], args: &[&str]) -> Output {
    let mut cmd = base_command("curl", env, None);
    cmd.arg("-sS").args(args);
    run(cmd)
}

/// `python3 -c <script>` with only `env` plus PATH and HOME.
pub fn python(env: &[(String, String)], script: &str) -> Output {
    let mut cmd = base_command("python3", env, None);
    cmd.arg("-c").arg(script);
    run(cmd)
}

/// `program <args>` with only `env` plus PATH and HOME (the aws CLI).
pub fn command(program: &str, env: &[(String, String)], args: &[&str]) -> Output {
    let mut cmd = base_command(program, env, None);
    cmd.args(args);
    run(cmd)
}

/// `node -e <script>` with only `env` plus PATH and HOME.
pub fn node(env: &[(String, String)], script: &str) -> Output {
    let mut cmd = base_command("node", env, None);
    cmd.arg("-e").arg(script);
    run(cmd)
}

/// `git <args>` in `cwd`, isolated from system and user config (HOME is a fresh
/// temp dir) and never prompting. `env` is applied last, so it may override.
pub fn git(env: &[(String, String)], args: &[&str], cwd: &Path) -> Output {
    let home = tempfile::tempdir().expect("temp HOME for git");
    let git_env = [("GIT_TERMINAL_PROMPT", "0"), ("GIT_CONFIG_NOSYSTEM", "1")];
    let mut cmd = base_command("git", env, Some((home.path(), &git_env)));
    cmd.args(args).current_dir(cwd);
    run(cmd)
}

/// A command with a cleared environment: PATH, HOME (the caller's unless
/// given), any `extra` vars, then `env`.
fn base_command(
    program: &str,
    env: &[(String, String)],
    home_and_extra: Option<(&Path, &[(&str, &str)])>,
) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    match home_and_extra {
        Some((home, extra)) => {
            cmd.env("HOME", home);
            cmd.envs(extra.iter().copied());
        }
        None => {
            if let Some(home) = std::env::var_os("HOME") {
                cmd.env("HOME", home);
            }
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// Runs `cmd` to completion, killing its whole process group after
/// [`CLIENT_TIMEOUT`].
fn run(mut cmd: Command) -> Output {
    // Own process group, so a timeout also kills helpers such as git-remote-https
    // that would otherwise keep the output pipes open.
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let program = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());

    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for client") {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            break child.wait().expect("wait for killed client");
        }
        thread::sleep(Duration::from_millis(20));
    };

    let stdout = stdout.join().unwrap_or_default();
    let mut stderr = stderr.join().unwrap_or_default();
    if timed_out {
        stderr.push_str(&format!(
            "\n[killed after {}s timeout]\n",
            CLIENT_TIMEOUT.as_secs()
        ));
    }
    Output {
        status: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}
