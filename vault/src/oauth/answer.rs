//! Reading a token endpoint's answer: lenient about the shapes providers
//! send, strict about never echoing a body that may hold a token.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Map, Value};

use super::{Granted, RawAnswer};
use crate::catalog::Provider;
use crate::error::{OAuthAnswer, OAuthErrorCode, ProviderError, Step, VaultError};

#[derive(serde::Deserialize)]
pub(super) struct ErrorBody {
    pub(super) error: String,
    #[serde(default)]
    pub(super) error_description: Option<String>,
}

/// What an OAuth error answer means at `step`. Only a refused refresh grant
/// asks for a reconnect; a refused code or client is said as such.
pub fn refused(
    step: Step,
    provider: &Provider,
    client_id: &str,
    answer: OAuthAnswer,
) -> VaultError {
    let name = provider.name.clone();
    use OAuthErrorCode::{InvalidClient, InvalidGrant, UnauthorizedClient};
    match (answer.code(), step) {
        (Some(InvalidClient), _) => VaultError::ClientRefused {
            provider: name,
            client_id: client_id.to_owned(),
            answer,
        },
        (Some(InvalidGrant | UnauthorizedClient), Step::Refresh) => {
            VaultError::Reconnect(answer.to_string())
        }
        (Some(InvalidGrant), Step::CodeExchange) => VaultError::CodeRefused {
            provider: name,
            answer,
        },
        _ => ProviderError::Refused {
            provider: name,
            step,
            answer,
        }
        .into(),
    }
}

/// [`interpret`], with the failure said for `step` and named for the
/// operator: a refused code or client is said as such; only a refused refresh
/// grant asks for a reconnect.
pub fn interpret_at(
    raw: &RawAnswer,
    step: Step,
    provider: &Provider,
    client_id: &str,
) -> Result<Granted, VaultError> {
    let ok = (200..300).contains(&raw.status);
    if let Some(fields) = answer_fields(&raw.body) {
        let text = |name: &str| {
            fields
                .get(name)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        if !ok || text("access_token").is_none() {
            if let Some(code) = text("error") {
                let answer = OAuthAnswer::new(code, text("error_description"));
                return Err(refused(step, provider, client_id, answer));
            }
        }
    }
    interpret(raw).map_err(|e| match e {
        VaultError::ProviderUnavailable(_) | VaultError::OAuth(_) if !ok => ProviderError::Status {
            provider: provider.name.clone(),
            step,
            status: raw.status,
            answer: None,
        }
        .into(),
        VaultError::OAuth(_) => ProviderError::Unreadable {
            provider: provider.name.clone(),
            step,
            bytes: raw.body.len(),
        }
        .into(),
        other => other,
    })
}

/// Reads a token endpoint's answer. Lenient where providers differ
/// (`expires_in` as a number or a string, any `token_type` case, `scope` as
/// a string or a list, missing optional fields, extra fields, a form-encoded
/// body, an error sent with status 200); strict only about an access token
/// being there.
pub fn interpret(raw: &RawAnswer) -> Result<Granted, VaultError> {
    let ok = (200..300).contains(&raw.status);
    let Some(fields) = answer_fields(&raw.body) else {
        return Err(if ok {
            VaultError::OAuth(format!(
                "the token endpoint's answer could not be read ({} bytes, not JSON)",
                raw.body.len()
            ))
        } else {
            status_error(raw.status)
        });
    };
    let text = |name: &str| {
        fields
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let access = text("access_token");
    if !ok || access.is_none() {
        if let Some(code) = text("error") {
            return Err(classify_error(code, text("error_description")));
        }
        if !ok {
            return Err(status_error(raw.status));
        }
    }
    let Some(access) = access else {
        return Err(VaultError::OAuth(format!(
            "the token endpoint's answer has no access_token ({} bytes)",
            raw.body.len()
        )));
    };
    let scopes = match fields.get("scope") {
        Some(Value::String(s)) => Some(s.split_whitespace().map(str::to_owned).collect()),
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        _ => None,
    };
    Ok(Granted {
        access_token: SecretString::from(access.to_owned()),
        refresh_token: text("refresh_token").map(|r| SecretString::from(r.to_owned())),
        expires_in: fields
            .get("expires_in")
            .and_then(lenient_seconds)
            .map(Duration::from_secs),
        scopes,
    })
}

/// The rotated refresh token in an answer [`interpret`] could not use, found
/// however it can be: a new refresh token must not be lost.
pub fn salvage_refresh_token(body: &[u8]) -> Option<SecretString> {
    if let Some(fields) = answer_fields(body) {
        return fields
            .get("refresh_token")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| SecretString::from(s.to_owned()));
    }
    // Broken JSON: look for `"refresh_token" : "…"` in the text.
    let text = String::from_utf8_lossy(body);
    let at = text.find("\"refresh_token\"")? + "\"refresh_token\"".len();
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let token = &rest[..rest.find('"')?];
    (!token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic() && b != b'\\'))
        .then(|| SecretString::from(token.to_owned()))
}

/// The answer's fields: a JSON object, or a form-encoded body (GitHub
/// without an `Accept` header) that names a token or an error.
pub(super) fn answer_fields(body: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Some(map),
        Ok(_) => None,
        Err(_) => {
            let text = std::str::from_utf8(body).ok()?.trim();
            if text.is_empty() || text.starts_with('{') || text.contains(char::is_whitespace) {
                return None;
            }
            let map: Map<String, Value> = url::form_urlencoded::parse(text.as_bytes())
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect();
            (map.contains_key("access_token") || map.contains_key("error")).then_some(map)
        }
    }
}

/// Seconds as a JSON number (whole or not) or a string of one; negative is 0.
pub(super) fn lenient_seconds(v: &Value) -> Option<u64> {
    let n = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    n.is_finite()
        .then(|| n.max(0.0).min(u32::MAX as f64) as u64)
}

pub(super) fn classify_error(code: &str, description: Option<&str>) -> VaultError {
    let code: String = code
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect();
    use OAuthErrorCode::*;
    match OAuthErrorCode::parse(&code) {
        Some(InvalidGrant | InvalidClient | UnauthorizedClient) => VaultError::Reconnect(code),
        Some(TemporarilyUnavailable | ServerError | SlowDown) => {
            VaultError::ProviderUnavailable(code)
        }
        _ => VaultError::OAuth(format!(
            "provider answered {code}{}",
            description
                .map(|d| format!(": {}", truncate(d, 200)))
                .unwrap_or_default()
        )),
    }
}

pub(super) fn status_error(status: u16) -> VaultError {
    if status >= 500 || status == 429 || status == 408 {
        VaultError::ProviderUnavailable(format!("the token endpoint answered HTTP {status}"))
    } else {
        VaultError::OAuth(format!(
            "the token endpoint answered HTTP {status} without an OAuth error"
        ))
    }
}

pub(super) fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A transport failure in words, without the request (which holds secrets).
pub(super) fn describe_reqwest(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "the token endpoint did not answer in time".into()
    } else if e.is_connect() {
        "could not connect to the token endpoint".into()
    } else {
        format!("request failed: {}", e.without_url())
    }
}

pub(super) fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
