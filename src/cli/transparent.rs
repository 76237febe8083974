//! `airlock transparent rules`: the iptables rules that send a sandbox's
//! HTTPS and HTTP to airlock's transparent listeners, printed as commands
//! or applied (optionally inside a network namespace).

use std::path::PathBuf;
use std::process::Command;

use clap::{Args, Subcommand, ValueEnum};

use crate::config::Loaded;
use crate::Error;

#[derive(Subcommand)]
pub enum TransparentCommand {
    /// Print (or apply, or remove) the iptables rules that redirect a sandbox's HTTPS and HTTP to the [transparent] listeners.
    Rules(RulesArgs),
}

#[derive(Args)]
pub struct RulesArgs {
    /// sidecar: airlock shares the sandbox's network namespace (nat OUTPUT;
    /// airlock's own user is not redirected). gateway: the sandbox's traffic
    /// reaches airlock's host on an interface (nat PREROUTING; nothing else
    /// from it is forwarded).
    #[arg(long, value_enum, default_value = "sidecar")]
    mode: RulesMode,
    /// gateway: the interface the sandbox's traffic arrives on.
    #[arg(long)]
    interface: Option<String>,
    /// sidecar: the uid airlock runs as (its own connections go out unredirected).
    #[arg(long)]
    exclude_uid: Option<u32>,
    /// The TLS listener's port (default: [transparent] listen's).
    #[arg(long)]
    tls_port: Option<u16>,
    /// The HTTP listener's port (default: [transparent] http_listen's; none: port 80 is not redirected).
    #[arg(long)]
    http_port: Option<u16>,
    #[arg(long, short, env = "AIRLOCK_CONFIG")]
    config: Option<PathBuf>,
    /// The nat chain the rules live in.
    #[arg(long, default_value = "AIRLOCK")]
    chain: String,
    /// Also for IPv6 (ip6tables).
    #[arg(long)]
    ipv6: bool,
    /// Print the commands that remove the rules instead.
    #[arg(long)]
    remove: bool,
    /// Run the commands instead of printing them.
    #[arg(long)]
    apply: bool,
    /// Run them in this network namespace (`ip netns exec NAME …`).
    #[arg(long, requires = "apply")]
    netns: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum RulesMode {
    Sidecar,
    Gateway,
}

/// What the rules redirect, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub mode: RulesMode,
    pub chain: String,
    pub interface: Option<String>,
    pub exclude_uid: Option<u32>,
    pub tls_port: u16,
    pub http_port: Option<u16>,
}

pub fn transparent(command: TransparentCommand) -> Result<(), Error> {
    match command {
        TransparentCommand::Rules(args) => rules_command(args),
    }
}

fn rules_command(args: RulesArgs) -> Result<(), Error> {
    let spec = spec_from(&args)?;
    let tools: &[&str] = if args.ipv6 {
        &["iptables", "ip6tables"]
    } else {
        &["iptables"]
    };
    let mut commands = Vec::new();
    for tool in tools {
        let lines = if args.remove {
            removal(&spec)
        } else {
            rules(&spec)
        };
        commands.extend(lines.into_iter().map(|mut argv| {
            argv.insert(0, (*tool).to_owned());
            argv
        }));
    }
    if !args.apply {
        for argv in &commands {
            println!("{}", shell_line(argv));
        }
        return Ok(());
    }
    for argv in &commands {
        run(args.netns.as_deref(), argv, args.remove)?;
    }
    Ok(())
}

fn spec_from(args: &RulesArgs) -> Result<RuleSpec, Error> {
    let (config_tls, config_http) = match &args.config {
        Some(path) => {
            let loaded = Loaded::read(Some(path))?;
            let t = &loaded.config.transparent;
            (t.listen.map(|a| a.port()), t.http_listen.map(|a| a.port()))
        }
        None => (None, None),
    };
    let tls_port = args.tls_port.or(config_tls).ok_or_else(|| {
        Error::Usage("give --tls-port, or --config with [transparent] listen".into())
    })?;
    if args.mode == RulesMode::Gateway && args.interface.is_none() {
        return Err(Error::Usage(
            "--mode gateway needs --interface: the one the sandbox's traffic arrives on".into(),
        ));
    }
    if args.mode == RulesMode::Sidecar && args.exclude_uid.is_none() {
        return Err(Error::Usage(
            "--mode sidecar needs --exclude-uid: the uid airlock runs as, or its own connections would loop back to it".into(),
        ));
    }
    if args.chain.is_empty() || args.chain.len() > 28 || args.chain.contains(char::is_whitespace) {
        return Err(Error::Usage(format!(
            "--chain {:?}: a chain name is 1 to 28 characters without spaces",
            args.chain
        )));
    }
    Ok(RuleSpec {
        mode: args.mode,
        chain: args.chain.clone(),
        interface: args.interface.clone(),
        exclude_uid: args.exclude_uid,
        tls_port,
        http_port: args.http_port.or(config_http),
    })
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

/// The rules, in order, each without the tool's name.
pub fn rules(spec: &RuleSpec) -> Vec<Vec<String>> {
    let chain = spec.chain.as_str();
    let mut out = vec![argv(&["-t", "nat", "-N", chain])];
    if let Some(uid) = spec.exclude_uid {
        out.push(argv(&[
            "-t",
            "nat",
            "-A",
            chain,
            "-m",
            "owner",
            "--uid-owner",
            &uid.to_string(),
            "-j",
            "RETURN",
        ]));
    }
    if spec.mode == RulesMode::Sidecar {
        // Loopback stays loopback (airlock itself listens there).
        out.push(argv(&[
            "-t", "nat", "-A", chain, "-o", "lo", "-j", "RETURN",
        ]));
    }
    let mut redirect = |dport: u16, to: u16| {
        out.push(argv(&[
            "-t",
            "nat",
            "-A",
            chain,
            "-p",
            "tcp",
            "--dport",
            &dport.to_string(),
            "-j",
            "REDIRECT",
            "--to-ports",
            &to.to_string(),
        ]));
    };
    redirect(443, spec.tls_port);
    if let Some(http) = spec.http_port {
        redirect(80, http);
    }
    out.extend(hooks(spec).into_iter().map(|mut hook| {
        hook.insert(2, "-A".to_owned());
        hook
    }));
    out
}

/// The rules that send traffic into the chain (and, for a gateway, keep
/// the rest of the sandbox's traffic from being forwarded), without their
/// `-A`/`-D` (inserted at index 2).
fn hooks(spec: &RuleSpec) -> Vec<Vec<String>> {
    let chain = spec.chain.as_str();
    match (spec.mode, spec.interface.as_deref()) {
        (RulesMode::Gateway, Some(iface)) => vec![
            argv(&[
                "-t",
                "nat",
                "PREROUTING",
                "-i",
                iface,
                "-p",
                "tcp",
                "-j",
                chain,
            ]),
            argv(&["-t", "filter", "FORWARD", "-i", iface, "-j", "REJECT"]),
        ],
        _ => vec![argv(&["-t", "nat", "OUTPUT", "-p", "tcp", "-j", chain])],
    }
}

/// The commands that undo [`rules`].
pub fn removal(spec: &RuleSpec) -> Vec<Vec<String>> {
    let chain = spec.chain.as_str();
    let mut out: Vec<Vec<String>> = hooks(spec)
        .into_iter()
        .map(|mut hook| {
            hook.insert(2, "-D".to_owned());
            hook
        })
        .collect();
    out.push(argv(&["-t", "nat", "-F", chain]));
    out.push(argv(&["-t", "nat", "-X", chain]));
    out
}

/// One command as a shell line, quoting what needs it.
fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn run(netns: Option<&str>, argv: &[String], removing: bool) -> Result<(), Error> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]);
            cmd.args(argv);
            cmd
        }
        None => {
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            cmd
        }
    };
    let out = cmd.output().map_err(|e| {
        Error::Usage(format!(
            "cannot run {}: {e} (is iptables installed?)",
            argv[0]
        ))
    })?;
    // Removing what is not there is done, not a failure.
    if out.status.success() || removing {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{} failed: {}",
        shell_line(argv),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(cmds: &[Vec<String>]) -> Vec<String> {
        cmds.iter().map(|c| shell_line(c)).collect()
    }

    #[test]
    fn sidecar_rules_redirect_443_and_80_except_airlocks_own_user_and_loopback() {
        let spec = RuleSpec {
            mode: RulesMode::Sidecar,
            chain: "AIRLOCK".into(),
            interface: None,
            exclude_uid: Some(1000),
            tls_port: 15443,
            http_port: Some(15080),
        };
        assert_eq!(
            lines(&rules(&spec)),
            [
                "-t nat -N AIRLOCK",
                "-t nat -A AIRLOCK -m owner --uid-owner 1000 -j RETURN",
                "-t nat -A AIRLOCK -o lo -j RETURN",
                "-t nat -A AIRLOCK -p tcp --dport 443 -j REDIRECT --to-ports 15443",
                "-t nat -A AIRLOCK -p tcp --dport 80 -j REDIRECT --to-ports 15080",
                "-t nat -A OUTPUT -p tcp -j AIRLOCK",
            ]
        );
        assert_eq!(
            lines(&removal(&spec)),
            [
                "-t nat -D OUTPUT -p tcp -j AIRLOCK",
                "-t nat -F AIRLOCK",
                "-t nat -X AIRLOCK"
            ]
        );
    }

    #[test]
    fn gateway_rules_take_the_interface_and_forward_nothing_else() {
        let spec = RuleSpec {
            mode: RulesMode::Gateway,
            chain: "AIRLOCK_sbx".into(),
            interface: Some("veth1".into()),
            exclude_uid: None,
            tls_port: 15443,
            http_port: None,
        };
        assert_eq!(
            lines(&rules(&spec)),
            [
                "-t nat -N AIRLOCK_sbx",
                "-t nat -A AIRLOCK_sbx -p tcp --dport 443 -j REDIRECT --to-ports 15443",
                "-t nat -A PREROUTING -i veth1 -p tcp -j AIRLOCK_sbx",
                "-t filter -A FORWARD -i veth1 -j REJECT",
            ]
        );
        assert_eq!(
            lines(&removal(&spec))[..2],
            [
                "-t nat -D PREROUTING -i veth1 -p tcp -j AIRLOCK_sbx",
                "-t filter -D FORWARD -i veth1 -j REJECT",
            ]
        );
    }

    #[test]
    fn shell_lines_quote_what_a_shell_would_split() {
        let argv = vec!["iptables".to_owned(), "a b".to_owned(), "it's".to_owned()];
        assert_eq!(shell_line(&argv), r"iptables 'a b' 'it'\''s'");
    }
}
