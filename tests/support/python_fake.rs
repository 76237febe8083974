//! A fake API written in Python (`tests/support/fake_*.py`) that checks
//! signatures with an independent implementation: started on 127.0.0.1 with
//! a leaf from the test CA, it prints its port and logs each request it
//! received as a JSON line.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::support::TestCa;

pub struct PythonFake {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for PythonFake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PythonFake {
    /// Runs `python3 tests/support/SCRIPT CERT KEY SECRETS… LOG EXTRA…`,
    /// serving a certificate for `hosts`.
    pub fn start(
        ca: &TestCa,
        script: &str,
        hosts: &[&str],
        secrets: &[&str],
        extra: &[&str],
    ) -> PythonFake {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ca.leaf_pem(hosts);
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let log = dir.path().join("requests.jsonl");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/support")
            .join(script);
        let mut child = Command::new("python3")
            .arg(&script)
            .args([&cert_path, &key_path])
            .args(secrets)
            .arg(&log)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{} prints its port", script.display()));
        PythonFake {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    /// One JSON object per request the fake received.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}
