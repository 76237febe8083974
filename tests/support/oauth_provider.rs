#![allow(dead_code)] // each integration-test binary uses only part of the fixtures

//! A real, fake OAuth 2.0 provider: authorization server and resource server
//! in one HTTPS origin (HTTP/1.1 and HTTP/2), for end-to-end tests.
//!
//! - `GET /authorize`: authorization code flow with mandatory PKCE S256
//!   (RFC 6749 §4.1, RFC 7636). No login page: it answers at once with a
//!   `302` to `redirect_uri`, carrying `code` + `state` or an `error`.
//! - `POST /token`: `authorization_code`, `refresh_token` (rotating) and
//!   `client_credentials` grants, with client authentication by HTTP Basic
//!   (RFC 6749 §2.3.1, form-urlencoded id and secret) or by form fields.
//! - `POST /revoke`: token revocation (RFC 7009).
//! - any method on `/api` and `/api/...`: a resource server accepting
//!   `Authorization: Bearer <access token>` (RFC 6750).
//!
//! Everything it receives is recorded for assertions, and switches let a
//! test make it deny, refuse refreshes, fail with 503, be slow, or expire
//! every access token at once.
//!
//! SHA-256 and randomness come from rustls' ring provider, and form
//! encoding is done here, so it needs no crate beyond the other fixtures'.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, AUTHORIZATION};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::test_ca::TestCa;
use super::upstream::spawn_https_server;

/// Lifetime of access tokens until [`OAuthProvider::set_access_token_lifetime`].
pub const DEFAULT_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Prefix of every access token the provider issues.
pub const ACCESS_TOKEN_PREFIX: &str = "acme_at_";

/// Prefix of every refresh token the provider issues.
pub const REFRESH_TOKEN_PREFIX: &str = "acme_rt_";

/// Largest request body read; bigger ones get a 413.
const MAX_BODY: usize = 1024 * 1024;

/// How much of each request body is kept for [`OAuthProvider::raw_contains`].
const RAW_BODY_LIMIT: usize = 64 * 1024;

pub struct OAuthProvider {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl OAuthProvider {
    /// Serves a leaf for `names` (e.g. `auth.acme.test` and `api.acme.test`)
    /// signed by `ca` on 127.0.0.1, offering ALPN `h2` and `http/1.1`. The one
    /// registered client is `client_id` / `client_secret`; any redirect URI
    /// is accepted.
    pub async fn start(
        ca: &TestCa,
        names: &[&str],
        client_id: &str,
        client_secret: &str,
    ) -> OAuthProvider {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind OAuth provider");
        let addr = listener.local_addr().expect("OAuth provider local addr");
        let state = Arc::new(Mutex::new(State::new(client_id, client_secret)));
        let shared = state.clone();
        let task = spawn_https_server(
            listener,
            ca.server_config(names, &[b"h2", b"http/1.1"]),
            move |req, _sni| handle(req, shared.clone()),
        );
        OAuthProvider { addr, state, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `https://{host}:{port}{path}`, e.g. `url("auth.acme.test", "/token")`.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.port())
    }

    // ----- switches -----------------------------------------------------

    /// The next `/authorize` (only) redirects with `error=access_denied`.
    pub fn deny_next_authorization(&self) {
        self.lock().deny_next = true;
    }

    /// While on, every `/authorize` redirects with `error=access_denied`.
    pub fn set_deny(&self, deny: bool) {
        self.lock().deny = deny;
    }

    /// While on, `grant_type=refresh_token` gets 400 `invalid_grant` (the
    /// refresh token stays current, nothing rotates).
    pub fn set_refuse_refresh(&self, refuse: bool) {
        self.lock().refuse_refresh = refuse;
    }

    /// While on, every `/token` request gets 503 `temporarily_unavailable`
    /// (still counted by [`Self::token_requests`]).
    pub fn set_fail_with_5xx(&self, fail: bool) {
        self.lock().fail_5xx = fail;
    }

    /// Every `/token` request waits this long after arriving (and after being
    /// counted) before it is looked at. Zero by default.
    pub fn set_token_delay(&self, delay: Duration) {
        self.lock().token_delay = delay;
    }

    /// Lifetime (and `expires_in`, in whole seconds) of access tokens issued
    /// from now on; [`Duration::ZERO`] issues already-expired tokens.
    pub fn set_access_token_lifetime(&self, lifetime: Duration) {
        self.lock().lifetime = lifetime;
    }

    /// Every access token issued so far is treated as expired from now on;
    /// tokens issued later are not affected.
    pub fn set_expire_all_access_tokens(&self) {
        for token in self.lock().access_tokens.values_mut() {
            token.force_expired = true;
        }
    }

    // ----- records ------------------------------------------------------

    /// How many `/token` requests arrived with this `grant_type` (`""` for
    /// none), whatever their outcome, 503s included.
    pub fn token_requests(&self, grant_type: &str) -> usize {
        self.lock()
            .token_requests
            .get(grant_type)
            .copied()
            .unwrap_or(0)
    }

    /// How many refreshes succeeded (each rotated a refresh token).
    pub fn refresh_count(&self) -> usize {
        self.lock().refresh_count
    }

    /// How many `GET /authorize` requests arrived, whatever their outcome.
    pub fn authorize_count(&self) -> usize {
        self.lock().authorize_count
    }

    /// The `token` values of every `/revoke` request with valid client
    /// authentication, in order (known to the provider or not).
    pub fn revocations(&self) -> Vec<String> {
        self.lock().revocations.clone()
    }

    /// The `Authorization` header values the resource server (`/api...`) saw,
    /// in order; requests without one add nothing.
    pub fn api_authorizations(&self) -> Vec<String> {
        self.lock().api_authorizations.clone()
    }

    /// Whether `needle` occurs in any request line, header or body (first
    /// 64 KiB) received by any endpoint.
    pub fn raw_contains(&self, needle: &str) -> bool {
        self.lock().raw.iter().any(|r| r.contains(needle))
    }

    /// Every access token issued, by any grant, in order.
    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.lock().issued_access.clone()
    }

    /// The current refresh token of the most recent authorization-code grant
    /// (`None` before any, or once that grant was revoked).
    pub fn current_refresh_token(&self) -> Option<String> {
        let state = self.lock();
        let grant = state.last_code_grant?;
        state.grants[grant].current_refresh.clone()
    }

    /// Whether the `code_verifier` of the latest `authorization_code` request
    /// that named a known code matched its challenge (`None` before any).
    pub fn last_code_verifier_ok(&self) -> Option<bool> {
        self.lock().last_code_verifier_ok
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Drop for OAuthProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ----- state --------------------------------------------------------------

struct State {
    client_id: String,
    client_secret: String,

    deny: bool,
    deny_next: bool,
    refuse_refresh: bool,
    fail_5xx: bool,
    token_delay: Duration,
    lifetime: Duration,

    codes: HashMap<String, Code>,
    /// Indexed by grant id.
    grants: Vec<Grant>,
    access_tokens: HashMap<String, AccessToken>,
    /// Every refresh token ever issued, current or rotated, to its grant.
    refresh_tokens: HashMap<String, usize>,
    last_code_grant: Option<usize>,
    client_credentials_grant: Option<usize>,

    token_requests: HashMap<String, usize>,
    refresh_count: usize,
    authorize_count: usize,
    revocations: Vec<String>,
    api_authorizations: Vec<String>,
    raw: Vec<String>,
    issued_access: Vec<String>,
    last_code_verifier_ok: Option<bool>,
}

struct Code {
    client_id: String,
    redirect_uri: String,
    scope: String,
    challenge: String,
    /// Set once the code is redeemed (or a redemption is attempted).
    used: bool,
    /// The grant it produced, if redeemed successfully.
    grant: Option<usize>,
}

struct Grant {
    scope: String,
    /// Access tokens issued for this grant so far.
    generation: u64,
    current_refresh: Option<String>,
    revoked: bool,
}

struct AccessToken {
    grant: usize,
    generation: u64,
    expires_at: SystemTime,
    revoked: bool,
    force_expired: bool,
}

/// An OAuth error response: status, `error` code and description.
struct OAuthError(StatusCode, &'static str, String);

impl State {
    fn new(client_id: &str, client_secret: &str) -> State {
        State {
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            deny: false,
            deny_next: false,
            refuse_refresh: false,
            fail_5xx: false,
            token_delay: Duration::ZERO,
            lifetime: DEFAULT_ACCESS_TOKEN_LIFETIME,
            codes: HashMap::new(),
            grants: Vec::new(),
            access_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            last_code_grant: None,
            client_credentials_grant: None,
            token_requests: HashMap::new(),
            refresh_count: 0,
            authorize_count: 0,
            revocations: Vec::new(),
            api_authorizations: Vec::new(),
            raw: Vec::new(),
            issued_access: Vec::new(),
            last_code_verifier_ok: None,
        }
    }

    fn new_grant(&mut self, scope: String) -> usize {
        self.grants.push(Grant {
            scope,
            generation: 0,
            current_refresh: None,
            revoked: false,
        });
        self.grants.len() - 1
    }

    /// Issues an access token for `grant` and, if `with_refresh`, a refresh
    /// token that replaces the grant's current one.
    fn issue(&mut self, grant: usize, with_refresh: bool) -> serde_json::Value {
        let access = random_token(ACCESS_TOKEN_PREFIX);
        let lifetime = self.lifetime;
        let g = &mut self.grants[grant];
        g.generation += 1;
        let generation = g.generation;
        let scope = g.scope.clone();
        self.access_tokens.insert(
            access.clone(),
            AccessToken {
                grant,
                generation,
                expires_at: SystemTime::now() + lifetime,
                revoked: false,
                force_expired: false,
            },
        );
        self.issued_access.push(access.clone());

        let mut body = serde_json::json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": lifetime.as_secs(),
        });
        if with_refresh {
            let refresh = random_token(REFRESH_TOKEN_PREFIX);
            self.refresh_tokens.insert(refresh.clone(), grant);
            self.grants[grant].current_refresh = Some(refresh.clone());
            body["refresh_token"] = refresh.into();
        }
        if !scope.is_empty() {
            body["scope"] = scope.into();
        }
        body
    }

    /// Revokes the grant, every access token issued for it and its refresh token.
    fn revoke_grant(&mut self, grant: usize) {
        let g = &mut self.grants[grant];
        g.revoked = true;
        g.current_refresh = None;
        for token in self.access_tokens.values_mut() {
            if token.grant == grant {
                token.revoked = true;
            }
        }
    }

    /// Checks client authentication; `None` if it passed, else the error response.
    fn reject_client(
        &self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Option<Response<Full<Bytes>>> {
        let basic = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("basic")
                    .then(|| rest.trim().to_string())
            });
        let (id, secret) = if let Some(encoded) = &basic {
            if form.contains_key("client_secret") {
                return Some(oauth_error(OAuthError(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "more than one client authentication method".into(),
                )));
            }
            let decoded = STANDARD
                .decode(encoded)
                .or_else(|_| STANDARD_NO_PAD.decode(encoded))
                .ok()
                .and_then(|d| String::from_utf8(d).ok());
            match decoded.as_deref().and_then(|d| d.split_once(':')) {
                Some((id, secret)) => (form_decode(id), form_decode(secret)),
                None => (String::new(), String::new()),
            }
        } else {
            (
                form.get("client_id").cloned().unwrap_or_default(),
                form.get("client_secret").cloned().unwrap_or_default(),
            )
        };
        if id == self.client_id && secret == self.client_secret {
            return None;
        }
        let mut response = oauth_error(OAuthError(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed".into(),
        ));
        if basic.is_some() {
            // RFC 6749 §5.2: a 401 answers with the scheme the client used.
            response.headers_mut().insert(
                "www-authenticate",
                hyper::header::HeaderValue::from_static("Basic realm=\"acme\""),
            );
        }
        Some(response)
    }

    fn authorize(&mut self, query: &HashMap<String, String>) -> Response<Full<Bytes>> {
        let param = |name: &str| query.get(name).map(String::as_str).unwrap_or("");
        if param("client_id") != self.client_id {
            return html(StatusCode::BAD_REQUEST, "unknown client_id");
        }
        let redirect_uri = param("redirect_uri");
        if redirect_uri.is_empty() {
            return html(StatusCode::BAD_REQUEST, "missing redirect_uri");
        }
        let state = query.get("state").map(String::as_str);
        let redirect_error = |error: &str| redirect(redirect_uri, &[("error", Some(error))], state);

        if param("response_type") != "code" {
            return redirect_error("unsupported_response_type");
        }
        let challenge = param("code_challenge");
        if challenge.is_empty() || param("code_challenge_method") != "S256" {
            return redirect_error("invalid_request");
        }
        let deny_next = std::mem::take(&mut self.deny_next);
        if self.deny || deny_next {
            return redirect_error("access_denied");
        }
        let code = random_token("");
        self.codes.insert(
            code.clone(),
            Code {
                client_id: self.client_id.clone(),
                redirect_uri: redirect_uri.to_string(),
                scope: param("scope").to_string(),
                challenge: challenge.to_string(),
                used: false,
                grant: None,
            },
        );
        redirect(redirect_uri, &[("code", Some(&code))], state)
    }

    fn token(
        &mut self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Response<Full<Bytes>> {
        if self.fail_5xx {
            return oauth_error(OAuthError(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the provider is down".into(),
            ));
        }
        if let Some(response) = self.reject_client(headers, form) {
            return response;
        }
        let param = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
        let result = match param("grant_type") {
            "authorization_code" => self.redeem_code(
                param("code"),
                form.get("redirect_uri").map(String::as_str),
                param("code_verifier"),
            ),
            "refresh_token" => self.refresh(param("refresh_token")),
            "client_credentials" => {
                let grant = match self.client_credentials_grant {
                    Some(grant) => grant,
                    None => {
                        let grant = self.new_grant(String::new());
                        self.client_credentials_grant = Some(grant);
                        grant
                    }
                };
                self.grants[grant].scope = param("scope").to_string();
                Ok(self.issue(grant, false))
            }
            "" => Err(OAuthError(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "missing grant_type".into(),
            )),
            _ => Err(OAuthError(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "unsupported grant_type".into(),
            )),
        };
        match result {
            Ok(body) => json(StatusCode::OK, &body),
            Err(error) => oauth_error(error),
        }
    }

    fn redeem_code(
        &mut self,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: &str,
    ) -> Result<serde_json::Value, OAuthError> {
        let invalid =
            |why: &str| OAuthError(StatusCode::BAD_REQUEST, "invalid_grant", why.to_string());
        let Some(entry) = self.codes.get_mut(code) else {
            return Err(invalid("unknown authorization code"));
        };
        if entry.used {
            // RFC 6749 §4.1.2: a replayed code revokes what it produced.
            if let Some(grant) = entry.grant {
                self.revoke_grant(grant);
            }
            return Err(invalid("authorization code already used"));
        }
        // Single use: a failed redemption burns the code too.
        entry.used = true;
        let verifier_ok = pkce_s256_matches(verifier, &entry.challenge);
        let client_ok = entry.client_id == self.client_id;
        let redirect_ok = redirect_uri == Some(entry.redirect_uri.as_str());
        let scope = entry.scope.clone();
        self.last_code_verifier_ok = Some(verifier_ok);
        if !client_ok {
            return Err(invalid("code was issued to another client"));
        }
        if !redirect_ok {
            return Err(invalid(
                "redirect_uri does not match the authorization request",
            ));
        }
        if !verifier_ok {
            return Err(invalid("code_verifier does not match code_challenge"));
        }
        let grant = self.new_grant(scope);
        if let Some(entry) = self.codes.get_mut(code) {
            entry.grant = Some(grant);
        }
        self.last_code_grant = Some(grant);
        Ok(self.issue(grant, true))
    }

    fn refresh(&mut self, refresh_token: &str) -> Result<serde_json::Value, OAuthError> {
        let invalid =
            |why: &str| OAuthError(StatusCode::BAD_REQUEST, "invalid_grant", why.to_string());
        if self.refuse_refresh {
            return Err(invalid("refresh refused"));
        }
        let Some(&grant) = self.refresh_tokens.get(refresh_token) else {
            return Err(invalid("unknown refresh token"));
        };
        let g = &self.grants[grant];
        if g.revoked {
            return Err(invalid("refresh token revoked"));
        }
        if g.current_refresh.as_deref() != Some(refresh_token) {
            return Err(invalid("refresh token was rotated"));
        }
        self.refresh_count += 1;
        Ok(self.issue(grant, true))
    }

    fn revoke(
        &mut self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Response<Full<Bytes>> {
        if let Some(response) = self.reject_client(headers, form) {
            return response;
        }
        let Some(token) = form.get("token") else {
            return oauth_error(OAuthError(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "missing token".into(),
            ));
        };
        self.revocations.push(token.clone());
        // The hint only speeds up lookups (RFC 7009 §2.1); both kinds are searched.
        if let Some(access) = self.access_tokens.get_mut(token) {
            access.revoked = true;
        } else if let Some(&grant) = self.refresh_tokens.get(token) {
            // RFC 7009 §2.1: revoking a refresh token also invalidates the
            // access tokens of the same grant. A rotated-out one is already dead.
            if self.grants[grant].current_refresh.as_deref() == Some(token.as_str()) {
                self.revoke_grant(grant);
            }
        }
        Response::builder()
            .header("cache-control", "no-store")
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    fn api(&mut self, method: &Method, path: &str, headers: &HeaderMap) -> Response<Full<Bytes>> {
        let authorization = headers
            .get(AUTHORIZATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        if let Some(value) = &authorization {
            self.api_authorizations.push(value.clone());
        }
        let token = authorization.as_deref().and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        let valid = token.and_then(|t| self.access_tokens.get(t)).filter(|t| {
            !t.revoked
                && !t.force_expired
                && SystemTime::now() < t.expires_at
                && !self.grants[t.grant].revoked
        });
        match valid {
            Some(token) => json(
                StatusCode::OK,
                &serde_json::json!({
                    "ok": true,
                    "method": method.as_str(),
                    "path": path,
                    "token_generation": token.generation,
                }),
            ),
            None => Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header("www-authenticate", "Bearer error=\"invalid_token\"")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(
                    br#"{"ok":false,"error":"invalid_token"}"#,
                )))
                .unwrap(),
        }
    }
}

// ----- request handling ---------------------------------------------------

async fn handle(req: Request<Incoming>, state: Arc<Mutex<State>>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return html(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large or broken",
            )
        }
    };
    let path = parts.uri.path().to_string();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| path.clone());

    let mut raw = format!(
        "{} {} {:?}\r\n",
        parts.method, path_and_query, parts.version
    );
    if let Some(authority) = parts.uri.authority() {
        raw.push_str(&format!(":authority: {authority}\r\n"));
    }
    for (name, value) in &parts.headers {
        raw.push_str(&format!(
            "{name}: {}\r\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    raw.push_str("\r\n");
    raw.push_str(&String::from_utf8_lossy(
        &body[..body.len().min(RAW_BODY_LIMIT)],
    ));
    lock(&state).raw.push(raw);

    let method = &parts.method;
    let headers = &parts.headers;
    match path.as_str() {
        "/authorize" if method == Method::GET => {
            let mut state = lock(&state);
            state.authorize_count += 1;
            match parse_form(parts.uri.query().unwrap_or("")) {
                Ok(query) => state.authorize(&query),
                Err(why) => html(StatusCode::BAD_REQUEST, &why),
            }
        }
        "/token" if method == Method::POST => {
            let form = parse_form(&String::from_utf8_lossy(&body));
            let grant_type = match &form {
                Ok(form) => form.get("grant_type").cloned().unwrap_or_default(),
                Err(_) => String::new(),
            };
            let delay = {
                let mut state = lock(&state);
                *state.token_requests.entry(grant_type).or_insert(0) += 1;
                state.token_delay
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let mut state = lock(&state);
            match form {
                Ok(form) => state.token(headers, &form),
                Err(_) if state.fail_5xx => state.token(headers, &HashMap::new()),
                Err(why) => {
                    oauth_error(OAuthError(StatusCode::BAD_REQUEST, "invalid_request", why))
                }
            }
        }
        "/revoke" if method == Method::POST => match parse_form(&String::from_utf8_lossy(&body)) {
            Ok(form) => lock(&state).revoke(headers, &form),
            Err(why) => oauth_error(OAuthError(StatusCode::BAD_REQUEST, "invalid_request", why)),
        },
        "/authorize" | "/token" | "/revoke" => {
            html(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        p if p == "/api" || p.starts_with("/api/") => lock(&state).api(method, p, headers),
        _ => html(StatusCode::NOT_FOUND, "not found"),
    }
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .header("pragma", "no-cache")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn oauth_error(OAuthError(status, error, description): OAuthError) -> Response<Full<Bytes>> {
    json(
        status,
        &serde_json::json!({ "error": error, "error_description": description }),
    )
}

fn html(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let page = format!(
        "<!doctype html><title>{0}</title><h1>{0}</h1><p>{1}</p>\n",
        status,
        message.replace('&', "&amp;").replace('<', "&lt;")
    );
    Response::builder()
        .status(status)
        .header("content-type", "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(page)))
        .unwrap()
}

/// A `302` to `redirect_uri` with `params` (and `state`, if any) added to its query.
fn redirect(
    redirect_uri: &str,
    params: &[(&str, Option<&str>)],
    state: Option<&str>,
) -> Response<Full<Bytes>> {
    let mut location = redirect_uri.to_string();
    let mut separator = if redirect_uri.contains('?') { '&' } else { '?' };
    for (name, value) in params.iter().copied().chain([("state", state)]) {
        if let Some(value) = value {
            location.push(separator);
            location.push_str(name);
            location.push('=');
            location.push_str(&form_encode(value));
            separator = '&';
        }
    }
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", location)
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

// ----- helpers --------------------------------------------------------------

/// `prefix` + 32 random bytes, base64url without padding.
fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .expect("random bytes");
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn sha256(data: &[u8]) -> Vec<u8> {
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
fn parse_form(input: &str) -> Result<HashMap<String, String>, String> {
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
