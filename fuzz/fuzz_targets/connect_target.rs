//! `parse::parse_connect_target` on authorities parsed (by `http`, as hyper
//! does for a CONNECT request line) from fuzz strings.
//!
//! Properties for an accepted target: the host is non-empty, lower-case,
//! has no trailing dot, userinfo, brackets, port or path; it is already
//! normalised (idempotent) and canonical when it is an IP literal; the port
//! is the authority's; case and a trailing dot of the request do not change
//! the result; and host patterns normalise the same way (a pattern written
//! as the request's host matches the parsed host, an IP-literal target never
//! matches a name pattern). The same bytes as text go through
//! `normalize_host` directly (non-ASCII names included, which `http`
//! refuses in an authority but host patterns and `Host` headers can hold):
//! its result is ASCII, lower-case, idempotent, without empty or over-long
//! labels, and matched by the pattern written the same way.
#![no_main]

use std::net::{IpAddr, Ipv6Addr};

use airlock_proxy::parse::parse_connect_target;
use airlock_vault_client::{normalize_host, HostPattern};
use http::uri::Authority;
use libfuzzer_sys::fuzz_target;

/// `normalize_host` on any text (host patterns in the config, `Host`
/// headers, SNI, including non-ASCII names that go through IDNA).
fn check_normalize(text: &str) {
    let Some(host) = normalize_host(text) else {
        return;
    };
    assert!(!host.is_empty() && host.is_ascii(), "{text:?} → {host:?}");
    assert_eq!(host, host.to_ascii_lowercase(), "{text:?} → {host:?}");
    assert!(!host.ends_with('.'), "{text:?} → {host:?}");
    assert_eq!(
        normalize_host(&host).as_deref(),
        Some(host.as_str()),
        "not idempotent: {text:?} → {host:?}"
    );
    if host.parse::<IpAddr>().is_err() {
        assert!(host.len() <= 253, "{text:?} → over-long {host:?}");
        assert!(
            host.split('.').all(|l| !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')),
            "{text:?} → bad label in {host:?}"
        );
    }
    if text.is_ascii() {
        // One trailing dot is dropped, no more (an empty label is refused).
        assert!(!text.ends_with(".."), "{text:?} accepted as {host:?}");
        assert_eq!(
            normalize_host(&text.to_ascii_uppercase()).as_deref(),
            Some(host.as_str()),
            "case changes {text:?}"
        );
    }
    if !text.contains('*') {
        let p = HostPattern::parse(text).expect("a normalisable host is a valid pattern");
        assert!(p.matches(&host), "pattern {text:?} does not match {host:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    assert!(parse_connect_target(None).is_err());
    if let Ok(text) = std::str::from_utf8(data) {
        check_normalize(text);
    }
    let Ok(authority) = Authority::try_from(data) else {
        return;
    };
    let Ok((host, port)) = parse_connect_target(Some(&authority)) else {
        return;
    };
    let raw = authority.host();

    assert_eq!(Some(port), authority.port_u16());
    assert!(!host.is_empty(), "empty host from {authority}");
    assert_eq!(host, host.to_ascii_lowercase(), "host not lower-case");
    assert!(!host.ends_with('.'), "trailing dot kept: {host:?}");
    assert!(
        !host.contains(['@', '[', ']', '/', '?', '#', ' ', '%', '\\']),
        "{host:?} from {authority}"
    );
    assert!(
        !authority.as_str().contains('@'),
        "userinfo accepted: {authority}"
    );
    if host.contains(':') {
        assert!(
            host.parse::<Ipv6Addr>().is_ok(),
            "{host:?} has a colon but is not an IPv6 literal"
        );
    }
    assert_eq!(
        normalize_host(&host).as_deref(),
        Some(host.as_str()),
        "normalisation is not idempotent"
    );
    let bare = raw.strip_suffix('.').unwrap_or(raw);
    let bare = bare
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(bare);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        assert_eq!(host, ip.to_string(), "IP literal not canonical");
    }
    let is_ip = host.parse::<IpAddr>().is_ok();
    if !is_ip {
        assert!(host.len() <= 253, "over-long name accepted");
        assert!(
            host.split('.').all(|l| !l.is_empty() && l.len() <= 63),
            "empty or over-long label in {host:?}"
        );
    }

    // The same target in upper case, or with a trailing dot, is the same host.
    let upper = authority.as_str().to_ascii_uppercase();
    if let Ok(a) = Authority::try_from(upper.as_str()) {
        let (h, p) = parse_connect_target(Some(&a)).expect("upper-case target refused");
        assert_eq!((h.as_str(), p), (host.as_str(), port));
    }
    if !raw.ends_with('.') && !raw.starts_with('[') {
        let dotted = format!("{raw}.:{port}");
        if let Ok(a) = Authority::try_from(dotted.as_str()) {
            if let Ok((h, p)) = parse_connect_target(Some(&a)) {
                assert_eq!((h.as_str(), p), (host.as_str(), port));
            }
        }
    }

    // Host binding sees the same name.
    match HostPattern::parse(&host) {
        Ok(p) => assert!(p.matches(&host), "pattern {p} does not match its own host"),
        Err(e) => panic!("accepted host {host:?} is not a valid pattern: {e}"),
    }
    if let Ok(p) = HostPattern::parse(raw) {
        assert!(p.matches(&host), "pattern {raw:?} does not match {host:?}");
    }
    if is_ip {
        for name in ["api.test", "*.example.test", "localhost"] {
            assert!(!HostPattern::parse(name).unwrap().matches(&host));
        }
    }
});
