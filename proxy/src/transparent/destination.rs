//! The original destination of a redirected connection, and whether it
//! agrees with the name the client asked for.

use std::net::{IpAddr, SocketAddr};

use socket2::SockRef;
use tokio::net::TcpStream;

use crate::error::ProxyError;
use crate::settings::{OriginalDestination, TransparentSettings};

/// Where the client was connecting before netfilter redirected it, or
/// `None` when it was not redirected (it connected to airlock's own
/// address, as a DNS answer naming airlock makes it) or the kernel does
/// not know (no conntrack entry).
pub(crate) fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let sock = SockRef::from(stream);
    let original = match local {
        SocketAddr::V4(_) => sock.original_dst_v4(),
        SocketAddr::V6(_) => sock.original_dst_v6(),
    }
    .ok()?
    .as_socket()?;
    // Without a redirect the kernel answers with the local address itself.
    (original != local).then_some(original)
}

/// Checks a redirected connection's original destination against the
/// addresses airlock resolved `host` to and the operator's `addresses` for
/// it. A connection to one of airlock's own addresses (the listener's IP,
/// or a DNS answer naming airlock) carries no other destination.
pub(crate) fn check(
    settings: &TransparentSettings,
    host: &str,
    original: Option<SocketAddr>,
    local: Option<SocketAddr>,
    resolved: &[SocketAddr],
) -> Result<(), ProxyError> {
    let Some(original) = original else {
        return Ok(());
    };
    if settings.original_destination == OriginalDestination::Ignore {
        return Ok(());
    }
    let ip = super::canonical_ip(original.ip());
    if local.is_some_and(|l| super::canonical_ip(l.ip()) == ip) {
        return Ok(());
    }
    let resolved_here = resolved.iter().any(|a| super::canonical_ip(a.ip()) == ip);
    if resolved_here || operator_allows(settings, host, ip) {
        return Ok(());
    }
    Err(ProxyError::DestinationMismatch {
        host: host.to_owned(),
        original,
    })
}

fn operator_allows(settings: &TransparentSettings, host: &str, ip: IpAddr) -> bool {
    settings
        .addresses
        .iter()
        .find(|(pattern, _)| pattern.matches(host))
        .is_some_and(|(_, nets)| nets.iter().any(|net| net.contains(&ip)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_vault_client::HostPattern;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn with_addresses(host: &str, nets: &[&str]) -> TransparentSettings {
        TransparentSettings {
            addresses: vec![(
                HostPattern::parse(host).unwrap(),
                nets.iter().map(|n| n.parse().unwrap()).collect(),
            )],
            ..TransparentSettings::default()
        }
    }

    #[test]
    fn a_destination_among_the_resolved_addresses_agrees() {
        let s = TransparentSettings::default();
        let resolved = [addr("140.82.112.6:443"), addr("140.82.112.5:443")];
        let original = Some(addr("140.82.112.5:443"));
        assert!(check(&s, "api.github.com", original, None, &resolved).is_ok());
    }

    #[test]
    fn another_address_is_refused_with_the_name_and_the_address() {
        let s = TransparentSettings::default();
        let resolved = [addr("140.82.112.6:443")];
        let err = check(
            &s,
            "api.github.com",
            Some(addr("198.51.100.9:443")),
            Some(addr("10.0.0.1:15443")),
            &resolved,
        )
        .unwrap_err();
        assert_eq!(err.code(), "destination_mismatch");
        assert_eq!(err.status(), http::StatusCode::FORBIDDEN);
        let text = err.to_string();
        assert!(text.contains("198.51.100.9:443") && text.contains("api.github.com"));
    }

    #[test]
    fn the_operator_addresses_for_the_name_agree_and_only_for_that_name() {
        let s = with_addresses("api.github.test", &["203.0.113.0/28"]);
        let original = Some(addr("203.0.113.7:443"));
        assert!(check(&s, "api.github.test", original, None, &[]).is_ok());
        assert!(check(&s, "evil.test", original, None, &[]).is_err());
        let outside = Some(addr("203.0.113.99:443"));
        assert!(check(&s, "api.github.test", outside, None, &[]).is_err());
    }

    #[test]
    fn not_redirected_or_sent_to_airlock_itself_carries_no_other_destination() {
        let s = TransparentSettings::default();
        assert!(check(&s, "api.github.com", None, None, &[]).is_ok());
        // A DNS answer naming airlock, redirected from :443 to the listener's port.
        let local = Some(addr("10.0.0.1:15443"));
        assert!(check(&s, "api.github.com", Some(addr("10.0.0.1:443")), local, &[]).is_ok());
    }

    #[test]
    fn ignore_trusts_the_name_alone() {
        let s = TransparentSettings {
            original_destination: OriginalDestination::Ignore,
            ..TransparentSettings::default()
        };
        assert!(check(
            &s,
            "api.github.com",
            Some(addr("198.51.100.9:443")),
            None,
            &[]
        )
        .is_ok());
    }

    #[test]
    fn ipv4_mapped_addresses_compare_as_ipv4() {
        let s = TransparentSettings::default();
        let resolved = [addr("140.82.112.6:443")];
        let original = Some(addr("[::ffff:140.82.112.6]:443"));
        assert!(check(&s, "api.github.com", original, None, &resolved).is_ok());
    }
}
