//! After the answer, before the firewall: does the provider say the token
//! lacks a scope? The signals are the binding's provider's catalog data
//! ([`ScopeSignal`]); evidence first, as for expiry: only an OAuth token
//! that sat in its provider's injection slot counts. The answer goes on to
//! the sandbox unchanged, with what to do about it: `x-airlock-error:
//! insufficient_scope`, the scopes missing, and the link that asks the user
//! for them (the vault notes the step-up, so the status says so too).

use std::future::Future;

use airlock_vault_client::{
    BindingKind, SandboxId, ScopeSignal, SharedToken, TokenSource, MAX_SIGNAL_BODY,
};
use http::{HeaderValue, Response};

use crate::body::{with_trailers, ProxyBody};
use crate::body_swap::{self, Collected};
use crate::error::ProxyError;
use crate::swap::Swapper;

pub(crate) const MISSING_SCOPES: &str = "x-airlock-missing-scopes";
pub(crate) const CONNECT_URL: &str = "x-airlock-connect-url";

/// An insufficient-scope answer: the placeholder whose token lacked the
/// scope, and that token (a held request waits for another).
pub(crate) struct Insufficient {
    pub binding: String,
    pub placeholder: String,
    pub token: SharedToken,
}

/// `(connection, the token, its signals for this status)` of OAuth tokens
/// in their slot whose provider says such an answer can mean a lacking scope.
type Candidates = Vec<(String, Insufficient, Vec<ScopeSignal>)>;

/// The answer, with the step-up headers when it is an insufficient-scope
/// answer (then also which token it was about).
///
/// Not an `async fn`: whether the answer can be one is known without
/// waiting, and only then is the rest boxed, so an ordinary answer does not
/// make every request's future larger.
pub(crate) fn screen_scopes<'a>(
    tokens: &'a dyn TokenSource,
    sandbox: &'a SandboxId,
    swapper: &Swapper,
    response: Response<ProxyBody>,
) -> impl Future<Output = (Option<Insufficient>, Response<ProxyBody>)> + Send + 'a {
    let candidates = scope_candidates(swapper, &response);
    async move {
        if candidates.is_empty() {
            return (None, response);
        }
        Box::pin(judge(tokens, sandbox, candidates, response)).await
    }
}

fn scope_candidates(swapper: &Swapper, response: &Response<ProxyBody>) -> Candidates {
    let status = response.status().as_u16();
    swapper
        .swapped()
        .filter(|(p, r)| swapper.in_injection_slot(p, r.binding.inject.as_ref()))
        .filter_map(|(p, r)| match &r.binding.kind {
            BindingKind::OAuth { connection_id } => {
                let signals: Vec<ScopeSignal> = r
                    .binding
                    .scope_signals
                    .iter()
                    .filter(|s| s.applies_to(status))
                    .cloned()
                    .collect();
                let which = Insufficient {
                    binding: r.binding.id.clone(),
                    placeholder: p.to_owned(),
                    token: r.token.clone(),
                };
                (!signals.is_empty()).then(|| (connection_id.clone(), which, signals))
            }
            BindingKind::Static | BindingKind::AwsSigV4 | BindingKind::Hmac => None,
        })
        .collect()
}

/// Reads what the signals need of the answer; on a match, notes the step-up.
async fn judge(
    tokens: &dyn TokenSource,
    sandbox: &SandboxId,
    candidates: Candidates,
    response: Response<ProxyBody>,
) -> (Option<Insufficient>, Response<ProxyBody>) {
    let status = response.status().as_u16();
    let reads_body = candidates
        .iter()
        .any(|(_, _, signals)| signals.iter().any(ScopeSignal::reads_body));
    let (mut response, body) = if reads_body {
        let (parts, body) = response.into_parts();
        match body_swap::collect_up_to(body, MAX_SIGNAL_BODY).await {
            Ok(Collected::Whole(data, trailers)) => (
                Response::from_parts(parts, with_trailers(data.clone(), trailers)),
                Some(data),
            ),
            Ok(Collected::Partial { read, rest }) => (
                Response::from_parts(parts, body_swap::streaming_passthrough(read, rest)),
                None,
            ),
            Err(e) => {
                let err = ProxyError::Upstream(format!("reading the upstream's answer: {e}"));
                return (None, err.to_response());
            }
        }
    } else {
        (response, None)
    };
    let found = candidates
        .into_iter()
        .find_map(|(connection, which, signals)| {
            signals
                .iter()
                .find_map(|s| s.detect(status, response.headers(), body.as_deref()))
                .map(|needed| (connection, which, needed))
        });
    let Some((connection, which, needed)) = found else {
        return (None, response);
    };
    let connection = &connection;
    let step_up = match tokens.step_up(sandbox, connection, &needed).await {
        Ok(step_up) => step_up,
        Err(error) => {
            // The sandbox still learns what is missing; the link must wait.
            tracing::warn!(%sandbox, connection, %error, "could not note a step-up");
            airlock_vault_client::StepUp {
                missing: needed,
                connect_url: None,
            }
        }
    };
    let headers = response.headers_mut();
    headers.insert(
        "x-airlock-error",
        HeaderValue::from_static("insufficient_scope"),
    );
    if let Ok(v) = HeaderValue::from_str(&step_up.missing.join(" ")) {
        if !step_up.missing.is_empty() {
            headers.insert(MISSING_SCOPES, v);
        }
    }
    if let Some(url) = step_up.connect_url.as_deref() {
        if let Ok(v) = HeaderValue::from_str(url) {
            headers.insert(CONNECT_URL, v);
        }
    }
    (Some(which), response)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use airlock_vault_client::SwapLocation;
    use bytes::Bytes;
    use http::HeaderMap;
    use http_body_util::BodyExt;

    use super::*;
    use crate::swap::Scanner;
    use crate::testing::{MockTokens, PREFIX};

    const HOST: &str = "api.example.test";

    async fn swapped(tokens: &Arc<MockTokens>, header: (&'static str, String)) -> Swapper {
        let mut swapper = Swapper::new(
            tokens.clone(),
            Arc::new(Scanner::new(PREFIX)),
            SandboxId::default_sandbox(),
            HOST,
        );
        let mut headers = HeaderMap::new();
        headers.insert(header.0, HeaderValue::from_str(&header.1).unwrap());
        swapper.swap_headers(&mut headers).await.unwrap();
        swapper
    }

    fn slack_signal() -> ScopeSignal {
        ScopeSignal {
            status: vec![200],
            body_pointer: Some("/error".into()),
            body_equals: Some("missing_scope".into()),
            needed_pointer: Some("/needed".into()),
            ..Default::default()
        }
    }

    fn answer(
        status: u16,
        headers: &[(&'static str, &str)],
        body: &'static str,
    ) -> Response<ProxyBody> {
        let mut r = Response::new(crate::body::full(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            r.headers_mut()
                .insert(*k, HeaderValue::from_str(v).unwrap());
        }
        r
    }

    #[tokio::test]
    async fn a_slack_body_signal_adds_the_step_up_and_keeps_the_answer() {
        let tokens = MockTokens::new();
        let p = tokens.oauth("SLACK", HOST, "xoxb-real");
        tokens.configure(&p, |b| b.scope_signals = Arc::new(vec![slack_signal()]));
        let swapper = swapped(&tokens, ("authorization", format!("Bearer {p}"))).await;
        let body = r#"{"ok":false,"error":"missing_scope","needed":"chat:write"}"#;
        let (hit, r) = screen_scopes(
            &*tokens,
            &SandboxId::default_sandbox(),
            &swapper,
            answer(200, &[], body),
        )
        .await;
        assert!(hit.is_some());
        assert_eq!(r.headers()["x-airlock-error"], "insufficient_scope");
        assert_eq!(r.headers()[MISSING_SCOPES], "chat:write");
        assert_eq!(
            r.headers()[CONNECT_URL],
            "https://vault.test/connect/step-up-conn-SLACK"
        );
        assert_eq!(
            r.into_body().collect().await.unwrap().to_bytes(),
            body.as_bytes()
        );
        assert_eq!(tokens.step_ups()[0].2, ["chat:write"]);
    }

    #[tokio::test]
    async fn evidence_first_a_token_outside_its_slot_or_an_ordinary_answer_is_left_alone() {
        let tokens = MockTokens::new();
        let p = tokens.oauth("GH", HOST, "gho-real");
        let challenge = [(
            "www-authenticate",
            r#"Bearer error="insufficient_scope", scope="repo""#,
        )];
        // In another header: not the provider's slot.
        let elsewhere = swapped(&tokens, ("x-token", p.clone())).await;
        let (hit, _) = screen_scopes(
            &*tokens,
            &SandboxId::default_sandbox(),
            &elsewhere,
            answer(403, &challenge, ""),
        )
        .await;
        assert!(hit.is_none());
        let slot = swapped(&tokens, ("authorization", format!("Bearer {p}"))).await;
        let (hit, _) = screen_scopes(
            &*tokens,
            &SandboxId::default_sandbox(),
            &slot,
            answer(403, &[], "forbidden"),
        )
        .await;
        assert!(hit.is_none());
        let (hit, r) = screen_scopes(
            &*tokens,
            &SandboxId::default_sandbox(),
            &slot,
            answer(403, &challenge, ""),
        )
        .await;
        assert!(hit.is_some(), "RFC 6750 is every provider's default");
        assert_eq!(r.headers()[MISSING_SCOPES], "repo");
        // A static secret never steps up.
        let s = tokens.add("KEY", HOST, "static-real", |b| {
            b.swap_in.insert(SwapLocation::Header);
        });
        let static_swap = swapped(&tokens, ("authorization", format!("Bearer {s}"))).await;
        let (hit, _) = screen_scopes(
            &*tokens,
            &SandboxId::default_sandbox(),
            &static_swap,
            answer(403, &challenge, ""),
        )
        .await;
        assert!(hit.is_none());
        assert_eq!(tokens.step_ups().len(), 1);
    }
}
