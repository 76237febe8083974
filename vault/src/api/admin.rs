//! The admin API (admin credential). No answer carries a token, a refresh
//! token or a client secret.

use std::collections::HashMap;
use std::time::Duration;

use airlock_vault_client::{RulesSpec, SecretString};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::errors::{self, ApiError, ApiJson};
use super::state::{require_admin, ApiState};
use crate::{
    CompleteRequest, ConnectRequest, DuplicateProvider, FlowTarget, FlowView, MachineAccountSpec,
    NewSandbox, Provider, Scope, TenantSettings, TenantView, VaultError, DEFAULT_ENVIRONMENT,
    DEFAULT_TENANT, MAX_FLOW_WAIT,
};

pub(super) async fn readyz(State(state): State<ApiState>) -> Response {
    match state.vault.store().apps().await {
        Ok(_) => "ready\n".into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unavailable: {e}\n"),
        )
            .into_response(),
    }
}

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

/// 200 once deleted; 409 naming what still uses it, or for a catalog or
/// config-file provider; 404 for an unknown one.
async fn delete_provider(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.vault.delete_provider(&name).await?;
    Ok(Json(json!({ "deleted": { "provider": name } })))
}

/// 201 with the new provider's definition.
async fn duplicate_provider(
    State(s): State<ApiState>,
    Path(source): Path<String>,
    ApiJson(new): ApiJson<DuplicateProvider>,
) -> Result<Response, ApiError> {
    let copy = s.vault.duplicate_provider(&source, new).await?;
    Ok((StatusCode::CREATED, Json(json!(copy))).into_response())
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppKey {
    #[serde(default = "tenant")]
    tenant: String,
    #[serde(default = "environment")]
    environment: String,
}

async fn delete_app(
    State(s): State<ApiState>,
    Path(provider): Path<String>,
    Query(key): Query<AppKey>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.vault
        .delete_app(&key.tenant, &provider, &key.environment)
        .await?;
    Ok(Json(json!({
        "deleted": { "provider": provider, "tenant": key.tenant, "environment": key.environment }
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppQuery {
    provider: String,
    #[serde(default = "tenant")]
    tenant: String,
    #[serde(default = "environment")]
    environment: String,
}

/// `DELETE /v1/apps?provider=P[&tenant=T&environment=E]`: the same delete as
/// `DELETE /v1/apps/P`, beside the `PUT /v1/apps` that set it.
async fn delete_app_by_query(
    s: State<ApiState>,
    query: Result<Query<AppQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| {
        VaultError::Invalid(format!(
            "{} (DELETE /v1/apps needs ?provider=NAME, and takes tenant and environment)",
            e.body_text()
        ))
    })?;
    let key = AppKey {
        tenant: q.tenant,
        environment: q.environment,
    };
    delete_app(s, Path(q.provider), Query(key)).await
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
    /// A name for the connection (`airlock connect github --name work`).
    #[serde(default)]
    name: Option<String>,
    /// Where the browser goes after a successful callback (on the tenant's
    /// `return_url` origin).
    #[serde(default)]
    return_to: Option<String>,
}

async fn start_connection(
    State(s): State<ApiState>,
    ApiJson(c): ApiJson<StartConnection>,
) -> Result<Response, ApiError> {
    let scope = Scope::parse(c.scope.as_deref().unwrap_or("tenant"))?;
    let started = s
        .vault
        .start_connect_returning(
            &ConnectRequest {
                tenant: c.tenant,
                scope,
                provider: c.provider,
                scopes: c.scopes,
                environment: c.environment,
                name: c.name,
            },
            c.return_to.as_deref(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(json!(started))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartFlow {
    provider: String,
    /// Connect at the scope this sandbox resolves (instead of tenant/scope).
    #[serde(default)]
    sandbox: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    /// Default: the sandbox's, or `default` for an owner.
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    return_to: Option<String>,
}

/// `POST /v1/connect-flows`: `{id, authorization_url, expires_at, redirect_uri}`.
async fn start_flow(
    State(s): State<ApiState>,
    ApiJson(f): ApiJson<StartFlow>,
) -> Result<Response, ApiError> {
    let target = match (f.sandbox, f.tenant, f.scope) {
        (Some(sandbox), None, None) => FlowTarget::Sandbox(sandbox),
        (Some(_), _, _) => {
            return Err(ApiError(VaultError::Invalid(
                "give either sandbox (its scope is used) or tenant/scope, not both".into(),
            )))
        }
        (None, tenant, scope) => FlowTarget::Owner {
            tenant: tenant.unwrap_or_else(self::tenant),
            scope: Scope::parse(scope.as_deref().unwrap_or("tenant"))?,
        },
    };
    let started = s
        .vault
        .start_connect_flow(
            target,
            &f.provider,
            f.scopes,
            f.environment.as_deref(),
            f.name.as_deref(),
            f.return_to.as_deref(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(json!(started))).into_response())
}

/// The `wait` of `GET /v1/connect-flows/{id}`: whole seconds, capped at
/// `MAX_FLOW_WAIT`; no other parameter.
fn flow_wait(query: &HashMap<String, String>) -> Result<Duration, VaultError> {
    if let Some(other) = query.keys().find(|k| k.as_str() != "wait") {
        return Err(VaultError::Invalid(format!(
            "unknown query parameter {other:?} (only wait=SECONDS)"
        )));
    }
    let Some(wait) = query.get("wait") else {
        return Ok(Duration::ZERO);
    };
    let secs: u64 = wait.trim().parse().map_err(|_| {
        VaultError::Invalid(format!(
            "wait must be a whole number of seconds (0 to {}), not {wait:?}",
            MAX_FLOW_WAIT.as_secs()
        ))
    })?;
    Ok(Duration::from_secs(secs).min(MAX_FLOW_WAIT))
}

/// `POST /v1/connect/complete`: a platform's own callback handler passes
/// on `{state, code}` (or the provider's `error`); the flow finishes as on
/// `/oauth/callback` and the answer is the connection, never a token.
async fn complete_connect(
    State(s): State<ApiState>,
    ApiJson(c): ApiJson<CompleteRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let done = s.vault.complete_connect(&c).await.inspect_err(|e| {
        tracing::info!(error = %e, "connect completion refused");
    })?;
    Ok(Json(json!(done)))
}

async fn list_tenants(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!(s.vault.tenants().await?)))
}

async fn get_tenant(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<TenantView>, ApiError> {
    Ok(Json(s.vault.tenant(&name).await?))
}

/// `PUT /v1/tenants/{name}`: replaces the tenant's white-label settings.
async fn set_tenant(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    ApiJson(settings): ApiJson<TenantSettings>,
) -> Result<Json<TenantView>, ApiError> {
    Ok(Json(s.vault.set_tenant(&name, settings).await?))
}

async fn delete_tenant(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.vault.delete_tenant(&name).await?;
    Ok(Json(json!({ "deleted": { "tenant": name } })))
}

/// `GET /v1/connect-flows/{id}?wait=SECONDS`: the flow at once when it has
/// an outcome, else once it gets one or `wait` runs out (then `pending`).
async fn get_flow(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<FlowView>, ApiError> {
    let Query(query) = query.map_err(|e| VaultError::Invalid(e.body_text()))?;
    let wait = flow_wait(&query)?;
    Ok(Json(s.vault.wait_connect_flow(&id, wait).await?))
}

/// `DELETE /v1/connect-flows/{id}`: cancels a pending flow (409 once it ended).
async fn cancel_flow(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<FlowView>, ApiError> {
    Ok(Json(s.vault.cancel_connect_flow(&id).await?))
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectQuery {
    /// Delete even when the provider cannot confirm revocation.
    #[serde(default)]
    force: bool,
}

/// 200 once deleted; when revocation failed, the failure's status (502, 504…)
/// with `status: "revoke_pending"` and the reasons.
async fn delete_connection(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<DisconnectQuery>,
) -> Result<Response, ApiError> {
    let done = s.vault.disconnect(&id, q.force).await?;
    let mut body = json!(done);
    if done.status == crate::DisconnectStatus::Deleted {
        // Kept for older clients.
        body["deleted"] = json!(done.id);
        return Ok(Json(body).into_response());
    }
    let status = done
        .failure
        .as_ref()
        .map_or(StatusCode::BAD_GATEWAY, |e| errors::status(e));
    // A refusal that is not the provider's fault is still a failed upstream step.
    let status = if status.is_server_error() {
        status
    } else {
        StatusCode::BAD_GATEWAY
    };
    body["error"] = json!(format!(
        "revocation at the provider failed: {}. Connection {} is now revoke_pending: sandboxes can no longer use it, \
         and revocation is retried in the background until the provider confirms it. \
         To delete it now anyway (its tokens may stay live at the provider): airlock disconnect --force {}",
        done.revoke_errors.join("; "),
        done.id,
        done.id
    ));
    Ok((status, Json(body)).into_response())
}

async fn add_machine_account(
    State(s): State<ApiState>,
    ApiJson(m): ApiJson<MachineAccountSpec>,
) -> Result<Response, ApiError> {
    let view = s.vault.add_machine_account(m).await?;
    Ok((StatusCode::CREATED, Json(json!(view))).into_response())
}

async fn list_environments(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!(s.vault.environments().await?)))
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

/// `PUT /v1/sandboxes/{id}/rules/{variable}`: the binding's own request
/// rules; `{}` goes back to the provider's.
async fn set_binding_rules(
    State(s): State<ApiState>,
    Path((id, variable)): Path<(String, String)>,
    ApiJson(spec): ApiJson<RulesSpec>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.vault.set_binding_rules(&id, &variable, &spec).await?;
    Ok(Json(
        json!({ "sandbox": id, "variable": variable, "rules": spec }),
    ))
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
struct TenantKey {
    #[serde(default = "tenant")]
    tenant: String,
}

async fn delete_secret(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(key): Query<TenantKey>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.vault.delete_secret(&key.tenant, &name).await?;
    Ok(Json(
        json!({ "deleted": { "name": name, "tenant": key.tenant } }),
    ))
}

/// The console's recent requests: this process's proxy's and the ones
/// remote proxies reported, newest first.
async fn list_requests(State(s): State<ApiState>) -> Json<serde_json::Value> {
    Json(json!(super::console::recent_requests(&s).await))
}

async fn list_secrets(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!(s.vault.secrets().await?)))
}

async fn add_secret(
    State(s): State<ApiState>,
    ApiJson(a): ApiJson<crate::NewSecret>,
) -> Result<Response, ApiError> {
    let view = s.vault.put_secret(a).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

pub(super) fn routes(state: &ApiState) -> Router<ApiState> {
    Router::new()
        .route("/v1/providers", get(list_providers).post(add_provider))
        .route("/v1/providers/{name}", delete(delete_provider))
        .route("/v1/providers/{name}/duplicate", post(duplicate_provider))
        .route(
            "/v1/apps",
            get(list_apps)
                .put(set_app)
                .post(set_app)
                .delete(delete_app_by_query),
        )
        .route("/v1/apps/{provider}", delete(delete_app))
        .route(
            "/v1/connections",
            get(list_connections).post(start_connection),
        )
        .route(
            "/v1/connections/{id}",
            get(get_connection).delete(delete_connection),
        )
        .route("/v1/connect-flows", post(start_flow))
        .route("/v1/connect-flows/{id}", get(get_flow).delete(cancel_flow))
        .route("/v1/connect/complete", post(complete_connect))
        .route("/v1/tenants", get(list_tenants))
        .route(
            "/v1/tenants/{name}",
            get(get_tenant).put(set_tenant).delete(delete_tenant),
        )
        .route("/v1/machine-accounts", post(add_machine_account))
        .route("/v1/environments", get(list_environments))
        .route("/v1/sandboxes", get(list_sandboxes).post(create_sandbox))
        .route("/v1/sandboxes/{id}", delete(delete_sandbox))
        .route(
            "/v1/sandboxes/{id}/rules/{variable}",
            axum::routing::put(set_binding_rules),
        )
        .route("/v1/secrets", get(list_secrets).post(add_secret))
        .route("/v1/requests", get(list_requests))
        .route("/v1/secrets/{name}", delete(delete_secret))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin,
        ))
}
