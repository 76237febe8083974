//! Tokens, hashing, PKCE and form encoding, done here so the fixture needs
//! no crate beyond the other fixtures'.

use super::*;

/// `prefix` + 32 random bytes, base64url without padding.
pub(super) fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .expect("random bytes");
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

pub(super) fn sha256(data: &[u8]) -> Vec<u8> {
    rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .expect("a TLS 1.3 suite")
        .common
        .hash_provider
        .hash(data)
        .as_ref()
        .to_vec()
}

/// The PKCE S256 check of RFC 7636 §4.6, including the verifier's syntax (§4.1).
pub fn pkce_s256_matches(verifier: &str, challenge: &str) -> bool {
    let syntax_ok = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    syntax_ok && URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes())) == challenge
}

/// The S256 `code_challenge` for `verifier`.
pub fn pkce_s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()))
}

/// Parses `application/x-www-form-urlencoded` (also a URL query). A parameter
/// given twice is an error (RFC 6749 §3.1, §3.2).
pub(super) fn parse_form(input: &str) -> Result<HashMap<String, String>, String> {
    let mut map = HashMap::new();
    for pair in input.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = form_decode(name);
        if map.insert(name.clone(), form_decode(value)).is_some() {
            return Err(format!("parameter {name} given more than once"));
        }
    }
    Ok(map)
}

/// Decodes one form-urlencoded component: `+` is a space, `%XX` a byte.
/// Malformed escapes are kept as they are.
pub fn form_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes one form-urlencoded component: unreserved characters stay, space
/// becomes `+`, everything else `%XX`.
pub fn form_encode(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for b in input.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
