//! The address guard: which addresses are public destinations, looking
//! through IPv4-mapped/compatible, NAT64 and 6to4 forms, and how a client's
//! host spells an IP literal.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// How a host name reads as an address, the way `inet_aton`, curl and
/// browsers read it: `2130706433`, `0x7f.1`, `0177.0.0.1` and `127.1` are all
/// 127.0.0.1. A name whose last label is numeric is never a DNS name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostLiteral {
    /// A DNS name.
    Name,
    Ip(IpAddr),
    /// Looks like an address but is none (`1.2.3.4.5`, `0x`, `256.1.1.1`):
    /// refused rather than sent to a resolver that may read it its own way.
    Malformed,
}

/// Reads `host` (normalised: lower case, IPv6 without brackets).
pub fn host_literal(host: &str) -> HostLiteral {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return HostLiteral::Ip(ip);
    }
    let labels: Vec<&str> = bare.split('.').collect();
    let last = labels.last().copied().unwrap_or("");
    let numeric_label = |l: &str| {
        !l.is_empty()
            && (l.bytes().all(|b| b.is_ascii_digit())
                || l.strip_prefix("0x")
                    .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())))
    };
    if !numeric_label(last) {
        return HostLiteral::Name;
    }
    match inet_aton(&labels) {
        Some(v4) => HostLiteral::Ip(IpAddr::V4(v4)),
        None => HostLiteral::Malformed,
    }
}

/// One to four parts, each decimal, `0x` hex or `0` octal; the last part
/// fills the bytes the others leave.
fn inet_aton(parts: &[&str]) -> Option<Ipv4Addr> {
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in parts {
        let (digits, radix) = if let Some(hex) = part.strip_prefix("0x") {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (*part, 10)
        };
        if digits.is_empty() || digits.len() > 12 {
            return None;
        }
        values.push(u64::from_str_radix(digits, radix).ok()?);
    }
    let (last, head) = values.split_last()?;
    if head.iter().any(|v| *v > 255) {
        return None;
    }
    let last_bits = 8 * (4 - head.len() as u32);
    if *last >= 1u64 << last_bits {
        return None;
    }
    let mut addr: u64 = 0;
    for (i, v) in head.iter().enumerate() {
        addr |= v << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from((addr | last) as u32))
}

/// `localhost` and its subdomains always mean this machine (RFC 6761).
pub(super) fn is_localhost_name(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost")
}

/// The same address, IPv4-mapped IPv6 read as IPv4.
pub(super) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
