//! OAuth 1.0a request signing (RFC 5849, HMAC-SHA1) for bindings of OAuth
//! 1.0a connections: the sandbox signs with its four placeholders (consumer
//! key and secret, access token and token secret); airlock checks that
//! signature over the request as received, then writes the `Authorization`
//! header again over the request as sent, with the real credentials, a
//! fresh nonce and timestamp. Nothing is sent when the check fails.

use airlock_vault_client::oauth1::{self, HMAC_SHA1};
use airlock_vault_client::{ExposeSecret, Resolved, SecretString, SigningKeys};
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};

use super::{sigv4, SigningError, MAX_CLOCK_SKEW_SECS};

/// Protocol parameters airlock writes itself; others (`oauth_body_hash`,
/// a provider's extensions) are signed again as the sandbox sent them.
const WRITTEN: [&str; 7] = [
    "oauth_consumer_key",
    "oauth_token",
    "oauth_signature_method",
    "oauth_signature",
    "oauth_timestamp",
    "oauth_nonce",
    "oauth_version",
];

/// The `Authorization: OAuth …` header of a request whose `oauth_token` is
/// a placeholder, parsed.
#[derive(Debug, Clone)]
pub struct Form {
    params: Vec<(String, String)>,
}

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The access token placeholder the request was signed with.
    pub fn token(&self) -> &str {
        self.get("oauth_token").unwrap_or_default()
    }
}

/// The request's OAuth 1.0a form when its `oauth_token` is a placeholder
/// (`is`); `None` for requests without an `OAuth` header, or signed with
/// credentials of the sandbox's own (no placeholder in the header: `holds`).
/// A header that holds a placeholder but cannot be read, or holds one
/// elsewhere than in `oauth_token`, is refused with what is wrong.
pub fn detect<I, H>(headers: &HeaderMap, is: I, holds: H) -> Result<Option<Form>, SigningError>
where
    I: Fn(&str) -> bool,
    H: Fn(&[u8]) -> bool,
{
    let Some(value) = headers
        .get_all(AUTHORIZATION)
        .iter()
        .find(|v| oauth1::is_oauth_header(v.as_bytes()))
    else {
        return Ok(None);
    };
    let parsed = value
        .to_str()
        .map_err(|_| oauth1::ParseError::Syntax)
        .and_then(oauth1::parse_authorization);
    let params = match parsed {
        Ok(p) => p,
        Err(source) if holds(value.as_bytes()) => {
            return Err(SigningError::OAuth1Malformed {
                what: source.to_string(),
            })
        }
        Err(_) => return Ok(None),
    };
    let form = Form { params };
    if is(form.token()) {
        return Ok(Some(form));
    }
    if holds(value.as_bytes()) {
        return Err(SigningError::OAuth1Malformed {
            what: "oauth_token must be the access token placeholder when the header holds a placeholder".into(),
        });
    }
    Ok(None)
}

/// The placeholder of `Authorization: Bearer <placeholder>` (exactly one
/// placeholder, `is`): a sandbox without an OAuth 1.0a client, whose request
/// airlock signs from scratch when the placeholder is an OAuth 1.0a binding's.
/// `placeholder_of` reads a token as exactly one placeholder (taking the
/// scanner's own string, not a copy).
pub fn detect_bearer<P>(headers: &HeaderMap, placeholder_of: P) -> Option<String>
where
    P: Fn(&str) -> Option<String>,
{
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = value.to_str().ok()?;
    let token = text
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("bearer "))
        .and(text.get(7..))?
        .trim();
    placeholder_of(token)
}

/// The request as the signature reads it.
pub struct OAuth1Request<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    /// `Host` as sent, else the authority.
    pub host: &'a str,
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    /// The whole body when it was read whole and not compressed.
    pub body: Option<&'a [u8]>,
}

impl OAuth1Request<'_> {
    fn is_form(&self) -> bool {
        self.headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
    }

    /// The query's and (form) body's parameters, decoded (RFC 5849 §3.4.1.3.1).
    fn params(&self) -> Result<Vec<(String, String)>, SigningError> {
        let (path, query) = self
            .path_and_query
            .split_once('?')
            .unwrap_or((self.path_and_query, ""));
        let _ = path;
        let mut out = oauth1::form_params(query.as_bytes());
        if self.is_form() {
            let body = self.body.ok_or(SigningError::Unsupported(
                "an OAuth 1.0a signature covers a form body, and this one is too large to read whole first (replay_buffer_bytes) or compressed",
            ))?;
            out.extend(oauth1::form_params(body));
        }
        Ok(out)
    }

    fn base_uri(&self) -> String {
        let path = self
            .path_and_query
            .split_once('?')
            .map_or(self.path_and_query, |(p, _)| p);
        oauth1::base_uri(self.scheme, self.host, path)
    }
}

/// An OAuth 1.0a request whose placeholder signature checked out, ready to
/// be signed with the real credentials.
pub struct OAuth1Signed {
    binding: String,
    /// Sent as `Bearer <placeholder>` rather than signed by the sandbox.
    bearer: bool,
    realm: Option<String>,
    version: bool,
    extensions: Vec<(String, String)>,
    token: airlock_vault_client::SharedToken,
    consumer_key: SecretString,
    consumer_secret: SecretString,
    token_secret: SecretString,
}

impl OAuth1Signed {
    /// Checks the consumer key placeholder, the method, the timestamp
    /// against `now` and the signature made with the placeholder secrets.
    pub fn check(
        form: &Form,
        resolved: &Resolved,
        request: &OAuth1Request<'_>,
        now: i64,
    ) -> Result<Self, SigningError> {
        let binding = resolved.binding.id.clone();
        let Some(SigningKeys::OAuth1(keys)) = resolved.signing.as_deref() else {
            return Err(SigningError::NotOAuth1 { binding });
        };
        let missing = |name: &str| SigningError::OAuth1Malformed {
            what: format!("the parameter {name} is missing"),
        };
        let placeholders = oauth1::placeholders(form.token());
        let consumer_key = form
            .get("oauth_consumer_key")
            .ok_or_else(|| missing("oauth_consumer_key"))?;
        if !sigv4::same_signature(consumer_key, &placeholders.consumer_key) {
            return Err(SigningError::OAuth1ConsumerKey { binding });
        }
        let method = form
            .get("oauth_signature_method")
            .ok_or_else(|| missing("oauth_signature_method"))?;
        if method != HMAC_SHA1 {
            return Err(SigningError::Unsupported(
                "OAuth 1.0a requests through airlock must be signed with HMAC-SHA1",
            ));
        }
        if form.get("oauth_version").is_some_and(|v| v != "1.0") {
            return Err(SigningError::OAuth1Malformed {
                what: "oauth_version must be 1.0".into(),
            });
        }
        form.get("oauth_nonce")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| missing("oauth_nonce"))?;
        let at: i64 = form
            .get("oauth_timestamp")
            .ok_or_else(|| missing("oauth_timestamp"))?
            .parse()
            .map_err(|_| SigningError::OAuth1Malformed {
                what: "oauth_timestamp is not a number of seconds".into(),
            })?;
        if (at - now).abs() > MAX_CLOCK_SKEW_SECS {
            return Err(SigningError::ClockSkew { skew: at - now });
        }
        let sent = form
            .get("oauth_signature")
            .ok_or_else(|| missing("oauth_signature"))?;
        let mut params = request.params()?;
        params.extend(
            form.params
                .iter()
                .filter(|(k, _)| k != "realm" && k != "oauth_signature")
                .cloned(),
        );
        let expected = oauth1::hmac_sha1(
            &placeholders.consumer_secret,
            &placeholders.token_secret,
            &oauth1::base_string(request.method, &request.base_uri(), &params),
        );
        if !sigv4::same_signature(&expected, sent) {
            return Err(SigningError::OAuth1Mismatch { binding });
        }
        Ok(Self {
            binding,
            bearer: false,
            realm: form.get("realm").map(str::to_owned),
            version: form.get("oauth_version").is_some(),
            extensions: form
                .params
                .iter()
                .filter(|(k, _)| k != "realm" && !WRITTEN.contains(&k.as_str()))
                .cloned()
                .collect(),
            token: resolved.token.clone(),
            consumer_key: keys.consumer_key.clone(),
            consumer_secret: keys.consumer_secret.clone(),
            token_secret: keys.token_secret.clone(),
        })
    }

    /// A request that carried the access token placeholder as `Bearer`:
    /// nothing to check (the placeholder is the sandbox's credential, as
    /// for OAuth 2); signed from scratch. `None` for other bindings.
    pub fn from_bearer(resolved: &Resolved) -> Option<Self> {
        let Some(SigningKeys::OAuth1(keys)) = resolved.signing.as_deref() else {
            return None;
        };
        Some(Self {
            binding: resolved.binding.id.clone(),
            bearer: true,
            realm: None,
            version: true,
            extensions: Vec::new(),
            token: resolved.token.clone(),
            consumer_key: keys.consumer_key.clone(),
            consumer_secret: keys.consumer_secret.clone(),
            token_secret: keys.token_secret.clone(),
        })
    }

    pub fn binding(&self) -> &str {
        &self.binding
    }

    /// Takes the sandbox's `OAuth` (or `Bearer`) header out, so nothing of
    /// it is swapped or sent.
    pub fn strip(&self, headers: &mut HeaderMap) {
        let kept: Vec<HeaderValue> = headers
            .get_all(AUTHORIZATION)
            .iter()
            .filter(|v| !self.bearer && !oauth1::is_oauth_header(v.as_bytes()))
            .cloned()
            .collect();
        headers.remove(AUTHORIZATION);
        for v in kept {
            headers.append(AUTHORIZATION, v);
        }
    }

    /// The `Authorization` header for `request` (as it will be sent), signed
    /// with the real credentials at `now` with `nonce`.
    pub fn header(
        &self,
        request: &OAuth1Request<'_>,
        now: i64,
        nonce: &str,
    ) -> Result<HeaderValue, SigningError> {
        let mut oauth: Vec<(String, String)> = vec![
            (
                "oauth_consumer_key".into(),
                self.consumer_key.expose_secret().to_owned(),
            ),
            ("oauth_nonce".into(), nonce.to_owned()),
            ("oauth_signature_method".into(), HMAC_SHA1.into()),
            ("oauth_timestamp".into(), now.to_string()),
            ("oauth_token".into(), self.token.expose_secret().to_owned()),
        ];
        if self.version {
            oauth.push(("oauth_version".into(), "1.0".into()));
        }
        oauth.extend(self.extensions.iter().cloned());
        let mut params = request.params()?;
        params.extend(oauth.iter().cloned());
        let signature = oauth1::hmac_sha1(
            self.consumer_secret.expose_secret(),
            self.token_secret.expose_secret(),
            &oauth1::base_string(request.method, &request.base_uri(), &params),
        );
        oauth.push(("oauth_signature".into(), signature));
        if let Some(realm) = &self.realm {
            oauth.insert(0, ("realm".into(), realm.clone()));
        }
        let mut v = HeaderValue::from_str(&oauth1::format_authorization(&oauth))
            .map_err(|_| SigningError::Unsupported("the OAuth header cannot be sent"))?;
        v.set_sensitive(true);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use airlock_vault_client::oauth1::{OAuth1Keys, Signer};
    use airlock_vault_client::{Binding, BindingKind, SandboxId};

    use super::*;

    const PLACEHOLDER: &str = "miosa-tok-AAAAAAAAAAAAAAAAAAAAAAAA";
    const NOW: i64 = 1_700_000_000;

    fn resolved() -> Resolved {
        Resolved {
            binding: Arc::new(Binding {
                id: "conn:x".into(),
                name: "X_ACCESS_TOKEN".into(),
                sandbox: SandboxId::default_sandbox(),
                hosts: Vec::new(),
                swap_in: Default::default(),
                kind: BindingKind::OAuth {
                    connection_id: "c1".into(),
                },
                expired_on: Vec::new(),
                inject: None,
                on_foreign_body: Default::default(),
                rules: Default::default(),
                narrowed: None,
                scope_signals: Default::default(),
            }),
            token: airlock_vault_client::SharedToken::from("real-token"),
            expires_at: None,
            signing: Some(Arc::new(SigningKeys::OAuth1(OAuth1Keys {
                consumer_key: SecretString::from("real-ck"),
                consumer_secret: SecretString::from("real-cs"),
                token_secret: SecretString::from("real-ts"),
            }))),
        }
    }

    /// Signs like a client library holding the placeholders.
    fn client_header(secret: &str, at: i64, pq: &str, body: &[(String, String)]) -> HeaderValue {
        let p = oauth1::placeholders(PLACEHOLDER);
        let (_, query) = pq.split_once('?').unwrap_or((pq, ""));
        let mut params = oauth1::form_params(query.as_bytes());
        params.extend(body.iter().cloned());
        let value = Signer {
            consumer_key: &p.consumer_key,
            consumer_secret: secret,
            token: Some(PLACEHOLDER),
            token_secret: &p.token_secret,
        }
        .authorization(
            "POST",
            "https://api.x.test/1.1/statuses/update.json",
            &[],
            &params,
            at,
            "n0nce",
        );
        HeaderValue::from_str(&value).unwrap()
    }

    fn request<'a>(headers: &'a HeaderMap, pq: &'a str, body: &'a [u8]) -> OAuth1Request<'a> {
        OAuth1Request {
            method: "POST",
            scheme: "https",
            host: "api.x.test",
            path_and_query: pq,
            headers,
            body: Some(body),
        }
    }

    fn is(p: &str) -> bool {
        p == PLACEHOLDER
    }

    fn holds(t: &[u8]) -> bool {
        t.windows(10).any(|w| w == b"miosa-tok-")
    }

    #[test]
    fn a_placeholder_signature_is_checked_and_signed_again_with_the_real_keys() {
        let pq = "/1.1/statuses/update.json?include_entities=true";
        let body = b"status=Hello%20Ladies%20%2b%20Gentlemen";
        let form_params = oauth1::form_params(body);
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(
            AUTHORIZATION,
            client_header(
                &oauth1::placeholders(PLACEHOLDER).consumer_secret,
                NOW,
                pq,
                &form_params,
            ),
        );
        let form = detect(&headers, is, holds).unwrap().unwrap();
        let view = request(&headers, pq, body);
        let signed = OAuth1Signed::check(&form, &resolved(), &view, NOW + 10).unwrap();
        let mut sent = headers.clone();
        signed.strip(&mut sent);
        assert!(sent.get(AUTHORIZATION).is_none());
        let value = signed
            .header(&request(&sent, pq, body), NOW + 10, "fresh")
            .unwrap();
        // What the upstream verifies with the real secrets.
        let params = oauth1::parse_authorization(value.to_str().unwrap()).unwrap();
        let get = |n: &str| params.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(get("oauth_consumer_key"), "real-ck");
        assert_eq!(get("oauth_token"), "real-token");
        assert_eq!(get("oauth_nonce"), "fresh");
        let mut all = oauth1::form_params(b"include_entities=true");
        all.extend(form_params);
        all.extend(
            params
                .iter()
                .filter(|(k, _)| k != "oauth_signature")
                .cloned(),
        );
        let base = oauth1::base_string("POST", "https://api.x.test/1.1/statuses/update.json", &all);
        assert_eq!(
            get("oauth_signature"),
            oauth1::hmac_sha1("real-cs", "real-ts", &base)
        );
        assert!(!value.to_str().unwrap().contains(PLACEHOLDER));
    }

    #[test]
    fn wrong_secrets_tampering_and_skew_are_refused() {
        let pq = "/1.1/statuses/update.json";
        let body = b"status=hi";
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let good = client_header(
            &oauth1::placeholders(PLACEHOLDER).consumer_secret,
            NOW,
            pq,
            &oauth1::form_params(body),
        );
        let check = |headers: &HeaderMap, body: &[u8], now: i64| {
            let form = detect(headers, is, holds).unwrap().unwrap();
            OAuth1Signed::check(&form, &resolved(), &request(headers, pq, body), now).map(|_| ())
        };
        headers.insert(AUTHORIZATION, good.clone());
        assert!(check(&headers, body, NOW).is_ok());
        // The body changed after signing.
        assert_eq!(
            check(&headers, b"status=bye", NOW).unwrap_err().code(),
            "oauth1_signature_mismatch"
        );
        // Signed with something other than the placeholder consumer secret.
        headers.insert(
            AUTHORIZATION,
            client_header("guess", NOW, pq, &oauth1::form_params(body)),
        );
        assert_eq!(
            check(&headers, body, NOW).unwrap_err().code(),
            "oauth1_signature_mismatch"
        );
        headers.insert(AUTHORIZATION, good);
        let e = check(&headers, body, NOW + 301).unwrap_err();
        assert_eq!((e.code(), e.status().as_u16()), ("clock_skew", 403));
        // The signature covers a form body only when it is read whole.
        let form = detect(&headers, is, holds).unwrap().unwrap();
        let mut view = request(&headers, pq, body);
        view.body = None;
        assert_eq!(
            OAuth1Signed::check(&form, &resolved(), &view, NOW)
                .err()
                .unwrap()
                .code(),
            "signing_unsupported"
        );
    }

    #[test]
    fn a_bearer_placeholder_is_signed_from_scratch() {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("bearer {PLACEHOLDER}")).unwrap(),
        );
        assert_eq!(
            detect_bearer(&headers, |t| is(t).then(|| t.to_owned())).as_deref(),
            Some(PLACEHOLDER)
        );
        let signed = OAuth1Signed::from_bearer(&resolved()).unwrap();
        let mut sent = headers.clone();
        signed.strip(&mut sent);
        assert!(sent.get(AUTHORIZATION).is_none());
        let pq = "/1.1/account/verify_credentials.json";
        let mut get = request(&sent, pq, b"");
        get.method = "GET";
        let value = signed.header(&get, NOW, "n").unwrap();
        let params = oauth1::parse_authorization(value.to_str().unwrap()).unwrap();
        let mut all: Vec<_> = params
            .iter()
            .filter(|(k, _)| k != "oauth_signature")
            .cloned()
            .collect();
        all.sort();
        let base = oauth1::base_string(
            "GET",
            "https://api.x.test/1.1/account/verify_credentials.json",
            &all,
        );
        let sig = &params
            .iter()
            .find(|(k, _)| k == "oauth_signature")
            .unwrap()
            .1;
        assert_eq!(sig, &oauth1::hmac_sha1("real-cs", "real-ts", &base));
        // Not a placeholder, two headers, another scheme: not ours.
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer own-token"));
        assert!(detect_bearer(&headers, |t| is(t).then(|| t.to_owned())).is_none());
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Token {PLACEHOLDER}")).unwrap(),
        );
        assert!(detect_bearer(&headers, |t| is(t).then(|| t.to_owned())).is_none());
        // A binding without OAuth 1.0a keys is not signed.
        let mut other = resolved();
        other.signing = None;
        assert!(OAuth1Signed::from_bearer(&other).is_none());
    }

    #[test]
    fn headers_are_ours_only_with_a_placeholder_token() {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static("OAuth oauth_token=\"own\", oauth_consumer_key=\"own\""),
        );
        assert!(detect(&headers, is, holds).unwrap().is_none());
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!(
                "OAuth oauth_token=\"own\", oauth_consumer_key=\"{PLACEHOLDER}-ck\""
            ))
            .unwrap(),
        );
        assert_eq!(
            detect(&headers, is, holds).unwrap_err().code(),
            "oauth1_malformed"
        );
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("OAuth oauth_token={PLACEHOLDER}")).unwrap(),
        );
        assert_eq!(
            detect(&headers, is, holds).unwrap_err().code(),
            "oauth1_malformed"
        );
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(detect(&headers, is, holds).unwrap().is_none());
    }
}
