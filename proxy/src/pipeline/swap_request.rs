//! The swap stage: the request as the sandbox sent it (placeholders intact)
//! becomes the request the upstream gets. Run again with refreshed tokens for
//! a replay, so the original is never changed.

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Uri, Version};

use crate::body::{empty, with_trailers, ProxyBody};
use crate::body_swap::{self, StreamMode};
use crate::compression;
use crate::error::ProxyError;
use crate::pipeline::body_plan::BodyPlan;
use crate::rules::RuleRequest;
use crate::signing::hmac::{HmacRequest, HmacSigned};
use crate::signing::oauth1::{OAuth1Request, OAuth1Signed};
use crate::signing::{self, RequestView, SigningError, Verified};
use crate::swap::Swapper;
use airlock_vault_client::BindingKind;
use bytes::Bytes;

/// The request as the sandbox sent it (placeholders intact), so it can be
/// swapped again with a refreshed token.
pub struct Outgoing {
    pub method: Method,
    pub headers: HeaderMap,
    pub scheme: &'static str,
    pub authority: Authority,
    pub path_and_query: PathAndQuery,
    /// The HTTP version the sandbox sent it with (the upstream wire may follow it).
    pub version: Version,
}

/// Swaps `out` (and the body) into a request ready to send. `guarded`: the
/// response firewall will read the answer, so it must not come compressed.
pub(crate) async fn build(
    out: &Outgoing,
    swapper: &mut Swapper,
    body: &mut BodyPlan,
    guarded: bool,
    add_via: bool,
) -> Result<Request<ProxyBody>, ProxyError> {
    let mut rule_request = RuleRequest::new(&out.method, out.path_and_query.clone());
    match body {
        BodyPlan::Whole { data, .. } => {
            let content_type = out
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            rule_request = rule_request.with_body(data.clone(), content_type);
        }
        BodyPlan::Empty => rule_request = rule_request.with_body_len(Some(0)),
        _ => {
            let announced = out
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            rule_request = rule_request.with_body_len(announced);
        }
    }
    swapper.set_rule_request(rule_request);
    // Signed with a signing binding's placeholders (AWS SigV4)? Checked
    // first; its signature and session token then leave the request, and
    // it is signed again with the real keys once everything else is done.
    // Each check is found without waiting and boxed when it applies: most
    // requests are not signed, and an unboxed check would make every
    // request's future (allocated per request) kilobytes larger.
    let mut signed = match sigv4_form(out, swapper)? {
        // Boxed when kept too: a verified signature is hundreds of bytes.
        Some(form) => Some(Box::new(
            Box::pin(verify_sigv4(form, out, swapper, body)).await?,
        )),
        None => None,
    };
    // Signed with an OAuth 1.0a connection's placeholders: its `OAuth`
    // header leaves the request and is written again last, like HMAC.
    let oauth1_signed = match &signed {
        Some(_) => None,
        None => match oauth1_form(out, swapper)? {
            // Most requests: a bearer placeholder of a binding known not to be OAuth 1.0a.
            Some(OAuth1Found::Bearer(placeholder))
                if swapper.is_oauth1_now(&placeholder) == Some(false) =>
            {
                None
            }
            Some(found) => Box::pin(verify_oauth1(found, out, swapper, body))
                .await?
                .map(Box::new),
            None => None,
        },
    };
    // Generic HMAC bindings of this host whose signature header it carries.
    let hmac_signed = match (&signed, &oauth1_signed) {
        (None, None) if swapper.may_have_signers() => {
            Box::pin(verify_hmac(out, swapper, body)).await?
        }
        _ => Vec::new(),
    };
    let mut headers = out.headers.clone();
    // The signature's query parameters leave the URL.
    let stripped = signed
        .as_ref()
        .map(|v| v.strip(&mut headers, out.path_and_query.as_str()));
    if let Some(signer) = &oauth1_signed {
        signer.strip(&mut headers);
    }
    let swapped_pq = swapper
        .swap_path_and_query(stripped.as_deref().unwrap_or(out.path_and_query.as_str()))
        .await?;
    let pq = match swapped_pq.or(stripped) {
        Some(changed) => PathAndQuery::try_from(changed)
            .map_err(|e| ProxyError::BadRequest(format!("cannot build the upstream URL: {e}")))?,
        None => out.path_and_query.clone(),
    };
    // `Host` was checked against the CONNECT target; the client derives it
    // (HTTP/1.1) or `:authority` (HTTP/2) from the URI. Sending both makes
    // HTTP/2 servers such as nginx refuse the request.
    headers.remove(header::HOST);
    if signed.is_none() && oauth1_signed.is_none() {
        swapper.inject_when_absent(&mut headers).await;
    }
    swapper.swap_headers(&mut headers).await?;
    if let Some(verified) = signed.as_mut() {
        return Box::pin(build_signed(
            out,
            swapper,
            body,
            verified,
            headers,
            pq.as_str().to_owned(),
            add_via,
        ))
        .await;
    }
    let context = body_swap::context_of(&headers);
    // The body as sent, when it is known before sending (for HMAC signing).
    let mut sent_body: Option<Bytes> = None;
    let body = match std::mem::replace(body, BodyPlan::Spent) {
        BodyPlan::Empty => {
            *body = BodyPlan::Empty;
            sent_body = Some(Bytes::new());
            empty()
        }
        BodyPlan::Whole {
            data,
            encoding,
            mut trailers,
            held,
        } => {
            let wire = async {
                // Trailers are a credential position, like headers.
                if let Some(t) = trailers.as_mut() {
                    swapper.swap_headers(t).await?;
                }
                let swapped = body_swap::swap_whole(swapper, &data, context).await?;
                match encoding {
                    Some(e) => compression::encode(e, &swapped),
                    None => Ok(swapped),
                }
            }
            .await;
            let sent_trailers = trailers.clone();
            // Kept even when the swap failed: a request held for consent is built again.
            *body = BodyPlan::Whole {
                data,
                encoding,
                trailers,
                held,
            };
            let wire = wire?;
            sent_body = Some(wire.clone());
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(wire.len()));
            headers.remove(header::TRANSFER_ENCODING);
            // The whole body is here: nothing to wait for.
            headers.remove(header::EXPECT);
            with_trailers(wire, sent_trailers)
        }
        BodyPlan::Untouched { read, rest } => {
            // Same bytes, same framing: Content-Length (when sent) stays.
            body_swap::streaming_passthrough(read, rest)
        }
        BodyPlan::Stream { read, rest, mode } => {
            if mode == StreamMode::Swap {
                // The swapped length is unknown up front: chunked on HTTP/1.1.
                headers.remove(header::CONTENT_LENGTH);
            }
            body_swap::streaming(read, rest, swapper.fork(), context, mode)
        }
        BodyPlan::Spent => return Err(ProxyError::Internal("request body already sent".into())),
    };
    swapper.check_required().await?;
    if guarded || swapper.has_swapped() {
        // The firewall must see the response's bytes, not a compressed form of them.
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    if add_via {
        headers.append(header::VIA, HeaderValue::from_static("1.1 airlock"));
    }
    for signer in &hmac_signed {
        // Last: over the request exactly as it will be sent.
        let view = HmacRequest {
            method: out.method.as_str(),
            path_and_query: pq.as_str(),
            host: out.authority.as_str(),
            headers: &headers,
            body: sent_body.as_deref(),
        };
        let (name, value) = signer.header(&view)?;
        headers.insert(name, value);
    }
    if let Some(signer) = &oauth1_signed {
        let view = OAuth1Request {
            method: out.method.as_str(),
            scheme: out.scheme,
            host: out.authority.as_str(),
            path_and_query: pq.as_str(),
            headers: &headers,
            body: sent_body.as_deref(),
        };
        let value = signer.header(&view, unix_now(), &airlock_vault_client::oauth1::nonce())?;
        headers.append(header::AUTHORIZATION, value);
    }
    let uri = Uri::builder()
        .scheme(out.scheme)
        .authority(out.authority.clone())
        .path_and_query(pq)
        .build()
        .map_err(|e| ProxyError::BadRequest(format!("cannot build the upstream URL: {e}")))?;
    let mut request = Request::new(body);
    *request.method_mut() = out.method.clone();
    *request.uri_mut() = uri;
    // The pooled client picks HTTP/2 or HTTP/1.1 per upstream from ALPN.
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Ok(request)
}

/// The request's SigV4 signature form, when its access key id is a
/// placeholder; `None` for requests not signed with one.
fn sigv4_form(out: &Outgoing, swapper: &Swapper) -> Result<Option<signing::Form>, ProxyError> {
    let scanner = swapper.scanner();
    let test = signing::PlaceholderTest {
        is: |key: &str| scanner.whole(key.as_bytes()).is_some(),
        holds: |text: &[u8]| !scanner.scan(text, true).0.is_empty(),
    };
    Ok(signing::detect(
        &out.headers,
        out.path_and_query.as_str(),
        test,
    )?)
}

/// The request's SigV4 signature (`form`), checked.
async fn verify_sigv4(
    form: signing::Form,
    out: &Outgoing,
    swapper: &mut Swapper,
    body: &mut BodyPlan,
) -> Result<Verified, ProxyError> {
    let resolved = swapper
        .resolve_signing(form.key_id(), BindingKind::AwsSigV4)
        .await?;
    if matches!(
        &*body,
        BodyPlan::Whole {
            encoding: Some(_),
            ..
        }
    ) {
        return Err(SigningError::Unsupported(
            "a SigV4-signed body cannot be compressed (Content-Encoding): its hash covers the bytes as sent",
        )
        .into());
    }
    let body = plain_body(body);
    let host = signed_host(out);
    let view = RequestView {
        method: out.method.as_str(),
        path_and_query: out.path_and_query.as_str(),
        host,
        headers: &out.headers,
        body,
    };
    Ok(Verified::check(form, &resolved, &view, unix_now())?)
}

/// The body a signature covers, when it is read whole and not compressed.
fn plain_body(body: &BodyPlan) -> Option<&[u8]> {
    match body {
        BodyPlan::Empty => Some(&b""[..]),
        BodyPlan::Whole {
            data,
            encoding: None,
            ..
        } => Some(&data[..]),
        _ => None,
    }
}

/// The host a signature covers: `Host` as sent, else the authority.
fn signed_host(out: &Outgoing) -> &str {
    out.headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(out.authority.as_str())
}

/// The HMAC bindings of this host whose signature header the request
/// carries, each checked with its placeholder secret over the request as
/// the sandbox sent it, then checked like a swap (host, rules).
async fn verify_hmac(
    out: &Outgoing,
    swapper: &mut Swapper,
    body: &mut BodyPlan,
) -> Result<Vec<HmacSigned>, ProxyError> {
    let signers = swapper.signers().await;
    if signers.is_empty() {
        return Ok(Vec::new());
    }
    let now = unix_now();
    let mut checked = Vec::new();
    for (placeholder, resolved) in signers {
        let found = {
            let body = plain_body(body);
            let host = signed_host(out);
            let view = HmacRequest {
                method: out.method.as_str(),
                path_and_query: out.path_and_query.as_str(),
                host,
                headers: &out.headers,
                body,
            };
            HmacSigned::check(&placeholder, &resolved, &view, now)?
        };
        if let Some(signed) = found {
            swapper
                .resolve_signing(&placeholder, BindingKind::Hmac)
                .await?;
            checked.push(signed);
        }
    }
    Ok(checked)
}

/// How a request may carry an OAuth 1.0a connection's placeholders.
enum OAuth1Found {
    /// An `OAuth` header whose `oauth_token` is a placeholder.
    Signed(signing::oauth1::Form),
    /// `Bearer <placeholder>`: an OAuth 1.0a binding's is signed from scratch.
    Bearer(String),
}

/// Found without waiting: whether the request carries OAuth 1.0a placeholders.
fn oauth1_form(out: &Outgoing, swapper: &Swapper) -> Result<Option<OAuth1Found>, ProxyError> {
    let scanner = swapper.scanner();
    let is = |token: &str| scanner.whole(token.as_bytes()).is_some();
    let form = signing::oauth1::detect(&out.headers, is, |text: &[u8]| {
        !scanner.scan(text, true).0.is_empty()
    })?;
    Ok(match form {
        Some(form) => Some(OAuth1Found::Signed(form)),
        None => signing::oauth1::detect_bearer(&out.headers, |token: &str| {
            scanner.whole(token.as_bytes()).map(|f| f.placeholder)
        })
        .map(OAuth1Found::Bearer),
    })
}

/// The request's OAuth 1.0a signature, checked with the placeholder
/// secrets; its binding then checked like a swap (sandbox, host, rules).
/// A bearer placeholder of any other binding is `None`: swapped as usual.
async fn verify_oauth1(
    found: OAuth1Found,
    out: &Outgoing,
    swapper: &mut Swapper,
    body: &mut BodyPlan,
) -> Result<Option<OAuth1Signed>, ProxyError> {
    let form = match found {
        OAuth1Found::Signed(form) => form,
        OAuth1Found::Bearer(placeholder) => {
            if !swapper.is_oauth1(&placeholder).await {
                return Ok(None);
            }
            let resolved = swapper.resolve_oauth1(&placeholder).await?;
            return Ok(OAuth1Signed::from_bearer(&resolved));
        }
    };
    let resolved = swapper.resolve_oauth1(form.token()).await?;
    let view = OAuth1Request {
        method: out.method.as_str(),
        scheme: out.scheme,
        host: signed_host(out),
        path_and_query: out.path_and_query.as_str(),
        headers: &out.headers,
        body: plain_body(body),
    };
    Ok(Some(OAuth1Signed::check(
        &form,
        &resolved,
        &view,
        unix_now(),
    )?))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The rest of [`build`] for a signed request: its body goes as it came
/// (placeholders in it are not swapped: the signature covers it), signed
/// chunks signed again, and the request signed with the real keys last,
/// over the headers as they will be sent.
async fn build_signed(
    out: &Outgoing,
    swapper: &mut Swapper,
    body: &mut BodyPlan,
    verified: &mut Verified,
    mut headers: HeaderMap,
    pq: String,
    add_via: bool,
) -> Result<Request<ProxyBody>, ProxyError> {
    enum Later {
        Ready(Bytes, Option<HeaderMap>),
        Stream(std::collections::VecDeque<Bytes>, ProxyBody),
    }
    let later = match std::mem::replace(body, BodyPlan::Spent) {
        BodyPlan::Empty => {
            *body = BodyPlan::Empty;
            Later::Ready(Bytes::new(), None)
        }
        BodyPlan::Whole {
            data,
            encoding,
            trailers,
            held,
        } => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(data.len()));
            headers.remove(header::TRANSFER_ENCODING);
            headers.remove(header::EXPECT);
            let ready = Later::Ready(data.clone(), trailers.clone());
            // Kept: a request held for consent is built again.
            *body = BodyPlan::Whole {
                data,
                encoding,
                trailers,
                held,
            };
            ready
        }
        // Same bytes, same framing: Content-Length (when sent) stays.
        BodyPlan::Untouched { read, rest } | BodyPlan::Stream { read, rest, .. } => {
            Later::Stream(read, rest)
        }
        BodyPlan::Spent => return Err(ProxyError::Internal("request body already sent".into())),
    };
    swapper.check_required().await?;
    // The firewall must see the response's bytes, not a compressed form of them.
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if add_via {
        headers.append(header::VIA, HeaderValue::from_static("1.1 airlock"));
    }
    let pq = verified.sign(
        out.method.as_str(),
        &mut headers,
        &pq,
        out.authority.as_str(),
    )?;
    let body = match later {
        Later::Ready(data, trailers) => with_trailers(verified.whole_body(&data)?, trailers),
        Later::Stream(read, rest) => verified.body(read, rest)?,
    };
    let uri = Uri::builder()
        .scheme(out.scheme)
        .authority(out.authority.clone())
        .path_and_query(pq)
        .build()
        .map_err(|e| ProxyError::BadRequest(format!("cannot build the upstream URL: {e}")))?;
    let mut request = Request::new(body);
    *request.method_mut() = out.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use airlock_vault_client::{
        Binding, RequestRules, RulesMode, RulesSpec, SandboxId, SwapLocation,
    };
    use bytes::Bytes;
    use http_body_util::BodyExt;

    use super::*;
    use crate::swap::Scanner;
    use crate::testing::{MockTokens, PREFIX};

    const HOST: &str = "api.example.test";

    fn outgoing(headers: &[(&'static str, String)]) -> Outgoing {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        Outgoing {
            method: Method::POST,
            headers: map,
            scheme: "https",
            authority: Authority::from_static(HOST),
            path_and_query: PathAndQuery::from_static("/v1/things?q=1"),
            version: Version::HTTP_11,
        }
    }

    fn swapper(tokens: &Arc<MockTokens>) -> Swapper {
        Swapper::new(
            tokens.clone(),
            Arc::new(Scanner::new(PREFIX)),
            SandboxId::default_sandbox(),
            HOST,
        )
    }

    async fn body_of(request: Request<ProxyBody>) -> Bytes {
        request.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_whole_body_is_swapped_sized_and_kept_for_a_replay() {
        let tokens = MockTokens::new();
        let p = tokens.add("KEY", HOST, "real-token", |b| {
            b.swap_in.insert(SwapLocation::Body);
        });
        let out = outgoing(&[
            ("host", HOST.into()),
            ("authorization", format!("Bearer {p}")),
            ("content-type", "application/json".into()),
            ("transfer-encoding", "chunked".into()),
            ("expect", "100-continue".into()),
        ]);
        let body: &'static str = Box::leak(format!("{{\"key\":\"{p}\"}}").into_boxed_str());
        let mut plan = BodyPlan::whole(body);
        let mut swapper = swapper(&tokens);
        let request = build(&out, &mut swapper, &mut plan, false, false)
            .await
            .unwrap();
        let h = request.headers().clone();
        assert_eq!(request.uri(), "https://api.example.test/v1/things?q=1");
        assert_eq!(h["authorization"], "Bearer real-token");
        assert!(
            !h.contains_key("host"),
            "the client derives it from the URI"
        );
        assert!(!h.contains_key("transfer-encoding") && !h.contains_key("expect"));
        assert_eq!(h["accept-encoding"], "identity", "a token went out");
        assert!(!h.contains_key("via"));
        let sent = body_of(request).await;
        assert_eq!(sent, "{\"key\":\"real-token\"}");
        assert_eq!(h["content-length"], sent.len().to_string().as_str());
        // The original is intact: a replay swaps it again.
        assert!(plan.replayable());
        let again = build(&out, &mut swapper, &mut plan, false, true)
            .await
            .unwrap();
        assert_eq!(again.headers()["via"], "1.1 airlock");
        assert_eq!(body_of(again).await, "{\"key\":\"real-token\"}");
    }

    #[tokio::test]
    async fn a_streamed_body_is_sent_once() {
        let tokens = MockTokens::new();
        let out = outgoing(&[("content-length", "5".into())]);
        let mut plan = BodyPlan::Untouched {
            read: Default::default(),
            rest: crate::body::full(Bytes::from_static(b"hello")),
        };
        let mut swapper = swapper(&tokens);
        let request = build(&out, &mut swapper, &mut plan, false, false)
            .await
            .unwrap();
        assert_eq!(request.headers()["content-length"], "5", "framing kept");
        assert!(
            !request.headers().contains_key("accept-encoding"),
            "nothing to guard"
        );
        assert_eq!(body_of(request).await, "hello");
        let err = build(&out, &mut swapper, &mut plan, false, false)
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), "internal");
    }

    #[tokio::test]
    async fn a_refused_placeholder_refuses_the_whole_request() {
        let tokens = MockTokens::new();
        let p = tokens.secret("KEY", "elsewhere.test", "real-token");
        let out = outgoing(&[("authorization", format!("Bearer {p}"))]);
        let err = build(
            &out,
            &mut swapper(&tokens),
            &mut BodyPlan::Empty,
            true,
            false,
        )
        .await
        .err()
        .unwrap();
        assert_eq!(err.code(), "host_not_allowed");
    }

    fn with_rules(rules: &[&str], require: bool, mode: RulesMode) -> impl FnOnce(&mut Binding) {
        let spec = RulesSpec {
            rules: rules.iter().map(|r| r.to_string()).collect(),
            require,
            mode,
            ..Default::default()
        };
        move |b: &mut Binding| {
            b.rules = Arc::new(RequestRules::compile(&spec).unwrap());
            b.swap_in.insert(SwapLocation::Body);
        }
    }

    async fn try_build(
        tokens: &Arc<MockTokens>,
        method: Method,
        path: &str,
        headers: &[(&'static str, String)],
        body: BodyPlan,
    ) -> (Result<Request<ProxyBody>, ProxyError>, Swapper) {
        let mut out = outgoing(headers);
        out.method = method;
        out.path_and_query = PathAndQuery::try_from(path).unwrap();
        let mut swapper = swapper(tokens);
        let mut plan = body;
        let result = build(&out, &mut swapper, &mut plan, false, false).await;
        (result, swapper)
    }

    #[tokio::test]
    async fn rules_refuse_a_request_before_its_token_is_swapped() {
        let tokens = MockTokens::new();
        let p = tokens.add(
            "GH",
            HOST,
            "real-token",
            with_rules(&["allow GET /repos/acme/web/**"], false, RulesMode::Enforce),
        );
        let auth = [("authorization", format!("Bearer {p}"))];
        let (ok, _) = try_build(
            &tokens,
            Method::GET,
            "/repos/acme/web/pulls?x=1",
            &auth,
            BodyPlan::Empty,
        )
        .await;
        assert_eq!(ok.unwrap().headers()["authorization"], "Bearer real-token");
        let (denied, _) = try_build(
            &tokens,
            Method::DELETE,
            "/repos/acme/web",
            &auth,
            BodyPlan::Empty,
        )
        .await;
        let err = denied.err().unwrap();
        assert_eq!(err.code(), "rule_denied");
        assert_eq!(err.status(), http::StatusCode::FORBIDDEN);
        assert_eq!(
            err.to_string(),
            "the rules of binding secret:GH refuse this request: the default (deny)"
        );
        // The same rules judge a placeholder in a body.
        let body: &'static str = Box::leak(format!("{{\"t\":\"{p}\"}}").into_boxed_str());
        let (in_body, _) =
            try_build(&tokens, Method::POST, "/other", &[], BodyPlan::whole(body)).await;
        assert_eq!(in_body.err().unwrap().code(), "rule_denied");
    }

    #[tokio::test]
    async fn a_graphql_mutation_is_refused_where_only_queries_are_allowed() {
        let tokens = MockTokens::new();
        let p = tokens.add(
            "GH",
            HOST,
            "real-token",
            with_rules(&["allow POST /graphql query *"], false, RulesMode::Enforce),
        );
        let auth = [
            ("authorization", format!("Bearer {p}")),
            ("content-type", "application/json".into()),
        ];
        let query = BodyPlan::whole(r#"{"query":"query { viewer { login } }"}"#);
        let (ok, _) = try_build(&tokens, Method::POST, "/graphql", &auth, query).await;
        assert!(ok.is_ok());
        let mutation = BodyPlan::whole(r#"{"query":"mutation Del { deleteRepository(id: 1) }"}"#);
        let (denied, _) = try_build(&tokens, Method::POST, "/graphql", &auth, mutation).await;
        let err = denied.err().unwrap().to_string();
        assert!(err.contains("GraphQL mutation Del"), "{err}");
    }

    #[tokio::test]
    async fn require_refuses_a_request_that_brings_its_own_credential() {
        let tokens = MockTokens::new();
        let p = tokens.add(
            "GH",
            HOST,
            "real-token",
            with_rules(&[], true, RulesMode::Enforce),
        );
        let own = [("authorization", "Bearer ghp_the_agents_own".to_string())];
        let (denied, _) = try_build(&tokens, Method::GET, "/user", &own, BodyPlan::Empty).await;
        let err = denied.err().unwrap();
        assert_eq!(err.code(), "rule_denied");
        assert!(err
            .to_string()
            .contains("require: requests to api.example.test must carry its placeholder"));
        assert!(!err.to_string().contains("ghp_the_agents_own"));
        let ours = [("authorization", format!("Bearer {p}"))];
        let (ok, _) = try_build(&tokens, Method::GET, "/user", &ours, BodyPlan::Empty).await;
        assert!(ok.is_ok());
    }

    #[tokio::test]
    async fn dry_run_refuses_nothing_and_marks_what_it_would_refuse() {
        let tokens = MockTokens::new();
        let p = tokens.add(
            "GH",
            HOST,
            "real-token",
            with_rules(&["deny DELETE /**"], true, RulesMode::DryRun),
        );
        let auth = [("authorization", format!("Bearer {p}"))];
        let (ok, swapper) = try_build(
            &tokens,
            Method::DELETE,
            "/repos/a/b",
            &auth,
            BodyPlan::Empty,
        )
        .await;
        assert_eq!(ok.unwrap().headers()["authorization"], "Bearer real-token");
        let marks = swapper
            .marks()
            .expect("marked")
            .dry_run
            .lock()
            .unwrap()
            .clone();
        assert_eq!(marks, ["secret:GH: rule 1 (deny DELETE /**)"]);
        let (ok, swapper) = try_build(&tokens, Method::GET, "/", &[], BodyPlan::Empty).await;
        assert!(ok.is_ok());
        let marks = swapper.marks().expect("marked");
        assert!(marks.dry_run.lock().unwrap()[0].contains("require"));
    }

    #[tokio::test]
    async fn a_request_with_no_credential_gets_the_injecting_bindings_token() {
        let tokens = MockTokens::new();
        let p = tokens.oauth("ACME", HOST, "real-token");
        *tokens.inject_absent.lock().unwrap() = Some(airlock_vault_client::AbsentInjection {
            binding: "secret:ACME".into(),
            placeholder: p.clone(),
            inject: "bearer".into(),
        });
        let (bare, swapper) = try_build(&tokens, Method::GET, "/me", &[], BodyPlan::Empty).await;
        assert_eq!(
            bare.unwrap().headers()["authorization"],
            "Bearer real-token"
        );
        assert!(
            swapper.in_injection_slot(&p, Some(&airlock_vault_client::Injection::Bearer)),
            "a 401 to it is evidence for a refresh"
        );
        // A credential of its own, or a placeholder anywhere: nothing is added.
        let own = [("authorization", "Bearer ghp_own".to_string())];
        let (r, _) = try_build(&tokens, Method::GET, "/me", &own, BodyPlan::Empty).await;
        assert_eq!(r.unwrap().headers()["authorization"], "Bearer ghp_own");
        let elsewhere = [("x-api-key", p.clone())];
        let (r, _) = try_build(&tokens, Method::GET, "/me", &elsewhere, BodyPlan::Empty).await;
        let r = r.unwrap();
        assert!(!r.headers().contains_key("authorization"));
        assert_eq!(r.headers()["x-api-key"], "real-token");
    }

    fn hmac_spec(template: &str) -> airlock_vault_client::HmacSpec {
        airlock_vault_client::HmacSpec {
            header: "x-signature".into(),
            prefix: String::new(),
            template: airlock_vault_client::parse_template(template).unwrap(),
            algorithm: airlock_vault_client::HmacAlgorithm::Sha256,
            encoding: airlock_vault_client::SignatureEncoding::Hex,
            timestamp_header: None,
        }
    }

    #[tokio::test]
    async fn an_hmac_signature_is_checked_then_made_again_over_what_is_sent() {
        let tokens = MockTokens::new();
        let template = "{method} {path} {header:x-key} {body}";
        let secret = tokens.hmac("SIGN", HOST, "real-hmac-secret", hmac_spec(template));
        let key = tokens.add("KEY", HOST, "real-key", |b| {
            b.swap_in.insert(SwapLocation::Body);
        });
        let spec = hmac_spec(template);
        let body: &'static str = Box::leak(format!("{{\"k\":\"{key}\"}}").into_boxed_str());
        let sent_text = format!("POST /v1/things?q=1 {key} {body}");
        let sandbox_sig =
            signing::hmac::signature_value(&spec, secret.as_bytes(), sent_text.as_bytes());
        let headers = [("x-key", key.clone()), ("x-signature", sandbox_sig)];
        let (built, swapper) = try_build(
            &tokens,
            Method::POST,
            "/v1/things?q=1",
            &headers,
            BodyPlan::whole(body),
        )
        .await;
        let request = built.unwrap();
        let want = signing::hmac::signature_value(
            &spec,
            b"real-hmac-secret",
            br#"POST /v1/things?q=1 real-key {"k":"real-key"}"#,
        );
        assert_eq!(request.headers()["x-signature"], want.as_str());
        assert_eq!(request.headers()["x-key"], "real-key");
        let ids: Vec<String> = swapper
            .swapped_bindings()
            .iter()
            .map(|b| b.id.clone())
            .collect();
        assert!(ids.contains(&"secret:SIGN".to_owned()), "{ids:?}");

        // Signed with another secret: refused.
        let wrong = signing::hmac::signature_value(&spec, b"guess", sent_text.as_bytes());
        let headers = [("x-key", key.clone()), ("x-signature", wrong)];
        let (refused, _) = try_build(
            &tokens,
            Method::POST,
            "/v1/things?q=1",
            &headers,
            BodyPlan::whole(body),
        )
        .await;
        assert_eq!(refused.err().unwrap().code(), "hmac_signature_mismatch");
        // A body that streams cannot be signed by a template that reads it.
        let headers = [("x-signature", "00".to_string())];
        let streamed = BodyPlan::Untouched {
            read: Default::default(),
            rest: crate::body::full(Bytes::from_static(b"large")),
        };
        let (refused, _) = try_build(&tokens, Method::POST, "/v1", &headers, streamed).await;
        assert_eq!(refused.err().unwrap().code(), "signing_unsupported");
        // No signature header: not signed, passed on as it is.
        let (plain, _) = try_build(&tokens, Method::GET, "/v1", &[], BodyPlan::Empty).await;
        assert!(!plain.unwrap().headers().contains_key("x-signature"));
    }
}
