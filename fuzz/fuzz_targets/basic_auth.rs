//! `Authorization: Basic`: `parse::parse_basic` and `Swapper::swap_headers`.
//!
//! Input: [flags] [bytes...]
//!   flags bits 0-1: scheme spelling (Basic, basic, BASIC, bAsIc)
//!         bit 2: extra spaces between scheme and credential, and before the scheme
//!         bit 3: trailing spaces
//!         bit 4: raw mode: the bytes are the header value itself, not `user:pass`
//!
//! Properties: nothing panics; `parse_basic` round-trips; a swap that
//! succeeds sends `Basic` + valid base64 that decodes to the input with the
//! placeholder replaced by its token (and held no other placeholder); a
//! swap that fails had a reason (placeholder-shaped text) and shows no token.
#![no_main]

use airlock_fuzz::{
    block_on, has_nested_prefix, ignoring, leaks_a_token, naive_placeholders, reference_swap,
    swapper, unexpected_placeholder, Input, RefContext, PREFIXES, RANDOM_HEADER_ONLY, RANDOM_OK,
};
use airlock_proxy::parse::parse_basic;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use http::header::{HeaderValue, AUTHORIZATION};
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;

const SCHEMES: [&str; 4] = ["Basic", "basic", "BASIC", "bAsIc"];

fn check_parse_basic(value: &[u8]) {
    if let Some((user, pass)) = parse_basic(value) {
        assert!(!user.contains(':'), "user {user:?} holds the separator");
        let again = format!("Basic {}", BASE64.encode(format!("{user}:{pass}")));
        assert_eq!(
            parse_basic(again.as_bytes()),
            Some((user, pass)),
            "parse_basic does not round-trip"
        );
    }
}

fn swap(value: HeaderValue) -> (Result<(), String>, HeaderMap) {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value);
    let result = block_on(async {
        swapper(PREFIXES[0])
            .swap_headers(&mut headers)
            .await
            .map_err(|e| e.to_string())
    });
    (result, headers)
}

fuzz_target!(|data: &[u8]| {
    let prefix = PREFIXES[0];
    let mut input = Input::new(data);
    let flags = input.byte();
    let rest = input.rest();
    if ignoring("nested-prefix") && has_nested_prefix(prefix, rest) {
        return;
    }

    check_parse_basic(rest);

    if flags & 16 != 0 {
        // Raw header value: whatever the sandbox may write.
        let Ok(value) = HeaderValue::from_bytes(rest) else {
            return;
        };
        let (result, headers) = swap(value.clone());
        match result {
            Ok(()) => {
                let out = headers.get(AUTHORIZATION).expect("header kept");
                assert_eq!(headers.len(), 1);
                // Headers may carry both placeholders bound here that allow headers.
                let left = unexpected_placeholder(prefix, rest, &[RANDOM_OK, RANDOM_HEADER_ONLY]);
                assert!(left.is_none(), "let through: {left:?} in {value:?}");
                if out != value {
                    assert!(out.is_sensitive(), "swapped value must not be indexed");
                }
                // Inside `Basic`, only the one allowed in Basic credentials.
                let v = rest.trim_ascii_start();
                if v.len() > 6 && v[..5].eq_ignore_ascii_case(b"basic") && v[5] == b' ' {
                    if let Ok(decoded) = BASE64.decode(v[6..].trim_ascii()) {
                        let left = unexpected_placeholder(prefix, &decoded, &[RANDOM_OK]);
                        assert!(
                            left.is_none(),
                            "let through in Basic: {left:?} in {value:?}"
                        );
                    }
                }
            }
            Err(e) => assert!(!leaks_a_token(e.as_bytes()), "error shows a token: {e}"),
        }
        return;
    }

    // `user:pass` → Authorization: <scheme> base64(user:pass)
    let scheme = SCHEMES[usize::from(flags & 3)];
    let (lead, sep) = if flags & 4 != 0 {
        (" ", "   ")
    } else {
        ("", " ")
    };
    let trail = if flags & 8 != 0 { "  " } else { "" };
    let encoded = BASE64.encode(rest);
    let text = format!("{lead}{scheme}{sep}{encoded}{trail}");
    let value = HeaderValue::from_str(&text).expect("base64 is a valid header value");

    let expected_parse = std::str::from_utf8(rest)
        .ok()
        .and_then(|s| s.split_once(':'))
        .map(|(u, p)| (u.to_owned(), p.to_owned()));
    assert_eq!(parse_basic(text.as_bytes()), expected_parse, "{text:?}");

    let (result, headers) = swap(value.clone());
    let shaped = naive_placeholders(prefix, rest);
    match result {
        Ok(()) => {
            assert_eq!(headers.len(), 1);
            let out = headers.get(AUTHORIZATION).expect("header kept");
            let expected = reference_swap(prefix, rest, RefContext::Raw);
            if expected == rest {
                assert_eq!(out, value, "a credential without placeholder was changed");
                assert!(
                    shaped.is_empty(),
                    "Basic credential with placeholder-shaped text let through unswapped: {shaped:?} in {:?}",
                    String::from_utf8_lossy(rest)
                );
            } else {
                assert_ne!(
                    out, value,
                    "the credential holds the placeholder but was let through unswapped"
                );
                assert!(out.is_sensitive(), "swapped value must not be indexed");
                let b64 = out
                    .as_bytes()
                    .strip_prefix(b"Basic ")
                    .unwrap_or_else(|| panic!("swapped value {out:?} is not `Basic …`"));
                let decoded = BASE64
                    .decode(b64)
                    .unwrap_or_else(|e| panic!("swapped value {out:?} is not base64: {e}"));
                assert_eq!(
                    String::from_utf8_lossy(&decoded),
                    String::from_utf8_lossy(&expected),
                    "decoded credential is not the input with placeholder → token"
                );
                let left = unexpected_placeholder(prefix, rest, &[RANDOM_OK]);
                assert!(left.is_none(), "let through in Basic: {left:?}");
            }
        }
        Err(e) => {
            assert!(
                !shaped.is_empty(),
                "swap refused a credential with nothing placeholder-shaped: {e}"
            );
            assert!(!leaks_a_token(e.as_bytes()), "error shows a token: {e}");
        }
    }
});
