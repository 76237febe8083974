use std::fmt;

/// An allowed-host pattern: an exact name or `*.suffix` (any name under the
/// suffix, not the suffix itself). Names are compared normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// Stored with the leading dot: `.githubusercontent.com`.
    Suffix(String),
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid host pattern {pattern:?}: {reason}")]
pub struct HostPatternError {
    pub pattern: String,
    pub reason: &'static str,
}

impl HostPattern {
    pub fn parse(pattern: &str) -> Result<Self, HostPatternError> {
        let err = |reason| HostPatternError {
            pattern: pattern.to_owned(),
            reason,
        };
        if let Some(suffix) = pattern.strip_prefix("*.") {
            let suffix = normalize_host(suffix).ok_or_else(|| err("not a host name"))?;
            if !suffix.contains('.') {
                return Err(err(
                    "a wildcard needs at least two labels, as in *.example.com",
                ));
            }
            return Ok(Self::Suffix(format!(".{suffix}")));
        }
        if pattern.contains('*') {
            return Err(err("a wildcard is only allowed as a leading `*.`"));
        }
        normalize_host(pattern)
            .map(Self::Exact)
            .ok_or_else(|| err("not a host name"))
    }

    /// `host` must already be normalised.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => name == host,
            Self::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Suffix(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// Lower-cases, drops one trailing dot and brackets around IPv6 literals,
/// turns internationalised names into their punycode (`bücher.example` →
/// `xn--bcher-kva.example`, what clients put in SNI and DNS), and rejects
/// anything that is not a plain host name or IP literal (userinfo, ports,
/// paths, spaces, empty labels).
pub fn normalize_host(host: &str) -> Option<String> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if !host.is_ascii() {
        let ascii = idna::domain_to_ascii_strict(host).ok()?;
        return normalize_host(&ascii).filter(|h| h.is_ascii());
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|ip| ip.to_string());
    }
    if host.is_empty() || host.len() > 253 {
        return None;
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Some(ip.to_string());
    }
    let lower = host.to_ascii_lowercase();
    let valid = lower.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    valid.then_some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_suffix_patterns() {
        let exact = HostPattern::parse("API.GitHub.com.").unwrap();
        assert!(exact.matches("api.github.com"));
        assert!(!exact.matches("evil.api.github.com"));
        let wild = HostPattern::parse("*.githubusercontent.com").unwrap();
        assert!(wild.matches("raw.githubusercontent.com"));
        assert!(!wild.matches("githubusercontent.com"));
        assert!(!wild.matches("evilgithubusercontent.com"));
        assert_eq!(wild.to_string(), "*.githubusercontent.com");
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "",
            "*",
            "*.com",
            "a.*.com",
            "user@host",
            "host:443",
            "a b",
            "ex..com",
            "ex\u{202e}.com",
        ] {
            assert!(
                HostPattern::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn normalisation() {
        assert_eq!(
            normalize_host("Example.COM.").as_deref(),
            Some("example.com")
        );
        assert_eq!(normalize_host("[::1]").as_deref(), Some("::1"));
        assert_eq!(normalize_host("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(normalize_host("a/b"), None);
        assert_eq!(
            normalize_host("Bücher.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        let idn = HostPattern::parse("*.bücher.example").unwrap();
        assert!(idn.matches("api.xn--bcher-kva.example"));
    }
}
