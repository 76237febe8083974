//! Parsing what a sandbox sends the proxy itself: CONNECT targets and
//! `Proxy-Authorization`. Small, total functions: fuzzed in `fuzz/`.

use airlock_vault_client::normalize_host;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use http::uri::Authority;

use crate::error::ProxyError;

/// `host:port` of a CONNECT request, the host normalised.
pub fn parse_connect_target(target: Option<&Authority>) -> Result<(String, u16), ProxyError> {
    let authority =
        target.ok_or_else(|| ProxyError::BadRequest("CONNECT target must be host:port".into()))?;
    let port = authority
        .port_u16()
        .ok_or_else(|| ProxyError::BadRequest(format!("CONNECT target {authority} has no port")))?;
    if authority.as_str().contains('@') {
        return Err(ProxyError::BadRequest(
            "CONNECT target may not contain userinfo".into(),
        ));
    }
    let host = normalize_host(authority.host()).ok_or_else(|| {
        ProxyError::BadRequest(format!("CONNECT target {authority} is not a valid host"))
    })?;
    Ok((host, port))
}

/// `Basic base64(user:pass)` → (user, pass).
pub fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

/// `host` as it goes in a URI's authority: IPv6 literals in brackets.
pub fn host_for_uri(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_targets() {
        let a: Authority = "Example.com:443".parse().unwrap();
        assert_eq!(
            parse_connect_target(Some(&a)).unwrap(),
            ("example.com".into(), 443)
        );
        let a: Authority = "example.com".parse().unwrap();
        assert!(parse_connect_target(None).is_err());
        assert!(parse_connect_target(Some(&a)).is_err());
        let a: Authority = "[::1]:443".parse().unwrap();
        assert_eq!(parse_connect_target(Some(&a)).unwrap(), ("::1".into(), 443));
    }

    #[test]
    fn basic_credentials() {
        let v = format!("Basic {}", BASE64.encode("sbx:secret"));
        assert_eq!(
            parse_basic(v.as_bytes()),
            Some(("sbx".into(), "secret".into()))
        );
        assert_eq!(parse_basic(b"Bearer x"), None);
    }

    #[test]
    fn ipv6_hosts_get_brackets_in_uris() {
        assert_eq!(host_for_uri("::1"), "[::1]");
        assert_eq!(host_for_uri("api.test"), "api.test");
    }
}
