//! The console page: environments, accounts and their status, connect
//! (tenant, owner, environment, name, scopes), re-authorize with other
//! scopes, disconnect, OAuth apps (secrets write-only), providers (OAuth 2
//! and 1.0a), tenants' white-label settings, machine accounts, static
//! secrets (the config file's read-only), sandboxes, and recent requests.
//! Server-rendered; the only script is a static file (strict CSP, no inline
//! code). Login with the admin token; every form carries the session's CSRF
//! token.

mod actions;
mod input;
mod sections;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use dashmap::DashMap;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::html::{escape, secure};
use super::state::ApiState;
use crate::{sha256_hex, Scope, DEFAULT_ENVIRONMENT, DEFAULT_TENANT};

const SESSION_COOKIE: &str = "airlock_session";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Recent proxy requests, when the proxy runs in this process.
pub type RecentRequests = Arc<dyn Fn() -> Vec<serde_json::Value> + Send + Sync>;

/// One `[[secret]]` of the config file as the console lists it: never its value.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigSecretView {
    pub name: String,
    pub kind: String,
    pub hosts: Vec<String>,
}

/// The config file's secrets as they are now (they reload on SIGHUP).
pub type ConfigSecrets =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Vec<ConfigSecretView>> + Send>> + Send + Sync>;

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
    /// The config file's `[[secret]]`s, when this process's proxy serves them.
    config_secrets: Option<ConfigSecrets>,
}

impl Console {
    pub fn new(recent: Option<RecentRequests>, held: Option<RecentRequests>) -> Self {
        Self {
            sessions: DashMap::new(),
            recent,
            held,
            config_secrets: None,
        }
    }

    /// The same feeds with the config file's secrets (before serving: no sessions yet).
    pub(super) fn with_config_secrets(&self, feed: ConfigSecrets) -> Self {
        Self {
            sessions: DashMap::new(),
            recent: self.recent.clone(),
            held: self.held.clone(),
            config_secrets: Some(feed),
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
    #[serde(default)]
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

async fn dashboard(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
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
    let providers = vault.providers();
    let environments = vault.environments().await.unwrap_or_default();
    let stored: Vec<String> = vault
        .store()
        .providers()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.name)
        .collect();
    let vault_secrets = vault.secrets().await.unwrap_or_default();
    let tenant_settings = vault.tenants().await.unwrap_or_default();
    let tenants = sections::known_tenants(&tenant_settings, &apps, &connections);
    let view = sections::View {
        environment: query
            .get("environment")
            .map(String::as_str)
            .filter(|e| crate::valid_name(e)),
        query: &query,
        csrf_field: &csrf_field,
    };
    let mut body = sections::environments(&view, &environments);

    body.push_str("<section class=\"card\" id=\"accounts\"><h2>Accounts</h2><table><thead><tr><th>Provider</th><th>Name</th><th>Environment</th>\
                   <th>Status</th><th>Owner</th><th>Granted scopes</th><th>Expires</th><th>Last refresh</th><th></th></tr></thead><tbody>");
    for provider in &providers {
        let mine: Vec<_> = connections
            .iter()
            .filter(|c| c.provider == provider.name && view.shows(&c.environment))
            .collect();
        let has_app = apps.iter().any(|a| a.provider == provider.name);
        if mine.is_empty() {
            let action = if has_app && provider.authorize_url.is_some() {
                format!(
                    "<a class=\"button connect\" href=\"/console/connect/{0}{1}\" data-connect=\"{0}\">Connect</a> \
                     <a class=\"button\" href=\"/?connect={0}{2}#connect\">Other owner or scopes…</a>",
                    escape(&provider.name),
                    view.environment
                        .map(|e| format!("?environment={}", escape(e)))
                        .unwrap_or_default(),
                    view.environment
                        .map(|e| format!("&amp;environment={}", escape(e)))
                        .unwrap_or_default(),
                )
            } else {
                "<span class=\"hint\">register an OAuth app first</span>".to_owned()
            };
            body.push_str(&format!(
                "<tr data-provider=\"{0}\"><td>{1}</td><td></td><td></td><td><span class=\"status none\">Not connected</span></td><td></td><td></td><td></td><td></td><td>{action}</td></tr>",
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
                // The same connection: its owner, name, environment and scopes.
                let link: String = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("environment", &c.environment)
                    .append_pair("scope", &c.scope)
                    .append_pair("name", c.name.as_deref().unwrap_or(""))
                    .append_pair("scopes", &c.scopes.join(" "))
                    .finish();
                format!(
                    "<a class=\"button connect\" href=\"/console/connect/{0}?{1}\" data-connect=\"{0}\">Reconnect</a> ",
                    escape(&provider.name),
                    escape(&link)
                )
            } else {
                String::new()
            };
            let reauthorize = if c.status == S::RevokePending {
                String::new()
            } else {
                sections::reauthorize(&view, c, provider)
            };
            body.push_str(&format!(
                "<tr data-provider=\"{0}\" data-connection=\"{3}\"><td>{1}</td><td class=\"name\">{7}</td><td>{8}</td>\
                 <td><span class=\"status {class}\">{label}</span>{notes}</td><td>{2}</td>\
                 <td class=\"scopes\">{4}</td><td>{5}</td><td>{6}</td>\
                 <td>{reconnect}<form method=\"post\" action=\"/console/disconnect/{3}\" class=\"inline\">{csrf_field}\
                 {force_field}<button type=\"submit\" class=\"danger\">{disconnect_label}</button></form>{reauthorize}</td></tr>",
                escape(&provider.name),
                escape(provider.label()),
                escape(&owner_of(c)),
                escape(&c.id),
                escape(&c.scopes.join(" ")),
                when(c.expires_at, "does not expire"),
                when(c.refreshed_at, "never"),
                escape(c.name.as_deref().unwrap_or("")),
                escape(&c.environment),
            ));
        }
    }
    body.push_str("</tbody></table></section>");
    // Tenants with their own callback origin register that one instead.
    let own_redirects: Vec<(String, String)> = tenant_settings
        .iter()
        .filter_map(|t| {
            t.settings
                .redirect_uri
                .clone()
                .map(|r| (t.tenant.clone(), r))
        })
        .collect();
    body.push_str(&sections::connect(
        &view,
        &providers,
        &environments,
        &tenants,
    ));
    body.push_str(&sections::apps(
        &view,
        &apps,
        &providers,
        &stored,
        &environments,
        &vault.redirect_uri(),
        &own_redirects,
    ));
    body.push_str(&sections::providers(&view, &providers, &stored, &apps));
    body.push_str(&sections::tenants(&view, &tenant_settings));

    body.push_str(&sections::machine_accounts(
        &view,
        &connections,
        &providers,
        &tenants,
    ));

    let from_config = match &state.console.config_secrets {
        Some(feed) => Some(feed().await),
        None => None,
    };
    body.push_str(&sections::secrets(
        &view,
        from_config.as_deref(),
        &vault_secrets,
    ));
    body.push_str(&sections::sandboxes(
        &view,
        &vault.sandboxes().await.unwrap_or_default(),
        &connections,
        &vault_secrets,
        &environments,
    ));

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
        body.push_str("<table><thead><tr><th>Proxy</th><th>Host</th><th>Path</th><th>Status</th><th>Bytes</th><th>Outcome</th><th>Swapped</th></tr></thead><tbody>");
        for r in recent {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(r["proxy"].as_str().unwrap_or("this process")),
                escape(r["host"].as_str().unwrap_or("")),
                escape(r["method"].as_str().unwrap_or("")),
                escape(r["path"].as_str().unwrap_or("")),
                r["status"].as_u64().unwrap_or(0),
                // Sent to the sandbox; remote proxies do not report it.
                r["response_bytes"]
                    .as_u64()
                    .map_or_else(String::new, |n| n.to_string()),
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

/// A connection's owner as the accounts table shows it: the tenant named
/// when it is not the default one.
fn owner_of(c: &crate::ConnectionView) -> String {
    if c.tenant == DEFAULT_TENANT {
        c.scope.clone()
    } else {
        format!("{} · tenant {}", c.scope, c.tenant)
    }
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

/// The quick Connect and Reconnect links: tenant level and the provider's
/// scopes unless the link says (`?environment=E&scope=S&name=N&scopes=A+B`,
/// a reconnect's own), in the environment the console shows.
async fn connect(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(provider): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if session(&state, &headers).is_none() {
        return login_page(Some("Sign in to connect accounts."));
    }
    let q = |k: &str| query.get(k).and_then(|v| input::optional(v));
    let request = (|| -> Result<crate::ConnectRequest, crate::VaultError> {
        let scopes = input::scopes(&q("scopes").unwrap_or_default())?;
        Ok(crate::ConnectRequest {
            tenant: DEFAULT_TENANT.into(),
            scope: q("scope").map_or(Ok(Scope::Tenant), |s| Scope::parse(&s))?,
            provider,
            scopes: (!scopes.is_empty()).then_some(scopes),
            environment: q("environment").unwrap_or_else(|| DEFAULT_ENVIRONMENT.into()),
            name: q("name"),
        })
    })();
    let started = match request {
        Ok(request) => state.vault.start_connect_request(&request).await,
        Err(e) => Err(e),
    };
    match started {
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
    #[serde(default)]
    csrf: String,
    provider: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    environment: String,
    /// A provider added through the console or the API: its URLs and
    /// default scopes may change with its app (empty: unchanged).
    #[serde(default)]
    authorize_url: String,
    #[serde(default)]
    token_url: String,
    #[serde(default)]
    scopes: String,
}

/// The provider as the app form changes it; `None` when it changes nothing.
/// Refused for catalog and config-file providers, whose endpoints are fixed.
async fn changed_provider(
    state: &ApiState,
    form: &AppForm,
) -> Result<Option<crate::Provider>, crate::VaultError> {
    let mut provider = state.vault.provider(form.provider.trim())?;
    let before = provider.clone();
    if let Some(url) = input::optional(&form.authorize_url) {
        provider.authorize_url = Some(url);
    }
    if let Some(url) = input::optional(&form.token_url) {
        provider.token_url = url;
    }
    let scopes = input::scopes(&form.scopes)?;
    if !scopes.is_empty() {
        provider.scopes = scopes;
    }
    if provider == before {
        return Ok(None);
    }
    let stored = state.vault.store().providers().await?;
    if !stored.iter().any(|p| p.name == provider.name) {
        return Err(crate::VaultError::Conflict(format!(
            "provider {:?} comes from the catalog or the config file: its URLs and scopes are fixed; \
             duplicate it under Providers to change them",
            provider.name
        )));
    }
    provider.validate()?;
    Ok(Some(provider))
}

async fn save_app(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<AppForm>,
) -> Response {
    if let Err(r) = authorized_post(&state, &headers, &form.csrf) {
        return *r;
    }
    if form.client_id.trim().is_empty() {
        return error_page(
            "Not saved",
            &crate::VaultError::Invalid("the app needs a client id".into()),
        );
    }
    // Checked before anything is stored, so a refusal changes nothing.
    let provider = match changed_provider(&state, &form).await {
        Ok(p) => p,
        Err(e) => return error_page("Not saved", &e),
    };
    let tenant = input::optional(&form.tenant).unwrap_or_else(|| DEFAULT_TENANT.into());
    let environment =
        input::optional(&form.environment).unwrap_or_else(|| DEFAULT_ENVIRONMENT.into());
    let secret = (!form.client_secret.is_empty()).then(|| SecretString::from(form.client_secret));
    if let Err(e) = state
        .vault
        .set_app(
            &tenant,
            form.provider.trim(),
            &environment,
            form.client_id.trim(),
            secret,
        )
        .await
    {
        return error_page("Not saved", &e);
    }
    if let Some(provider) = provider {
        if let Err(e) = state.vault.add_provider(provider).await {
            return error_page("App saved, provider not changed", &e);
        }
    }
    Redirect::to("/#apps").into_response()
}

#[derive(Deserialize)]
pub struct AppDeleteForm {
    #[serde(default)]
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
    #[serde(default)]
    csrf: String,
    name: String,
    value: SecretString,
    hosts: String,
    #[serde(default)]
    tenant: String,
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
        .add_secret(
            &input::optional(&form.tenant).unwrap_or_else(|| DEFAULT_TENANT.into()),
            form.name.trim(),
            form.value,
            hosts,
            None,
        )
        .await
    {
        Ok(_) => Redirect::to("/#secrets").into_response(),
        Err(e) => error_page("Not saved", &e),
    }
}

/// An error page naming what went wrong (vault errors never carry secrets).
fn error_page(title: &str, e: &crate::VaultError) -> Response {
    page(
        super::errors::status(e),
        title,
        format!(
            "<section class=\"card\"><h1 class=\"err\">{}</h1><p class=\"err message\">{}</p>\
             <p>Nothing was changed. <a href=\"/\">Back to the console</a></p></section>",
            escape(title),
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
        .route("/console/connect", post(actions::connect))
        .route("/console/connect/{provider}", get(connect))
        .route("/console/disconnect/{id}", post(disconnect))
        .route("/console/apps", post(save_app))
        .route("/console/apps/delete", post(delete_app))
        .route("/console/secrets", post(add_secret))
        .route("/console/secrets/delete", post(actions::delete_secret))
        .route(
            "/console/machine-accounts",
            post(actions::add_machine_account),
        )
        .route("/console/tenants", post(actions::save_tenant))
        .route("/console/tenants/delete", post(actions::delete_tenant))
        .route("/console/providers", post(actions::add_provider))
        .route("/console/providers/delete", post(actions::delete_provider))
        .route(
            "/console/providers/duplicate",
            post(actions::duplicate_provider),
        )
        .route("/console/sandboxes", post(actions::create_sandbox))
        .route("/console/sandboxes/delete", post(actions::delete_sandbox))
        .route("/console/app.js", get(app_js))
        .route("/console/style.css", get(style_css))
}
