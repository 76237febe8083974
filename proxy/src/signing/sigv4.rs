//! AWS Signature Version 4, as the AWS spec and botocore's `auth.py` define
//! it: parsing `Authorization: AWS4-HMAC-SHA256 …` and presigned-URL
//! parameters, the canonical request, the string to sign, the signing key
//! and the signature. Pure functions over strings; [`super`] applies them to
//! a request. HMAC-SHA256 and SHA-256 are `ring`'s.

use ring::{digest, hmac};

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// `aws-chunked` with a signature per chunk, chained from the header's.
pub const STREAMING_PAYLOAD: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
/// The same, with signed trailing headers after the last chunk.
pub const STREAMING_PAYLOAD_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
/// `aws-chunked` without chunk signatures, trailing checksum (botocore's
/// default for uploads over HTTPS).
pub const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
/// SHA-256 of nothing.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The longest `Authorization` value or credential read (AWS's are < 1 KiB).
pub const MAX_AUTH_LEN: usize = 4096;

/// What is wrong with a SigV4 header or parameter. Messages quote no
/// signature and no key: only which part is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the Authorization header is longer than {MAX_AUTH_LEN} bytes")]
    TooLong,
    #[error("the algorithm must be AWS4-HMAC-SHA256")]
    Algorithm,
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{0} is given twice")]
    Repeated(&'static str),
    #[error("unknown component {0:?} (Credential, SignedHeaders and Signature are known)")]
    Unknown(String),
    #[error("Credential must be KEYID/YYYYMMDD/REGION/SERVICE/aws4_request")]
    Credential,
    #[error("SignedHeaders must be lower-case header names separated by ';', including host")]
    SignedHeaders,
    #[error("Signature must be 64 lower-case hex digits")]
    Signature,
    #[error("the date must be YYYYMMDDTHHMMSSZ and match the credential's date")]
    Date,
    #[error("X-Amz-Expires must be 1 to 604800 seconds")]
    Expires,
}

/// `YYYYMMDD/REGION/SERVICE/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub date: String,
    pub region: String,
    pub service: String,
}

impl Scope {
    pub fn to_scope_string(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }

    /// S3 (and its variants) sign the path as sent, without normalising or
    /// encoding it again; every other service does both.
    pub fn is_s3(&self) -> bool {
        matches!(
            self.service.as_str(),
            "s3" | "s3-object-lambda" | "s3express" | "s3-outposts"
        )
    }
}

/// `KEYID/YYYYMMDD/REGION/SERVICE/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub key_id: String,
    pub scope: Scope,
}

pub fn parse_credential(s: &str) -> Result<Credential, ParseError> {
    if s.len() > MAX_AUTH_LEN {
        return Err(ParseError::TooLong);
    }
    let parts: Vec<&str> = s.split('/').collect();
    let [key_id, date, region, service, terminator] = parts[..] else {
        return Err(ParseError::Credential);
    };
    let name_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 64
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let key_ok = !key_id.is_empty()
        && key_id.len() <= 1024
        && key_id.bytes().all(|b| b.is_ascii_graphic() && b != b',');
    if !key_ok
        || date.len() != 8
        || !date.bytes().all(|b| b.is_ascii_digit())
        || !name_ok(region)
        || !name_ok(service)
        || terminator != "aws4_request"
    {
        return Err(ParseError::Credential);
    }
    Ok(Credential {
        key_id: key_id.to_owned(),
        scope: Scope {
            date: date.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
        },
    })
}

/// `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthHeader {
    pub credential: Credential,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Whether an `Authorization` value claims to be SigV4 (of any algorithm
/// variant), so a malformed one is refused rather than passed on.
pub fn looks_like_sigv4(value: &[u8]) -> bool {
    value.trim_ascii_start().starts_with(b"AWS4-")
}

pub fn parse_authorization(value: &str) -> Result<AuthHeader, ParseError> {
    if value.len() > MAX_AUTH_LEN {
        return Err(ParseError::TooLong);
    }
    let value = value.trim();
    let rest = value
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with([' ', '\t']))
        .ok_or(ParseError::Algorithm)?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        let (key, val) = part
            .split_once('=')
            .ok_or_else(|| ParseError::Unknown(part.chars().take(32).collect()))?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            other => return Err(ParseError::Unknown(other.chars().take(32).collect())),
        };
        if slot.replace(val).is_some() {
            return Err(ParseError::Repeated(match key {
                "Credential" => "Credential",
                "SignedHeaders" => "SignedHeaders",
                _ => "Signature",
            }));
        }
    }
    Ok(AuthHeader {
        credential: parse_credential(credential.ok_or(ParseError::Missing("Credential"))?)?,
        signed_headers: parse_signed_headers(signed.ok_or(ParseError::Missing("SignedHeaders"))?)?,
        signature: parse_signature(signature.ok_or(ParseError::Missing("Signature"))?)?,
    })
}

pub fn parse_signed_headers(s: &str) -> Result<Vec<String>, ParseError> {
    let names: Vec<String> = s.split(';').map(str::to_owned).collect();
    let ok = names.iter().all(|n| {
        !n.is_empty()
            && n.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
            })
    }) && names.iter().any(|n| n == "host")
        && names.len() <= 64;
    if !ok {
        return Err(ParseError::SignedHeaders);
    }
    Ok(names)
}

pub fn parse_signature(s: &str) -> Result<String, ParseError> {
    if s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(s.to_owned())
    } else {
        Err(ParseError::Signature)
    }
}

/// `YYYYMMDDTHHMMSSZ` as Unix seconds.
pub fn parse_amz_date(s: &str) -> Result<i64, ParseError> {
    let b = s.as_bytes();
    // ASCII only, so the slices below fall on character boundaries.
    if b.len() != 16 || !s.is_ascii() || b[8] != b'T' || b[15] != b'Z' {
        return Err(ParseError::Date);
    }
    let digits = |r: std::ops::Range<usize>| -> Result<i64, ParseError> {
        let part = &s[r];
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().map_err(|_| ParseError::Date)
        } else {
            Err(ParseError::Date)
        }
    };
    let (y, mo, d) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (h, mi, se) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(ParseError::Date);
    }
    Ok(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The presigned-URL form: `X-Amz-Algorithm`, `X-Amz-Credential`,
/// `X-Amz-Date`, `X-Amz-Expires`, `X-Amz-SignedHeaders`, `X-Amz-Signature`
/// (and `X-Amz-Security-Token`) in the query, percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryAuth {
    pub credential: Credential,
    pub amz_date: String,
    pub expires: i64,
    pub signed_headers: Vec<String>,
    pub signature: String,
    pub security_token: Option<String>,
}

/// The query's parameters, split and percent-decoded (`+` stays a `+`).
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Whether the query carries SigV4 presigning parameters at all.
pub fn is_presigned(query: &str) -> bool {
    // Most queries have no `X-Amz-` at all: no allocation for them.
    let cheap = query
        .as_bytes()
        .windows(6)
        .any(|w| w.eq_ignore_ascii_case(b"x-amz-"));
    cheap
        && query_pairs(query)
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("X-Amz-Algorithm") || k == "X-Amz-Credential")
}

pub fn parse_query_auth(query: &str) -> Result<QueryAuth, ParseError> {
    if query.len() > 64 * 1024 {
        return Err(ParseError::TooLong);
    }
    let pairs = query_pairs(query);
    let one = |name: &'static str| -> Result<Option<&str>, ParseError> {
        let mut found = pairs.iter().filter(|(k, _)| k == name);
        let first = found.next().map(|(_, v)| v.as_str());
        if found.next().is_some() {
            return Err(ParseError::Repeated(name));
        }
        Ok(first)
    };
    let need = |name: &'static str| one(name)?.ok_or(ParseError::Missing(name));
    if need("X-Amz-Algorithm")? != ALGORITHM {
        return Err(ParseError::Algorithm);
    }
    let credential = parse_credential(need("X-Amz-Credential")?)?;
    let amz_date = need("X-Amz-Date")?.to_owned();
    parse_amz_date(&amz_date)?;
    if !amz_date.starts_with(&credential.scope.date) {
        return Err(ParseError::Date);
    }
    let expires: i64 = need("X-Amz-Expires")?
        .parse()
        .map_err(|_| ParseError::Expires)?;
    if !(1..=604_800).contains(&expires) {
        return Err(ParseError::Expires);
    }
    Ok(QueryAuth {
        credential,
        amz_date,
        expires,
        signed_headers: parse_signed_headers(need("X-Amz-SignedHeaders")?)?,
        signature: parse_signature(need("X-Amz-Signature")?)?,
        security_token: one("X-Amz-Security-Token")?.map(str::to_owned),
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// AWS's `UriEncode`: every byte but `A-Z a-z 0-9 - _ . ~` as `%XX`
/// (upper-case hex); `/` kept when `keep_slash`.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The canonical URI: S3's path as sent; other services' with dot segments
/// and empty segments removed, then encoded again (so `%` becomes `%25`).
pub fn canonical_uri(path: &str, s3: bool) -> String {
    if path.is_empty() {
        return "/".into();
    }
    if s3 {
        return path.to_owned();
    }
    uri_encode(&remove_dot_segments(path), true)
}

/// botocore's `remove_dot_segments` (RFC 3986 5.2.4, and AWS drops empty segments).
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let first = if path.starts_with('/') { "/" } else { "" };
    let last = if path.ends_with('/') && !out.is_empty() {
        "/"
    } else {
        ""
    };
    format!("{first}{}{last}", out.join("/"))
}

/// The canonical query string: each name and value decoded then encoded
/// with `UriEncode`, sorted by name then value; `skip` leaves names out
/// (`X-Amz-Signature` of a presigned URL).
pub fn canonical_query(query: &str, skip: &[&str]) -> String {
    let mut pairs: Vec<(String, String)> = query_pairs(query)
        .into_iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `Trimall`: surrounding whitespace removed, inner runs made one space.
pub fn trim_all(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    text.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// A signed header's lower-case name and its values, in order.
pub type HeaderValues = (String, Vec<Vec<u8>>);

/// One request's parts, as SigV4 reads them.
pub struct CanonicalRequest<'a> {
    pub method: &'a str,
    /// The path as sent (still percent-encoded).
    pub path: &'a str,
    /// The query as sent, without `?`.
    pub query: &'a str,
    /// Query names left out of the canonical query.
    pub skip_query: &'a [&'a str],
    /// Each signed header, lower-case, with its values in order.
    pub headers: &'a [HeaderValues],
    pub payload_hash: &'a str,
    pub s3: bool,
}

impl CanonicalRequest<'_> {
    pub fn to_canonical_string(&self) -> String {
        let mut out = String::with_capacity(512);
        out.push_str(self.method);
        out.push('\n');
        out.push_str(&canonical_uri(self.path, self.s3));
        out.push('\n');
        out.push_str(&canonical_query(self.query, self.skip_query));
        out.push('\n');
        let mut headers: Vec<&HeaderValues> = self.headers.iter().collect();
        headers.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, values) in &headers {
            out.push_str(name);
            out.push(':');
            let joined: Vec<String> = values.iter().map(|v| trim_all(v)).collect();
            out.push_str(&joined.join(","));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(
            &headers
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(";"),
        );
        out.push('\n');
        out.push_str(self.payload_hash);
        out
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

pub fn string_to_sign(amz_date: &str, scope: &Scope, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        scope.to_scope_string(),
        sha256_hex(canonical_request.as_bytes())
    )
}

/// `kSigning`: HMAC chain from `"AWS4" + secret` over date, region, service,
/// `aws4_request`.
pub fn signing_key(secret: &str, scope: &Scope) -> hmac::Key {
    let mut seed = zeroize::Zeroizing::new(String::with_capacity(secret.len() + 4));
    seed.push_str("AWS4");
    seed.push_str(secret);
    let mut key = hmac::Key::new(hmac::HMAC_SHA256, seed.as_bytes());
    for part in [
        scope.date.as_str(),
        scope.region.as_str(),
        scope.service.as_str(),
        "aws4_request",
    ] {
        let tag = hmac::sign(&key, part.as_bytes());
        key = hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref());
    }
    key
}

pub fn sign(key: &hmac::Key, string_to_sign: &str) -> String {
    hex(hmac::sign(key, string_to_sign.as_bytes()).as_ref())
}

/// Compares two signatures in constant time.
pub fn same_signature(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The string a chunk of `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` signs.
pub fn chunk_string_to_sign(amz_date: &str, scope: &Scope, previous: &str, data: &[u8]) -> String {
    format!(
        "AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{}\n{previous}\n{EMPTY_SHA256}\n{}",
        scope.to_scope_string(),
        sha256_hex(data)
    )
}

/// The string the trailing headers of `…-PAYLOAD-TRAILER` sign.
pub fn trailer_string_to_sign(
    amz_date: &str,
    scope: &Scope,
    previous: &str,
    trailers: &[u8],
) -> String {
    format!(
        "AWS4-HMAC-SHA256-TRAILER\n{amz_date}\n{}\n{previous}\n{}",
        scope.to_scope_string(),
        sha256_hex(trailers)
    )
}

#[cfg(test)]
mod tests;
