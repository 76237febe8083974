//! How a provider says "this token lacks a scope", as catalog data.
//!
//! One vocabulary covers the common forms:
//!
//! - RFC 6750: `WWW-Authenticate: Bearer error="insufficient_scope", scope="a b"`
//!   (every provider's default);
//! - GitHub: `X-Accepted-OAuth-Scopes` (any one suffices) against `X-OAuth-Scopes`;
//! - Google: `403` with `error.errors[0].reason = "insufficientPermissions"`,
//!   the scopes in `WWW-Authenticate` when it names them;
//! - Slack: `200` with `{"ok": false, "error": "missing_scope", "needed": "…"}`.

use hyper::header::HeaderMap;
use serde::{Deserialize, Serialize};

/// Largest answer body a body signal reads.
pub const MAX_SIGNAL_BODY: usize = 64 * 1024;

/// One way a provider answers a request whose token lacks a scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeSignal {
    /// Statuses this signal applies to; empty: 401 and 403.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status: Vec<u16>,
    /// Read `WWW-Authenticate`'s Bearer `error="insufficient_scope"` and
    /// `scope="…"`. Alone, the error is the signal; with another condition,
    /// it is only where the needed scopes are read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub www_authenticate: bool,
    /// A header naming the scopes the endpoint needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed_header: Option<String>,
    /// A header naming the scopes the token has: the signal holds only when
    /// the needed ones are not among them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_header: Option<String>,
    /// `needed_header` lists alternatives (one suffices), as GitHub's does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub needed_any: bool,
    /// A JSON pointer into the answer body (`/error`) whose string value
    /// must equal `body_equals`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_pointer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_equals: Option<String>,
    /// A JSON pointer to the needed scopes in the body (`/needed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed_pointer: Option<String>,
}

impl ScopeSignal {
    /// RFC 6750's signal, which every provider gets unless it lists its own.
    pub fn rfc6750() -> Self {
        Self {
            www_authenticate: true,
            ..Default::default()
        }
    }

    pub fn defaults() -> Vec<Self> {
        vec![Self::rfc6750()]
    }

    /// What makes the definition unusable, in words an operator can act on.
    pub fn problem(&self) -> Option<String> {
        if self.body_pointer.is_some() != self.body_equals.is_some() {
            return Some("body_pointer and body_equals go together".into());
        }
        for pointer in [&self.body_pointer, &self.needed_pointer]
            .into_iter()
            .flatten()
        {
            if !pointer.starts_with('/') {
                return Some(format!(
                    "{pointer:?} is not a JSON pointer (it starts with /)"
                ));
            }
        }
        if self.granted_header.is_some() && self.needed_header.is_none() {
            return Some("granted_header needs needed_header".into());
        }
        if !self.www_authenticate && self.needed_header.is_none() && self.body_pointer.is_none() {
            return Some("a signal needs www_authenticate, needed_header or body_pointer".into());
        }
        None
    }

    /// Whether the answer's status may carry this signal: only then is a
    /// body read.
    pub fn applies_to(&self, status: u16) -> bool {
        if self.status.is_empty() {
            status == 401 || status == 403
        } else {
            self.status.contains(&status)
        }
    }

    pub fn reads_body(&self) -> bool {
        self.body_pointer.is_some() || self.needed_pointer.is_some()
    }

    /// The needed scopes when this answer is an insufficient-scope answer
    /// (possibly none, when the provider does not say which).
    pub fn detect(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: Option<&[u8]>,
    ) -> Option<Vec<String>> {
        if !self.applies_to(status) {
            return None;
        }
        let json = || body.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok());
        let parsed = if self.reads_body() { json() } else { None };
        if let (Some(pointer), Some(expected)) = (&self.body_pointer, &self.body_equals) {
            let value = parsed.as_ref()?.pointer(pointer)?.as_str()?;
            if value != expected {
                return None;
            }
        }
        let www = headers
            .get_all(hyper::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(bearer_insufficient_scope);
        let mut needed: Option<Vec<String>> = None;
        if let Some(name) = &self.needed_header {
            let listed = scopes_in(headers.get(name.as_str())?.to_str().ok()?);
            if let Some(granted) = &self.granted_header {
                let granted = headers
                    .get(granted.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(scopes_in)
                    .unwrap_or_default();
                let satisfied = if self.needed_any {
                    listed.iter().any(|s| granted.contains(s))
                } else {
                    listed.iter().all(|s| granted.contains(s))
                };
                if satisfied || listed.is_empty() {
                    return None;
                }
            }
            needed = Some(if self.needed_any {
                listed.into_iter().take(1).collect()
            } else {
                listed
            });
        }
        if let Some(pointer) = &self.needed_pointer {
            if let Some(value) = parsed.as_ref().and_then(|v| v.pointer(pointer)) {
                let listed = match value {
                    serde_json::Value::String(s) => scopes_in(s),
                    serde_json::Value::Array(a) => a
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                    _ => Vec::new(),
                };
                needed = Some(listed);
            }
        }
        let alone = self.needed_header.is_none() && self.body_pointer.is_none();
        if self.www_authenticate {
            match (&www, alone) {
                (None, true) => return None,
                (Some(scopes), _) if needed.as_ref().is_none_or(Vec::is_empty) => {
                    needed = Some(scopes.clone());
                }
                _ => {}
            }
        }
        Some(needed.unwrap_or_default())
    }
}

/// The scopes of a Bearer challenge with `error="insufficient_scope"`
/// (empty when it names none); `None` for any other challenge.
fn bearer_insufficient_scope(challenge: &str) -> Option<Vec<String>> {
    let rest = challenge.trim_start();
    let params = rest
        .get(..6)
        .filter(|s| s.eq_ignore_ascii_case("bearer"))
        .map(|_| &rest[6..])?;
    let mut error = None;
    let mut scope = None;
    for (key, value) in auth_params(params) {
        match key.to_ascii_lowercase().as_str() {
            "error" => error = Some(value),
            "scope" => scope = Some(value),
            _ => {}
        }
    }
    (error.as_deref() == Some("insufficient_scope"))
        .then(|| scope.as_deref().map(scopes_in).unwrap_or_default())
}

/// `key=value` and `key="quoted value"` pairs, comma-separated.
fn auth_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            value = quoted[..end].to_owned();
            rest = quoted.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        out.push((key, value));
    }
    out
}

/// Scopes separated by spaces and/or commas.
pub fn scopes_in(text: &str) -> Vec<String> {
    text.split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(list: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in list {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn github() -> ScopeSignal {
        ScopeSignal {
            status: vec![403, 404],
            needed_header: Some("x-accepted-oauth-scopes".into()),
            granted_header: Some("x-oauth-scopes".into()),
            needed_any: true,
            ..Default::default()
        }
    }

    fn google() -> ScopeSignal {
        ScopeSignal {
            status: vec![403],
            www_authenticate: true,
            body_pointer: Some("/error/errors/0/reason".into()),
            body_equals: Some("insufficientPermissions".into()),
            ..Default::default()
        }
    }

    fn slack() -> ScopeSignal {
        ScopeSignal {
            status: vec![200],
            body_pointer: Some("/error".into()),
            body_equals: Some("missing_scope".into()),
            needed_pointer: Some("/needed".into()),
            ..Default::default()
        }
    }

    #[test]
    fn rfc6750_reads_the_bearer_challenge() {
        let s = ScopeSignal::rfc6750();
        let h = headers(&[(
            "www-authenticate",
            r#"Bearer realm="api", error="insufficient_scope", scope="read:user repo""#,
        )]);
        assert_eq!(
            s.detect(403, &h, None),
            Some(vec!["read:user".into(), "repo".into()])
        );
        let other = headers(&[("www-authenticate", r#"Bearer error="invalid_token""#)]);
        assert_eq!(s.detect(401, &other, None), None);
        assert_eq!(s.detect(200, &h, None), None, "not on a 200");
        assert_eq!(s.detect(403, &HeaderMap::new(), None), None);
        let unquoted = headers(&[("www-authenticate", "Bearer error=insufficient_scope")]);
        assert_eq!(s.detect(403, &unquoted, None), Some(vec![]));
    }

    #[test]
    fn github_compares_accepted_with_granted() {
        let h = headers(&[
            ("x-accepted-oauth-scopes", "repo, public_repo"),
            ("x-oauth-scopes", "read:user"),
        ]);
        assert_eq!(github().detect(403, &h, None), Some(vec!["repo".into()]));
        let ok = headers(&[
            ("x-accepted-oauth-scopes", "repo, public_repo"),
            ("x-oauth-scopes", "read:user, public_repo"),
        ]);
        assert_eq!(
            github().detect(404, &ok, None),
            None,
            "one accepted scope is enough"
        );
        assert_eq!(github().detect(403, &HeaderMap::new(), None), None);
    }

    #[test]
    fn google_needs_the_body_reason_and_takes_scopes_from_the_challenge() {
        let body = br#"{"error":{"code":403,"errors":[{"reason":"insufficientPermissions"}]}}"#;
        let h = headers(&[(
            "www-authenticate",
            r#"Bearer realm="https://accounts.google.com/", error="insufficient_scope", scope="https://www.googleapis.com/auth/drive""#,
        )]);
        assert_eq!(
            google().detect(403, &h, Some(body)),
            Some(vec!["https://www.googleapis.com/auth/drive".into()])
        );
        assert_eq!(
            google().detect(403, &HeaderMap::new(), Some(body)),
            Some(vec![])
        );
        let other = br#"{"error":{"code":403,"errors":[{"reason":"forbidden"}]}}"#;
        assert_eq!(google().detect(403, &h, Some(other)), None);
        assert_eq!(google().detect(403, &h, Some(b"not json")), None);
    }

    #[test]
    fn slack_reads_a_200_body() {
        let body = br#"{"ok":false,"error":"missing_scope","needed":"chat:write,channels:read","provided":"users:read"}"#;
        assert_eq!(
            slack().detect(200, &HeaderMap::new(), Some(body)),
            Some(vec!["chat:write".into(), "channels:read".into()])
        );
        assert_eq!(
            slack().detect(200, &HeaderMap::new(), Some(br#"{"ok":true}"#)),
            None
        );
        assert_eq!(slack().detect(200, &HeaderMap::new(), None), None);
    }

    #[test]
    fn unusable_definitions_are_named() {
        assert!(ScopeSignal::default().problem().is_some());
        let half = ScopeSignal {
            body_pointer: Some("/error".into()),
            ..Default::default()
        };
        assert!(half.problem().unwrap().contains("go together"));
        let bad = ScopeSignal {
            body_pointer: Some("error".into()),
            body_equals: Some("x".into()),
            ..Default::default()
        };
        assert!(bad.problem().unwrap().contains("JSON pointer"));
        for ok in [github(), google(), slack(), ScopeSignal::rfc6750()] {
            assert_eq!(ok.problem(), None);
        }
    }
}
