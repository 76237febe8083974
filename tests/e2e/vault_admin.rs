//! The vault's admin API, machine accounts and restarts, against the fake provider.

use super::vault::*;
use crate::support::oauth_provider::OAuthProvider;
use crate::support::{Airlock, TestCa};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_survive_a_restart() {
    let ca = TestCa::new();
    let provider = OAuthProvider::start(&ca, &[AUTH, API], CLIENT_ID, CLIENT_SECRET).await;
    let cfg = acme_config(&ca, provider.port(), "", "");
    let mut first = Airlock::start(&cfg);
    let w = World {
        ca,
        provider,
        airlock: Airlock::restart_in(&cfg, &first.data_dir),
    };
    first.stop();
    w.connect("tenant").await;
    let placeholder = w.airlock.var("ACME_TOKEN");
    let data_dir = w.airlock.data_dir.clone();
    let World {
        ca,
        provider,
        mut airlock,
    } = w;
    airlock.stop();
    let again = Airlock::restart_in(&cfg, &data_dir);
    assert_eq!(
        again.var("ACME_TOKEN"),
        placeholder,
        "the sandbox keeps its placeholder"
    );
    let w = World {
        ca,
        provider,
        airlock: again,
    };
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        w.provider.authorize_count(),
        1,
        "no new authorization was needed"
    );
    drop(first);
    drop(airlock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_account_uses_client_credentials() {
    let w = world("", "").await;
    let body = format!(
        r#"{{"name":"ci-bot","provider":"acme","client_id":"{CLIENT_ID}","client_secret":"{CLIENT_SECRET}","scopes":["read"]}}"#
    );
    let (status, created) = api(&w.airlock, "POST", "/v1/machine-accounts", Some(body), None).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["kind"], "client_credentials");
    assert_eq!(w.provider.token_requests("client_credentials"), 1);
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 200, "{body}");
    // A wrong secret is refused and stores nothing (a second account of
    // the provider needs a variable of its own, or it is refused first).
    let bad = format!(
        r#"{{"name":"bad","provider":"acme","client_id":"{CLIENT_ID}","client_secret":"wrong-secret","expose_as_env":"ACME_BAD_TOKEN"}}"#
    );
    let (status, answer) = api(&w.airlock, "POST", "/v1/machine-accounts", Some(bad), None).await;
    assert_eq!(status, 502, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("refused the client credentials of app"),
        "{answer}"
    );
    let (_, conns) = api(&w.airlock, "GET", "/v1/connections", None, None).await;
    assert_eq!(conns.as_array().unwrap().len(), 1);
    w.assert_no_secret_in(&[&answer.to_string(), &conns.to_string(), &w.airlock.logs()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_refuses_bad_input_and_changes_nothing() {
    let w = world("", "").await;
    let before = api(&w.airlock, "GET", "/v1/apps", None, None).await.1;
    // (method, path, body, token, expected status, text the error must hold)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<String>,
        Option<String>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "GET",
            "/v1/apps",
            None,
            Some("wrong-token".into()),
            401,
            "admin token",
        ),
        (
            "PUT",
            "/v1/apps",
            Some(r#"{"provider":"acme"}"#.into()),
            None,
            422,
            "client_id",
        ),
        (
            "PUT",
            "/v1/apps",
            Some(r#"{"provider":"nope","client_id":"x"}"#.into()),
            None,
            404,
            "nope",
        ),
        ("PUT", "/v1/apps", Some("{not json".into()), None, 400, ""),
        (
            "POST",
            "/v1/connections",
            Some(r#"{"provider":"acme","scope":"galaxy"}"#.into()),
            None,
            400,
            "scope",
        ),
        (
            "POST",
            "/v1/providers",
            Some(r#"{"name":"evil","token_url":"ftp://x","hosts":[],"env":"E"}"#.into()),
            None,
            400,
            "token_url",
        ),
        (
            "POST",
            "/v1/secrets",
            Some(r#"{"name":"X","value":"v","hosts":["*"]}"#.into()),
            None,
            400,
            "host",
        ),
        (
            "POST",
            "/v1/sandboxes",
            Some(r#"{"providers":["nope"]}"#.into()),
            None,
            404,
            "nope",
        ),
        (
            "PUT",
            "/v1/apps",
            Some(format!(
                r#"{{"provider":"acme","client_id":"{}"}}"#,
                "x".repeat(100_000)
            )),
            None,
            413,
            "larger than",
        ),
        (
            "DELETE",
            "/v1/connections/conn_missing",
            None,
            None,
            404,
            "not found",
        ),
    ];
    for (method, path, body, token, status, needle) in cases {
        let (got, answer) = api(&w.airlock, method, path, body, token).await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert!(
            answer.to_string().contains(needle),
            "{method} {path}: {answer}"
        );
    }
    assert_eq!(
        api(&w.airlock, "GET", "/v1/apps", None, None).await.1,
        before,
        "nothing changed"
    );
    let (_, providers) = api(&w.airlock, "GET", "/v1/providers", None, None).await;
    assert!(!providers.to_string().contains("evil"));
    let (_, secrets) = api(&w.airlock, "GET", "/v1/secrets", None, None).await;
    assert_eq!(secrets, serde_json::json!([]));
    let (_, sandboxes) = api(&w.airlock, "GET", "/v1/sandboxes", None, None).await;
    assert_eq!(
        sandboxes.as_array().unwrap().len(),
        1,
        "only the sidecar sandbox"
    );
    // The service API takes the service credential, not the admin one.
    let (status, _) = api(
        &w.airlock,
        "POST",
        "/v1/service/resolve",
        Some(r#"{"sandbox":"default","placeholder":"x"}"#.into()),
        None,
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_revokes_by_deleting_the_grant_is_told_on_disconnect() {
    let ca = TestCa::new();
    let provider = OAuthProvider::start(&ca, &[AUTH, API], CLIENT_ID, CLIENT_SECRET).await;
    let port = provider.port();
    // GitHub's way, as catalog data: no RFC 7009 endpoint.
    let cfg = acme_config(&ca, port, "", "").replace(
        &format!("revoke_url = \"https://{AUTH}:{port}/revoke\""),
        &format!(
            "revoke = {{ method = \"DELETE\", url = \"https://{AUTH}:{port}/applications/{{client_id}}/grant\", body = \"json\", token_field = \"access_token\", tokens = \"access\", client_auth = \"basic\" }}"
        ),
    );
    assert!(cfg.contains("/applications/{client_id}/grant"), "{cfg}");
    let w = World {
        ca,
        provider,
        airlock: Airlock::start(&cfg),
    };
    w.connect("tenant").await;
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 200, "{body}");
    let access = w.provider.issued_access_tokens()[0].clone();
    let (_, conns) = api(&w.airlock, "GET", "/v1/connections", None, None).await;
    let id = conns[0]["id"].as_str().unwrap().to_owned();
    let (status, result) = api(
        &w.airlock,
        "DELETE",
        &format!("/v1/connections/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(
        w.provider.revocations(),
        [format!("grant:{access}")],
        "one grant deletion with the access token, Basic client auth"
    );
    // The grant is gone at the provider: its token no longer works there.
    let resolve = format!("{API}:{port}:127.0.0.1");
    let ca_path = w.ca.cert_pem_path().display().to_string();
    let direct = crate::support::blocking(move || {
        crate::support::clients::curl(
            &[],
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cacert",
                &ca_path,
                "--resolve",
                &resolve,
                "-H",
                &format!("Authorization: Bearer {access}"),
                &format!("https://{API}:{port}/api/me"),
            ],
        )
    })
    .await;
    assert_eq!(direct.stdout, "401");
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("no connected account"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_injects_when_absent_serves_a_bare_fetch() {
    let ca = TestCa::new();
    let provider = OAuthProvider::start(&ca, &[AUTH, API], CLIENT_ID, CLIENT_SECRET).await;
    let cfg = acme_config(&ca, provider.port(), "", "").replace(
        "env = \"ACME_TOKEN\"",
        "env = \"ACME_TOKEN\"\ninject_when_absent = true",
    );
    let w = World {
        ca,
        provider,
        airlock: Airlock::start(&cfg),
    };
    w.connect("tenant").await;
    // No Authorization at all, as `oauth.fetch(url)` sends: the proxy adds the token.
    let env = w.airlock.env.clone();
    let bare = crate::support::blocking(move || {
        crate::support::clients::curl(
            &env,
            &[
                "-s",
                "-w",
                "\n%{http_code}",
                &format!("https://{API}/api/me"),
            ],
        )
    })
    .await;
    assert!(bare.stdout.ends_with("\n200"), "{}", bare.stdout);
    let real = w.provider.issued_access_tokens()[0].clone();
    assert!(
        w.provider
            .api_authorizations()
            .contains(&format!("Bearer {real}")),
        "the upstream got the real token"
    );
    // A credential of the sandbox's own is left alone.
    let env = w.airlock.env.clone();
    let own = crate::support::blocking(move || {
        crate::support::clients::curl(
            &env,
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "Authorization: Bearer mine",
                &format!("https://{API}/api/me"),
            ],
        )
    })
    .await;
    assert_eq!(own.stdout, "401", "its own token went as it was");
    // The sandbox's own binding policy opts out: a bare fetch stays bare,
    // while the placeholder still works.
    let said = super::cli::cli(
        &w.airlock,
        &[
            "sandbox",
            "rules",
            "default",
            "ACME_TOKEN",
            "--inject-when-absent",
            "off",
        ],
        &[],
    );
    assert_eq!(
        said,
        "ACME_TOKEN of sandbox default: the provider's rules; never injects its placeholder\n"
    );
    let (status, body) = bare_fetch(&w).await;
    assert_eq!(status, 401, "opted out: no token added: {body}");
    let (status, body) = w.sandbox_get(&w.airlock.env, "/api/me").await;
    assert_eq!(status, 200, "{body}");
    w.assert_no_secret_in(&[&bare.stdout, &bare.stderr, &body]);
}

/// curl with no credential at all, as `oauth.fetch(url)` sends: (status, body).
async fn bare_fetch(w: &World) -> (u16, String) {
    let env = w.airlock.env.clone();
    let out = crate::support::blocking(move || {
        crate::support::clients::curl(
            &env,
            &[
                "-s",
                "-w",
                "\n%{http_code}",
                &format!("https://{API}/api/me"),
            ],
        )
    })
    .await;
    let (body, status) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
    (
        status.trim().parse().unwrap_or(0),
        format!("{body}{}", out.stderr),
    )
}

/// A provider that does not inject: one sandbox binding opts in through its
/// own policy (the admin API) and a bare fetch gets the real token upstream;
/// opted out again, the same fetch stays bare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_opts_in_to_injecting_when_absent_over_its_provider() {
    let w = world("", "").await;
    w.connect("tenant").await;
    let (status, body) = bare_fetch(&w).await;
    assert_eq!(status, 401, "the provider does not inject: {body}");
    assert!(w.provider.api_authorizations().is_empty());
    let (status, set) = api(
        &w.airlock,
        "PUT",
        "/v1/sandboxes/default/rules/ACME_TOKEN",
        Some(r#"{"inject_when_absent":true}"#.into()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["rules"]["inject_when_absent"], true, "{set}");
    let (status, opted_in) = bare_fetch(&w).await;
    assert_eq!(status, 200, "{opted_in}");
    let real = w.provider.issued_access_tokens()[0].clone();
    assert_eq!(w.provider.api_authorizations(), [format!("Bearer {real}")]);
    let (_, sandboxes) = api(&w.airlock, "GET", "/v1/sandboxes", None, None).await;
    assert_eq!(
        sandboxes[0]["rules"]["ACME_TOKEN"]["inject_when_absent"], true,
        "{sandboxes}"
    );
    // Back to the provider's default with `{}`: bare again.
    let (status, _) = api(
        &w.airlock,
        "PUT",
        "/v1/sandboxes/default/rules/ACME_TOKEN",
        Some("{}".into()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, bare) = bare_fetch(&w).await;
    assert_eq!(status, 401, "{bare}");
    assert_eq!(
        w.provider.api_authorizations().len(),
        1,
        "nothing more sent with a token"
    );
    let logs = w.airlock.logs();
    w.assert_no_secret_in(&[&opted_in, &bare, &logs]);
}

/// `airlock provider duplicate` copies a catalog provider's setup under a
/// new name that works end to end; `airlock provider delete` (and
/// `DELETE /v1/providers/NAME`) refuses while something uses it, naming it,
/// and refuses catalog and config-file providers; `DELETE /v1/apps?provider=`
/// sits beside `PUT /v1/apps`. A refusal loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_are_duplicated_and_deleted_only_when_unused() {
    use super::cli::{cli, cli_refused};
    let w = world("", "").await;
    let a = &w.airlock;

    // The config file's provider and a built-in one stay.
    let (status, body) = api(a, "DELETE", "/v1/providers/acme", None, None).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("part of the catalog"),
        "{body}"
    );
    let refused = cli_refused(a, &["provider", "delete", "github"]);
    assert!(
        refused.contains("409") && refused.contains("part of the catalog"),
        "{refused}"
    );
    let (status, body) = api(a, "DELETE", "/v1/providers/nope", None, None).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("nope"), "{body}");

    // A copy of acme with its app: connectable at once.
    let copied = cli(
        a,
        &[
            "provider",
            "duplicate",
            "acme",
            "acme-work",
            "--display-name",
            "Acme (work)",
            "--with-apps",
        ],
        &[],
    );
    assert!(
        copied.contains(
            "provider acme-work copied from acme (sandbox variable ACME_WORK_TOKEN), with its apps"
        ),
        "{copied}"
    );
    let (_, providers) = api(a, "GET", "/v1/providers", None, None).await;
    let copy = providers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "acme-work")
        .unwrap_or_else(|| panic!("{providers}"));
    let acme = providers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "acme")
        .unwrap();
    assert_eq!(copy["token_url"], acme["token_url"]);
    assert_eq!(copy["hosts"], acme["hosts"]);
    assert_eq!(copy["env"], "ACME_WORK_TOKEN");
    assert_eq!(copy["display_name"], "Acme (work)");
    let apps = cli(a, &["app", "list"], &[]);
    assert!(apps.contains("default/acme-work"), "{apps}");
    let url = cli(a, &["connect", "acme-work"], &[]);
    let page = w.follow(url.trim()).await;
    assert!(page.contains("Connected"), "{page}");
    let (_, conns) = api(a, "GET", "/v1/connections", None, None).await;
    let conn = conns
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == "acme-work")
        .unwrap_or_else(|| panic!("{conns}"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, sandbox) = api(
        a,
        "POST",
        "/v1/sandboxes",
        Some(r#"{"providers":["acme-work"]}"#.into()),
        None,
    )
    .await;
    assert_eq!(status, 201, "{sandbox}");
    assert!(sandbox["env"]["ACME_WORK_TOKEN"]
        .as_str()
        .unwrap()
        .starts_with("miosa-tok-"));
    let sandbox_id = sandbox["id"].as_str().unwrap().to_owned();

    // Bad copies: a taken name, an unknown source, a bad name.
    let taken = cli_refused(a, &["provider", "duplicate", "github", "acme-work"]);
    assert!(
        taken.contains("409") && taken.contains("\"acme-work\" exists already"),
        "{taken}"
    );
    let (status, body) = api(
        a,
        "POST",
        "/v1/providers/nope/duplicate",
        Some(r#"{"name":"nope-2"}"#.into()),
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api(
        a,
        "POST",
        "/v1/providers/acme/duplicate",
        Some(r#"{"name":"Not Valid"}"#.into()),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("provider name"),
        "{body}"
    );

    // In use: refused, naming each user; nothing is lost.
    let refused = cli_refused(a, &["provider", "delete", "acme-work"]);
    for said in [
        "409",
        "provider \"acme-work\" is still used by",
        conn.as_str(),
        "1 app(s): default/default",
        sandbox_id.as_str(),
    ] {
        assert!(refused.contains(said), "{said:?} missing: {refused}");
    }
    assert!(cli(a, &["provider", "list"], &[]).contains("acme-work"));
    let (status, _) = api(a, "GET", &format!("/v1/connections/{conn}"), None, None).await;
    assert_eq!(status, 200);

    // The app goes through DELETE /v1/apps?provider= (after its connection).
    let (status, body) = api(a, "DELETE", "/v1/apps", None, None).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("?provider=NAME"),
        "{body}"
    );
    let (status, body) = api(a, "DELETE", "/v1/apps?provider=acme-work", None, None).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains(&conn), "{body}");
    cli(a, &["disconnect", &conn], &[]);
    let (status, body) = api(a, "DELETE", "/v1/apps?provider=acme-work", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted"]["provider"], "acme-work");
    cli(a, &["sandbox", "delete", &sandbox_id], &[]);

    // Unused now: deleted, and a second delete says it is not there.
    let deleted = cli(a, &["provider", "delete", "acme-work"], &[]);
    assert_eq!(deleted, "provider acme-work deleted\n");
    assert!(!cli(a, &["provider", "list"], &[]).contains("acme-work"));
    let again = cli_refused(a, &["provider", "delete", "acme-work"]);
    assert!(
        again.contains("404") && again.contains("not found"),
        "{again}"
    );
    // The source is untouched, and still works.
    let (status, body) = api(a, "DELETE", "/v1/providers/acme", None, None).await;
    assert_eq!(status, 409, "{body}");
    w.connect("tenant").await;
    let (status, body) = w.sandbox_get(&a.env, "/api/me").await;
    assert_eq!(status, 200, "{body}");
}
