//! Header rules shared by every stage that sends or answers.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::error::ProxyError;

const HOP_BY_HOP_COUNT: usize = 8;
// `strip_hop_by_hop` marks the names present as bits of a `u32`.
const _: () = assert!(HOP_BY_HOP_COUNT <= u32::BITS as usize);

/// Removed whatever `Connection` says (`TE` comes back as `trailers` when it asked for them).
const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes connection-scoped headers (RFC 9110 §7.6.1), including those the
/// `Connection` header names. `TE: trailers` survives: it asks for trailers end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names first: most heads carry none of these (an
    // answer often `Connection` alone), and removing each by name costs a
    // hash lookup apiece, so only those present are removed.
    let mut present = 0u32;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Most answers say only `Connection: keep-alive` (or `close`): words
    // that are no header here or are removed below anyway, so nothing is
    // collected (nor allocated) for them.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| !is_connection_word(name))
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in named {
        if name != header::TE {
            headers.remove(name);
        }
    }
    let keep_te_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if keep_te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// `Connection` options that name no end-to-end header to remove: the
/// connection words, and the hop-by-hop headers removed in any case.
fn is_connection_word(name: &str) -> bool {
    [
        "keep-alive",
        "close",
        "upgrade",
        "te",
        "proxy-connection",
        "transfer-encoding",
    ]
    .iter()
    .any(|w| name.eq_ignore_ascii_case(w))
}

/// The request's head, as an HTTP/1.1 request line and header lines, when
/// it is over `max` bytes. hyper's own buffer limit is not exact: one read
/// into a buffer that grew past it can bring in a whole oversized head.
pub fn head_too_large<B>(req: &http::Request<B>, max: usize) -> Option<ProxyError> {
    // "METHOD URI HTTP/1.1\r\n", then "name: value\r\n" each, then "\r\n".
    let uri = req.uri();
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri
            .authority()
            .map_or(0, |a| a.as_str().len() + "https://".len());
    let line = req.method().as_str().len() + target + 12;
    let size = req.headers().iter().fold(line + 2, |size, (name, value)| {
        size + name.as_str().len() + value.len() + 4
    });
    (size > max).then_some(ProxyError::HeadTooLarge { size, max })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_head_over_max_header_bytes_is_named_with_its_size() {
        let req = |value: &str| {
            http::Request::get("/path?q=1")
                .header("x-big", value)
                .body(())
                .unwrap()
        };
        let small = req(&"a".repeat(100));
        assert!(super::head_too_large(&small, 8192).is_none());
        let big = req(&"a".repeat(100 * 1024));
        let err = super::head_too_large(&big, 65536).expect("refused");
        assert_eq!(
            err.status(),
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert_eq!(err.code(), "header_too_large");
        let said = err.to_string();
        assert!(said.contains("65536") && said.contains("102"), "{said}");
    }

    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close, x-secret-hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert(header::TE, "trailers, gzip".parse().unwrap());
        h.insert(header::PROXY_AUTHORIZATION, "Basic abc".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-keep", "yes".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h["x-keep"], "yes");
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "Keep-Alive, Upgrade".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert("x-keep", "yes".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_removed() {
        // Each alone: the one-pass check must not let any of them through.
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "transfer-encoding",
            "upgrade",
        ] {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(name), "gzip".parse().unwrap());
            h.insert("x-keep", "yes".parse().unwrap());
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name}: {h:?}");
        }
        let mut untouched = HeaderMap::new();
        untouched.insert("x-keep", "yes".parse().unwrap());
        untouched.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        let before = untouched.clone();
        strip_hop_by_hop(&mut untouched);
        assert_eq!(untouched, before);
    }
}
