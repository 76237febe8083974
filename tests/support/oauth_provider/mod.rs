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

mod form;
mod grants;
mod http;

use form::*;
use http::*;

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

    /// While on, `expires_in` is sent as a string (`"3600"`), as some
    /// providers do.
    pub fn set_expires_in_as_string(&self, on: bool) {
        self.lock().expires_in_string = on;
    }

    /// While on, a successful refresh rotates the refresh token as usual but
    /// answers `{"access_token": 42, "refresh_token": "<new>"}`: JSON a
    /// client cannot use, carrying a refresh token it must not lose.
    pub fn set_garbage_refresh_answers(&self, on: bool) {
        self.lock().garbage_refresh = on;
    }

    /// While off, code grants issue no refresh token (GitHub OAuth apps,
    /// Notion, Slack bot tokens). On by default.
    pub fn set_issue_refresh_tokens(&self, on: bool) {
        self.lock().no_refresh_tokens = !on;
    }

    /// A refresh presenting `refresh_token` waits `delay` before it is
    /// looked at (other `/token` requests do not).
    pub fn set_refresh_delay_for(&self, refresh_token: &str, delay: Duration) {
        self.lock().refresh_delay_for = Some((refresh_token.to_string(), delay));
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

    /// How `/revoke` answers from now on (after checking the client).
    pub fn set_revoke_mode(&self, mode: RevokeMode) {
        self.lock().revoke_mode = mode;
    }

    /// Every `/revoke` request that arrived, whatever its outcome.
    pub fn revoke_requests(&self) -> usize {
        self.lock().revoke_requests
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
    revoke_mode: RevokeMode,
    no_refresh_tokens: bool,
    revoke_requests: usize,
    expires_in_string: bool,
    garbage_refresh: bool,
    refresh_delay_for: Option<(String, Duration)>,

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

/// How `/revoke` behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeMode {
    /// RFC 7009: 200, the token is revoked.
    Normal,
    /// 500 with `{"error":"server_error","error_description":"revocation backend down"}`.
    ServerError,
    /// Never answers (holds the request for 120 s).
    Hang,
}

/// An OAuth error response: status, `error` code and description.
struct OAuthError(StatusCode, &'static str, String);
