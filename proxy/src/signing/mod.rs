//! Request signing: bindings whose requests airlock signs again instead of
//! swapping a token (docs/SIGNING.md). AWS SigV4: the sandbox holds a
//! placeholder access key id and secret and signs with them; airlock finds
//! the binding by the key id, checks the signature with the placeholder
//! secret and the date against its clock, then signs the request it sends
//! with the real keys. Nothing is sent when the check fails.
//!
//! [`detect`] reads a request's SigV4 form, [`Verified::check`] checks it,
//! and the swap stage calls [`Verified::strip`] (the sandbox's signature
//! and session token out), then [`Verified::sign`] on the request as it
//! will be sent, and [`Verified::body`] for the body.

pub mod chunked;
pub mod hmac;
pub mod oauth1;
pub mod sigv4;

use std::collections::VecDeque;

use airlock_vault_client::{AwsSigV4Keys, ExposeSecret, Resolved, SigningKeys};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, HOST};

use crate::body::{boxed, BoxError, ProxyBody};
use chunked::{ChunkError, ChunkResigner};
use sigv4::{AuthHeader, ParseError, QueryAuth, Scope};

/// How far the request's date may be from airlock's clock.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

const SECURITY_TOKEN: &str = "x-amz-security-token";
const CONTENT_SHA256: &str = "x-amz-content-sha256";
/// Query parameters airlock writes again on a presigned URL.
const QUERY_SIGNING: [&str; 3] = [
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

/// Why a signed request is refused. Messages name the binding and the part
/// that is wrong, never a key or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("malformed AWS SigV4 {place}: {source}")]
    Malformed {
        place: &'static str,
        #[source]
        source: ParseError,
    },
    #[error("the AWS SigV4 signature was not made with binding {binding}'s placeholder secret access key (the one `airlock env` prints), or the request changed after it was signed")]
    Mismatch { binding: String },
    #[error("the request's signing time (X-Amz-Date, timestamp header or oauth_timestamp) is {skew} s from airlock's clock; at most {MAX_CLOCK_SKEW_SECS} s is allowed (is the sandbox's clock right?)")]
    ClockSkew { skew: i64 },
    #[error("the presigned URL expired {ago} s ago")]
    Expired { ago: i64 },
    #[error("placeholder of binding {binding} is a signing key (AWS SigV4, HMAC or OAuth 1.0a): sign requests with it instead of sending it as text")]
    NotSwappable { binding: String },
    #[error("binding {binding} is not an AWS SigV4 binding; its placeholder cannot be an AWS access key id")]
    NotSigV4 { binding: String },
    #[error("X-Amz-Security-Token is not binding {binding}'s placeholder session token")]
    SessionToken { binding: String },
    #[error("the {binding} signature header was not made with its placeholder secret over the binding's template, or the request changed after it was signed")]
    HmacMismatch { binding: String },
    #[error("binding {binding} needs its timestamp header, in Unix seconds")]
    HmacTimestamp { binding: String },
    #[error("malformed OAuth 1.0a Authorization header: {what}")]
    OAuth1Malformed { what: String },
    #[error("the OAuth 1.0a signature was not made with binding {binding}'s placeholder consumer secret and token secret (the ones `airlock env` prints), or the request changed after it was signed")]
    OAuth1Mismatch { binding: String },
    #[error("oauth_consumer_key is not binding {binding}'s placeholder consumer key (the one `airlock env` prints)")]
    OAuth1ConsumerKey { binding: String },
    #[error("binding {binding} is not an OAuth 1.0a connection; its placeholder cannot be an oauth_token")]
    NotOAuth1 { binding: String },
    #[error("the body does not match x-amz-content-sha256")]
    PayloadMismatch,
    #[error("aws-chunked body: {0}")]
    Chunked(#[source] ChunkError),
    #[error("{0}")]
    Unsupported(&'static str),
}

impl SigningError {
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Self::Malformed { .. }
            | Self::OAuth1Malformed { .. }
            | Self::PayloadMismatch
            | Self::Chunked(_)
            | Self::Unsupported(_) => StatusCode::BAD_REQUEST,
            Self::Mismatch { .. }
            | Self::ClockSkew { .. }
            | Self::Expired { .. }
            | Self::NotSwappable { .. }
            | Self::NotSigV4 { .. }
            | Self::SessionToken { .. }
            | Self::HmacMismatch { .. }
            | Self::HmacTimestamp { .. }
            | Self::OAuth1Mismatch { .. }
            | Self::OAuth1ConsumerKey { .. }
            | Self::NotOAuth1 { .. } => StatusCode::FORBIDDEN,
        }
    }

    /// The `x-airlock-error` code and audit outcome.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "sigv4_malformed",
            Self::Mismatch { .. } => "sigv4_signature_mismatch",
            Self::ClockSkew { .. } => "clock_skew",
            Self::Expired { .. } => "sigv4_expired",
            Self::NotSwappable { .. } => "signing_key_as_text",
            Self::NotSigV4 { .. } => "sigv4_not_signing_binding",
            Self::SessionToken { .. } => "sigv4_session_token",
            Self::HmacMismatch { .. } => "hmac_signature_mismatch",
            Self::HmacTimestamp { .. } => "hmac_timestamp",
            Self::OAuth1Malformed { .. } => "oauth1_malformed",
            Self::OAuth1Mismatch { .. } => "oauth1_signature_mismatch",
            Self::OAuth1ConsumerKey { .. } => "oauth1_consumer_key",
            Self::NotOAuth1 { .. } => "oauth1_not_signing_binding",
            Self::PayloadMismatch => "sigv4_payload_mismatch",
            Self::Chunked(_) => "sigv4_chunked",
            Self::Unsupported(_) => "signing_unsupported",
        }
    }
}

/// A request's SigV4 form, as the sandbox sent it.
#[derive(Debug, Clone)]
pub enum Form {
    Header(AuthHeader),
    Query(QueryAuth),
}

impl Form {
    pub fn key_id(&self) -> &str {
        match self {
            Self::Header(a) => &a.credential.key_id,
            Self::Query(q) => &q.credential.key_id,
        }
    }

    fn scope(&self) -> &Scope {
        match self {
            Self::Header(a) => &a.credential.scope,
            Self::Query(q) => &q.credential.scope,
        }
    }

    fn signed_headers(&self) -> &[String] {
        match self {
            Self::Header(a) => &a.signed_headers,
            Self::Query(q) => &q.signed_headers,
        }
    }

    fn signature(&self) -> &str {
        match self {
            Self::Header(a) => &a.signature,
            Self::Query(q) => &q.signature,
        }
    }
}

fn split_pq(pq: &str) -> (&str, &str) {
    pq.split_once('?').unwrap_or((pq, ""))
}

/// How [`detect`] tells placeholders: `is` the whole text one, `holds`
/// the text one somewhere (the swap stage's scanner).
pub struct PlaceholderTest<I, H> {
    pub is: I,
    pub holds: H,
}

/// The request's SigV4 form when its access key id is a placeholder
/// (`None` for requests not signed, or signed with a key of the sandbox's
/// own, which go on as they are). A malformed `AWS4-…` header or presigned
/// query that holds a placeholder is refused, with what is wrong; one
/// without goes on as it is (a client's own SigV4a, say).
pub fn detect<I, H>(
    headers: &HeaderMap,
    path_and_query: &str,
    test: PlaceholderTest<I, H>,
) -> Result<Option<Form>, SigningError>
where
    I: Fn(&str) -> bool,
    H: Fn(&[u8]) -> bool,
{
    let auth = headers
        .get_all(AUTHORIZATION)
        .iter()
        .find(|v| sigv4::looks_like_sigv4(v.as_bytes()));
    let (_, query) = split_pq(path_and_query);
    let parsed = if let Some(value) = auth {
        let form = value
            .to_str()
            .map_err(|_| ParseError::Credential)
            .and_then(sigv4::parse_authorization)
            .map(Form::Header);
        form.map_err(|e| ("Authorization header", e, value.as_bytes()))
    } else if sigv4::is_presigned(query) {
        sigv4::parse_query_auth(query)
            .map(Form::Query)
            .map_err(|e| ("presigned URL", e, query.as_bytes()))
    } else {
        return Ok(None);
    };
    match parsed {
        Ok(form) => Ok((test.is)(form.key_id()).then_some(form)),
        Err((place, source, text)) if (test.holds)(text) => {
            Err(SigningError::Malformed { place, source })
        }
        Err(_) => Ok(None),
    }
}

/// What the body's hash is, as the signature says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Payload {
    Unsigned,
    /// Hex SHA-256 of the body as sent (from `x-amz-content-sha256`, or
    /// computed from the body for services that send no such header).
    Hash(String),
    /// `aws-chunked`, each chunk signed; with signed trailers or not.
    SignedChunks {
        trailer: bool,
    },
    /// `aws-chunked` without chunk signatures (checksum trailer).
    UnsignedChunks,
}

/// A request whose placeholder signature checked out, ready to be signed
/// with the real keys.
pub struct Verified {
    binding: String,
    form: Form,
    amz_date: String,
    payload_text: String,
    payload: Payload,
    real_key_id: String,
    real_secret: airlock_vault_client::SecretString,
    session_token: Option<airlock_vault_client::SecretString>,
    placeholder_secret: airlock_vault_client::SecretString,
    /// The signature airlock wrote (the seed of signed chunks).
    signature_out: Option<String>,
}

/// The request as the signature reads it.
pub struct RequestView<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    /// `Host` when the request has one, else the authority (HTTP/2).
    pub host: &'a str,
    pub headers: &'a HeaderMap,
    /// The whole body when it was read whole and not decoded; `None` when
    /// it streams.
    pub body: Option<&'a [u8]>,
}

fn keys_of(resolved: &Resolved) -> Result<&AwsSigV4Keys, SigningError> {
    match resolved.signing.as_deref() {
        Some(SigningKeys::AwsSigV4(k)) => Ok(k),
        _ => Err(SigningError::NotSigV4 {
            binding: resolved.binding.id.clone(),
        }),
    }
}

impl Verified {
    /// Checks the sandbox's signature with the placeholder secret, the date
    /// against `now` (Unix seconds), the session token and a whole body's hash.
    pub fn check(
        form: Form,
        resolved: &Resolved,
        request: &RequestView<'_>,
        now: i64,
    ) -> Result<Self, SigningError> {
        let binding = resolved.binding.id.clone();
        let keys = keys_of(resolved)?;
        let headers = request.headers;
        let header_text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let amz_date = match &form {
            Form::Header(_) => header_text("x-amz-date").ok_or(SigningError::Malformed {
                place: "request",
                source: ParseError::Missing("X-Amz-Date"),
            })?,
            Form::Query(q) => q.amz_date.clone(),
        };
        let signed_at =
            sigv4::parse_amz_date(&amz_date).map_err(|source| SigningError::Malformed {
                place: "X-Amz-Date",
                source,
            })?;
        if !amz_date.starts_with(&form.scope().date) {
            return Err(SigningError::Malformed {
                place: "X-Amz-Date",
                source: ParseError::Date,
            });
        }
        let skew = signed_at - now;
        match &form {
            Form::Header(_) if skew.abs() > MAX_CLOCK_SKEW_SECS => {
                return Err(SigningError::ClockSkew { skew })
            }
            Form::Query(_) if skew > MAX_CLOCK_SKEW_SECS => {
                return Err(SigningError::ClockSkew { skew })
            }
            Form::Query(q) if now > signed_at + q.expires => {
                return Err(SigningError::Expired {
                    ago: now - signed_at - q.expires,
                })
            }
            _ => {}
        }
        // The session token the sandbox sent must be its placeholder.
        let sent_token = match &form {
            Form::Header(_) => header_text(SECURITY_TOKEN),
            Form::Query(q) => q.security_token.clone(),
        };
        if let Some(sent) = &sent_token {
            let ok = keys
                .session_token
                .as_ref()
                .is_some_and(|t| sigv4::same_signature(&t.placeholder, sent));
            if !ok {
                return Err(SigningError::SessionToken { binding });
            }
        }
        let s3 = form.scope().is_s3();
        let declared = match &form {
            Form::Header(_) => header_text(CONTENT_SHA256),
            Form::Query(_) => header_text(CONTENT_SHA256).or_else(|| {
                // A presigned URL knows nothing of the body.
                s3.then(|| sigv4::UNSIGNED_PAYLOAD.to_owned())
            }),
        };
        let (payload_text, payload) = match declared {
            Some(d) => {
                let p = match d.as_str() {
                    sigv4::UNSIGNED_PAYLOAD => Payload::Unsigned,
                    sigv4::STREAMING_PAYLOAD => Payload::SignedChunks { trailer: false },
                    sigv4::STREAMING_PAYLOAD_TRAILER => Payload::SignedChunks { trailer: true },
                    sigv4::STREAMING_UNSIGNED_TRAILER => Payload::UnsignedChunks,
                    h if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                        Payload::Hash(h.to_ascii_lowercase())
                    }
                    _ => {
                        return Err(SigningError::Unsupported(
                            "x-amz-content-sha256 must be a hex SHA-256, UNSIGNED-PAYLOAD or a STREAMING-… mode airlock knows (not STREAMING-AWS4-ECDSA-…)",
                        ))
                    }
                };
                (d, p)
            }
            None => {
                let Some(body) = request.body else {
                    return Err(SigningError::Unsupported(
                        "a body too large to read whole needs x-amz-content-sha256 (its hash, UNSIGNED-PAYLOAD or STREAMING-…)",
                    ));
                };
                let h = sigv4::sha256_hex(body);
                (h.clone(), Payload::Hash(h))
            }
        };
        if let (Payload::Hash(h), Some(body)) = (&payload, request.body) {
            if &sigv4::sha256_hex(body) != h {
                return Err(SigningError::PayloadMismatch);
            }
        }
        let (path, query) = split_pq(request.path_and_query);
        let signed_values = signed_header_values(form.signed_headers(), headers, request.host)?;
        let canonical = sigv4::CanonicalRequest {
            method: request.method,
            path,
            query,
            skip_query: match &form {
                Form::Header(_) => &[],
                Form::Query(_) => &["X-Amz-Signature"],
            },
            headers: &signed_values,
            payload_hash: &payload_text,
            s3,
        }
        .to_canonical_string();
        let key = sigv4::signing_key(keys.placeholder_secret.expose_secret(), form.scope());
        let expected = sigv4::sign(
            &key,
            &sigv4::string_to_sign(&amz_date, form.scope(), &canonical),
        );
        if !sigv4::same_signature(&expected, form.signature()) {
            return Err(SigningError::Mismatch { binding });
        }
        Ok(Self {
            binding,
            amz_date,
            payload_text,
            payload,
            real_key_id: resolved.token.expose_secret().to_owned(),
            real_secret: keys.secret_access_key.clone(),
            session_token: keys.session_token.as_ref().map(|t| t.token.clone()),
            placeholder_secret: keys.placeholder_secret.clone(),
            form,
            signature_out: None,
        })
    }

    pub fn binding(&self) -> &str {
        &self.binding
    }

    /// The sandbox's signature, key id and session token taken out of the
    /// headers and the path and query, so nothing of them is swapped or sent.
    pub fn strip(&self, headers: &mut HeaderMap, path_and_query: &str) -> String {
        headers.remove(SECURITY_TOKEN);
        match &self.form {
            Form::Header(_) => {
                let kept: Vec<HeaderValue> = headers
                    .get_all(AUTHORIZATION)
                    .iter()
                    .filter(|v| !sigv4::looks_like_sigv4(v.as_bytes()))
                    .cloned()
                    .collect();
                headers.remove(AUTHORIZATION);
                for v in kept {
                    headers.append(AUTHORIZATION, v);
                }
                path_and_query.to_owned()
            }
            Form::Query(_) => {
                let (path, query) = split_pq(path_and_query);
                let rest: Vec<&str> = query
                    .split('&')
                    .filter(|p| {
                        let name = p.split_once('=').map_or(*p, |(k, _)| k);
                        !p.is_empty() && !QUERY_SIGNING.iter().any(|q| q.eq_ignore_ascii_case(name))
                    })
                    .collect();
                if rest.is_empty() {
                    path.to_owned()
                } else {
                    format!("{path}?{}", rest.join("&"))
                }
            }
        }
    }

    /// Signs the request as it will be sent with the real keys: the same
    /// signed headers, date and scope; the real session token added.
    /// Returns the path and query to send.
    pub fn sign(
        &mut self,
        method: &str,
        headers: &mut HeaderMap,
        path_and_query: &str,
        host: &str,
    ) -> Result<String, SigningError> {
        let scope = self.form.scope().clone();
        let token = self
            .session_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned());
        let key_id = &self.real_key_id;
        let mut signed = self.form.signed_headers().to_vec();
        let pq = match &self.form {
            Form::Header(_) => {
                if let Some(t) = &token {
                    let mut v = HeaderValue::from_str(t).map_err(|_| {
                        SigningError::Unsupported(
                            "the real session token cannot be sent in a header",
                        )
                    })?;
                    v.set_sensitive(true);
                    headers.insert(HeaderName::from_static(SECURITY_TOKEN), v);
                    if !signed.iter().any(|h| h == SECURITY_TOKEN) {
                        signed.push(SECURITY_TOKEN.to_owned());
                        signed.sort();
                    }
                }
                path_and_query.to_owned()
            }
            Form::Query(_) => {
                let (path, query) = split_pq(path_and_query);
                let mut params = vec![format!(
                    "X-Amz-Credential={}",
                    sigv4::uri_encode(&format!("{key_id}/{}", scope.to_scope_string()), false)
                )];
                if let Some(t) = &token {
                    params.push(format!(
                        "X-Amz-Security-Token={}",
                        sigv4::uri_encode(t, false)
                    ));
                }
                if query.is_empty() {
                    format!("{path}?{}", params.join("&"))
                } else {
                    format!("{path}?{query}&{}", params.join("&"))
                }
            }
        };
        let (path, query) = split_pq(&pq);
        let values = signed_header_values(&signed, headers, host)?;
        let canonical = sigv4::CanonicalRequest {
            method,
            path,
            query,
            skip_query: &[],
            headers: &values,
            payload_hash: &self.payload_text,
            s3: scope.is_s3(),
        }
        .to_canonical_string();
        let key = sigv4::signing_key(self.real_secret.expose_secret(), &scope);
        let signature = sigv4::sign(
            &key,
            &sigv4::string_to_sign(&self.amz_date, &scope, &canonical),
        );
        let pq = match &self.form {
            Form::Header(_) => {
                let value = format!(
                    "{} Credential={key_id}/{}, SignedHeaders={}, Signature={signature}",
                    sigv4::ALGORITHM,
                    scope.to_scope_string(),
                    signed.join(";")
                );
                let mut v = HeaderValue::from_str(&value).map_err(|_| {
                    SigningError::Unsupported("the real access key id cannot be sent in a header")
                })?;
                v.set_sensitive(true);
                headers.append(AUTHORIZATION, v);
                pq
            }
            Form::Query(_) => format!("{pq}&X-Amz-Signature={signature}"),
        };
        self.signature_out = Some(signature);
        Ok(pq)
    }

    /// The body to send: as it came, checked against its signed hash while
    /// it streams, or (signed chunks) each chunk checked and signed again.
    /// Call after [`Self::sign`].
    pub fn body(&self, read: VecDeque<Bytes>, rest: ProxyBody) -> Result<ProxyBody, SigningError> {
        match &self.payload {
            Payload::Unsigned | Payload::UnsignedChunks => {
                Ok(crate::body_swap::streaming_passthrough(read, rest))
            }
            Payload::Hash(h) => Ok(hash_checked(read, rest, h.clone())),
            Payload::SignedChunks { trailer } => {
                Ok(chunked::resign_stream(read, rest, self.resigner(*trailer)?))
            }
        }
    }

    /// A whole body to send; its hash was checked in [`Self::check`].
    pub fn whole_body(&self, data: &Bytes) -> Result<Bytes, SigningError> {
        match &self.payload {
            Payload::SignedChunks { trailer } => {
                let mut r = self.resigner(*trailer)?;
                let mut out = Vec::with_capacity(data.len());
                r.push(data, &mut out).map_err(SigningError::Chunked)?;
                r.finish().map_err(SigningError::Chunked)?;
                Ok(Bytes::from(out))
            }
            _ => Ok(data.clone()),
        }
    }

    fn resigner(&self, trailer: bool) -> Result<ChunkResigner, SigningError> {
        let scope = self.form.scope().clone();
        let seed_out = self
            .signature_out
            .clone()
            .ok_or(SigningError::Unsupported("the request was not signed yet"))?;
        Ok(ChunkResigner::new(
            self.amz_date.clone(),
            scope.clone(),
            sigv4::signing_key(self.placeholder_secret.expose_secret(), &scope),
            sigv4::signing_key(self.real_secret.expose_secret(), &scope),
            (self.form.signature().to_owned(), seed_out),
            trailer,
        ))
    }
}

/// Each signed header's values, in order; `host` from `host` when the map
/// has none. A signed header the request lacks is refused.
fn signed_header_values(
    names: &[String],
    headers: &HeaderMap,
    host: &str,
) -> Result<Vec<sigv4::HeaderValues>, SigningError> {
    names
        .iter()
        .map(|name| {
            let values: Vec<Vec<u8>> = headers
                .get_all(name.as_str())
                .iter()
                .map(|v| v.as_bytes().to_vec())
                .collect();
            if !values.is_empty() {
                Ok((name.clone(), values))
            } else if name == HOST.as_str() {
                Ok((name.clone(), vec![host.as_bytes().to_vec()]))
            } else {
                Err(SigningError::Malformed {
                    place: "SignedHeaders",
                    source: ParseError::Missing("a signed header"),
                })
            }
        })
        .collect()
}

/// `read` then `rest` unchanged, ending with an error instead of its last
/// frame when the bytes do not hash to `expected`.
fn hash_checked(read: VecDeque<Bytes>, rest: ProxyBody, expected: String) -> ProxyBody {
    use http_body_util::BodyExt;
    struct S {
        read: VecDeque<Bytes>,
        rest: ProxyBody,
        hash: ring::digest::Context,
        expected: String,
        done: bool,
    }
    let state = S {
        read,
        rest,
        hash: ring::digest::Context::new(&ring::digest::SHA256),
        expected,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let next = match s.read.pop_front() {
            Some(b) => Some(Ok(http_body::Frame::data(b))),
            None => s.rest.frame().await,
        };
        match next {
            None => {
                s.done = true;
                let got = sigv4::hex(s.hash.clone().finish().as_ref());
                if got == s.expected {
                    None
                } else {
                    Some((Err(BoxError::from(SigningError::PayloadMismatch)), s))
                }
            }
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    s.hash.update(d);
                }
                Some((Ok(frame), s))
            }
            Some(Err(e)) => {
                s.done = true;
                Some((Err(e), s))
            }
        }
    });
    boxed(http_body_util::StreamBody::new(stream))
}

#[cfg(test)]
mod tests;
