//! Generic HMAC request signing (`[[secret]] kind = "hmac"`): the sandbox
//! signs a string built from the request by the binding's template with the
//! placeholder secret and puts it in the binding's header; airlock checks
//! it, then writes the signature of the request as sent, made with the real
//! secret.

use airlock_vault_client::{
    ExposeSecret, HmacAlgorithm, HmacSpec, Resolved, SignatureEncoding, SigningKeys, TemplatePart,
};
use base64::Engine;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use ring::hmac;

use super::{sigv4, SigningError, MAX_CLOCK_SKEW_SECS};

/// The request as a template reads it.
pub struct HmacRequest<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub host: &'a str,
    pub headers: &'a HeaderMap,
    /// `None` when the body streams (too large to read first).
    pub body: Option<&'a [u8]>,
}

/// The string to sign for `request`.
pub fn string_to_sign(spec: &HmacSpec, request: &HmacRequest<'_>) -> Result<Vec<u8>, SigningError> {
    let mut out = Vec::with_capacity(256);
    let (path, query) = request
        .path_and_query
        .split_once('?')
        .unwrap_or((request.path_and_query, ""));
    for part in &spec.template {
        match part {
            TemplatePart::Literal(s) => out.extend_from_slice(s.as_bytes()),
            TemplatePart::Method => out.extend_from_slice(request.method.as_bytes()),
            TemplatePart::PathAndQuery => out.extend_from_slice(request.path_and_query.as_bytes()),
            TemplatePart::Path => out.extend_from_slice(path.as_bytes()),
            TemplatePart::Query => out.extend_from_slice(query.as_bytes()),
            TemplatePart::Host => out.extend_from_slice(request.host.as_bytes()),
            TemplatePart::Header(name) => {
                let values: Vec<&[u8]> = request
                    .headers
                    .get_all(name.as_str())
                    .iter()
                    .map(|v| v.as_bytes())
                    .collect();
                out.extend_from_slice(&values.join(&b","[..]));
            }
            TemplatePart::Body | TemplatePart::BodySha256 => {
                let body = request.body.ok_or(SigningError::Unsupported(
                    "the binding signs the body, and this body is too large to read whole first (replay_buffer_bytes)",
                ))?;
                if *part == TemplatePart::Body {
                    out.extend_from_slice(body);
                } else {
                    out.extend_from_slice(sigv4::sha256_hex(body).as_bytes());
                }
            }
        }
    }
    Ok(out)
}

fn algorithm(a: HmacAlgorithm) -> hmac::Algorithm {
    match a {
        HmacAlgorithm::Sha256 => hmac::HMAC_SHA256,
        HmacAlgorithm::Sha384 => hmac::HMAC_SHA384,
        HmacAlgorithm::Sha512 => hmac::HMAC_SHA512,
        HmacAlgorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
    }
}

/// The header value: prefix and encoded signature of `message` under `key`.
pub fn signature_value(spec: &HmacSpec, key: &[u8], message: &[u8]) -> String {
    let tag = hmac::sign(&hmac::Key::new(algorithm(spec.algorithm), key), message);
    let encoded = match spec.encoding {
        SignatureEncoding::Hex => sigv4::hex(tag.as_ref()),
        SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
    };
    format!("{}{encoded}", spec.prefix)
}

/// An HMAC binding whose signature a request carries, checked.
pub struct HmacSigned {
    binding: String,
    spec: HmacSpec,
    real: airlock_vault_client::SharedToken,
}

impl HmacSigned {
    /// `None` when the request does not carry the binding's signature
    /// header; else the signature checked with the placeholder secret (the
    /// binding's placeholder) and, when the binding names one, the
    /// timestamp header against `now`.
    pub fn check(
        placeholder: &str,
        resolved: &Resolved,
        request: &HmacRequest<'_>,
        now: i64,
    ) -> Result<Option<Self>, SigningError> {
        let Some(SigningKeys::Hmac(keys)) = resolved.signing.as_deref() else {
            return Ok(None);
        };
        let spec = &keys.spec;
        let Some(sent) = request.headers.get(spec.header.as_str()) else {
            return Ok(None);
        };
        let binding = resolved.binding.id.clone();
        if let Some(ts) = &spec.timestamp_header {
            let at: i64 = request
                .headers
                .get(ts.as_str())
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .ok_or(SigningError::HmacTimestamp {
                    binding: binding.clone(),
                })?;
            if (at - now).abs() > MAX_CLOCK_SKEW_SECS {
                return Err(SigningError::ClockSkew { skew: at - now });
            }
        }
        let expected = signature_value(
            spec,
            placeholder.as_bytes(),
            &string_to_sign(spec, request)?,
        );
        let sent = sent.to_str().unwrap_or("").trim();
        if !sigv4::same_signature(&expected, sent) {
            return Err(SigningError::HmacMismatch { binding });
        }
        Ok(Some(Self {
            binding,
            spec: spec.clone(),
            real: resolved.token.clone(),
        }))
    }

    pub fn binding(&self) -> &str {
        &self.binding
    }

    /// The binding's header with the real signature of `request` (as it
    /// will be sent).
    pub fn header(
        &self,
        request: &HmacRequest<'_>,
    ) -> Result<(HeaderName, HeaderValue), SigningError> {
        let value = signature_value(
            &self.spec,
            self.real.expose_secret().as_bytes(),
            &string_to_sign(&self.spec, request)?,
        );
        let mut v = HeaderValue::from_str(&value)
            .map_err(|_| SigningError::Unsupported("the signature cannot be sent in a header"))?;
        v.set_sensitive(true);
        let name = HeaderName::from_bytes(self.spec.header.as_bytes()).map_err(|_| {
            SigningError::Unsupported("the binding's signature header is not a header name")
        })?;
        Ok((name, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_vault_client::parse_template;

    fn spec(template: &str, encoding: SignatureEncoding) -> HmacSpec {
        HmacSpec {
            header: "x-signature".into(),
            prefix: "sha256=".into(),
            template: parse_template(template).unwrap(),
            algorithm: HmacAlgorithm::Sha256,
            encoding,
            timestamp_header: None,
        }
    }

    #[test]
    fn rfc_4231_and_templates() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let s = spec("what do ya want for nothing?", SignatureEncoding::Hex);
        assert_eq!(
            signature_value(
                &s,
                b"Jefe",
                &string_to_sign(&s, &request(&HeaderMap::new(), Some(b""))).unwrap()
            ),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-ts", HeaderValue::from_static("1700000000"));
        let s = spec(
            "{method}\n{path_only}\n{query}\n{host}\n{header:x-ts}\n{body_sha256}",
            SignatureEncoding::Base64,
        );
        let text = string_to_sign(&s, &request(&headers, Some(b""))).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            format!(
                "POST\n/v1/orders\na=1\napi.test\n1700000000\n{}",
                sigv4::EMPTY_SHA256
            )
        );
        assert!(matches!(
            string_to_sign(&s, &request(&headers, None)),
            Err(SigningError::Unsupported(_))
        ));
    }

    fn request<'a>(headers: &'a HeaderMap, body: Option<&'a [u8]>) -> HmacRequest<'a> {
        HmacRequest {
            method: "POST",
            path_and_query: "/v1/orders?a=1",
            host: "api.test",
            headers,
            body,
        }
    }
}
