//! The vault's HTTP API: the admin API (admin credential), the service API
//! the proxy uses (service credential), and the OAuth callback.
//! No admin response carries a token, a refresh token or a client secret.

use std::sync::Arc;

use airlock_vault_client::{
    BindingKind, SandboxId, SecretString, SwapLocation, TokenError, TokenSource,
};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use crate::error::VaultError;
use crate::{sha256_hex, NewSandbox, Provider, Scope, Vault, DEFAULT_ENVIRONMENT, DEFAULT_TENANT};

/// Largest request body the API reads.
const BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone)]
pub struct ApiState {
    pub vault: Arc<Vault>,
    admin_hash: Arc<str>,
    service_hash: Arc<str>,
    pub(crate) console: Arc<crate::console::Console>,
}

impl ApiState {
    pub fn new(
        vault: Arc<Vault>,
        admin_token: &SecretString,
        service_token: &SecretString,
    ) -> Self {
        Self {
            vault,
            admin_hash: sha256_hex(admin_token.expose_secret()).into(),
            service_hash: sha256_hex(service_token.expose_secret()).into(),
            console: Arc::new(crate::console::Console::default()),
        }
    }

    /// Lets the console show the in-process proxy's recent requests.
    pub fn with_recent_requests(mut self, recent: crate::console::RecentRequests) -> Self {
        self.console = Arc::new(crate::console::Console::new(Some(recent)));
        self
    }

    pub(crate) fn is_admin(&self, token: &str) -> bool {
        matches_hash(Some(token), &self.admin_hash)
    }
}

pub fn router(state: ApiState) -> Router {
    let admin = Router::new()
        .route("/v1/providers", get(list_providers).post(add_provider))
        .route("/v1/apps", get(list_apps).put(set_app).post(set_app))
        .route(
            "/v1/connections",
            get(list_connections).post(start_connection),
        )
        .route(
            "/v1/connections/{id}",
            get(get_connection).delete(delete_connection),
        )
        .route("/v1/machine-accounts", post(add_machine_account))
        .route("/v1/sandboxes", get(list_sandboxes).post(create_sandbox))
        .route("/v1/sandboxes/{id}", axum::routing::delete(delete_sandbox))
        .route("/v1/secrets", get(list_secrets).post(add_secret))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin,
        ));
    let service = Router::new()
        .route("/v1/service/resolve", post(service_resolve))
        .route("/v1/service/refresh", post(service_refresh))
        .route("/v1/service/authenticate", post(service_authenticate))
        .route("/v1/service/bound-host", post(service_bound_host))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_service,
        ));
    use crate::console;
    Router::new()
        .merge(admin)
        .merge(service)
        .route("/", get(console::dashboard))
        .route("/console/login", post(console::login))
        .route("/console/logout", post(console::logout))
        .route("/console/connect/{provider}", get(console::connect))
        .route("/console/disconnect/{id}", post(console::disconnect))
        .route("/console/apps", post(console::save_app))
        .route("/console/secrets", post(console::add_secret))
        .route("/console/app.js", get(console::app_js))
        .route("/console/style.css", get(console::style_css))
        .route("/oauth/callback", get(oauth_callback))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { ApiError(VaultError::NotFound("route".into())) })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Errors as `{"error": "…"}` with the status the error maps to.
pub struct ApiError(pub VaultError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0.status(),
            Json(json!({ "error": self.0.to_string() })),
        )
            .into_response()
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        Self(e)
    }
}

/// `Json<T>` whose rejections (bad JSON, missing fields, too large) use the API's error shape.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rejection) => {
                let status = rejection.status();
                let message = match status {
                    StatusCode::PAYLOAD_TOO_LARGE => {
                        format!("request body is larger than {BODY_LIMIT} bytes")
                    }
                    // The body text names the field and the problem, never values of secrets
                    // (serde reports types and field names).
                    _ => rejection.body_text(),
                };
                Err((status, Json(json!({ "error": message }))).into_response())
            }
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn matches_hash(given: Option<&str>, expected: &str) -> bool {
    let Some(given) = given else { return false };
    let given = sha256_hex(given);
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn require_admin(
    State(state): State<ApiState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    if matches_hash(bearer(request.headers()), &state.admin_hash) {
        next.run(request).await
    } else {
        ApiError(VaultError::Unauthorized(
            "send the admin token as Authorization: Bearer …",
        ))
        .into_response()
    }
}

async fn require_service(
    State(state): State<ApiState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    if matches_hash(bearer(request.headers()), &state.service_hash) {
        next.run(request).await
    } else {
        ApiError(VaultError::Unauthorized(
            "send the service token as Authorization: Bearer …",
        ))
        .into_response()
    }
}

async fn readyz(State(state): State<ApiState>) -> Response {
    match state.vault.store().apps().await {
        Ok(_) => "ready\n".into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unavailable: {e}\n"),
        )
            .into_response(),
    }
}

// ---- admin ------------------------------------------------------------------

async fn list_providers(State(s): State<ApiState>) -> Json<Vec<Provider>> {
    Json(s.vault.providers())
}

async fn add_provider(
    State(s): State<ApiState>,
    ApiJson(p): ApiJson<Provider>,
) -> Result<Response, ApiError> {
    let name = p.name.clone();
    s.vault.add_provider(p).await?;
    Ok((StatusCode::CREATED, Json(json!({ "name": name }))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetApp {
    #[serde(default = "tenant")]
    tenant: String,
    provider: String,
    #[serde(default = "environment")]
    environment: String,
    client_id: String,
    #[serde(default)]
    client_secret: Option<SecretString>,
}

fn tenant() -> String {
    DEFAULT_TENANT.into()
}

fn environment() -> String {
    DEFAULT_ENVIRONMENT.into()
}

async fn list_apps(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!(s.vault.apps().await?)))
}

async fn set_app(
    State(s): State<ApiState>,
    ApiJson(a): ApiJson<SetApp>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let view = s
        .vault
        .set_app(
            &a.tenant,
            &a.provider,
            &a.environment,
            &a.client_id,
            a.client_secret,
        )
        .await?;
    Ok(Json(json!(view)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartConnection {
    provider: String,
    #[serde(default = "tenant")]
    tenant: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default = "environment")]
    environment: String,
}

async fn start_connection(
    State(s): State<ApiState>,
    ApiJson(c): ApiJson<StartConnection>,
) -> Result<Response, ApiError> {
    let scope = Scope::parse(c.scope.as_deref().unwrap_or("tenant"))?;
    let started = s
        .vault
        .start_connect(&c.tenant, &scope, &c.provider, c.scopes, &c.environment)
        .await?;
    Ok((StatusCode::CREATED, Json(json!(started))).into_response())
}

async fn list_connections(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!(s.vault.connections().await?)))
}

async fn get_connection(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!(s.vault.connection(&id).await?)))
}

async fn delete_connection(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(s.vault.disconnect(&id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MachineAccount {
    #[serde(default = "tenant")]
    tenant: String,
    name: String,
    provider: String,
    client_id: String,
    client_secret: SecretString,
    #[serde(default)]
    token_url: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

async fn add_machine_account(
    State(s): State<ApiState>,
    ApiJson(m): ApiJson<MachineAccount>,
) -> Result<Response, ApiError> {
    let view = s
        .vault
        .add_machine_account(
            &m.tenant,
            &m.name,
            &m.provider,
            &m.client_id,
            m.client_secret,
            m.token_url.as_deref(),
            m.scopes,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(json!(view))).into_response())
}

async fn list_sandboxes(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!(s.vault.sandboxes().await?)))
}

async fn create_sandbox(
    State(s): State<ApiState>,
    ApiJson(n): ApiJson<NewSandbox>,
) -> Result<Response, ApiError> {
    let created = s.vault.create_sandbox(n).await?;
    let env: serde_json::Map<String, serde_json::Value> = created
        .env
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": created.id,
            "proxy_secret": created.proxy_secret,
            "proxy_url": created.proxy_url,
            "env": env,
        })),
    )
        .into_response())
}

async fn delete_sandbox(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.vault.delete_sandbox(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddSecret {
    #[serde(default = "tenant")]
    tenant: String,
    name: String,
    value: SecretString,
    hosts: Vec<String>,
    #[serde(default)]
    swap_in: Option<Vec<SwapLocation>>,
}

async fn list_secrets(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!(s.vault.secrets().await?)))
}

async fn add_secret(
    State(s): State<ApiState>,
    ApiJson(a): ApiJson<AddSecret>,
) -> Result<Response, ApiError> {
    let view = s
        .vault
        .add_secret(&a.tenant, &a.name, a.value, a.hosts, a.swap_in)
        .await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

// ---- OAuth callback ---------------------------------------------------------

#[derive(Deserialize)]
struct Callback {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
}

async fn oauth_callback(State(s): State<ApiState>, Query(q): Query<Callback>) -> Response {
    let result = s
        .vault
        .finish_connect(
            q.state.as_deref().unwrap_or(""),
            q.code.as_deref(),
            q.error.as_deref(),
        )
        .await;
    let (status, html) = match result {
        Ok(conn) => (
            StatusCode::OK,
            page(
                "Connected",
                &format!(
                    "Your {} account is connected. You can close this window.",
                    escape(&conn.provider)
                ),
                true,
            ),
        ),
        Err(e) => {
            tracing::info!(error = %e, "OAuth callback refused");
            (
                e.status(),
                page("Not connected", &escape(&e.to_string()), false),
            )
        }
    };
    let mut response = (status, Html(html)).into_response();
    crate::console::secure(response.headers_mut());
    response
}

/// The callback page. A popup opened by the console tells its opener and
/// closes itself (in `app.js`: the CSP allows no inline script).
fn page(title: &str, message: &str, ok: bool) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title} · airlock</title>\
         <link rel=\"stylesheet\" href=\"/console/style.css\"></head>\
         <body data-callback=\"{}\"><main><section class=\"card narrow\"><h1 class=\"{}\">{title}</h1><p>{message}</p></section></main>\
         <script src=\"/console/app.js\"></script></body></html>",
        if ok { "connected" } else { "failed" },
        if ok { "ok" } else { "err" }
    )
}

use crate::console::escape;

// ---- service API (proxy ↔ vault) --------------------------------------------

#[derive(Deserialize)]
struct ResolveRequest {
    sandbox: String,
    placeholder: String,
    #[serde(default)]
    failed_token: Option<SecretString>,
}

fn token_error(e: TokenError) -> Response {
    let (status, code) = match &e {
        TokenError::UnknownPlaceholder => (StatusCode::NOT_FOUND, "unknown_placeholder"),
        TokenError::WrongSandbox { .. } => (StatusCode::FORBIDDEN, "wrong_sandbox"),
        TokenError::Revoked { .. } => (StatusCode::GONE, "revoked"),
        TokenError::ReconnectNeeded { .. } => (StatusCode::CONFLICT, "reconnect_needed"),
        TokenError::NotConnected { .. } => (StatusCode::CONFLICT, "not_connected"),
        TokenError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        TokenError::BadCredential => (StatusCode::UNAUTHORIZED, "bad_credential"),
    };
    let binding = match &e {
        TokenError::WrongSandbox { binding }
        | TokenError::Revoked { binding }
        | TokenError::ReconnectNeeded { binding }
        | TokenError::NotConnected { binding } => Some(binding.clone()),
        _ => None,
    };
    (
        status,
        Json(json!({ "error": e.to_string(), "code": code, "binding": binding })),
    )
        .into_response()
}

fn resolved_json(r: airlock_vault_client::Resolved) -> Response {
    let b = &r.binding;
    Json(json!({
        "binding": {
            "id": b.id,
            "name": b.name,
            "sandbox": b.sandbox.as_str(),
            "hosts": b.hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
            "swap_in": b.swap_in,
            "connection_id": match &b.kind { BindingKind::OAuth { connection_id } => Some(connection_id.clone()), BindingKind::Static => None },
            "expired_on": b.expired_on,
        },
        "token": r.token.expose_secret(),
        "expires_at": r.expires_at,
    }))
    .into_response()
}

async fn service_resolve(
    State(s): State<ApiState>,
    ApiJson(r): ApiJson<ResolveRequest>,
) -> Response {
    match s
        .vault
        .resolve(&SandboxId::new(r.sandbox), &r.placeholder)
        .await
    {
        Ok(resolved) => resolved_json(resolved),
        Err(e) => token_error(e),
    }
}

async fn service_refresh(
    State(s): State<ApiState>,
    ApiJson(r): ApiJson<ResolveRequest>,
) -> Response {
    let Some(failed) = r.failed_token else {
        return ApiError(VaultError::Invalid("failed_token is required".into())).into_response();
    };
    match s
        .vault
        .refresh(&SandboxId::new(r.sandbox), &r.placeholder, &failed)
        .await
    {
        Ok(resolved) => resolved_json(resolved),
        Err(e) => token_error(e),
    }
}

#[derive(Deserialize)]
struct AuthRequest {
    sandbox: String,
    secret: SecretString,
}

async fn service_authenticate(
    State(s): State<ApiState>,
    ApiJson(r): ApiJson<AuthRequest>,
) -> Response {
    match s
        .vault
        .authenticate(&r.sandbox, r.secret.expose_secret())
        .await
    {
        Ok(id) => Json(json!({ "sandbox": id.as_str() })).into_response(),
        Err(e) => token_error(e),
    }
}

#[derive(Deserialize)]
struct BoundHostRequest {
    sandbox: String,
    host: String,
}

async fn service_bound_host(
    State(s): State<ApiState>,
    ApiJson(r): ApiJson<BoundHostRequest>,
) -> Response {
    let bound = s
        .vault
        .is_bound_host(&SandboxId::new(r.sandbox), &r.host)
        .await;
    Json(json!({ "bound": bound })).into_response()
}

/// Serves the API on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: ApiState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}
