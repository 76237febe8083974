//! OAuth 1.0a (RFC 5849) signing, shared by the vault (request and access
//! token calls of the connect flow) and the proxy (checking the sandbox's
//! signature, signing the request it sends): the signature base string,
//! HMAC-SHA1, and the `Authorization: OAuth …` header.
//!
//! A sandbox bound to an OAuth 1.0a connection holds four placeholders. The
//! access token's is the binding's own; the consumer key, consumer secret
//! and token secret placeholders are made from it ([`placeholders`]), so the
//! vault stores nothing more and every proxy of a fleet derives the same
//! ones. They give nothing the access token placeholder does not: all four
//! only ever work through airlock, for that sandbox.

use std::fmt;

use base64::Engine;
use rand::rngs::OsRng;
use rand::Rng;
use secrecy::SecretString;

/// The only signature method airlock checks and writes.
pub const HMAC_SHA1: &str = "HMAC-SHA1";

/// The real credentials of an OAuth 1.0a binding besides its access token
/// (`Resolved::token`). Only the proxy's signing stage reads them.
pub struct OAuth1Keys {
    pub consumer_key: SecretString,
    pub consumer_secret: SecretString,
    pub token_secret: SecretString,
}

impl fmt::Debug for OAuth1Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OAuth1Keys([redacted])")
    }
}

/// The placeholders a sandbox signs with, made from its access token
/// placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholders {
    pub consumer_key: String,
    pub consumer_secret: String,
    pub token_secret: String,
}

/// The placeholders of an OAuth 1.0a binding whose access token placeholder
/// is `access_token`. Each starts with it, so the proxy's scanner finds any
/// of them sent as text and refuses it as a signing key.
pub fn placeholders(access_token: &str) -> Placeholders {
    Placeholders {
        consumer_key: format!("{access_token}-ck"),
        consumer_secret: format!("{access_token}-cs"),
        token_secret: format!("{access_token}-ts"),
    }
}

/// The sandbox's variables for an OAuth 1.0a binding whose access token
/// variable is `access_token` (`X_ACCESS_TOKEN` → `X_CONSUMER_KEY`,
/// `X_CONSUMER_SECRET`, `X_ACCESS_TOKEN_SECRET`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variables {
    pub consumer_key: String,
    pub consumer_secret: String,
    pub token_secret: String,
}

pub fn variables(access_token: &str) -> Variables {
    let base = access_token
        .strip_suffix("_ACCESS_TOKEN")
        .or_else(|| access_token.strip_suffix("_TOKEN"))
        .unwrap_or(access_token);
    Variables {
        consumer_key: format!("{base}_CONSUMER_KEY"),
        consumer_secret: format!("{base}_CONSUMER_SECRET"),
        token_secret: format!("{access_token}_SECRET"),
    }
}

/// The (variable, placeholder) pairs a sandbox gets for an OAuth 1.0a
/// binding, access token first.
pub fn environment(variable: &str, placeholder: &str) -> Vec<(String, String)> {
    let v = variables(variable);
    let p = placeholders(placeholder);
    vec![
        (variable.to_owned(), placeholder.to_owned()),
        (v.consumer_key, p.consumer_key),
        (v.consumer_secret, p.consumer_secret),
        (v.token_secret, p.token_secret),
    ]
}

/// RFC 5849 §3.6: every byte but the unreserved characters as `%XX`
/// (upper-case hex).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Strict percent-decoding of an `Authorization` parameter (no `+`).
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Two hex digits: `from_str_radix` alone would take `%+1`.
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The parameters of a query string or form body, decoded as
/// `application/x-www-form-urlencoded` (RFC 5849 §3.4.1.3.1).
pub fn form_params(text: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(text)
        .filter(|(k, v)| !(k.is_empty() && v.is_empty()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The base string URI (RFC 5849 §3.4.1.2): scheme and host lower case,
/// the port only when not the scheme's default, the path as sent.
pub fn base_uri(scheme: &str, authority: &str, path: &str) -> String {
    let scheme = scheme.to_ascii_lowercase();
    let authority = authority.to_ascii_lowercase();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let host = authority.strip_suffix(default_port).unwrap_or(&authority);
    let path = if path.is_empty() { "/" } else { path };
    format!("{scheme}://{host}{path}")
}

/// The signature base string (RFC 5849 §3.4.1): `params` are every query,
/// form body and `oauth_*` protocol parameter, decoded, without `realm` and
/// `oauth_signature`.
pub fn base_string(method: &str, base_uri: &str, params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> =
        params.iter().map(|(k, v)| (encode(k), encode(v))).collect();
    encoded.sort();
    let normalized = encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        encode(base_uri),
        encode(&normalized)
    )
}

/// The HMAC-SHA1 signature of `base` (RFC 5849 §3.4.2), base64.
pub fn hmac_sha1(consumer_secret: &str, token_secret: &str, base: &str) -> String {
    let key = format!("{}&{}", encode(consumer_secret), encode(token_secret));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, base.as_bytes()))
}

/// A fresh `oauth_nonce`: 32 base62 characters.
pub fn nonce() -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = OsRng;
    (0..32)
        .map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char)
        .collect()
}

/// Why an `Authorization: OAuth …` header cannot be read. Names the part,
/// never a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("a parameter is not name=\"value\"")]
    Syntax,
    #[error("a parameter value is not valid percent-encoded UTF-8")]
    Encoding,
    #[error("the parameter {0} appears twice")]
    Duplicate(&'static str),
    #[error("the parameter {0} is missing")]
    Missing(&'static str),
    #[error("oauth_version must be 1.0")]
    Version,
    #[error("oauth_timestamp is not a number of seconds")]
    Timestamp,
}

/// Whether a header value uses the `OAuth` scheme.
pub fn is_oauth_header(value: &[u8]) -> bool {
    value.len() > 6 && value[..6].eq_ignore_ascii_case(b"OAuth ")
}

/// The parameters of an `Authorization: OAuth …` header, decoded, in
/// order (`realm` included).
pub fn parse_authorization(value: &str) -> Result<Vec<(String, String)>, ParseError> {
    let rest = value
        .get(6..)
        .filter(|_| is_oauth_header(value.as_bytes()))
        .ok_or(ParseError::Syntax)?;
    let mut out: Vec<(String, String)> = Vec::new();
    let mut rest = rest.trim_start();
    // Bounded by the header's length: each round consumes a parameter.
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').ok_or(ParseError::Syntax)?;
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
            return Err(ParseError::Syntax);
        }
        let after = after.strip_prefix('"').ok_or(ParseError::Syntax)?;
        let (raw, after) = after.split_once('"').ok_or(ParseError::Syntax)?;
        let value = decode(raw).ok_or(ParseError::Encoding)?;
        let name = decode(name).ok_or(ParseError::Encoding)?;
        if out.iter().any(|(n, _)| *n == name) {
            return Err(ParseError::Duplicate(known_name(&name)));
        }
        out.push((name, value));
        let after = after.trim_start();
        rest = match after.strip_prefix(',') {
            Some(r) => r.trim_start(),
            None if after.is_empty() => after,
            None => return Err(ParseError::Syntax),
        };
    }
    // `OAuth` with nothing after it says nothing; format could not write it back.
    if out.is_empty() {
        return Err(ParseError::Syntax);
    }
    Ok(out)
}

fn known_name(name: &str) -> &'static str {
    const NAMES: [&str; 9] = [
        "realm",
        "oauth_consumer_key",
        "oauth_token",
        "oauth_signature_method",
        "oauth_signature",
        "oauth_timestamp",
        "oauth_nonce",
        "oauth_version",
        "oauth_callback",
    ];
    NAMES
        .iter()
        .find(|n| **n == name)
        .copied()
        .unwrap_or("(another)")
}

/// An `Authorization` header value with `params` (`realm` unencoded first
/// when present, as RFC 5849 §3.5.1 writes it).
pub fn format_authorization(params: &[(String, String)]) -> String {
    let mut parts = Vec::with_capacity(params.len());
    for (k, v) in params {
        parts.push(format!("{}=\"{}\"", encode(k), encode(v)));
    }
    format!("OAuth {}", parts.join(", "))
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The protocol parameters of a request airlock signs, and the signed
/// `Authorization` value: used by the vault for request/access token calls.
pub struct Signer<'a> {
    pub consumer_key: &'a str,
    pub consumer_secret: &'a str,
    pub token: Option<&'a str>,
    pub token_secret: &'a str,
}

impl Signer<'_> {
    /// The `Authorization` header for `method` `url` with `extra` oauth
    /// parameters (`oauth_callback`, `oauth_verifier`) and `params` (query
    /// and form body parameters, decoded) signed.
    pub fn authorization(
        &self,
        method: &str,
        base_uri: &str,
        extra: &[(&str, &str)],
        params: &[(String, String)],
        timestamp: i64,
        nonce: &str,
    ) -> String {
        let mut oauth: Vec<(String, String)> = vec![
            ("oauth_consumer_key".into(), self.consumer_key.to_owned()),
            ("oauth_nonce".into(), nonce.to_owned()),
            ("oauth_signature_method".into(), HMAC_SHA1.into()),
            ("oauth_timestamp".into(), timestamp.to_string()),
            ("oauth_version".into(), "1.0".into()),
        ];
        if let Some(t) = self.token {
            oauth.push(("oauth_token".into(), t.to_owned()));
        }
        for (k, v) in extra {
            oauth.push(((*k).to_owned(), (*v).to_owned()));
        }
        let mut all = oauth.clone();
        all.extend(params.iter().cloned());
        let signature = hmac_sha1(
            self.consumer_secret,
            self.token_secret,
            &base_string(method, base_uri, &all),
        );
        oauth.push(("oauth_signature".into(), signature));
        format_authorization(&oauth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// RFC 5849 §3.4.1.1's example request: its base string, exactly.
    #[test]
    fn rfc_5849_base_string() {
        let mut params = form_params(b"b5=%3D%253D&a3=a&c%40=&a2=r%20b");
        params.extend(form_params(b"c2&a3=2+q"));
        params.extend(pairs(&[
            ("oauth_consumer_key", "9djdj82h48djs9d2"),
            ("oauth_token", "kkk9d7dh3k39sjv7"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "137131201"),
            ("oauth_nonce", "7d8f3e4a"),
        ]));
        let uri = base_uri("http", "EXAMPLE.COM:80", "/request");
        assert_eq!(uri, "http://example.com/request");
        assert_eq!(
            base_string("POST", &uri, &params),
            "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q\
             %26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_\
             key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_m\
             ethod%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk\
             9d7dh3k39sjv7"
        );
    }

    /// The "photos" example of OAuth Core 1.0, Appendix A.5 (RFC 5849 §1.2
    /// is the same request).
    #[test]
    fn rfc_5849_photos_signature() {
        let params = pairs(&[
            ("file", "vacation.jpg"),
            ("size", "original"),
            ("oauth_consumer_key", "dpf43f3p2l4k3l03"),
            ("oauth_token", "nnch734d00sl2jdk"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "1191242096"),
            ("oauth_nonce", "kllo9940pd9333jh"),
            ("oauth_version", "1.0"),
        ]);
        let base = base_string(
            "GET",
            &base_uri("http", "photos.example.net", "/photos"),
            &params,
        );
        assert_eq!(
            base,
            "GET&http%3A%2F%2Fphotos.example.net%2Fphotos&file%3Dvacation.jpg%26\
             oauth_consumer_key%3Ddpf43f3p2l4k3l03%26oauth_nonce%3Dkllo9940pd9333jh%26\
             oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1191242096%26\
             oauth_token%3Dnnch734d00sl2jdk%26oauth_version%3D1.0%26size%3Doriginal"
        );
        assert_eq!(
            hmac_sha1("kd94hf93k423kf44", "pfkkdhi9sl3r4s00", &base),
            "tR3+Ty81lMeYAr/Fid0kMTYa/WM="
        );
    }

    /// Twitter's documented example ("Creating a signature").
    #[test]
    fn twitter_documented_signature() {
        let mut params = form_params(b"include_entities=true");
        params.extend(form_params(
            b"status=Hello%20Ladies%20%2b%20Gentlemen%2c%20a%20signed%20OAuth%20request%21",
        ));
        params.extend(pairs(&[
            ("oauth_consumer_key", "xvz1evFS4wEEPTGEFPHBog"),
            ("oauth_nonce", "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "1318622958"),
            (
                "oauth_token",
                "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb",
            ),
            ("oauth_version", "1.0"),
        ]));
        let base = base_string(
            "post",
            &base_uri("https", "api.twitter.com", "/1.1/statuses/update.json"),
            &params,
        );
        assert_eq!(
            hmac_sha1(
                "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
                "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
                &base
            ),
            "hCtSmYh+iHYCEqBWrE7C7hYmtUk="
        );
    }

    #[test]
    fn authorization_headers_round_trip_and_refuse_bad_ones() {
        let params = pairs(&[
            ("realm", "Example"),
            ("oauth_consumer_key", "a b"),
            ("oauth_signature", "x+y/z="),
        ]);
        let text = format_authorization(&params);
        assert_eq!(
            text,
            "OAuth realm=\"Example\", oauth_consumer_key=\"a%20b\", oauth_signature=\"x%2By%2Fz%3D\""
        );
        assert_eq!(parse_authorization(&text).unwrap(), params);
        assert_eq!(
            parse_authorization("oauth a=\"1\",b=\"2\"").unwrap(),
            pairs(&[("a", "1"), ("b", "2")])
        );
        assert_eq!(parse_authorization("OAuth a=1"), Err(ParseError::Syntax));
        assert_eq!(parse_authorization("OAuth a=\"1"), Err(ParseError::Syntax));
        assert_eq!(
            parse_authorization("OAuth oauth_token=\"1\", oauth_token=\"2\""),
            Err(ParseError::Duplicate("oauth_token"))
        );
        assert_eq!(
            parse_authorization("OAuth a=\"%zz\""),
            Err(ParseError::Encoding)
        );
        assert_eq!(
            parse_authorization("OAuth a=\"1\" b=\"2\""),
            Err(ParseError::Syntax)
        );
        assert_eq!(parse_authorization("Bearer x"), Err(ParseError::Syntax));
        // Found by the fuzzer: no parameters could not be written back.
        assert_eq!(parse_authorization("OAuth  "), Err(ParseError::Syntax));
        assert_eq!(
            parse_authorization("OAuth a=\"%+1\""),
            Err(ParseError::Encoding)
        );
    }

    #[test]
    fn variables_and_placeholders_follow_the_access_token() {
        assert_eq!(
            variables("X_ACCESS_TOKEN"),
            Variables {
                consumer_key: "X_CONSUMER_KEY".into(),
                consumer_secret: "X_CONSUMER_SECRET".into(),
                token_secret: "X_ACCESS_TOKEN_SECRET".into(),
            }
        );
        assert_eq!(variables("ACME").consumer_key, "ACME_CONSUMER_KEY");
        let p = placeholders("miosa-tok-abc");
        assert_eq!(p.consumer_secret, "miosa-tok-abc-cs");
        assert_eq!(environment("X_ACCESS_TOKEN", "miosa-tok-abc").len(), 4);
    }
}
