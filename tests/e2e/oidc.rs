//! The vault against a real, certified OpenID provider (`oidc-provider` from
//! npm, tests/node/oidc/server.mjs) over TLS on 127.0.0.1: connect with PKCE,
//! introspection-checked API calls, refresh ahead of expiry for 60 s tokens,
//! rotation with reuse detection, replay, revocation, client credentials.
//!
//! Each test skips (prints SKIPPED) when node or the npm module is missing,
//! and fails instead under `CI=true`.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::clients::curl;
use crate::support::oidc::{
    grants, tokens_of, OidcProvider, API_HOST, AUTH_HOST, CLIENT_ID, CLIENT_SECRET,
};
use crate::support::{airlock, assert_not_leaked, Airlock, TestCa};

pub(crate) fn config(oidc: &OidcProvider, vault_extra: &str) -> String {
    let port = oidc.port();
    format!(
        r#"
[proxy]
upstream_ca = [{ca:?}]

[resolve]
"{AUTH_HOST}" = "127.0.0.1:{port}"
"{API_HOST}" = "127.0.0.1:{port}"

[vault]
{vault_extra}

[[provider]]
name = "oidc"
display_name = "OIDC test provider"
authorize_url = "https://{AUTH_HOST}:{port}/auth"
token_url = "https://{AUTH_HOST}:{port}/token"
revoke_url = "https://{AUTH_HOST}:{port}/token/revocation"
scopes = ["offline_access", "api"]
hosts = ["{API_HOST}"]
inject = "bearer"
env = "OIDC_TOKEN"
# OpenID Connect issues a refresh token for offline_access only with prompt=consent.
authorize_params = {{ prompt = "consent" }}

[[app]]
provider = "oidc"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
"#,
        ca = oidc.ca_path().display().to_string(),
    )
}

pub(crate) struct World {
    pub(crate) oidc: OidcProvider,
    pub(crate) airlock: Airlock,
    pub(crate) _ca: TestCa,
}

/// The provider, then airlock pointing at it, then the vault's callback
/// registered at the provider. `None` when the test must skip.
pub(crate) fn world(vault_extra: &str) -> Option<World> {
    let ca = TestCa::new();
    let oidc = OidcProvider::start(&ca)?;
    let airlock = Airlock::start(&config(&oidc, vault_extra));
    oidc.set_redirect_uri(&format!("{}/oauth/callback", airlock.vault_url()));
    Some(World {
        oidc,
        airlock,
        _ca: ca,
    })
}

pub(crate) fn epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl World {
    /// The vault's admin API with curl: (status, JSON body).
    pub(crate) fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let url = format!("{}{path}", self.airlock.vault_url());
        let auth = format!("Authorization: Bearer {}", self.airlock.admin_token());
        let mut args = vec!["-X", method, "-H", &auth, "-w", "\n%{http_code}", &url];
        if let Some(b) = body {
            args.extend(["-H", "content-type: application/json", "--data-binary", b]);
        }
        let out = curl(&[], &args);
        let (body, status) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
        (
            status.trim().parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
        )
    }

    /// Starts a connection and completes it like a browser with a cookie
    /// jar: the provider logs in and consents on its own, then redirects to
    /// the vault's callback. Returns the callback page.
    pub(crate) fn connect(&self) -> String {
        let (status, started) = self.admin(
            "POST",
            "/v1/connections",
            Some(r#"{"provider":"oidc","scope":"tenant"}"#),
        );
        assert_eq!(status, 201, "{started}");
        let url = started["authorization_url"]
            .as_str()
            .expect("authorization_url");
        assert!(
            url.contains("code_challenge_method=S256") && url.contains("code_challenge="),
            "{url}"
        );
        let jar = tempfile::NamedTempFile::new().unwrap();
        let jar = jar.path().display().to_string();
        let mut args = self.oidc.curl_args();
        args.extend(
            ["-L", "--max-redirs", "10", "-c", &jar, "-b", &jar, url]
                .iter()
                .map(|s| s.to_string()),
        );
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = curl(&[], &refs);
        assert!(out.success(), "authorization failed: {}", out.stderr);
        out.stdout
    }

    /// `airlock disconnect ID` for the first connection: (success, stdout, stderr).
    pub(crate) fn disconnect(&self) -> (bool, String, String) {
        let id = self.connection()["id"].as_str().unwrap().to_owned();
        let vault_url = self.airlock.vault_url();
        let out = Command::new(airlock::binary())
            .args(["disconnect", &id, "--config"])
            .arg(&self.airlock.config_path)
            .arg("--data-dir")
            .arg(&self.airlock.data_dir)
            .args(["--vault-url", &vault_url])
            .env_remove("AIRLOCK_ADMIN_TOKEN")
            .output()
            .expect("run airlock disconnect");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub(crate) fn connection(&self) -> Value {
        let (status, conns) = self.admin("GET", "/v1/connections", None);
        assert_eq!(status, 200, "{conns}");
        conns[0].clone()
    }

    /// curl through the proxy with the placeholder, as the sandbox:
    /// (status, body and curl's stderr).
    pub(crate) fn sandbox_get(&self, path: &str) -> (u16, String) {
        let auth = format!("Authorization: Bearer {}", self.airlock.var("OIDC_TOKEN"));
        let url = format!("https://{API_HOST}{path}");
        let out = curl(
            &self.airlock.env,
            &["-w", "\n%{http_code}", "-H", &auth, &url],
        );
        let (body, status) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
        (
            status.trim().parse().unwrap_or(0),
            format!("{body}{}", out.stderr),
        )
    }

    /// No real token or client secret in any of `texts`, the sandbox's
    /// environment, or airlock's log; the placeholder never reached the API.
    pub(crate) fn assert_sealed(&self, texts: &[&str]) {
        let env: String = self
            .airlock
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        let logs = self.airlock.logs();
        let mut all: Vec<&str> = texts.to_vec();
        all.extend([env.as_str(), logs.as_str()]);
        for secret in self.oidc.secrets() {
            assert_not_leaked(&secret, &all);
        }
        let placeholder = self.airlock.var("OIDC_TOKEN");
        assert!(placeholder.starts_with("miosa-tok-"), "a placeholder");
        let state = self.oidc.state();
        assert!(
            !state.to_string().contains(&placeholder),
            "the placeholder reached the provider or the API"
        );
    }

    /// Waits (bounded) until `done(state)` holds; returns that state.
    pub(crate) fn wait_for(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let state = self.oidc.state();
            if done(&state) {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not happen within {within:?}; provider requests: {}",
                summary(&state)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The provider's request log without secrets, for failure messages.
pub(crate) fn summary(state: &Value) -> String {
    state["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r["route"],
                r["grant_type"].as_str().unwrap_or(""),
                r["status"],
                r["error_detail"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub(crate) fn api_calls(state: &Value) -> Vec<Value> {
    state["api"].as_array().unwrap().clone()
}

/// For each API call, which token of `kind` (by issue order) it carried:
/// failure messages show these, never the tokens.
pub(crate) fn token_indexes(state: &Value, kind: &str) -> Vec<Option<usize>> {
    let access = tokens_of(state, kind);
    api_calls(state)
        .iter()
        .map(|c| {
            access.iter().position(|t| {
                c["authorization"] == format!("Bearer {}", t["value"].as_str().unwrap())
            })
        })
        .collect()
}

/// Successful refresh grants so far.
pub(crate) fn refreshes(state: &Value) -> usize {
    grants(state, "refresh_token")
        .iter()
        .filter(|r| r["status"] == 200)
        .count()
}

#[test]
fn connect_with_pkce_then_the_introspecting_api_accepts_the_placeholder() {
    let Some(w) = world("") else { return };
    let page = w.connect();
    assert!(page.contains("Connected"), "{page}");
    let state = w.oidc.state();
    // PKCE with S256 on the authorization request, a verifier at the token
    // endpoint, which the provider checked (it requires PKCE).
    let authorization = state["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "authorization")
        .expect("an authorization request");
    assert_eq!(authorization["code_challenge_method"], "S256");
    assert_eq!(authorization["has_code_challenge"], true);
    let code = grants(&state, "authorization_code");
    assert_eq!(code.len(), 1, "{}", summary(&state));
    assert_eq!(code[0]["status"], 200);
    assert_eq!(code[0]["has_code_verifier"], true);
    assert_eq!(code[0]["client_id"], CLIENT_ID);
    assert_eq!(
        tokens_of(&state, "RefreshToken").len(),
        1,
        "offline_access gave a refresh token"
    );
    let conn = w.connection();
    assert_eq!(conn["status"], "connected", "{conn}");

    let (status, body) = w.sandbox_get("/api/me");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""sub":"alice""#), "{body}");
    let (status, body2) = w.sandbox_get("/api/items?page=2");
    assert_eq!(status, 200, "{body2}");

    let state = w.oidc.state();
    let access = w.oidc.issued("AccessToken");
    assert_eq!(access.len(), 1);
    let calls = api_calls(&state);
    assert_eq!(calls.len(), 2);
    assert_eq!(
        token_indexes(&state, "AccessToken"),
        [Some(0), Some(0)],
        "the API saw the real token"
    );
    for call in &calls {
        assert_eq!(call["active"], true, "the provider's lookup accepted it");
    }
    let introspected = w.oidc.introspect(&access[0], CLIENT_ID, CLIENT_SECRET);
    assert_eq!(introspected["active"], true, "{introspected}");
    assert_eq!(introspected["client_id"], CLIENT_ID);
    w.assert_sealed(&[&page, &body, &body2]);
}

/// With refresh_window_secs = 50 a 60 s token is due 10 s after it was
/// issued; the background refresher (every 1 s) renews it with no sandbox
/// request involved, long before it expires.
#[test]
fn background_refresher_renews_a_60s_token_ahead_of_expiry() {
    let Some(w) =
        world("refresh_window_secs = 50\nrefresh_fraction = 1.0\nrefresh_interval_secs = 1")
    else {
        return;
    };
    w.connect();
    let first = w.oidc.state();
    let first_exp = tokens_of(&first, "AccessToken")[0]["exp"].as_u64().unwrap();
    assert!(first_exp.abs_diff(epoch() + 60) <= 3, "a 60 s access token");
    let stored_exp = w.connection()["expires_at"].clone();
    let state = w.wait_for(Duration::from_secs(40), "a background refresh", |s| {
        refreshes(s) >= 1
    });
    assert!(
        epoch() < first_exp,
        "refreshed before the old token expired"
    );
    assert!(api_calls(&state).is_empty(), "no sandbox request caused it");
    let access = tokens_of(&state, "AccessToken");
    assert_eq!(access.len(), 2, "{}", summary(&state));
    // The provider answered; airlock stores the new token just after.
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.connection()["expires_at"] == stored_exp {
        assert!(Instant::now() < deadline, "the new token was never stored");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = w.sandbox_get("/api/me");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        token_indexes(&w.oidc.state(), "AccessToken"),
        [Some(1)],
        "the sandbox's first call already used the renewed token"
    );
    let logs = w.airlock.wait_for_log("token refreshed");
    assert!(logs.contains("token refreshed"), "{logs}");
    w.assert_sealed(&[&body]);
}

/// The refresher's look-ahead: with refresh_window_secs = 5 and a pass every
/// 40 s, no pass falls inside the last 5 s of the token's life, so only
/// looking ahead to the next pass refreshes it before it expires.
#[test]
fn background_refresher_looks_ahead_to_its_next_pass() {
    let Some(w) =
        world("refresh_window_secs = 5\nrefresh_fraction = 1.0\nrefresh_interval_secs = 40")
    else {
        return;
    };
    w.connect();
    let first = w.oidc.state();
    let first_exp = tokens_of(&first, "AccessToken")[0]["exp"].as_u64().unwrap();
    // Bounded: the old token's expiry plus a little.
    let within = Duration::from_secs(first_exp.saturating_sub(epoch()) + 5);
    let state = w.wait_for(within, "a refresh before expiry", |s| refreshes(s) >= 1);
    let refreshed_at = grants(&state, "refresh_token")[0]["at"].as_u64().unwrap() / 1000;
    assert!(
        refreshed_at < first_exp,
        "refreshed {}s after the old token expired",
        refreshed_at.saturating_sub(first_exp)
    );
    assert!(api_calls(&state).is_empty(), "no sandbox request caused it");
}

/// Every refresh rotates the refresh token and airlock always presents the
/// newest one (the provider would revoke the grant on reuse). Presenting an
/// old one, as a thief would, trips reuse detection: the grant is revoked
/// and airlock says the account must be reconnected; reconnecting fixes it.
#[test]
fn rotation_keeps_working_and_reuse_revokes_the_grant() {
    let Some(w) =
        world("refresh_window_secs = 50\nrefresh_fraction = 1.0\nrefresh_interval_secs = 1")
    else {
        return;
    };
    w.connect();
    let mut bodies = Vec::new();
    for round in 1..=2 {
        w.wait_for(
            Duration::from_secs(30),
            &format!("background refresh #{round}"),
            |s| refreshes(s) >= round,
        );
        let (status, body) = w.sandbox_get("/api/me");
        assert_eq!(status, 200, "after rotation {round}: {body}");
        bodies.push(body);
    }
    let state = w.oidc.state();
    let refresh_grants = grants(&state, "refresh_token");
    assert!(
        refresh_grants.iter().all(|r| r["status"] == 200),
        "airlock never presented a used refresh token: {}",
        summary(&state)
    );
    let rotated: Vec<&str> = tokens_of(&state, "RefreshToken")
        .iter()
        .map(|t| t["value"].as_str().unwrap())
        .collect();
    assert_eq!(rotated.len(), refresh_grants.len() + 1, "one per grant");
    let distinct: std::collections::BTreeSet<_> = rotated.iter().collect();
    assert_eq!(distinct.len(), rotated.len(), "each refresh rotated it");
    // Every call carried a live token (airlock may keep using the previous
    // one until its cache turns over: it is still valid).
    let calls = api_calls(&state);
    assert!(
        calls.iter().all(|c| c["active"] == true),
        "API calls used tokens #{:?}; {}",
        token_indexes(&state, "AccessToken"),
        summary(&state)
    );

    // Reuse of the first (rotated-away) refresh token.
    let (status, answer) = w.oidc.token_request(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", rotated[0]),
    ]);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "invalid_grant");
    let state = w.oidc.state();
    let last = (*grants(&state, "refresh_token").last().unwrap()).clone();
    assert_eq!(last["error_detail"], "refresh token already used");
    let access = tokens_of(&state, "AccessToken");
    let newest_access = access.last().unwrap()["value"].as_str().unwrap();
    for token in [newest_access, rotated.last().unwrap()] {
        assert_eq!(
            w.oidc.introspect(token, CLIENT_ID, CLIENT_SECRET)["active"],
            false,
            "reuse detection revoked the grant's tokens"
        );
    }

    // The sandbox is told the account must be reconnected; never a 200 with a dead grant.
    let (status, body) = w.sandbox_get("/api/me");
    assert_eq!(status, 401, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.connection()["status"] != "reconnect_needed" {
        assert!(
            Instant::now() < deadline,
            "still {}",
            w.connection()["status"]
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let page = w.connect();
    assert!(page.contains("Connected"), "{page}");
    let (status, body2) = w.sandbox_get("/api/me");
    assert_eq!(status, 200, "{body2}");
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    w.assert_sealed(&[&refs.join("\n"), &body, &body2, &page]);
}

/// The provider drops the access token before its expiry; the API answers
/// 401; airlock refreshes and replays, and the sandbox sees only the 200.
#[test]
fn expired_at_the_provider_is_refreshed_and_replayed() {
    let Some(w) = world("refresh_interval_secs = 3600") else {
        return;
    };
    w.connect();
    let (status, body) = w.sandbox_get("/api/me");
    assert_eq!(status, 200, "{body}");
    assert_eq!(w.oidc.expire_access_tokens(), 1);

    let (status, replayed) = w.sandbox_get("/api/me");
    assert_eq!(
        status, 200,
        "the sandbox sees the replayed answer: {replayed}"
    );
    let state = w.oidc.state();
    let access = tokens_of(&state, "AccessToken");
    assert_eq!(access.len(), 2, "{}", summary(&state));
    assert_eq!(refreshes(&state), 1, "{}", summary(&state));
    let seen: Vec<(bool, Option<usize>)> = api_calls(&state)
        .iter()
        .map(|c| c["active"].as_bool().unwrap())
        .zip(token_indexes(&state, "AccessToken"))
        .collect();
    assert_eq!(
        seen,
        [(true, Some(0)), (false, Some(0)), (true, Some(1))],
        "first call, the refused one, then the replay with the new token"
    );
    assert!(!replayed.contains("invalid_token"), "{replayed}");
    w.assert_sealed(&[&body, &replayed]);
}

/// A sandbox that puts the placeholder where the API does not look (here a
/// header it ignores) provokes 401s; none of them is evidence that the token
/// expired, so at most one refresh grant may follow (issue 13: evidence
/// before a refresh, a per-connection refresh budget), and the account stays
/// connected.
#[test]
fn provoked_401s_cause_at_most_one_refresh_grant() {
    let Some(w) = world("refresh_interval_secs = 3600") else {
        return;
    };
    w.connect();
    let header = format!("X-Anything: {}", w.airlock.var("OIDC_TOKEN"));
    let url = format!("https://{API_HOST}/api/me");
    let mut outputs = Vec::new();
    for _ in 0..20 {
        let out = curl(
            &w.airlock.env,
            &["-w", "\n%{http_code}", "-H", &header, &url],
        );
        assert!(out.stdout.ends_with("401"), "{}{}", out.stdout, out.stderr);
        outputs.push(format!("{}{}", out.stdout, out.stderr));
    }
    let state = w.oidc.state();
    let refresh_grants = grants(&state, "refresh_token");
    assert!(
        refresh_grants.len() <= 1,
        "{} refresh grants and {} API calls for 20 provoked 401s",
        refresh_grants.len(),
        api_calls(&state).len()
    );
    assert_eq!(w.connection()["status"], "connected");
    let (status, body) = w.sandbox_get("/api/me");
    assert_eq!(status, 200, "{body}");
    outputs.push(body);
    let refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    w.assert_sealed(&refs);
}
