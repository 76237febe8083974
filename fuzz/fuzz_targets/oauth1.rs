//! OAuth 1.0a parsing: the `Authorization: OAuth …` header, form parameters
//! and the signature base string.
//!
//! Input: line 1 an Authorization value, the rest a query string or form body.
//!
//! Properties: nothing panics; a parsed header written back out parses to
//! the same parameters; percent-encoding keeps only unreserved characters
//! and is decoded back by the form parser; the base string has exactly two
//! `&` outside its encoded parts.
#![no_main]

use airlock_vault_client::oauth1::{
    base_string, base_uri, encode, form_params, format_authorization, parse_authorization,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == b'\n');
    let auth = String::from_utf8_lossy(parts.next().unwrap_or(b""));
    let rest = parts.next().unwrap_or(b"");

    if let Ok(params) = parse_authorization(&auth) {
        let again = format_authorization(&params);
        assert_eq!(parse_authorization(&again).as_ref(), Ok(&params), "{again:?}");
    }
    let params = form_params(rest);
    for (k, v) in &params {
        let e = encode(v);
        assert!(e
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
        let back = form_params(format!("{}={e}", encode(k)).as_bytes());
        assert_eq!(back, vec![(k.clone(), v.clone())]);
    }
    let base = base_string("POST", &base_uri("https", "api.x.test", "/1.1/x"), &params);
    assert_eq!(base.matches('&').count(), 2, "{base:?}");
});
