//! The console page: providers and their status, connect and disconnect,
//! OAuth apps (secrets write-only), machine accounts, static secrets,
//! sandboxes, and recent requests. Server-rendered; the only script is a
//! static file (strict CSP, no inline code). Login with the admin token;
//! every form carries the session's CSRF token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Form, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use dashmap::DashMap;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::html::{escape, secure};
use super::state::ApiState;
use crate::{sha256_hex, Scope, DEFAULT_ENVIRONMENT, DEFAULT_TENANT};

const SESSION_COOKIE: &str = "airlock_session";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Recent proxy requests, when the proxy runs in this process.
pub type RecentRequests = Arc<dyn Fn() -> Vec<serde_json::Value> + Send + Sync>;

struct Session {
    csrf: String,
    expires: Instant,
}

#[derive(Default)]
pub struct Console {
    sessions: DashMap<String, Session>,
    recent: Option<RecentRequests>,
    /// Requests the proxy holds for consent now (same feed shape).
    held: Option<RecentRequests>,
}

impl Console {
    pub fn new(recent: Option<RecentRequests>, held: Option<RecentRequests>) -> Self {
        Self {
            sessions: DashMap::new(),
            recent,
            held,
        }
    }
}

fn random_token() -> String {
    airlock_vault_client::generate_placeholder("")
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{SESSION_COOKIE}="))
                .map(str::to_owned)
        })
}

/// The session's CSRF token, when the request carries a live session.
fn session(state: &ApiState, headers: &HeaderMap) -> Option<String> {
    let id = cookie(headers)?;
    let entry = state.console.sessions.get(&sha256_hex(&id))?;
    (entry.expires > Instant::now()).then(|| entry.csrf.clone())
}

fn page(status: StatusCode, title: &str, body: String) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{} · airlock</title><link rel=\"stylesheet\" href=\"/console/style.css\"></head>\
         <body><header><span class=\"brand\">airlock</span><span class=\"sub\">{}</span></header><main>{body}</main>\
         <script src=\"/console/app.js\"></script></body></html>",
        escape(title),
        escape(title)
    );
    let mut response = (status, Html(html)).into_response();
    secure(response.headers_mut());
    response
}

fn login_page(message: Option<&str>) -> Response {
    let note = message
        .map(|m| format!("<p class=\"err\">{}</p>", escape(m)))
        .unwrap_or_default();
    page(
        if message.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK },
        "Sign in",
        format!(
            "<section class=\"card narrow\"><h1>Sign in</h1>{note}\
             <form method=\"post\" action=\"/console/login\"><label>Admin token\
             <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required></label>\
             <button type=\"submit\">Sign in</button></form>\
             <p class=\"hint\">The admin token is in <code>DATA_DIR/admin.token</code> or <code>AIRLOCK_ADMIN_TOKEN</code>.</p></section>"
        ),
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: SecretString,
}

async fn login(State(state): State<ApiState>, Form(form): Form<LoginForm>) -> Response {
    if !state.is_admin(form.token.expose_secret()) {
        tracing::info!("console sign-in refused");
        return login_page(Some("That is not the admin token."));
    }
    let id = random_token();
    state
        .console
        .sessions
        .retain(|_, s| s.expires > Instant::now());
    state.console.sessions.insert(
        sha256_hex(&id),
        Session {
            csrf: random_token(),
            expires: Instant::now() + SESSION_TTL,
        },
    );
    let secure_flag = if state.vault.settings().public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure_flag}"
        ))
        .expect("cookie is ASCII"),
    );
    response
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
    /// Disconnect: delete even without confirmed revocation.
    #[serde(default)]
    force: Option<String>,
}

/// Checks the session and the form's CSRF token (and, when sent, that the
/// request comes from this origin).
fn authorized_post(state: &ApiState, headers: &HeaderMap, csrf: &str) -> Result<(), Box<Response>> {
    let Some(expected) = session(state, headers) else {
        return Err(Box::new(login_page(Some(
            "Your session ended; sign in again.",
        ))));
    };
    let same_origin = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_none_or(|origin| {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            origin.ends_with(&format!("://{host}"))
        });
    if !same_origin || csrf.len() != expected.len() || csrf != expected {
        return Err(Box::new(page(
            StatusCode::FORBIDDEN,
            "Refused",
            "<section class=\"card\"><p class=\"err\">The form's CSRF token is missing or wrong.</p></section>".into(),
        )));
    }
    Ok(())
}

async fn logout(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = authorized_post(&state, &headers, &form.csrf) {
        return *r;
    }
    if let Some(id) = cookie(&headers) {
        state.console.sessions.remove(&sha256_hex(&id));
    }
    Redirect::to("/").into_response()
}

async fn dashboard(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let Some(csrf) = session(&state, &headers) else {
        return login_page(None);
    };
    let vault = &state.vault;
    let csrf_field = format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(&csrf)
    );
    let connections = vault.connections().await.unwrap_or_default();
    let apps = vault.apps().await.unwrap_or_default();
    let mut body = String::new();

    body.push_str("<section class=\"card\"><h2>Accounts</h2><table><thead><tr><th>Provider</th><th>Status</th><th>Owner</th><th>Granted scopes</th><th>Expires</th><th>Last refresh</th><th></th></tr></thead><tbody>");
    for provider in vault.providers() {
        let mine: Vec<_> = connections
            .iter()
            .filter(|c| c.provider == provider.name)
            .collect();
        let has_app = apps.iter().any(|a| a.provider == provider.name);
        if mine.is_empty() {
            let action = if has_app && provider.authorize_url.is_some() {
                format!("<a class=\"button connect\" href=\"/console/connect/{0}\" data-connect=\"{0}\">Connect</a>", escape(&provider.name))
            } else {
                "<span class=\"hint\">register an OAuth app first</span>".to_owned()
            };
            body.push_str(&format!(
                "<tr data-provider=\"{0}\"><td>{1}</td><td><span class=\"status none\">Not connected</span></td><td></td><td></td><td></td><td></td><td>{action}</td></tr>",
                escape(&provider.name),
                escape(provider.label())
            ));
        }
        for c in mine {
            use crate::ConnectionStatus as S;
            let (label, class) = match c.status {
                S::Connected if !c.warnings.is_empty() => ("Connected", "warn"),
                S::Connected => ("Connected", "ok"),
                S::ReconnectNeeded => ("Reconnect needed", "warn"),
                S::RevokePending => ("Revocation pending", "warn"),
                S::Pending => ("Pending", "none"),
            };
            let mut notes: String = c
                .warnings
                .iter()
                .map(|w| format!("<div class=\"hint warning\">{}</div>", escape(w)))
                .collect();
            if c.status == S::RevokePending {
                notes.push_str(&format!(
                    "<div class=\"hint warning\">disconnected, but the provider has not confirmed revocation; retried in the background{}</div>",
                    c.last_error.as_deref().map(|e| format!(": {}", escape(e))).unwrap_or_default()
                ));
            }
            let (force_field, disconnect_label) = if c.status == S::RevokePending {
                (
                    "<input type=\"hidden\" name=\"force\" value=\"1\">",
                    "Delete anyway",
                )
            } else {
                ("", "Disconnect")
            };
            let reconnect = if c.status == S::ReconnectNeeded && provider.authorize_url.is_some() {
                format!("<a class=\"button connect\" href=\"/console/connect/{0}\" data-connect=\"{0}\">Reconnect</a> ", escape(&provider.name))
            } else {
                String::new()
            };
            body.push_str(&format!(
                "<tr data-provider=\"{0}\"><td>{1}</td><td><span class=\"status {class}\">{label}</span>{notes}</td><td>{2}</td>\
                 <td class=\"scopes\">{4}</td><td>{5}</td><td>{6}</td>\
                 <td>{reconnect}<form method=\"post\" action=\"/console/disconnect/{3}\" class=\"inline\">{csrf_field}\
                 {force_field}<button type=\"submit\" class=\"danger\">{disconnect_label}</button></form></td></tr>",
                escape(&provider.name),
                escape(provider.label()),
                escape(&c.scope),
                escape(&c.id),
                escape(&c.scopes.join(" ")),
                when(c.expires_at, "does not expire"),
                when(c.refreshed_at, "never"),
            ));
        }
    }
    body.push_str("</tbody></table></section>");

    body.push_str(&format!(
        "<section class=\"card\"><h2>OAuth apps</h2><p class=\"hint\">Redirect URI to register in each provider's app settings: \
         <code class=\"redirect-uri\">{}</code></p><table><thead><tr><th>Provider</th><th>Tenant</th><th>Environment</th><th>Client id</th>\
         <th>Client secret</th><th></th></tr></thead><tbody>",
        escape(&vault.redirect_uri())
    ));
    for a in &apps {
        body.push_str(&format!(
            "<tr><td>{0}</td><td>{1}</td><td>{2}</td><td><code>{3}</code></td><td><code>{4}</code></td>\
             <td><form method=\"post\" action=\"/console/apps/delete\" class=\"inline\">{csrf_field}\
             <input type=\"hidden\" name=\"provider\" value=\"{0}\"><input type=\"hidden\" name=\"tenant\" value=\"{1}\">\
             <input type=\"hidden\" name=\"environment\" value=\"{2}\"><button type=\"submit\" class=\"danger\">Delete</button></form></td></tr>",
            escape(&a.provider),
            escape(&a.tenant),
            escape(&a.environment),
            escape(&a.client_id),
            escape(a.client_secret.as_deref().unwrap_or("not set"))
        ));
    }
    body.push_str(&format!(
        "</tbody></table><form method=\"post\" action=\"/console/apps\" class=\"grid\">{csrf_field}\
         <label>Provider<input name=\"provider\" required></label><label>Client id<input name=\"client_id\" required></label>\
         <label>Client secret<input type=\"password\" name=\"client_secret\" autocomplete=\"off\" placeholder=\"unchanged when empty\"></label>\
         <button type=\"submit\">Save app</button></form></section>"
    ));

    body.push_str("<section class=\"card\"><h2>Machine accounts</h2><ul>");
    for c in connections
        .iter()
        .filter(|c| c.kind == crate::store::GrantKind::ClientCredentials)
    {
        body.push_str(&format!(
            "<li>{} · {} · {}</li>",
            escape(&c.scope),
            escape(&c.provider),
            escape(c.status.as_str())
        ));
    }
    body.push_str("</ul></section>");

    body.push_str("<section class=\"card\"><h2>Static secrets</h2><ul>");
    for s in vault.secrets().await.unwrap_or_default() {
        body.push_str(&format!(
            "<li><code>{}</code> → {}</li>",
            escape(s["name"].as_str().unwrap_or("")),
            escape(&s["hosts"].to_string())
        ));
    }
    body.push_str(&format!(
        "</ul><form method=\"post\" action=\"/console/secrets\" class=\"grid\">{csrf_field}\
         <label>Name<input name=\"name\" required pattern=\"[A-Za-z_][A-Za-z0-9_]*\"></label>\
         <label>Value<input type=\"password\" name=\"value\" autocomplete=\"off\" required></label>\
         <label>Hosts<input name=\"hosts\" placeholder=\"api.example.com, *.example.com\" required></label>\
         <button type=\"submit\">Add secret</button></form></section>"
    ));

    body.push_str("<section class=\"card\"><h2>Sandboxes</h2><ul>");
    for s in vault.sandboxes().await.unwrap_or_default() {
        let vars: Vec<String> = s
            .bindings
            .iter()
            .map(|(k, v)| format!("{k} ({v})"))
            .collect();
        body.push_str(&format!(
            "<li><code>{}</code> · {}</li>",
            escape(&s.id),
            escape(&vars.join(", "))
        ));
    }
    body.push_str("</ul></section>");

    if let Some(held) = &state.console.held {
        let held = held();
        body.push_str("<section class=\"card\"><h2>Waiting for consent</h2>");
        if held.is_empty() {
            body.push_str("<p class=\"hint\">No request is waiting for a human.</p>");
        } else {
            body.push_str("<table><thead><tr><th>Sandbox</th><th>Credential</th><th>Why</th><th>Request</th><th>Gives up at</th><th>Link</th></tr></thead><tbody>");
            for h in held {
                let link = h["connect_url"]
                    .as_str()
                    .map(|u| {
                        format!(
                            "<a href=\"{}\" target=\"_blank\" rel=\"noopener\">connect</a>",
                            escape(u)
                        )
                    })
                    .unwrap_or_default();
                body.push_str(&format!(
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{} {}{}</td><td>{}</td><td>{}</td></tr>",
                    escape(h["sandbox"].as_str().unwrap_or("")),
                    escape(h["binding"].as_str().unwrap_or("")),
                    escape(h["reason"].as_str().unwrap_or("")),
                    escape(h["method"].as_str().unwrap_or("")),
                    escape(h["host"].as_str().unwrap_or("")),
                    escape(h["path"].as_str().unwrap_or("")),
                    h["until"].as_u64().unwrap_or(0),
                    link,
                ));
            }
            body.push_str("</tbody></table>");
        }
        body.push_str("</section>");
    }
    body.push_str("<section class=\"card\"><h2>Recent requests</h2>");
    let recent = recent_requests(&state).await;
    if recent.is_empty() && state.console.recent.is_none() {
        body.push_str(
            "<p class=\"hint\">No proxy has reported a request yet (remote proxies report theirs to the vault).</p>",
        );
    } else {
        body.push_str("<table><thead><tr><th>Proxy</th><th>Host</th><th>Path</th><th>Status</th><th>Outcome</th><th>Swapped</th></tr></thead><tbody>");
        for r in recent {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(r["proxy"].as_str().unwrap_or("this process")),
                escape(r["host"].as_str().unwrap_or("")),
                escape(r["method"].as_str().unwrap_or("")),
                escape(r["path"].as_str().unwrap_or("")),
                r["status"].as_u64().unwrap_or(0),
                escape(r["outcome"].as_str().unwrap_or("")),
                escape(
                    &r["swapped"]
                        .as_array()
                        .map(|a| a
                            .iter()
                            .filter_map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default()
                ),
            ));
        }
        body.push_str("</tbody></table>");
    }
    body.push_str(&format!(
        "</section><form method=\"post\" action=\"/console/logout\" class=\"inline\">{csrf_field}<button type=\"submit\">Sign out</button></form>"
    ));
    page(StatusCode::OK, "Console", body)
}

/// How many recent requests the console shows.
const RECENT_SHOWN: usize = 50;

/// The newest requests: this process's proxy's and those remote proxies
/// reported, newest first.
pub(super) async fn recent_requests(state: &ApiState) -> Vec<serde_json::Value> {
    let mut all: Vec<serde_json::Value> = match &state.console.recent {
        Some(recent) => recent().into_iter().take(RECENT_SHOWN).collect(),
        None => Vec::new(),
    };
    match state
        .vault
        .store()
        .recent_requests(RECENT_SHOWN as i64)
        .await
    {
        Ok(reported) => all.extend(reported.into_iter().filter_map(|(proxy, record)| {
            let mut value = serde_json::to_value(record).ok()?;
            value["proxy"] = serde_json::Value::String(proxy);
            Some(value)
        })),
        Err(error) => tracing::warn!(%error, "cannot read the proxies' reported requests"),
    }
    // Stable: within a second, each feed keeps its own order.
    all.sort_by_key(|r| std::cmp::Reverse(r["at"].as_u64().unwrap_or(0)));
    all.truncate(RECENT_SHOWN);
    all
}

async fn connect(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(provider): Path<String>,
) -> Response {
    if session(&state, &headers).is_none() {
        return login_page(Some("Sign in to connect accounts."));
    }
    match state
        .vault
        .start_connect(
            DEFAULT_TENANT,
            &Scope::Tenant,
            &provider,
            None,
            DEFAULT_ENVIRONMENT,
        )
        .await
    {
        Ok(started) => Redirect::to(&started.authorization_url).into_response(),
        Err(e) => error_page("Not connected", &e),
    }
}

async fn disconnect(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = authorized_post(&state, &headers, &form.csrf) {
        return *r;
    }
    match state.vault.disconnect(&id, form.force.is_some()).await {
        Ok(done) if done.status == crate::DisconnectStatus::Deleted => {
            match &done.warning {
                // Said on a page, not swallowed by a redirect.
                Some(w) => page(
                    StatusCode::OK,
                    "Disconnected",
                    format!(
                        "<section class=\"card narrow\"><h1 class=\"warn\">Disconnected</h1><p>{}</p><p><a href=\"/\">Back</a></p></section>",
                        escape(w)
                    ),
                ),
                None => Redirect::to("/").into_response(),
            }
        }
        Ok(done) => page(
            StatusCode::BAD_GATEWAY,
            "Revocation failed",
            format!(
                "<section class=\"card narrow\"><h1 class=\"err\">Revocation failed</h1><p>{}</p>\
                 <p>The account can no longer be used by sandboxes; revocation is retried in the background.</p>\
                 <p><a href=\"/\">Back</a></p></section>",
                escape(&done.revoke_errors.join("; "))
            ),
        ),
        Err(e) => error_page("Error", &e),
    }
}

#[derive(Deserialize)]
pub struct AppForm {
    csrf: String,
    provider: String,
    client_id: String,
    #[serde(default)]
    client_secret: String,
}

async fn save_app(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<AppForm>,
) -> Response {
    if let Err(r) = authorized_post(&state, &headers, &form.csrf) {
        return *r;
    }
    let secret = (!form.client_secret.is_empty()).then(|| SecretString::from(form.client_secret));
    match state
        .vault
        .set_app(
            DEFAULT_TENANT,
            form.provider.trim(),
            DEFAULT_ENVIRONMENT,
            form.client_id.trim(),
            secret,
        )
        .await
    {
        Ok(_) => Redirect::to("/").into_response(),
        Err(e) => error_page("Not saved", &e),
    }
}

#[derive(Deserialize)]
pub struct AppDeleteForm {
    csrf: String,
    provider: String,
    tenant: String,
    environment: String,
}

/// Deletes an app; refused, with the reason on the page, while a
/// connection still uses it.
async fn delete_app(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<AppDeleteForm>,
) -> Response {
    if let Err(r) = authorized_post(&state, &headers, &form.csrf) {
        return *r;
    }
    match state
        .vault
        .delete_app(&form.tenant, &form.provider, &form.environment)
        .await
    {
        Ok(()) => Redirect::to("/").into_response(),
        Err(e) => error_page("Not deleted", &e),
    }
}

/// Unix seconds as a UTC time to the minute, or `none` when there is none.
fn when(at: Option<i64>, none: &str) -> String {
    let Some(at) = at.and_then(|s| u64::try_from(s).ok()) else {
        return escape(none);
    };
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(at);
    let text = humantime::format_rfc3339_seconds(time).to_string();
    // 2026-12-03T06:51:06Z → 2026-12-03 06:51 UTC
    format!("{} {} UTC", &text[..10], &text[11..16])
}

#[derive(Deserialize)]
pub struct SecretForm {
    csrf: String,
    name: String,
    value: SecretString,
    hosts: String,
}

async fn add_secret(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<SecretForm>,
) -> Response {
    if let Err(r) = authorized_post(&state, &headers, &form.csrf) {
        return *r;
    }
    let hosts = form
        .hosts
        .split(',')
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .collect();
    match state
        .vault
        .add_secret(DEFAULT_TENANT, form.name.trim(), form.value, hosts, None)
        .await
    {
        Ok(_) => Redirect::to("/").into_response(),
        Err(e) => error_page("Not saved", &e),
    }
}

/// An error page naming what went wrong (vault errors never carry secrets).
fn error_page(title: &str, e: &crate::VaultError) -> Response {
    page(
        super::errors::status(e),
        title,
        format!(
            "<section class=\"card\"><p class=\"err\">{}</p></section>",
            escape(&e.to_string())
        ),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    secure(response.headers_mut());
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    response
}

async fn app_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("console/app.js"),
    )
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", include_str!("console/style.css"))
}

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(dashboard))
        .route("/console/login", post(login))
        .route("/console/logout", post(logout))
        .route("/console/connect/{provider}", get(connect))
        .route("/console/disconnect/{id}", post(disconnect))
        .route("/console/apps", post(save_app))
        .route("/console/apps/delete", post(delete_app))
        .route("/console/secrets", post(add_secret))
        .route("/console/app.js", get(app_js))
        .route("/console/style.css", get(style_css))
}
