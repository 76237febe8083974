//! Egress policy: where the proxy may connect, and the dialler that connects
//! only to addresses it checked.
//!
//! Names resolve through the operator's overrides first (an explicit decision,
//! dialled even when private), then DNS; every DNS answer and every IP literal
//! a client sends passes the address guard.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use airlock_vault_client::{normalize_host, HostPattern, HostPatternError};
use tokio::net::TcpStream;

mod classify;
#[cfg(test)]
mod tests;

use crate::held_stream::HeldStream;
use crate::limits::{Descriptors, Slot};

/// What the dialler hands out: an upstream socket holding its descriptor in
/// the budget until it is closed, in the pool or out of it.
pub type UpstreamStream = HeldStream<Option<Slot>>;

impl UpstreamStream {
    /// A socket the budget does not count (tests that dial by hand).
    #[cfg(test)]
    pub(crate) fn uncounted(stream: TcpStream) -> Self {
        Self::new(stream, None)
    }
}

use classify::{canonical, is_localhost_name};
pub use classify::{classify, host_literal, AddrClass, HostLiteral};

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
    #[error("destination {host} ({addr}) is one of airlock's own listeners")]
    OwnListener { host: String, addr: SocketAddr },
    #[error("{host} is answered by airlock itself and is never dialled")]
    Reserved { host: String },
    #[error(
        "no connection to {host}: the proxy holds all {limit} sockets its open-files limit allows"
    )]
    OutOfDescriptors { host: String, limit: usize },
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

/// How long a checked DNS answer is reused: the CONNECT decision and the
/// dials of that connection's requests then use the same addresses.
const ANSWER_TTL: Duration = Duration::from_secs(30);

/// Resolves and connects, only ever to addresses the policy allows.
#[derive(Clone)]
pub struct Dialer {
    overrides: ResolveOverrides,
    allow_private: bool,
    connect_timeout: Duration,
    /// airlock's own listen addresses: never a destination (request loops,
    /// or a sandbox reaching the vault or metrics through the proxy).
    own_addrs: Vec<SocketAddr>,
    lists: EgressLists,
    /// Checked DNS answers by (name, port).
    answers: moka::sync::Cache<(String, u16), std::sync::Arc<[SocketAddr]>>,
    /// Every upstream connection takes a descriptor from this budget.
    descriptors: Arc<Descriptors>,
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dialer")
            .field("allow_private", &self.allow_private)
            .field("own_addrs", &self.own_addrs)
            .finish_non_exhaustive()
    }
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
            answers: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ANSWER_TTL)
                .build(),
            descriptors: Arc::new(Descriptors::unlimited()),
        }
    }

    /// Counts upstream connections in `descriptors` (the client side's too).
    pub fn with_descriptors(mut self, descriptors: Arc<Descriptors>) -> Self {
        self.descriptors = descriptors;
        self
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

    pub fn with_own_addrs(mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.own_addrs.extend(addrs);
        self
    }

    /// Whether dialling `addr` could reach one of airlock's own listeners:
    /// the same port on the listener's address, on any address when the
    /// listener is bound to all of them, and on `0.0.0.0`/`::` or loopback
    /// (which reach this machine) when the listener is local.
    fn is_self(&self, addr: SocketAddr) -> bool {
        let target = canonical(addr.ip());
        self.own_addrs.iter().any(|own| {
            let own_ip = canonical(own.ip());
            own.port() == addr.port()
                && (own_ip == target
                    || own_ip.is_unspecified()
                    || target.is_unspecified()
                    || (own_ip.is_loopback() && target.is_loopback()))
        })
    }

    pub fn overrides(&self) -> &ResolveOverrides {
        &self.overrides
    }

    fn check(&self, host: &str, addr: SocketAddr) -> Result<(), DialError> {
        if self.is_self(addr) {
            return Err(DialError::OwnListener {
                host: host.to_owned(),
                addr,
            });
        }
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
        if class != AddrClass::Public && !self.allow_private {
            return Err(DialError::Denied {
                host: host.to_owned(),
                addr: addr.ip(),
                class,
            });
        }
        Ok(())
    }

    /// The addresses to try for `host:port`, each already allowed by policy.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, DialError> {
        let host_norm = normalize_host(host).ok_or_else(|| DialError::BadHost {
            host: host.to_owned(),
        })?;
        if host_norm == crate::INTERNAL_HOST {
            // Before overrides and DNS: no entry may send it elsewhere.
            return Err(DialError::Reserved { host: host_norm });
        }
        self.check_host(&host_norm)?;
        match host_literal(&host_norm) {
            HostLiteral::Ip(ip) => {
                let addr = SocketAddr::new(ip, port);
                self.check(&host_norm, addr)?;
                return Ok(vec![addr]);
            }
            HostLiteral::Malformed => return Err(DialError::BadHost { host: host_norm }),
            HostLiteral::Name => {}
        }
        if let Some(target) = self.overrides.lookup(&host_norm) {
            // An override is the operator's decision and is dialled even when
            // private, but never to airlock itself.
            let addr = SocketAddr::new(target.ip, target.port.unwrap_or(port));
            if self.is_self(addr) {
                return Err(DialError::OwnListener {
                    host: host_norm,
                    addr,
                });
            }
            return Ok(vec![addr]);
        }
        let key = (host_norm.clone(), port);
        if let Some(known) = self.answers.get(&key) {
            return Ok(known.to_vec());
        }
        let answers: Vec<SocketAddr> = if is_localhost_name(&host_norm) {
            // Answered here, not by a resolver that might not know it.
            vec![
                SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
            ]
        } else {
            tokio::net::lookup_host((host_norm.as_str(), port))
                .await
                .map_err(|source| DialError::Dns {
                    host: host_norm.clone(),
                    source,
                })?
                .collect()
        };
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
            _ => {
                self.answers.insert(key, allowed.clone().into());
                Ok(allowed)
            }
        }
    }

    /// Connects to the first reachable allowed address of `host:port`.
    pub async fn dial(&self, host: &str, port: u16) -> Result<UpstreamStream, DialError> {
        let addrs = self.resolve(host, port).await?;
        self.dial_checked(host, &addrs).await
    }

    /// Connects to the first reachable of `addrs`, which [`Self::resolve`] returned.
    pub async fn dial_checked(
        &self,
        host: &str,
        addrs: &[SocketAddr],
    ) -> Result<UpstreamStream, DialError> {
        let descriptor =
            self.descriptors
                .upstream()
                .ok_or_else(|| DialError::OutOfDescriptors {
                    host: host.to_owned(),
                    limit: self.descriptors.limit(),
                })?;
        let mut last_err = None;
        for &addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(UpstreamStream::new(stream, Some(descriptor)));
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
