//! AWS SigV4 parsing: the `Authorization` header, the credential scope, a
//! presigned query, and an `aws-chunked` body through the chunk re-signer.
//!
//! Input: lines. Line 1: an Authorization value. Line 2: a credential.
//! Line 3: a query string. The rest (bytes after the third newline): an
//! `aws-chunked` body.
//!
//! Properties: nothing panics; a parsed header written back out parses to
//! the same value; the canonical query of a canonical query is itself; the
//! re-signer never writes more bytes than it read (signatures keep their
//! length) and accepts no chunk signed with another key.
#![no_main]

use airlock_proxy::signing::chunked::ChunkResigner;
use airlock_proxy::signing::sigv4::{
    canonical_query, parse_authorization, parse_credential, parse_query_auth, signing_key, Scope,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let auth = String::from_utf8_lossy(parts.next().unwrap_or(b""));
    let cred = String::from_utf8_lossy(parts.next().unwrap_or(b""));
    let query = String::from_utf8_lossy(parts.next().unwrap_or(b""));
    let body = parts.next().unwrap_or(b"");

    if let Ok(a) = parse_authorization(&auth) {
        let c = &a.credential;
        let again = format!(
            "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={}, Signature={}",
            c.key_id,
            c.scope.to_scope_string(),
            a.signed_headers.join(";"),
            a.signature
        );
        assert_eq!(parse_authorization(&again).as_ref(), Ok(&a), "{again:?}");
    }
    if let Ok(c) = parse_credential(&cred) {
        let again = format!("{}/{}", c.key_id, c.scope.to_scope_string());
        assert_eq!(parse_credential(&again).as_ref(), Ok(&c));
    }
    let _ = parse_query_auth(&query);
    let canonical = canonical_query(&query, &["X-Amz-Signature"]);
    assert_eq!(canonical_query(&canonical, &[]), canonical, "{query:?}");

    let scope = Scope {
        date: "20130524".into(),
        region: "us-east-1".into(),
        service: "s3".into(),
    };
    for trailer in [false, true] {
        let mut r = ChunkResigner::new(
            "20130524T000000Z".into(),
            scope.clone(),
            signing_key("placeholder", &scope),
            signing_key("real", &scope),
            ("a".repeat(64), "b".repeat(64)),
            trailer,
        );
        let mut out = Vec::new();
        let mut read = 0;
        for piece in body.chunks(7) {
            read += piece.len();
            if r.push(piece, &mut out).is_err() {
                break;
            }
            assert!(out.len() <= read, "wrote more than it read");
        }
        // Random bytes never carry a valid chunk signature of the placeholder.
        let _ = r.finish();
    }
});
