//! A PostgreSQL cluster of a test's own (initdb in a temp dir, its own
//! port), so a test can stop and restart the server without touching the
//! machine's. Needs the server binaries (Debian's `postgresql` package;
//! `scripts/test` installs them without starting the service) and root (to
//! run them as the `postgres` user).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
}

/// The newest installed server's `bin` folder.
pub fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("pg_ctl").exists() && bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

fn as_postgres(program: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .output()
        .expect("runuser");
    assert!(
        out.status.success(),
        "{} {args:?}: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl PrivatePostgres {
    /// A new cluster, started; `None` when the binaries are missing or this
    /// is not root (the server runs as `postgres`).
    pub fn start() -> Option<Self> {
        if !super::is_root() {
            return None;
        }
        let bin = server_bin()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let chown = Command::new("chown")
            .args(["postgres:postgres", &dir.path().display().to_string()])
            .status()
            .expect("chown");
        assert!(chown.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.path().join("data").display().to_string();
        as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let pg = Self { bin, dir, port };
        pg.ctl("start");
        Some(pg)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl start|stop|restart`, waiting until it is done.
    pub fn ctl(&self, action: &str) {
        let data = self.dir.path().join("data").display().to_string();
        let log = self.dir.path().join("server.log").display().to_string();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let mut args = vec!["-D", &data, "-l", &log, "-w", "-t", "30", "-o", &options];
        if action != "start" {
            args.extend(["-m", "fast"]);
        }
        args.push(action);
        as_postgres(&self.bin.join("pg_ctl"), &args);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}
