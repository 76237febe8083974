//! A sandbox in its own network namespace, joined to this one by a veth
//! pair (`HOST_IP/30` here, `NS_IP/30` there); removed on drop. Needs root
//! and iproute2.

use std::process::Command;

use super::clients::Output;

pub struct SandboxNamespace {
    pub name: String,
    pub host_if: String,
    pub ns_if: String,
    pub host_ip: String,
    pub ns_ip: String,
}

/// Whether namespaces can be made here (root and `ip`).
pub fn available() -> bool {
    super::is_root() && Command::new("ip").arg("-V").output().is_ok()
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl SandboxNamespace {
    /// `subnet` picks the 10.`subnet`.X.0/30 range, so tests that run at
    /// once do not collide; the process id picks X and the names.
    pub fn create(tag: &str, subnet: u8) -> Self {
        let id = std::process::id() % 200 + 20;
        let name = format!("airlock-{tag}-{}", std::process::id());
        let (host_if, ns_if) = (format!("a{tag}h{id}"), format!("a{tag}n{id}"));
        assert!(host_if.len() <= 15, "interface name too long: {host_if}");
        let (host_ip, ns_ip) = (format!("10.{subnet}.{id}.1"), format!("10.{subnet}.{id}.2"));
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        ip(&["netns", "add", &name]);
        let ns = Self {
            name,
            host_if,
            ns_if,
            host_ip,
            ns_ip,
        };
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.ns_if,
        ]);
        ip(&["link", "set", &ns.ns_if, "netns", &ns.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &ns.host_if,
        ]);
        ip(&["link", "set", &ns.host_if, "up"]);
        ns.ip(&["addr", "add", &format!("{}/30", ns.ns_ip), "dev", &ns.ns_if]);
        ns.ip(&["link", "set", &ns.ns_if, "up"]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip ARGS…` inside the namespace.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["netns", "exec", &self.name, "ip"];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// Every destination goes to this side of the veth pair.
    pub fn route_all_via_host(&self) {
        self.ip(&["route", "add", "default", "via", &self.host_ip]);
    }

    /// The namespace's own `/etc/hosts` (`ip netns exec` mounts
    /// `/etc/netns/NAME/hosts` over it), so names resolve as its DNS would.
    pub fn set_hosts(&self, entries: &[(&str, &str)]) {
        let dir = format!("/etc/netns/{}", self.name);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NAME");
        let mut text = String::from("127.0.0.1 localhost\n");
        for (addr, name) in entries {
            text.push_str(&format!("{addr} {name}\n"));
        }
        std::fs::write(format!("{dir}/hosts"), text).expect("write the namespace's hosts");
    }

    /// Runs `program ARGS…` inside the namespace with exactly `env` (and
    /// PATH), for at most `timeout_secs` (`timeout` kills it after).
    pub fn run(
        &self,
        program: &str,
        args: &[&str],
        env: &[(String, String)],
        timeout_secs: u32,
    ) -> Output {
        let limit = timeout_secs.to_string();
        let out = self
            .command(&["timeout", &limit, program], args, env)
            .output()
            .expect("ip netns exec");
        Output {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts `program ARGS…` inside the namespace with exactly `env` (and
    /// PATH), its stdin and stdout piped, and returns without waiting: the
    /// caller ends it. (`ip netns exec` becomes the program, so its id is
    /// the program's.)
    pub fn spawn(
        &self,
        program: &str,
        args: &[&str],
        env: &[(String, String)],
    ) -> std::process::Child {
        self.command(&[program], args, env)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("ip netns exec")
    }

    fn command(&self, program: &[&str], args: &[&str], env: &[(String, String)]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .args(program)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }
}

impl Drop for SandboxNamespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}
