//! The proxy's typed settings. The `airlock` binary builds them from its TOML
//! config; nothing here parses strings at request time.

use std::net::SocketAddr;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use crate::egress::ResolveOverrides;

/// Which CONNECT hosts get their TLS terminated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InterceptMode {
    /// Only hosts some binding of the sandbox allows; others are tunnelled
    /// untouched (their destination is still judged before the `200`).
    Bound,
    /// Every host except `passthrough_hosts`: every request is seen and audited.
    #[default]
    All,
}

#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub intercept: InterceptMode,
    /// Tunnelled untouched in every mode (clients that pin certificates).
    pub passthrough_hosts: Vec<airlock_vault_client::HostPattern>,
    pub allowed_ports: Vec<u16>,
    pub allow_private_destinations: bool,
    /// Trusted for upstream TLS in addition to the system roots.
    pub upstream_ca: Vec<CertificateDer<'static>>,
    /// Shared-gateway mode: every request names its sandbox in `Proxy-Authorization`.
    pub require_auth: bool,
    pub resolve: ResolveOverrides,
    pub egress: crate::egress::EgressLists,
    /// Adds `Via: 1.1 airlock` upstream. Off by default: it tells the upstream a proxy is there.
    pub add_via: bool,
    pub connect_timeout: Duration,
    /// Time to wait for an upstream's response head.
    pub response_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub upstream_idle_timeout: Duration,
    /// Largest request head (request line plus headers) a client may send.
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// Request bodies up to this size are kept so a request can be replayed
    /// after a token refresh; larger ones stream and are not replayed.
    pub replay_buffer_bytes: usize,
    /// Cap on a compressed request body, and on what it decodes to.
    pub max_decoded_body: usize,
    /// Replace real tokens echoed in responses by their placeholders.
    pub scrub_responses: bool,
    /// Client connections (tunnels, intercepted and plain-HTTP) a sandbox may hold open at once.
    pub max_connections_per_sandbox: usize,
    /// Client connections the whole proxy holds open at once; more get `503`.
    pub max_connections: usize,
    /// Single-threaded runtimes client connections are served on, one per
    /// core (`0`: on the runtime that runs the listener, as a library does).
    pub workers: usize,
    /// A request body that sends nothing for this long is abandoned (`408`, connection closed).
    pub body_read_timeout: Duration,
    /// Sum of decoded compressed request bodies held at once, process-wide; more get `503`.
    pub decompression_budget: usize,
    /// airlock's other listeners (vault, metrics): never a destination, not
    /// even through a `[resolve]` override.
    pub own_addrs: Vec<SocketAddr>,
    /// Failed proxy authentications per client address per minute before 429.
    pub auth_failures_per_minute: u32,
    /// How long a request that meets an account no one connected waits for
    /// a human when it does not say (`Prefer: wait=N` does); zero: not at all.
    pub consent_wait: Duration,
    /// The longest any request is held for consent.
    pub max_consent_wait: Duration,
    /// Requests held for consent at once, process-wide; more get `503`.
    pub max_held_requests: usize,
    /// Told (POST, HMAC-signed) when a request begins to wait for a human.
    pub consent_webhook: Option<ConsentWebhook>,
    /// Connections redirected to the transparent listeners.
    pub transparent: TransparentSettings,
    /// The HTTP version spoken to each upstream.
    pub upstream_protocol: UpstreamProtocols,
}

/// Which HTTP version airlock speaks to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// Starts from the sandbox's own: a request that came over HTTP/2 goes
    /// out over HTTP/2 where the upstream offers it (ALPN), an HTTP/1.1
    /// request over HTTP/1.1. A busy upstream then gets the wire it answers
    /// faster on, measured per upstream ([`crate::wire_choice`]).
    #[default]
    Auto,
    /// Always HTTP/1.1.
    Http1,
    /// HTTP/2 where the upstream offers it, whatever the sandbox speaks.
    Http2,
}

/// Which pooled client a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamWire {
    /// HTTP/1.1 only (no ALPN `h2`).
    Http1,
    /// ALPN offers `h2` and `http/1.1`; the upstream picks.
    Alpn,
}

/// The default, and hosts that differ from it (first match wins).
#[derive(Debug, Clone, Default)]
pub struct UpstreamProtocols {
    pub default: UpstreamProtocol,
    pub hosts: Vec<(airlock_vault_client::HostPattern, UpstreamProtocol)>,
}

impl UpstreamProtocols {
    /// The wire for a request to `host` that the sandbox sent as `client`,
    /// before measurement.
    pub fn wire(&self, host: &str, client: http::Version) -> UpstreamWire {
        self.plan(host, client).0
    }

    /// The wire to start from, and whether `auto` leaves the choice to
    /// measurement ([`crate::wire_choice`]).
    pub fn plan(&self, host: &str, client: http::Version) -> (UpstreamWire, bool) {
        let protocol = self
            .hosts
            .iter()
            .find(|(pattern, _)| pattern.matches(host))
            .map_or(self.default, |(_, p)| *p);
        match protocol {
            UpstreamProtocol::Http1 => (UpstreamWire::Http1, false),
            UpstreamProtocol::Http2 => (UpstreamWire::Alpn, false),
            UpstreamProtocol::Auto if client == http::Version::HTTP_2 => (UpstreamWire::Alpn, true),
            UpstreamProtocol::Auto => (UpstreamWire::Http1, true),
        }
    }
}

/// How connections redirected to airlock (iptables `REDIRECT`, or a DNS
/// answer naming airlock) are judged: they carry no CONNECT and no
/// `Proxy-Authorization`, so the destination comes from SNI or `Host`, and
/// the sandbox from the source address.
#[derive(Debug, Clone, Default)]
pub struct TransparentSettings {
    /// Source networks and the sandbox their connections belong to; first
    /// match wins. With none matching: the sidecar's sandbox, or (shared
    /// gateway, `require_auth`) a refusal.
    pub sources: Vec<(ipnet::IpNet, airlock_vault_client::SandboxId)>,
    pub original_destination: OriginalDestination,
    /// Addresses the sandbox's own DNS may give for a name besides what
    /// airlock resolves it to (first matching pattern wins).
    pub addresses: Vec<(airlock_vault_client::HostPattern, Vec<ipnet::IpNet>)>,
}

/// What a redirected connection's original destination (`SO_ORIGINAL_DST`)
/// must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OriginalDestination {
    /// One of the addresses the SNI or `Host` name resolves to (or the
    /// operator's `addresses` for it), or airlock itself (a DNS answer
    /// pointing at airlock): anything else is refused.
    #[default]
    Verify,
    /// Not checked: the name alone decides (airlock dials it by name).
    Ignore,
}

/// Where the operator wants to hear of a request waiting for consent.
#[derive(Clone)]
pub struct ConsentWebhook {
    pub url: http::Uri,
    /// The HMAC-SHA256 key of `x-airlock-signature`.
    pub secret: airlock_vault_client::SecretString,
}

impl std::fmt::Debug for ConsentWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsentWebhook")
            .field("url", &self.url)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            intercept: InterceptMode::All,
            passthrough_hosts: Vec::new(),
            allowed_ports: vec![80, 443],
            allow_private_destinations: false,
            upstream_ca: Vec::new(),
            require_auth: false,
            resolve: ResolveOverrides::default(),
            egress: crate::egress::EgressLists::default(),
            add_via: false,
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(120),
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            upstream_idle_timeout: Duration::from_secs(90),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            replay_buffer_bytes: 1024 * 1024,
            max_decoded_body: 32 * 1024 * 1024,
            scrub_responses: true,
            max_connections_per_sandbox: 1024,
            max_connections: 4096,
            workers: 0,
            body_read_timeout: Duration::from_secs(30),
            decompression_budget: 128 * 1024 * 1024,
            own_addrs: Vec::new(),
            auth_failures_per_minute: 20,
            consent_wait: Duration::ZERO,
            max_consent_wait: Duration::from_secs(300),
            max_held_requests: 256,
            consent_webhook: None,
            transparent: TransparentSettings::default(),
            upstream_protocol: UpstreamProtocols::default(),
        }
    }
}

/// Where the proxy listens; kept apart because the listener is bound before
/// the proxy is built (so port 0 works and the real port is known).
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_vault_client::HostPattern;

    #[test]
    fn auto_follows_the_sandbox_and_hosts_override_it() {
        let protocols = UpstreamProtocols {
            default: UpstreamProtocol::Auto,
            hosts: vec![
                (
                    HostPattern::parse("grpc.test").unwrap(),
                    UpstreamProtocol::Http2,
                ),
                (
                    HostPattern::parse("*.old.test").unwrap(),
                    UpstreamProtocol::Http1,
                ),
            ],
        };
        use http::Version;
        assert_eq!(
            protocols.wire("api.test", Version::HTTP_11),
            UpstreamWire::Http1
        );
        assert_eq!(
            protocols.wire("api.test", Version::HTTP_2),
            UpstreamWire::Alpn
        );
        assert_eq!(
            protocols.wire("grpc.test", Version::HTTP_11),
            UpstreamWire::Alpn
        );
        assert_eq!(
            protocols.wire("a.old.test", Version::HTTP_2),
            UpstreamWire::Http1
        );
        let always_h2 = UpstreamProtocols {
            default: UpstreamProtocol::Http2,
            hosts: Vec::new(),
        };
        assert_eq!(
            always_h2.wire("api.test", Version::HTTP_10),
            UpstreamWire::Alpn
        );
    }
}
