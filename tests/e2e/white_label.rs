//! White-label end to end: the real `airlock up`, the fake OAuth provider,
//! curl as the browser, and a tiny platform server on loopback that owns a
//! tenant's callback origin and finishes flows with
//! `POST /v1/connect/complete`. Branding is read from the pages themselves.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::vault::{api, world, World, AUTH, CLIENT_ID, CLIENT_SECRET};
use crate::support::clients::{curl, node};
use crate::support::{blocking, NODE_MODULES};

/// A 1x1 PNG, as a data: logo.
const LOGO: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg==";

/// The platform: answers every request on its own origin; a request to
/// `/oauth/callback` is passed on to the vault's complete API (as a
/// platform's own handler would), and the vault's answer is shown to the
/// browser. Every request line is recorded.
struct Platform {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Platform {
    fn start(vault_url: String, admin_token: String, tenant: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            // Bounded: a test makes a handful of requests.
            for stream in listener.incoming().take(32) {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // Headers up to the blank line; a GET carries no body.
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let target = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                log.lock().unwrap().push(target.clone());
                let body = if let Some(query) = target.strip_prefix("/oauth/callback?") {
                    let params: Vec<(String, String)> = url_pairs(query);
                    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                    let mut request = json!({ "state": get("state"), "tenant": tenant });
                    for k in ["code", "error", "error_description"] {
                        if let Some(v) = get(k) {
                            request[k] = json!(v);
                        }
                    }
                    let auth = format!("Authorization: Bearer {admin_token}");
                    let url = format!("{vault_url}/v1/connect/complete");
                    let out = curl(
                        &[],
                        &[
                            "-s",
                            "-X",
                            "POST",
                            "-H",
                            &auth,
                            "-H",
                            "content-type: application/json",
                            "--data-binary",
                            &request.to_string(),
                            "-w",
                            "\n%{http_code}",
                            &url,
                        ],
                    );
                    out.stdout
                } else {
                    "platform page".to_owned()
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { port, seen }
    }

    fn callback(&self) -> String {
        format!("http://127.0.0.1:{}/oauth/callback", self.port)
    }
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn query_of(url: &str, key: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    url_pairs(query)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

impl World {
    async fn put_json(&self, path: &str, body: Value) -> (u16, Value) {
        api(&self.airlock, "PUT", path, Some(body.to_string()), None).await
    }

    async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        api(&self.airlock, "POST", path, Some(body.to_string()), None).await
    }

    /// One request without following redirects: (status, headers, body).
    async fn raw(&self, url: &str) -> (u16, String, String) {
        let resolve = format!("{AUTH}:{}:127.0.0.1", self.provider.port());
        let ca = self.ca.cert_pem_path().display().to_string();
        let url = url.to_owned();
        let out = blocking(move || {
            curl(
                &[],
                &[
                    "-s",
                    "-D",
                    "/dev/stderr",
                    "--cacert",
                    &ca,
                    "--resolve",
                    &resolve,
                    "-w",
                    "\n%{http_code}",
                    &url,
                ],
            )
        })
        .await;
        let (body, status) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
        (
            status.trim().parse().unwrap_or(0),
            out.stderr,
            body.to_owned(),
        )
    }
}

fn location(headers: &str) -> String {
    headers
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("location").then_some(value)
        })
        .map(|l| l.trim().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_s_own_app_and_callback_origin_and_a_platform_that_calls_complete() {
    let w = world("", "").await;
    // The provider knows one client: tenant acme-co's. The default
    // tenant's app is another, so a fallback to it would be refused there.
    let (status, body) = w
        .put_json(
            "/v1/apps",
            json!({ "tenant": "acme-co", "provider": "acme",
                    "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = w
        .put_json(
            "/v1/apps",
            json!({ "provider": "acme", "client_id": "default-tenant-client" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let platform = Platform::start(w.airlock.vault_url(), w.airlock.admin_token(), "acme-co");
    let (status, tenant) = w
        .put_json(
            "/v1/tenants/acme-co",
            json!({ "redirect_uri": platform.callback(), "display_name": "Acme Co" }),
        )
        .await;
    assert_eq!(status, 200, "{tenant}");
    assert_eq!(tenant["effective_redirect_uri"], json!(platform.callback()));

    let (status, started) = w
        .post_json(
            "/v1/connect-flows",
            json!({ "provider": "acme", "tenant": "acme-co" }),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["redirect_uri"], json!(platform.callback()));
    let auth_url = started["authorization_url"].as_str().unwrap().to_owned();
    assert_eq!(query_of(&auth_url, "client_id").as_deref(), Some(CLIENT_ID));
    assert_eq!(
        query_of(&auth_url, "redirect_uri"),
        Some(platform.callback()),
        "the provider's consent names the platform's origin"
    );

    // The browser: consent at the provider, redirected to the platform,
    // whose handler completes the flow with the vault.
    let page = w.follow(&auth_url).await;
    let (answer, status) = page.rsplit_once('\n').expect("the vault's answer");
    assert_eq!(status.trim(), "200", "{page}");
    let done: Value = serde_json::from_str(answer).unwrap();
    assert_eq!(done["connection"]["tenant"], json!("acme-co"), "{done}");
    assert_eq!(done["connection"]["status"], json!("connected"), "{done}");
    assert_eq!(done["flow_id"], started["id"]);
    assert_eq!(w.provider.last_code_verifier_ok(), Some(true), "PKCE kept");
    let seen = platform.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].starts_with("/oauth/callback?"), "{seen:?}");

    let (_, flow) = api(
        &w.airlock,
        "GET",
        &format!("/v1/connect-flows/{}", started["id"].as_str().unwrap()),
        None,
        None,
    )
    .await;
    assert_eq!(flow["outcome"], json!("connected"), "{flow}");

    // The same state again (a replayed redirect): refused, nothing new.
    let replay = query_of(&seen[0], "state").unwrap();
    let (status, again) = w
        .post_json(
            "/v1/connect/complete",
            json!({ "state": replay, "code": query_of(&seen[0], "code") }),
        )
        .await;
    assert_eq!(status, 400, "{again}");
    assert!(
        again["error"].as_str().unwrap().contains("already used"),
        "{again}"
    );

    // Missing fields and an unauthenticated call.
    let (status, missing) = w.post_json("/v1/connect/complete", json!({})).await;
    assert_eq!(status, 400, "{missing}");
    assert!(missing["error"]
        .as_str()
        .unwrap()
        .contains("state is required"));
    let (status, unknown) = w
        .post_json("/v1/connect/complete", json!({ "state": "s", "cod": "x" }))
        .await;
    assert_eq!(status, 422, "{unknown}");
    assert!(
        unknown["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `cod`"),
        "{unknown}"
    );
    let (status, _) = api(
        &w.airlock,
        "POST",
        "/v1/connect/complete",
        Some(json!({ "state": "s", "code": "c" }).to_string()),
        Some("not-the-admin-token".into()),
    )
    .await;
    assert_eq!(status, 401);

    // Another tenant's state: refused, and the flow is still there to finish.
    let (_, second) = w
        .post_json(
            "/v1/connect-flows",
            json!({ "provider": "acme", "tenant": "acme-co" }),
        )
        .await;
    let second_url = second["authorization_url"].as_str().unwrap().to_owned();
    let state = query_of(&second_url, "state").unwrap();
    let (status, wrong) = w
        .post_json(
            "/v1/connect/complete",
            json!({ "state": state, "code": "whatever", "tenant": "default" }),
        )
        .await;
    assert_eq!(status, 400, "{wrong}");
    assert!(
        wrong["error"].as_str().unwrap().contains("tenant default"),
        "{wrong}"
    );
    let page = w.follow(&second_url).await;
    assert!(
        page.contains("\"connected\""),
        "the rightful completion still works: {page}"
    );

    // `airlock connect-complete` does the same for a handler that shells out.
    let (_, third) = w
        .post_json(
            "/v1/connect-flows",
            json!({ "provider": "acme", "tenant": "acme-co" }),
        )
        .await;
    let (status, headers, _) = w.raw(third["authorization_url"].as_str().unwrap()).await;
    assert_eq!(status, 302, "{headers}");
    let to_platform = location(&headers);
    assert!(
        to_platform.starts_with(&platform.callback()),
        "{to_platform}"
    );
    let (state, code) = (
        query_of(&to_platform, "state").unwrap(),
        query_of(&to_platform, "code").unwrap(),
    );
    let printed = super::cli::cli(
        &w.airlock,
        &[
            "connect-complete",
            "--state",
            &state,
            "--code",
            &code,
            "--tenant",
            "acme-co",
        ],
        &[],
    );
    assert!(printed.starts_with("connected: conn_"), "{printed}");
    assert!(printed.contains("of tenant acme-co"), "{printed}");

    // `airlock connect` names the tenant's redirect URI to register.
    let out = super::cli::run_cli(&w.airlock, &["connect", "acme", "--tenant", "acme-co"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "must allow the redirect URI {}",
            platform.callback()
        )),
        "{stderr}"
    );

    // A tenant with no app of its own, not allowed the default's: refused.
    let (status, refused) = w
        .post_json(
            "/v1/connect-flows",
            json!({ "provider": "acme", "tenant": "beta" }),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("use_default_apps"),
        "{refused}"
    );

    // The console lists the tenant's own redirect URI beside the vault's.
    let (base, token) = (w.airlock.vault_url(), w.airlock.admin_token());
    let dashboard = blocking(move || {
        let jar = tempfile::NamedTempFile::new().unwrap();
        let jar_path = jar.path().display().to_string();
        super::console::console_dashboard(&base, &token, &jar_path)
    })
    .await;
    assert!(
        dashboard.contains(&format!(
            "acme-co: <code class=\"redirect-uri tenant-redirect-uri\">{}</code>",
            platform.callback()
        )),
        "{dashboard}"
    );

    let (_, connections) = api(&w.airlock, "GET", "/v1/connections", None, None).await;
    w.assert_no_secret_in(&[
        &done.to_string(),
        &again.to_string(),
        &wrong.to_string(),
        &connections.to_string(),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branding_is_on_the_pages_escaped_and_return_to_goes_only_to_the_tenant_s_origin() {
    // A [[tenant]] of the config file (after [vault]'s keys) is written at start.
    let w = world(
        "\n[[tenant]]\nname = \"from-config\"\ndisplay_name = \"Configured\"\nuse_default_apps = true\n",
        "",
    )
    .await;
    let (status, configured) = api(&w.airlock, "GET", "/v1/tenants/from-config", None, None).await;
    assert_eq!(status, 200, "{configured}");
    assert_eq!(
        configured["display_name"],
        json!("Configured"),
        "{configured}"
    );
    assert_eq!(configured["use_default_apps"], json!(true), "{configured}");
    let platform = Platform::start(w.airlock.vault_url(), w.airlock.admin_token(), "default");
    let return_url = format!("http://127.0.0.1:{}/integrations", platform.port);
    let branding = json!({
        "display_name": "<script>alert(1)</script> Acme",
        "accent_color": "#FF5500",
        "logo_url": LOGO,
        "support_url": "https://help.acme.example/connect?a=1&b=2",
        "return_url": return_url,
    });
    let (status, saved) = w.put_json("/v1/tenants/default", branding).await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["accent_color"], json!("#ff5500"));

    // A bad value is refused and the stored settings stay.
    let (status, bad) = w
        .put_json(
            "/v1/tenants/default",
            json!({ "logo_url": "javascript:alert(1)", "accent_color": "red" }),
        )
        .await;
    assert_eq!(status, 400, "{bad}");
    let error = bad["error"].as_str().unwrap();
    assert!(
        error.contains("logo_url") && error.contains("accent_color"),
        "{bad}"
    );
    let (_, kept) = api(&w.airlock, "GET", "/v1/tenants/default", None, None).await;
    assert_eq!(kept["logo_url"], json!(LOGO), "{kept}");

    // A denied consent: the callback page is the tenant's, escaped.
    let (_, started) = w
        .post_json("/v1/connect-flows", json!({ "provider": "acme" }))
        .await;
    let state = query_of(started["authorization_url"].as_str().unwrap(), "state").unwrap();
    let callback = format!(
        "{}/oauth/callback?state={state}&error=access_denied&error_description=%3Cscript%3Ealert(2)%3C%2Fscript%3E",
        w.airlock.vault_url()
    );
    let (status, headers, page) = w.raw(&callback).await;
    assert_eq!(status, 403, "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt; Acme"),
        "{page}"
    );
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(
        page.contains(&format!("<img class=\"brand-logo\" src=\"{LOGO}\"")),
        "{page}"
    );
    assert!(
        page.contains("href=\"/branding/default/style.css\""),
        "{page}"
    );
    assert!(
        page.contains("href=\"https://help.acme.example/connect?a=1&amp;b=2\""),
        "{page}"
    );
    assert!(page.contains(&format!("href=\"{return_url}\"")), "{page}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:"),
        "{headers}"
    );

    let (status, _, css) = w
        .raw(&format!(
            "{}/branding/default/style.css",
            w.airlock.vault_url()
        ))
        .await;
    assert_eq!(status, 200);
    assert!(css.contains("--accent: #ff5500"), "{css}");

    // return_to: only on the return_url's origin.
    for evil in [
        "https://evil.example/x".to_owned(),
        format!("http://127.0.0.1:{}/x", platform.port + 1),
        "javascript:alert(1)".to_owned(),
    ] {
        let (status, refused) = w
            .post_json(
                "/v1/connect-flows",
                json!({ "provider": "acme", "return_to": evil }),
            )
            .await;
        assert_eq!(status, 400, "{evil}: {refused}");
    }
    let return_to = format!("http://127.0.0.1:{}/integrations/done?tab=2", platform.port);
    let (status, started) = w
        .post_json(
            "/v1/connect-flows",
            json!({ "provider": "acme", "return_to": return_to }),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    // The provider sends the browser to the vault's callback…
    let (status, headers, _) = w.raw(started["authorization_url"].as_str().unwrap()).await;
    assert_eq!(status, 302);
    let to_callback = location(&headers);
    assert!(
        to_callback.starts_with(&w.airlock.vault_url()),
        "{to_callback}"
    );
    // …a return_to smuggled into that query is ignored…
    let smuggled = format!("{to_callback}&return_to=https%3A%2F%2Fevil.example%2F");
    let (status, headers, _page) = w.raw(&smuggled).await;
    // …and the vault sends it back to the flow's own return_to.
    assert_eq!(status, 303, "{headers}{_page}");
    let back = location(&headers);
    assert!(
        back.starts_with(&format!("{return_to}&status=connected&flow=")),
        "{back}"
    );
    assert!(!back.contains("evil"), "{back}");

    // An unknown connect link belongs to no tenant: airlock's plain page.
    let (status, _, page) = w
        .raw(&format!("{}/connect/no-such-link", w.airlock.vault_url()))
        .await;
    assert!(status >= 400, "{page}");
    assert!(
        !page.contains("brand-logo") && page.contains("· airlock</title>"),
        "{page}"
    );
}

/// The branded page as chromium renders it (playwright-core): the name as
/// text, the logo loaded, the accent colour applied, no script run. The
/// screenshot lands in `target/console-screenshots/white-label-connected.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_branded_callback_page_in_a_browser() {
    if !crate::support::browser_present("the white-label browser test") {
        return;
    }
    let w = world("", "").await;
    let name = "<script>alert('x')</script> Acme";
    let (status, saved) = w
        .put_json(
            "/v1/tenants/default",
            json!({ "display_name": name, "accent_color": "#ff5500", "logo_url": LOGO }),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    let (status, started) = w
        .post_json("/v1/connect-flows", json!({ "provider": "acme" }))
        .await;
    assert_eq!(status, 201, "{started}");
    let shots =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/node/white_label.test.mjs"
    );
    let env = vec![
        (
            "AUTH_URL".to_owned(),
            started["authorization_url"].as_str().unwrap().to_owned(),
        ),
        ("SCREENSHOTS".to_owned(), shots.display().to_string()),
        ("RESOLVER_RULES".to_owned(), format!("MAP {AUTH} 127.0.0.1")),
        ("DISPLAY_NAME".to_owned(), name.to_owned()),
        ("ACCENT_RGB".to_owned(), "rgb(255, 85, 0)".to_owned()),
        ("NODE_PATH".to_owned(), NODE_MODULES.to_owned()),
    ];
    let out = blocking(move || node(&env, &format!("import({script:?})"))).await;
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("branded"), "{}", out.stdout);
    let (_, flow) = api(
        &w.airlock,
        "GET",
        &format!("/v1/connect-flows/{}", started["id"].as_str().unwrap()),
        None,
        None,
    )
    .await;
    assert_eq!(flow["outcome"], json!("connected"), "{flow}");
}
