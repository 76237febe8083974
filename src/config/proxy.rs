//! `[proxy]` and `[resolve]` become `ProxyConfig`: the proxy's own
//! `ProxySettings` (defaults from `ProxySettings::default()`, the one source)
//! plus what the binary needs around it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use airlock_proxy::egress::{EgressLists, OverrideTarget, ResolveOverrides};
use airlock_proxy::settings::{
    ConsentWebhook, TransparentSettings, UpstreamProtocol, UpstreamProtocols,
};
use airlock_proxy::ProxySettings;
use airlock_vault_client::{HostPattern, SandboxId};
use rustls_pki_types::CertificateDer;

use super::file::ProxySection;
use super::secret_source::{trimmed, SecretSource, SourceKeys};
use super::Loaded;

/// Where the metrics endpoint listens unless `admin_listen` says otherwise.
pub fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

/// The proxy part of a parsed config.
pub struct ProxyConfig {
    pub settings: ProxySettings,
    /// `[resolve]` and `upstream_ca` again, for airlock's other clients.
    pub outbound: Outbound,
}

/// What airlock's own HTTP clients (the vault's, to OAuth providers; a
/// remote vault's) take from `[resolve]` and `upstream_ca`, as plain values.
#[derive(Debug, Clone, Default)]
pub struct Outbound {
    /// First match wins.
    pub resolve: Vec<ResolveEntry>,
    /// Trusted besides the system roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

#[derive(Debug, Clone)]
pub struct ResolveEntry {
    pub host: HostPattern,
    pub ip: std::net::IpAddr,
    /// `None`: the port the client asked for.
    pub port: Option<u16>,
}

impl ProxySection {
    pub fn listen(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(airlock_proxy::settings::default_listen)
    }

    pub fn admin_listen(&self) -> SocketAddr {
        self.admin_listen.unwrap_or_else(default_admin_listen)
    }

    pub fn admin(&self) -> bool {
        self.admin.unwrap_or(true)
    }

    /// The proxy URL sandboxes get: `public_url`, else the listen address.
    pub fn url(&self, listen: SocketAddr) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => super::http_url(listen),
        }
    }
}

static WEBHOOK_SECRET_KEYS: SourceKeys = SourceKeys {
    value: "consent_webhook_secret",
    env: "consent_webhook_secret_env",
    file: "consent_webhook_secret_file",
};

impl Loaded {
    /// `[proxy] workers` as the proxy will read it: the core count unless set.
    pub fn proxy_workers(&self) -> usize {
        self.config.proxy.workers.unwrap_or_else(default_workers)
    }

    /// `[proxy]` and `[resolve]`; problems go to `errors`, each once.
    pub(super) fn proxy_config(&self, errors: &mut Vec<String>) -> ProxyConfig {
        let p = &self.config.proxy;
        let mut settings = ProxySettings::default();
        apply_scalars(p, &mut settings);
        settings.workers = self.proxy_workers();
        if settings.allowed_ports.is_empty() {
            errors.push("proxy.allowed_ports is empty: no request could succeed".into());
        }
        if p.ca_cert.is_some() != p.ca_key.is_some() {
            errors.push("proxy.ca_cert and proxy.ca_key must be given together".into());
        }
        if let Some(url) = &p.public_url {
            if !is_http_url(url) {
                errors.push(format!(
                    "proxy.public_url {url:?} must start with http:// or https://"
                ));
            }
        }
        settings.upstream_ca = self.upstream_ca(errors);
        settings.transparent = self.transparent(errors);
        settings.consent_webhook = self.consent_webhook(errors);
        let resolve = self.resolve_overrides(errors);
        settings.passthrough_hosts =
            host_patterns("passthrough_hosts", &p.passthrough_hosts, errors);
        settings.upstream_protocol = upstream_protocols(p, errors);
        if settings.decompression_budget < settings.max_decoded_body {
            errors.push(format!(
                "proxy.decompression_budget_bytes ({}) is smaller than proxy.max_decoded_body_bytes ({}): no compressed body of the allowed size could be decoded",
                settings.decompression_budget, settings.max_decoded_body
            ));
        }
        settings.egress = EgressLists {
            deny_hosts: host_patterns("deny_hosts", &p.deny_hosts, errors),
            allow_hosts: host_patterns("allow_hosts", &p.allow_hosts, errors),
            deny_cidrs: networks("proxy.deny_cidrs", &p.deny_cidrs, errors),
            allow_cidrs: networks("proxy.allow_cidrs", &p.allow_cidrs, errors),
        };
        settings.resolve =
            match ResolveOverrides::new(resolve.iter().map(|(p, t)| (p.as_str(), *t))) {
                Ok(r) => r,
                Err(e) => {
                    errors.push(format!("resolve: {e}"));
                    ResolveOverrides::default()
                }
            };
        let outbound = Outbound {
            resolve: resolve
                .iter()
                .filter_map(|(pattern, target)| {
                    Some(ResolveEntry {
                        host: HostPattern::parse(pattern).ok()?,
                        ip: target.ip,
                        port: target.port,
                    })
                })
                .collect(),
            extra_roots: settings.upstream_ca.clone(),
        };
        ProxyConfig { settings, outbound }
    }

    /// `[transparent]`: who a redirected connection's source is, and what
    /// its original destination may be.
    fn transparent(&self, errors: &mut Vec<String>) -> TransparentSettings {
        let t = &self.config.transparent;
        let mut sources = Vec::new();
        for (net, sandbox) in &t.sources {
            let field = format!("transparent.sources {net:?}");
            let Some(net) = networks(&field, std::slice::from_ref(net), errors).pop() else {
                continue;
            };
            if sandbox.is_empty() || sandbox.chars().any(|c| c.is_whitespace() || c == ':') {
                errors.push(format!("{field}: {sandbox:?} is not a sandbox id"));
            } else {
                sources.push((net, SandboxId::new(sandbox.as_str())));
            }
        }
        let listens = t.listen.is_some() || t.http_listen.is_some();
        if listens && self.config.proxy.require_auth == Some(true) && sources.is_empty() {
            errors.push(
                "transparent.listen with proxy.require_auth = true needs transparent.sources: redirected connections carry no Proxy-Authorization, so the source address names the sandbox".into(),
            );
        }
        let mut addresses = Vec::new();
        for (pattern, list) in &t.addresses {
            let field = format!("transparent.addresses {pattern:?}");
            match HostPattern::parse(pattern) {
                Ok(host) => addresses.push((host, networks(&field, list, errors))),
                Err(e) => errors.push(format!("{field}: {e}")),
            }
        }
        TransparentSettings {
            sources,
            original_destination: t.original_destination.unwrap_or_default(),
            addresses,
        }
    }

    /// `consent_webhook_url` and its signing key, which go together.
    fn consent_webhook(&self, errors: &mut Vec<String>) -> Option<ConsentWebhook> {
        let p = &self.config.proxy;
        let source = match SecretSource::at_most_one(
            &WEBHOOK_SECRET_KEYS,
            p.consent_webhook_secret.as_ref(),
            p.consent_webhook_secret_env.as_deref(),
            p.consent_webhook_secret_file.as_deref(),
        ) {
            Ok(source) => source.map(|s| s.resolved(|path| self.resolve_path(path))),
            Err(e) => {
                errors.push(format!("proxy.{e}"));
                return None;
            }
        };
        let Some(url) = &p.consent_webhook_url else {
            if source.is_some() {
                errors.push(
                    "proxy.consent_webhook_secret… is set without proxy.consent_webhook_url".into(),
                );
            }
            return None;
        };
        let uri = match url.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("https" | "http")) && uri.host().is_some() =>
            {
                uri
            }
            _ => {
                errors.push(format!(
                    "proxy.consent_webhook_url {url:?} must be an http:// or https:// URL"
                ));
                return None;
            }
        };
        let Some(source) = source else {
            errors.push(
                "proxy.consent_webhook_url needs a signing key: consent_webhook_secret, _env or _file".into(),
            );
            return None;
        };
        match source.read(WEBHOOK_SECRET_KEYS.file) {
            Ok(secret) => Some(ConsentWebhook {
                url: uri,
                secret: trimmed(&secret),
            }),
            Err(e) => {
                errors.push(format!("proxy.{e}"));
                None
            }
        }
    }

    fn upstream_ca(&self, errors: &mut Vec<String>) -> Vec<CertificateDer<'static>> {
        let mut certs = Vec::new();
        for path in &self.config.proxy.upstream_ca {
            let full = self.resolve_path(path);
            match read_pem_certs(&full) {
                Ok(found) if found.is_empty() => errors.push(format!(
                    "proxy.upstream_ca {}: no PEM certificate in the file",
                    full.display()
                )),
                Ok(found) => certs.extend(found),
                Err(e) => errors.push(format!("proxy.upstream_ca {}: {e}", full.display())),
            }
        }
        certs
    }

    fn resolve_overrides(&self, errors: &mut Vec<String>) -> Vec<(String, OverrideTarget)> {
        let mut overrides = Vec::new();
        for (pattern, target) in &self.config.resolve {
            let line = self.line_of(target.span().start);
            match target.get_ref().parse::<OverrideTarget>() {
                Ok(t) => overrides.push((pattern.clone(), t)),
                Err(e) => errors.push(format!("line {line}: resolve {pattern:?}: {e}")),
            }
        }
        overrides
    }
}

/// Keys that are a `ProxySettings` field as they are, or in seconds. A zero
/// where zero would mean "never" or "none" counts as one.
fn apply_scalars(p: &ProxySection, s: &mut ProxySettings) {
    fn set<T: Clone>(field: &mut T, value: &Option<T>) {
        if let Some(v) = value {
            *field = v.clone();
        }
    }
    fn secs(field: &mut Duration, value: Option<u64>) {
        if let Some(v) = value {
            *field = Duration::from_secs(v.max(1));
        }
    }
    fn at_least_one<T: Copy + Ord + From<u8>>(field: &mut T, value: Option<T>) {
        if let Some(v) = value {
            *field = v.max(T::from(1));
        }
    }
    set(&mut s.intercept, &p.intercept);
    set(&mut s.allowed_ports, &p.allowed_ports);
    set(
        &mut s.allow_private_destinations,
        &p.allow_private_destinations,
    );
    set(&mut s.require_auth, &p.require_auth);
    set(&mut s.add_via, &p.add_via);
    secs(&mut s.connect_timeout, p.connect_timeout_secs);
    secs(&mut s.response_timeout, p.response_timeout_secs);
    secs(&mut s.tls_handshake_timeout, p.tls_handshake_timeout_secs);
    secs(&mut s.header_read_timeout, p.header_read_timeout_secs);
    secs(&mut s.body_read_timeout, p.body_read_timeout_secs);
    set(&mut s.max_header_bytes, &p.max_header_bytes);
    set(&mut s.max_headers, &p.max_headers);
    set(&mut s.replay_buffer_bytes, &p.replay_buffer_bytes);
    set(&mut s.max_decoded_body, &p.max_decoded_body_bytes);
    set(&mut s.scrub_responses, &p.scrub_responses);
    set(&mut s.decompression_budget, &p.decompression_budget_bytes);
    at_least_one(
        &mut s.max_connections_per_sandbox,
        p.max_connections_per_sandbox,
    );
    at_least_one(&mut s.max_connections, p.max_connections);
    at_least_one(&mut s.auth_failures_per_minute, p.auth_failures_per_minute);
    if let Some(v) = p.consent_wait_secs {
        s.consent_wait = Duration::from_secs(v);
    }
    if let Some(v) = p.max_consent_wait_secs {
        s.max_consent_wait = Duration::from_secs(v);
    }
    at_least_one(&mut s.max_held_requests, p.max_held_requests);
}

/// One worker per core this process may run on (cgroup quota and affinity
/// included).
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `upstream_protocol` and the hosts that differ from it; a host named in
/// both lists is a mistake, not a tie to break.
fn upstream_protocols(p: &ProxySection, errors: &mut Vec<String>) -> UpstreamProtocols {
    for h in &p.upstream_http1_hosts {
        if p.upstream_http2_hosts.contains(h) {
            errors.push(format!(
                "proxy.upstream_http1_hosts and proxy.upstream_http2_hosts both name {h:?}"
            ));
        }
    }
    let one = host_patterns("upstream_http1_hosts", &p.upstream_http1_hosts, errors);
    let two = host_patterns("upstream_http2_hosts", &p.upstream_http2_hosts, errors);
    UpstreamProtocols {
        default: p.upstream_protocol.unwrap_or_default(),
        hosts: one
            .into_iter()
            .map(|h| (h, UpstreamProtocol::Http1))
            .chain(two.into_iter().map(|h| (h, UpstreamProtocol::Http2)))
            .collect(),
    }
}

fn host_patterns(field: &str, list: &[String], errors: &mut Vec<String>) -> Vec<HostPattern> {
    let mut patterns = Vec::new();
    for h in list {
        match HostPattern::parse(h) {
            Ok(pattern) => patterns.push(pattern),
            Err(e) => errors.push(format!("proxy.{field}: {e}")),
        }
    }
    patterns
}

fn networks(field: &str, list: &[String], errors: &mut Vec<String>) -> Vec<ipnet::IpNet> {
    let mut nets = Vec::new();
    for c in list {
        match c
            .parse::<ipnet::IpNet>()
            .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        {
            Ok(net) => nets.push(net),
            Err(_) => errors.push(format!(
                "{field}: {c:?} is not a CIDR (e.g. 10.0.0.0/8) or an address"
            )),
        }
    }
    nets
}

pub(super) fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

pub fn read_pem_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(certs)
}

/// The CA files `[proxy]` names, both or neither, relative to the config file.
pub fn ca_files(loaded: &Loaded) -> Option<(PathBuf, PathBuf)> {
    let p = &loaded.config.proxy;
    match (&p.ca_cert, &p.ca_key) {
        (Some(cert), Some(key)) => Some((loaded.resolve_path(cert), loaded.resolve_path(key))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::load;
    use super::*;
    use airlock_proxy::InterceptMode;

    #[test]
    fn transparent_sources_and_addresses_are_read() {
        let l = load(
            "[transparent]\nlisten = \"0.0.0.0:15443\"\noriginal_destination = \"ignore\"\n\
             [transparent.sources]\n\"10.1.0.0/24\" = \"sb-1\"\n\"10.2.0.7\" = \"sb-2\"\n\
             [transparent.addresses]\n\"*.github.com\" = [\"140.82.112.0/20\", \"192.0.2.1\"]\n",
        );
        let mut errors = Vec::new();
        let t = l.proxy_config(&mut errors).settings.transparent;
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            t.original_destination,
            airlock_proxy::settings::OriginalDestination::Ignore
        );
        let sources: Vec<_> = t
            .sources
            .iter()
            .map(|(net, sb)| (net.to_string(), sb.to_string()))
            .collect();
        assert_eq!(
            sources,
            [
                ("10.1.0.0/24".to_owned(), "sb-1".to_owned()),
                ("10.2.0.7/32".to_owned(), "sb-2".to_owned())
            ]
        );
        assert!(t.addresses[0].0.matches("api.github.com"));
        assert_eq!(t.addresses[0].1.len(), 2);
    }

    #[test]
    fn bad_transparent_entries_are_each_reported() {
        let l = load(
            "[proxy]\nrequire_auth = true\n[transparent]\nlisten = \"0.0.0.0:15443\"\n\
             [transparent.sources]\n\"10.1.0.0/33\" = \"sb-1\"\n\"10.3.0.0/24\" = \"has space\"\n\
             [transparent.addresses]\n\"api..test\" = [\"1.2.3.4\"]\n\"ok.test\" = [\"not-an-ip\"]\n",
        );
        let mut errors = Vec::new();
        l.proxy_config(&mut errors);
        let all = errors.join("\n");
        assert!(all.contains("transparent.sources \"10.1.0.0/33\""), "{all}");
        assert!(all.contains("\"has space\" is not a sandbox id"), "{all}");
        assert!(all.contains("needs transparent.sources"), "{all}");
        assert!(all.contains("transparent.addresses \"api..test\""), "{all}");
        assert!(all.contains("\"not-an-ip\" is not a CIDR"), "{all}");
        assert_eq!(errors.len(), 5, "{all}");
    }

    #[test]
    fn upstream_protocol_and_its_host_lists() {
        let mut errors = Vec::new();
        let c =
            load("[proxy]\nupstream_protocol = \"http2\"\nupstream_http1_hosts = [\"old.test\"]\n")
                .proxy_config(&mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let p = &c.settings.upstream_protocol;
        assert_eq!(p.default, UpstreamProtocol::Http2);
        assert_eq!(p.hosts.len(), 1);
        let mut errors = Vec::new();
        load(
            "[proxy]\nupstream_http1_hosts = [\"a.test\"]\nupstream_http2_hosts = [\"a.test\", \"bad..test\"]\n",
        )
        .proxy_config(&mut errors);
        let all = errors.join("\n");
        assert!(all.contains("both name \"a.test\""), "{all}");
        assert!(all.contains("upstream_http2_hosts"), "{all}");
        assert_eq!(errors.len(), 2, "{all}");
        assert!(toml::from_str::<crate::config::file::Config>(
            "[proxy]\nupstream_protocol = \"h3\"\n"
        )
        .is_err());
    }

    #[test]
    fn left_out_keys_keep_the_proxy_defaults() {
        let mut errors = Vec::new();
        let c = load("").proxy_config(&mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let d = ProxySettings::default();
        assert_eq!(c.settings.allowed_ports, d.allowed_ports);
        assert_eq!(c.settings.connect_timeout, d.connect_timeout);
        assert_eq!(c.settings.max_connections, d.max_connections);
        assert_eq!(c.settings.scrub_responses, d.scrub_responses);
        // Unlike the library's default (0: the caller's runtime), a
        // configured proxy serves on one worker per core.
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(c.settings.workers, cores);
    }

    #[test]
    fn workers_are_read_and_zero_means_the_shared_runtime() {
        let mut errors = Vec::new();
        for (value, workers) in [(0, 0), (3, 3)] {
            let l = load(&format!("[proxy]\nworkers = {value}\n"));
            assert_eq!(l.proxy_config(&mut errors).settings.workers, workers);
        }
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn intercept_defaults_to_all_and_limits_are_read() {
        let l = load(
            "[proxy]\npassthrough_hosts = [\"pinned.example\", \"*.pinned.test\"]\nmax_connections = 10\nbody_read_timeout_secs = 0\ndecompression_budget_bytes = 67108864\nmax_connections_per_sandbox = 0\n",
        );
        let mut errors = Vec::new();
        let s = l.proxy_config(&mut errors).settings;
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.intercept, InterceptMode::All);
        assert_eq!(s.passthrough_hosts.len(), 2);
        assert!(s.passthrough_hosts[1].matches("a.pinned.test"));
        assert_eq!(s.max_connections, 10);
        assert_eq!(s.max_connections_per_sandbox, 1);
        assert_eq!(s.body_read_timeout, Duration::from_secs(1));
        assert_eq!(s.decompression_budget, 64 << 20);
        assert_eq!(s.allowed_ports, vec![80, 443]);
    }

    #[test]
    fn each_bad_key_is_one_error() {
        let l = load(
            "[proxy]\nallowed_ports = []\nca_cert = \"ca.pem\"\npublic_url = \"airlock:8080\"\npassthrough_hosts = [\"*\"]\nmax_decoded_body_bytes = 100\ndecompression_budget_bytes = 99\ndeny_cidrs = [\"10.0.0.0/99\"]\nallow_hosts = [\"\"]\n\n[resolve]\n\"api.test\" = \"not-an-ip\"\n",
        );
        let mut errors = Vec::new();
        l.proxy_config(&mut errors);
        let all = errors.join("\n");
        for expected in [
            "proxy.allowed_ports is empty",
            "proxy.ca_cert and proxy.ca_key must be given together",
            "proxy.public_url \"airlock:8080\" must start with http:// or https://",
            "proxy.passthrough_hosts",
            "decompression_budget_bytes (99)",
            "proxy.deny_cidrs: \"10.0.0.0/99\" is not a CIDR",
            "proxy.allow_hosts",
            "line 12: resolve \"api.test\"",
        ] {
            assert!(all.contains(expected), "{expected}: {all}");
        }
        assert_eq!(errors.len(), 8, "{all}");
    }

    #[test]
    fn the_proxy_url_is_public_url_or_the_listen_address() {
        let l = load("[proxy]\npublic_url = \"http://airlock:8080/\"\n");
        let any = SocketAddr::from(([0, 0, 0, 0], 1));
        assert_eq!(l.config.proxy.url(any), "http://airlock:8080");
        assert_eq!(load("").config.proxy.url(any), "http://127.0.0.1:1");
    }
}
