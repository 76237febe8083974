//! Against the certified OpenID provider: machine accounts, disconnect and revocation, and recovery after an outage.

use super::oidc::*;
use crate::support::oidc::{
    grants, tokens_of, CLIENT_ID, CLIENT_SECRET, MACHINE_ID, MACHINE_SECRET,
};
use serde_json::Value;
use std::time::Duration;

/// `airlock disconnect` revokes at the provider (RFC 7009): introspection
/// then says inactive, and the sandbox is refused.
#[test]
fn disconnect_revokes_at_the_provider() {
    let Some(w) = world("") else { return };
    w.connect();
    let (status, body) = w.sandbox_get("/api/me");
    assert_eq!(status, 200, "{body}");
    let access = w.oidc.issued("AccessToken");
    let refresh = w.oidc.issued("RefreshToken");
    assert_eq!(
        w.oidc.introspect(&refresh[0], CLIENT_ID, CLIENT_SECRET)["active"],
        true
    );
    let (ok, stdout, stderr) = w.disconnect();
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("refresh_token"), "{stdout}");

    let state = w.oidc.state();
    let revocations: Vec<&Value> = state["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["route"] == "revocation")
        .collect();
    assert!(!revocations.is_empty(), "{}", summary(&state));
    assert!(
        revocations
            .iter()
            .all(|r| r["status"] == 200 && r["client_id"] == CLIENT_ID),
        "{}",
        summary(&state)
    );
    for token in [&access[0], &refresh[0]] {
        let answer = w.oidc.introspect(token, CLIENT_ID, CLIENT_SECRET);
        assert_eq!(answer["active"], false, "revoked: {answer}");
    }
    let (status, refused) = w.sandbox_get("/api/me");
    assert_eq!(status, 401, "{refused}");
    assert!(refused.contains("no connected account"), "{refused}");
    assert_eq!(
        api_calls(&w.oidc.state()).len(),
        1,
        "nothing reached the API"
    );
    w.assert_sealed(&[&body, &refused, &stdout, &stderr]);
}

/// A machine account: client credentials at the provider's token endpoint,
/// a 60 s opaque token the API accepts, a new grant (and a replay) when the
/// provider drops it; a wrong secret is refused and stores nothing.
#[test]
fn machine_account_uses_client_credentials() {
    let Some(w) = world("refresh_interval_secs = 3600") else {
        return;
    };
    let body = format!(
        r#"{{"name":"ci-bot","provider":"oidc","client_id":"{MACHINE_ID}","client_secret":"{MACHINE_SECRET}","scopes":["api"]}}"#
    );
    let (status, created) = w.admin("POST", "/v1/machine-accounts", Some(&body));
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["kind"], "client_credentials");
    let (status, first) = w.sandbox_get("/api/me");
    assert_eq!(status, 200, "{first}");
    assert!(first.contains(MACHINE_ID), "{first}");

    assert_eq!(w.oidc.expire_access_tokens(), 1);
    let (status, again) = w.sandbox_get("/api/me");
    assert_eq!(status, 200, "{again}");
    let state = w.oidc.state();
    let cc = grants(&state, "client_credentials");
    assert_eq!(cc.len(), 2, "{}", summary(&state));
    assert!(cc
        .iter()
        .all(|r| r["status"] == 200 && r["client_id"] == MACHINE_ID && r["scope"] == "api"));
    let issued = tokens_of(&state, "ClientCredentials");
    assert_eq!(issued.len(), 2);
    let calls = api_calls(&state);
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[2]["kind"], "ClientCredentials");
    assert_eq!(
        token_indexes(&state, "ClientCredentials"),
        [Some(0), Some(0), Some(1)],
        "the first token, the dropped one, then the new grant's"
    );

    // Its own variable: a second account of the provider without one is
    // refused before the provider is asked.
    let bad = format!(
        r#"{{"name":"bad","provider":"oidc","client_id":"{MACHINE_ID}","client_secret":"wrong-secret","expose_as_env":"OIDC_BAD_TOKEN"}}"#
    );
    let (status, answer) = w.admin("POST", "/v1/machine-accounts", Some(&bad));
    // The provider refused the app's credentials: named, nothing stored.
    assert_eq!(status, 502, "{answer}");
    assert!(
        answer
            .to_string()
            .contains("refused the client credentials"),
        "{answer}"
    );
    let (_, conns) = w.admin("GET", "/v1/connections", None);
    assert_eq!(conns.as_array().unwrap().len(), 1, "{conns}");
    w.assert_sealed(&[&first, &again, &answer.to_string(), &conns.to_string()]);
}

/// Revocation that fails (the provider answers 503) is not reported as a
/// successful disconnect: the tokens are still live at the provider.
#[test]
fn disconnect_says_so_when_revocation_fails() {
    let Some(w) = world("") else { return };
    w.connect();
    let refresh = w.oidc.issued("RefreshToken");
    w.oidc.fail("/token/revocation", Some(503));
    let (ok, stdout, stderr) = w.disconnect();
    let said = format!("{stdout}{stderr}");
    assert!(
        w.oidc.state()["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["route"] == "failed"),
        "revocation was attempted"
    );
    assert_eq!(
        w.oidc.introspect(&refresh[0], CLIENT_ID, CLIENT_SECRET)["active"],
        true,
        "the refresh token is still live"
    );
    assert!(!ok, "disconnect claimed success: {said}");
    assert!(
        said.contains("503") || said.contains("temporarily_unavailable"),
        "the provider's reason: {said}"
    );
    w.assert_sealed(&[&said]);
}

/// A token endpoint outage ends for airlock when it ends at the provider:
/// callers polling during the back-off do not extend it, and the first call
/// after the window refreshes and gets through.
#[test]
fn a_recovered_provider_is_used_on_the_next_call() {
    let Some(w) = world("refresh_interval_secs = 3600\nrefresh_backoff_secs = 5") else {
        return;
    };
    w.connect();
    let (status, body) = w.sandbox_get("/api/me");
    assert_eq!(status, 200, "{body}");
    w.oidc.fail("/token", Some(503));
    w.oidc.expire_access_tokens();
    let mut outputs = vec![body];
    for _ in 0..3 {
        let (status, body) = w.sandbox_get("/api/me");
        assert_ne!(status, 200, "{body}");
        outputs.push(body);
        std::thread::sleep(Duration::from_millis(500));
    }
    w.oidc.fail("/token", None);
    // Poll every second, as a sandbox would; bounded.
    let mut got_through = false;
    for _ in 0..20 {
        let (status, body) = w.sandbox_get("/api/me");
        outputs.push(body);
        if status == 200 {
            got_through = true;
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let state = w.oidc.state();
    assert!(
        got_through,
        "still refused 20 s after the provider recovered; {}",
        summary(&state)
    );
    assert_eq!(refreshes(&state), 1, "{}", summary(&state));
    let refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    w.assert_sealed(&refs);
}
