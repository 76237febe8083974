//! A request signed with placeholders is checked, then signed again with the
//! real keys so that a SigV4 check with the real secret passes.

use std::sync::Arc;

use airlock_vault_client::{
    AwsSigV4Keys, Binding, BindingKind, HostPattern, Resolved, SandboxId, SecretString,
    SessionToken, SigningKeys, SwapLocation,
};

use super::sigv4::*;
use super::*;

const NOW: i64 = 1_440_938_160; // 20150830T123600Z
const DATE: &str = "20150830T123600Z";
const PH_KEY: &str = "miosa-tok-AAAAAAAAAAAAAAAAAAAAAAAA";
const PH_SECRET: &str = "placeholder-secret";
const REAL_KEY: &str = "AKIAREALKEYID";
const REAL_SECRET: &str = "real/secret+key";

fn resolved(token: bool) -> Resolved {
    Resolved {
        binding: Arc::new(Binding {
            id: "secret:AWS_ACCESS_KEY_ID".into(),
            name: "AWS_ACCESS_KEY_ID".into(),
            sandbox: SandboxId::default_sandbox(),
            hosts: vec![HostPattern::parse("s3.test").unwrap()],
            swap_in: [SwapLocation::Header].into_iter().collect(),
            kind: BindingKind::AwsSigV4,
            expired_on: vec![],
            inject: None,
            on_foreign_body: Default::default(),
            rules: Default::default(),
            narrowed: None,
            scope_signals: Default::default(),
        }),
        token: airlock_vault_client::SharedToken::from(REAL_KEY),
        expires_at: None,
        signing: Some(Arc::new(SigningKeys::AwsSigV4(AwsSigV4Keys {
            secret_variable: "AWS_SECRET_ACCESS_KEY".into(),
            placeholder_secret: SecretString::from(PH_SECRET),
            secret_access_key: SecretString::from(REAL_SECRET),
            session_token: token.then(|| SessionToken {
                variable: "AWS_SESSION_TOKEN".into(),
                placeholder: "miosa-tok-SESSIONSESSIONSESSIONSESSION".into(),
                token: SecretString::from("REAL-SESSION-TOKEN"),
            }),
        }))),
    }
}

fn scope() -> Scope {
    Scope {
        date: "20150830".into(),
        region: "us-east-1".into(),
        service: "s3".into(),
    }
}

/// Headers of a PUT signed with `secret` under `key_id`.
fn signed_put(key_id: &str, secret: &str, body: &[u8], extra: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("s3.test"));
    headers.insert("x-amz-date", HeaderValue::from_static(DATE));
    let hash = sha256_hex(body);
    headers.insert(
        "x-amz-content-sha256",
        HeaderValue::from_str(&hash).unwrap(),
    );
    for (k, v) in extra {
        headers.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let mut names: Vec<String> = headers.keys().map(|k| k.as_str().to_owned()).collect();
    names.sort();
    let values = signed_header_values(&names, &headers, "s3.test").unwrap();
    let creq = CanonicalRequest {
        method: "PUT",
        path: "/bucket/key%20x",
        query: "a=1",
        skip_query: &[],
        headers: &values,
        payload_hash: &hash,
        s3: true,
    }
    .to_canonical_string();
    let sig = sign(
        &signing_key(secret, &scope()),
        &string_to_sign(DATE, &scope(), &creq),
    );
    let auth = format!(
        "{ALGORITHM} Credential={key_id}/{}, SignedHeaders={}, Signature={sig}",
        scope().to_scope_string(),
        names.join(";")
    );
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&auth).unwrap());
    headers
}

fn check(
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    token: bool,
) -> Result<Verified, SigningError> {
    let form = detect(headers, "/bucket/key%20x?a=1", test())
        .unwrap()
        .expect("a placeholder signature");
    let view = RequestView {
        method: "PUT",
        path_and_query: "/bucket/key%20x?a=1",
        host: "s3.test",
        headers,
        body: Some(body),
    };
    Verified::check(form, &resolved(token), &view, now)
}

#[test]
fn a_placeholder_signature_is_checked_then_signed_with_the_real_keys() {
    let body = b"hello";
    let sent = signed_put(PH_KEY, PH_SECRET, body, &[]);
    let mut verified = check(&sent, body, NOW, false).unwrap();
    let mut headers = sent.clone();
    let pq = verified.strip(&mut headers, "/bucket/key%20x?a=1");
    headers.remove("host");
    let pq = verified.sign("PUT", &mut headers, &pq, "s3.test").unwrap();
    assert_eq!(pq, "/bucket/key%20x?a=1");
    // What the upstream gets is what a client holding the real keys sends.
    let want = signed_put(REAL_KEY, REAL_SECRET, body, &[]);
    assert_eq!(headers[AUTHORIZATION], want[AUTHORIZATION]);
    assert!(!headers[AUTHORIZATION].to_str().unwrap().contains(PH_KEY));
}

#[test]
fn wrong_secret_skew_token_and_body_are_refused() {
    let body = b"hello";
    let wrong = signed_put(PH_KEY, "another-secret", body, &[]);
    assert!(matches!(
        check(&wrong, body, NOW, false),
        Err(SigningError::Mismatch { .. })
    ));
    let sent = signed_put(PH_KEY, PH_SECRET, body, &[]);
    assert!(matches!(
        check(&sent, body, NOW + MAX_CLOCK_SKEW_SECS + 1, false),
        Err(SigningError::ClockSkew { skew }) if skew == -MAX_CLOCK_SKEW_SECS - 1
    ));
    assert!(check(&sent, body, NOW + MAX_CLOCK_SKEW_SECS, false).is_ok());
    assert_eq!(
        check(&sent, b"other", NOW, false).err(),
        Some(SigningError::PayloadMismatch)
    );
    let own_token = signed_put(
        PH_KEY,
        PH_SECRET,
        body,
        &[("x-amz-security-token", "agents-own")],
    );
    assert!(matches!(
        check(&own_token, body, NOW, true),
        Err(SigningError::SessionToken { .. })
    ));
    let err = check(&wrong, body, NOW, false).err().unwrap().to_string();
    assert!(
        !err.contains(PH_SECRET) && !err.contains(REAL_SECRET),
        "{err}"
    );
}

#[test]
fn the_session_token_placeholder_becomes_the_real_one_under_the_signature() {
    let body = b"";
    let sent = signed_put(
        PH_KEY,
        PH_SECRET,
        body,
        &[(
            "x-amz-security-token",
            "miosa-tok-SESSIONSESSIONSESSIONSESSION",
        )],
    );
    let mut verified = check(&sent, body, NOW, true).unwrap();
    let mut headers = sent.clone();
    let pq = verified.strip(&mut headers, "/bucket/key%20x?a=1");
    assert!(!headers.contains_key("x-amz-security-token"));
    headers.remove("host");
    verified.sign("PUT", &mut headers, &pq, "s3.test").unwrap();
    assert_eq!(headers["x-amz-security-token"], "REAL-SESSION-TOKEN");
    let want = signed_put(
        REAL_KEY,
        REAL_SECRET,
        body,
        &[("x-amz-security-token", "REAL-SESSION-TOKEN")],
    );
    assert_eq!(headers[AUTHORIZATION], want[AUTHORIZATION]);
}

fn test() -> PlaceholderTest<impl Fn(&str) -> bool, impl Fn(&[u8]) -> bool> {
    PlaceholderTest {
        is: |k: &str| k == PH_KEY,
        holds: |t: &[u8]| t.windows(PH_KEY.len()).any(|w| w == PH_KEY.as_bytes()),
    }
}

#[test]
fn a_malformed_sigv4_header_with_a_placeholder_is_refused_and_other_keys_pass() {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("AWS4-HMAC-SHA256 Credential={PH_KEY}/garbage")).unwrap(),
    );
    assert!(matches!(
        detect(&headers, "/", test()),
        Err(SigningError::Malformed { .. })
    ));
    // Without a placeholder (a client's own SigV4a, say): not airlock's business.
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_static(
            "AWS4-ECDSA-P256-SHA256 Credential=AKIAOWN/20150830/s3/aws4_request",
        ),
    );
    assert!(detect(&headers, "/", test()).unwrap().is_none());
    let presigned = format!("/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={PH_KEY}");
    assert!(matches!(
        detect(&HeaderMap::new(), &presigned, test()),
        Err(SigningError::Malformed {
            place: "presigned URL",
            ..
        })
    ));
    let theirs = signed_put("AKIAOWNKEY", "own", b"", &[]);
    assert!(detect(&theirs, "/", test()).unwrap().is_none());
}
