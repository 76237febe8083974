//! Egress policy: where the proxy may connect, and the dialler that connects
//! only to addresses it checked.
//!
//! Names resolve through the operator's overrides first (an explicit decision,
//! dialled even when private), then DNS; every DNS answer and every IP literal
//! a client sends passes the address guard.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use airlock_vault_client::{normalize_host, HostPattern, HostPatternError};
use tokio::net::TcpStream;

/// Why an address is not a public destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    Public,
    Loopback,
    Private,
    LinkLocal,
    Metadata,
    SharedCgnat,
    Unspecified,
    Multicast,
    Broadcast,
    Reserved,
    UniqueLocal,
}

impl AddrClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Loopback => "loopback",
            Self::Private => "private (RFC 1918)",
            Self::LinkLocal => "link-local",
            Self::Metadata => "cloud metadata",
            Self::SharedCgnat => "carrier-grade NAT (100.64.0.0/10)",
            Self::Unspecified => "unspecified",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Reserved => "reserved",
            Self::UniqueLocal => "unique-local IPv6",
        }
    }
}

impl fmt::Display for AddrClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies an address, looking through IPv6 forms that embed an IPv4
/// address (mapped, compatible, NAT64, 6to4) so `::ffff:127.0.0.1` is loopback.
pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    let o = ip.octets();
    match o {
        [169, 254, 169, 254] | [100, 100, 100, 200] => AddrClass::Metadata,
        [0, ..] => AddrClass::Unspecified,
        [127, ..] => AddrClass::Loopback,
        [10, ..] | [192, 168, ..] => AddrClass::Private,
        [172, b, ..] if (16..32).contains(&b) => AddrClass::Private,
        [100, b, ..] if (64..128).contains(&b) => AddrClass::SharedCgnat,
        [169, 254, ..] => AddrClass::LinkLocal,
        [255, 255, 255, 255] => AddrClass::Broadcast,
        [a, ..] if (224..240).contains(&a) => AddrClass::Multicast,
        // 240/4 reserved, 192.0.0/24 protocol assignments, 198.18/15 benchmarking,
        // and the documentation ranges never belong to a real upstream.
        [a, ..] if a >= 240 => AddrClass::Reserved,
        [192, 0, 0, _] | [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => {
            AddrClass::Reserved
        }
        [198, b, ..] if b == 18 || b == 19 => AddrClass::Reserved,
        _ => AddrClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        return AddrClass::Metadata;
    }
    if ip.is_unspecified() {
        return AddrClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddrClass::Loopback;
    }
    let seg = ip.segments();
    let embedded_v4 =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (deprecated compatible).
    if seg[..5] == [0, 0, 0, 0, 0] && (seg[5] == 0xffff || seg[5] == 0) {
        return classify_v4(embedded_v4(seg[6], seg[7]));
    }
    // NAT64 well-known prefix 64:ff9b::/96 and local-use 64:ff9b:1::/48.
    let nat64 = seg[0] == 0x64 && seg[1] == 0xff9b;
    if nat64 && (seg[2..6] == [0, 0, 0, 0] || seg[2] == 1) {
        return classify_v4(embedded_v4(seg[6], seg[7]));
    }
    // 6to4 2002:AABB:CCDD::/48 embeds an IPv4 address.
    if seg[0] == 0x2002 {
        let inner = classify_v4(embedded_v4(seg[1], seg[2]));
        if inner != AddrClass::Public {
            return inner;
        }
    }
    match seg[0] {
        s if s & 0xfe00 == 0xfc00 => AddrClass::UniqueLocal,
        s if s & 0xffc0 == 0xfe80 => AddrClass::LinkLocal,
        s if s & 0xffc0 == 0xfec0 => AddrClass::Reserved, // site-local, deprecated
        s if s & 0xff00 == 0xff00 => AddrClass::Multicast,
        0x2001 if seg[1] == 0x0db8 => AddrClass::Reserved, // documentation
        _ => AddrClass::Public,
    }
}

/// Where an override sends a name: an address, optionally with another port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverrideTarget {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl std::str::FromStr for OverrideTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self { ip, port: None });
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Self {
                ip: addr.ip(),
                port: Some(addr.port()),
            });
        }
        Err(format!(
            "{s:?} is not an IP address or IP:port (e.g. \"127.0.0.1\" or \"127.0.0.1:8443\")"
        ))
    }
}

/// The operator's `[resolve]` table: first matching pattern wins.
#[derive(Debug, Clone, Default)]
pub struct ResolveOverrides {
    entries: Vec<(HostPattern, OverrideTarget)>,
}

impl ResolveOverrides {
    pub fn new<'a>(
        entries: impl IntoIterator<Item = (&'a str, OverrideTarget)>,
    ) -> Result<Self, HostPatternError> {
        let entries = entries
            .into_iter()
            .map(|(pattern, target)| Ok((HostPattern::parse(pattern)?, target)))
            .collect::<Result<_, HostPatternError>>()?;
        Ok(Self { entries })
    }

    /// `host` must be normalised.
    pub fn lookup(&self, host: &str) -> Option<OverrideTarget> {
        self.entries
            .iter()
            .find(|(pattern, _)| pattern.matches(host))
            .map(|(_, target)| *target)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error(
        "destination {host} ({addr}) is a {class} address, which this proxy does not connect to"
    )]
    Denied {
        host: String,
        addr: IpAddr,
        class: AddrClass,
    },
    #[error("DNS lookup for {host} failed: {source}")]
    Dns {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("DNS lookup for {host} returned no addresses")]
    NoAddress { host: String },
    #[error("connection to {host} ({addr}) failed: {source}")]
    Connect {
        host: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to {host} ({addr}) timed out after {after:?}")]
    Timeout {
        host: String,
        addr: SocketAddr,
        after: Duration,
    },
    #[error("{host:?} is not a valid host name")]
    BadHost { host: String },
    #[error("destination {host} is not allowed by the egress policy ({rule})")]
    Policy { host: String, rule: String },
}

/// The operator's lists, checked before the default address guard.
#[derive(Debug, Clone, Default)]
pub struct EgressLists {
    /// Names never reached, whatever they resolve to.
    pub deny_hosts: Vec<HostPattern>,
    /// When not empty, the only names that may be reached.
    pub allow_hosts: Vec<HostPattern>,
    /// Addresses never dialled.
    pub deny_cidrs: Vec<ipnet::IpNet>,
    /// Addresses dialled even though private (an internal API, say).
    pub allow_cidrs: Vec<ipnet::IpNet>,
}

/// Resolves and connects, only ever to addresses the policy allows.
#[derive(Debug, Clone)]
pub struct Dialer {
    overrides: ResolveOverrides,
    allow_private: bool,
    connect_timeout: Duration,
    /// The proxy's own listen addresses: never a destination (request loops).
    own_addrs: Vec<SocketAddr>,
    lists: EgressLists,
}

impl Dialer {
    pub fn new(
        overrides: ResolveOverrides,
        allow_private: bool,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            overrides,
            allow_private,
            connect_timeout,
            own_addrs: Vec::new(),
            lists: EgressLists::default(),
        }
    }

    pub fn with_lists(mut self, lists: EgressLists) -> Self {
        self.lists = lists;
        self
    }

    fn check_host(&self, host: &str) -> Result<(), DialError> {
        let policy = |rule: String| DialError::Policy {
            host: host.to_owned(),
            rule,
        };
        if let Some(p) = self.lists.deny_hosts.iter().find(|p| p.matches(host)) {
            return Err(policy(format!("deny_hosts {p}")));
        }
        if !self.lists.allow_hosts.is_empty()
            && !self.lists.allow_hosts.iter().any(|p| p.matches(host))
        {
            return Err(policy("not in allow_hosts".into()));
        }
        Ok(())
    }

    pub fn with_own_addr(mut self, addr: SocketAddr) -> Self {
        self.own_addrs.push(addr);
        self
    }

    pub fn overrides(&self) -> &ResolveOverrides {
        &self.overrides
    }

    fn check(&self, host: &str, addr: SocketAddr) -> Result<(), DialError> {
        if let Some(net) = self
            .lists
            .deny_cidrs
            .iter()
            .find(|n| n.contains(&addr.ip()))
        {
            return Err(DialError::Policy {
                host: host.to_owned(),
                rule: format!("deny_cidrs {net}"),
            });
        }
        if self
            .lists
            .allow_cidrs
            .iter()
            .any(|n| n.contains(&addr.ip()))
        {
            return Ok(());
        }
        let class = classify(addr.ip());
        let is_self = self.own_addrs.iter().any(|own| {
            own.port() == addr.port() && (own.ip() == addr.ip() || own.ip().is_unspecified())
        });
        if is_self || (class != AddrClass::Public && !self.allow_private) {
            return Err(DialError::Denied {
                host: host.to_owned(),
                addr: addr.ip(),
                class: if is_self { AddrClass::Loopback } else { class },
            });
        }
        Ok(())
    }

    /// The addresses to try for `host:port`, each already allowed by policy.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, DialError> {
        let host_norm = normalize_host(host).ok_or_else(|| DialError::BadHost {
            host: host.to_owned(),
        })?;
        self.check_host(&host_norm)?;
        if let Ok(ip) = host_norm.parse::<IpAddr>() {
            let addr = SocketAddr::new(ip, port);
            self.check(&host_norm, addr)?;
            return Ok(vec![addr]);
        }
        if let Some(target) = self.overrides.lookup(&host_norm) {
            // An override is the operator's decision and is dialled even when private.
            return Ok(vec![SocketAddr::new(
                target.ip,
                target.port.unwrap_or(port),
            )]);
        }
        let answers: Vec<SocketAddr> = tokio::net::lookup_host((host_norm.as_str(), port))
            .await
            .map_err(|source| DialError::Dns {
                host: host_norm.clone(),
                source,
            })?
            .collect();
        if answers.is_empty() {
            return Err(DialError::NoAddress { host: host_norm });
        }
        let mut first_denial = None;
        let allowed: Vec<SocketAddr> = answers
            .into_iter()
            .filter(|addr| match self.check(&host_norm, *addr) {
                Ok(()) => true,
                Err(e) => {
                    first_denial.get_or_insert(e);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), first_denial) {
            (true, Some(denial)) => Err(denial),
            _ => Ok(allowed),
        }
    }

    /// Connects to the first reachable allowed address of `host:port`.
    pub async fn dial(&self, host: &str, port: u16) -> Result<TcpStream, DialError> {
        let addrs = self.resolve(host, port).await?;
        let mut last_err = None;
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(source)) => {
                    last_err = Some(DialError::Connect {
                        host: host.to_owned(),
                        addr,
                        source,
                    })
                }
                Err(_) => {
                    last_err = Some(DialError::Timeout {
                        host: host.to_owned(),
                        addr,
                        after: self.connect_timeout,
                    })
                }
            }
        }
        Err(last_err.unwrap_or_else(|| DialError::NoAddress {
            host: host.to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> AddrClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn classifies_the_addresses_that_must_be_refused() {
        assert_eq!(c("127.0.0.1"), AddrClass::Loopback);
        assert_eq!(c("10.1.2.3"), AddrClass::Private);
        assert_eq!(c("172.16.0.1"), AddrClass::Private);
        assert_eq!(c("172.32.0.1"), AddrClass::Public);
        assert_eq!(c("192.168.1.1"), AddrClass::Private);
        assert_eq!(c("100.64.0.1"), AddrClass::SharedCgnat);
        assert_eq!(c("169.254.169.254"), AddrClass::Metadata);
        assert_eq!(c("169.254.1.1"), AddrClass::LinkLocal);
        assert_eq!(c("0.0.0.0"), AddrClass::Unspecified);
        assert_eq!(c("224.0.0.1"), AddrClass::Multicast);
        assert_eq!(c("::1"), AddrClass::Loopback);
        assert_eq!(c("::"), AddrClass::Unspecified);
        assert_eq!(c("::ffff:127.0.0.1"), AddrClass::Loopback);
        assert_eq!(c("::ffff:169.254.169.254"), AddrClass::Metadata);
        assert_eq!(c("::10.0.0.1"), AddrClass::Private);
        assert_eq!(c("64:ff9b::7f00:1"), AddrClass::Loopback);
        assert_eq!(c("2002:c0a8:0101::1"), AddrClass::Private);
        assert_eq!(c("fd00:ec2::254"), AddrClass::Metadata);
        assert_eq!(c("fc00::1"), AddrClass::UniqueLocal);
        assert_eq!(c("fe80::1"), AddrClass::LinkLocal);
        assert_eq!(c("8.8.8.8"), AddrClass::Public);
        assert_eq!(c("2606:4700::1111"), AddrClass::Public);
    }

    #[tokio::test]
    async fn overrides_are_dialled_but_literals_are_guarded() {
        let overrides =
            ResolveOverrides::new([("api.github.test", "127.0.0.1:8443".parse().unwrap())])
                .unwrap();
        let dialer = Dialer::new(overrides, false, Duration::from_secs(1));
        let addrs = dialer.resolve("API.github.test.", 443).await.unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:8443".parse().unwrap()]);
        let err = dialer.resolve("127.0.0.1", 443).await.unwrap_err();
        assert!(
            matches!(
                err,
                DialError::Denied {
                    class: AddrClass::Loopback,
                    ..
                }
            ),
            "{err}"
        );
        let err = dialer.resolve("[::ffff:127.0.0.1]", 443).await.unwrap_err();
        assert!(matches!(err, DialError::Denied { .. }), "{err}");
        let err = dialer.resolve("localhost", 443).await.unwrap_err();
        assert!(matches!(err, DialError::Denied { .. }), "{err}");
    }

    #[tokio::test]
    async fn the_proxy_never_dials_itself() {
        let own: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let dialer = Dialer::new(ResolveOverrides::default(), true, Duration::from_secs(1))
            .with_own_addr(own);
        assert!(dialer.resolve("127.0.0.1", 8080).await.is_err());
        assert!(dialer.resolve("127.0.0.1", 8081).await.is_ok());
    }

    #[tokio::test]
    async fn operator_lists_come_first() {
        let lists = EgressLists {
            deny_hosts: vec![HostPattern::parse("*.blocked.test").unwrap()],
            allow_hosts: vec![],
            deny_cidrs: vec!["203.0.113.0/24".parse().unwrap()],
            allow_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
        };
        let dialer = Dialer::new(ResolveOverrides::default(), false, Duration::from_secs(1))
            .with_lists(lists);
        assert!(matches!(
            dialer.resolve("x.blocked.test", 443).await,
            Err(DialError::Policy { .. })
        ));
        assert!(matches!(
            dialer.resolve("203.0.113.9", 443).await,
            Err(DialError::Policy { .. })
        ));
        assert!(
            dialer.resolve("127.0.0.1", 443).await.is_ok(),
            "allow_cidrs opens a private range"
        );
        let only = EgressLists {
            allow_hosts: vec![HostPattern::parse("api.good.test").unwrap()],
            ..Default::default()
        };
        let dialer =
            Dialer::new(ResolveOverrides::default(), true, Duration::from_secs(1)).with_lists(only);
        let err = dialer.resolve("127.0.0.1", 443).await.unwrap_err();
        assert!(err.to_string().contains("allow_hosts"), "{err}");
    }

    #[test]
    fn override_target_parsing() {
        assert!("127.0.0.1".parse::<OverrideTarget>().is_ok());
        assert!("[::1]:8443".parse::<OverrideTarget>().is_ok());
        assert!("example.com".parse::<OverrideTarget>().is_err());
    }
}
