//! The service API the proxy uses (service credential); its bodies are the
//! typed contract in `airlock_vault_client::contract`.

use std::time::Duration;

use airlock_vault_client::contract::paths;
use airlock_vault_client::contract::{
    AuthenticateAnswer, AuthenticateRequest, BoundHostAnswer, BoundHostRequest, ChangeNotice,
    GuardedAnswer, GuardedRequest, GuardedToken, RequestBatch, RequestsAccepted, ResolveRequest,
    ResolvedAnswer, StatusRequest, StepUpRequest, CHANGE_KEEPALIVE_SECS, MAX_REQUEST_BATCH,
};
use airlock_vault_client::{Resolved, SandboxId, TokenError, TokenSource};
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use secrecy::ExposeSecret;

use super::errors::{token_error, ApiError, ApiJson};
use super::state::{require_service, ApiState};
use crate::error::VaultError;

fn resolved(result: Result<Resolved, TokenError>) -> Response {
    match result {
        Ok(r) => Json(ResolvedAnswer::from(&r)).into_response(),
        Err(e) => token_error(e),
    }
}

async fn service_resolve(
    State(s): State<ApiState>,
    ApiJson(r): ApiJson<ResolveRequest>,
) -> Response {
    resolved(
        s.vault
            .resolve(&SandboxId::new(r.sandbox), &r.placeholder)
            .await,
    )
}

async fn service_refresh(
    State(s): State<ApiState>,
    ApiJson(r): ApiJson<ResolveRequest>,
) -> Response {
    let Some(failed) = r.failed_token else {
        return ApiError(VaultError::Invalid("failed_token is required".into())).into_response();
    };
    resolved(
        s.vault
            .refresh(&SandboxId::new(r.sandbox), &r.placeholder, &failed)
            .await,
    )
}

/// Every token the sandbox could obtain, for the remote proxy's response firewall.
async fn service_guarded(
    State(s): State<ApiState>,
    ApiJson(r): ApiJson<GuardedRequest>,
) -> Response {
    match s.vault.guarded(&SandboxId::new(r.sandbox)).await {
        Ok(list) => Json(GuardedAnswer {
            guarded: list.iter().map(GuardedToken::from).collect(),
        })
        .into_response(),
        Err(e) => token_error(e),
    }
}

async fn service_authenticate(
    State(s): State<ApiState>,
    ApiJson(r): ApiJson<AuthenticateRequest>,
) -> Response {
    match s
        .vault
        .authenticate(&r.sandbox, r.secret.expose_secret())
        .await
    {
        Ok(id) => Json(AuthenticateAnswer {
            sandbox: id.as_str().to_owned(),
        })
        .into_response(),
        Err(e) => token_error(e),
    }
}

/// The sandbox's own view of its credentials (no token in it).
async fn service_status(State(s): State<ApiState>, ApiJson(r): ApiJson<StatusRequest>) -> Response {
    match s.vault.status(&SandboxId::new(r.sandbox)).await {
        Ok(status) => Json(status).into_response(),
        Err(e) => token_error(e),
    }
}

async fn service_bound_host(
    State(s): State<ApiState>,
    ApiJson(r): ApiJson<BoundHostRequest>,
) -> Response {
    let sandbox = SandboxId::new(r.sandbox);
    let bound = s.vault.is_bound_host(&sandbox, &r.host).await;
    let body_swap = bound && s.vault.may_swap_body(&sandbox, &r.host).await;
    let policy = if bound {
        TokenSource::host_policy(&*s.vault, &sandbox, &r.host).await
    } else {
        Default::default()
    };
    Json(BoundHostAnswer {
        body_swap,
        bound,
        policy,
    })
    .into_response()
}

async fn service_step_up(
    State(s): State<ApiState>,
    ApiJson(r): ApiJson<StepUpRequest>,
) -> Response {
    let sandbox = SandboxId::new(r.sandbox);
    match s.vault.step_up(&sandbox, &r.connection_id, &r.needed).await {
        Ok(step_up) => Json(step_up).into_response(),
        Err(e) => token_error(e),
    }
}

/// The change stream remote proxies follow: one [`ChangeNotice`] line now,
/// one at every change, one every keep-alive period.
async fn service_changes(State(s): State<ApiState>) -> Response {
    let changes = s.vault.subscribe_changes();
    let keepalive = Duration::from_secs(CHANGE_KEEPALIVE_SECS);
    let lines =
        futures_util::stream::unfold((changes, true), move |(mut changes, first)| async move {
            if !first {
                // A change, or the keep-alive's silence; an error: the vault is going away.
                if let Ok(Err(_)) = tokio::time::timeout(keepalive, changes.changed()).await {
                    return None;
                }
            }
            let notice = ChangeNotice {
                generation: *changes.borrow_and_update(),
            };
            let mut line = serde_json::to_vec(&notice).expect("a notice serialises");
            line.push(b'\n');
            Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(line)),
                (changes, false),
            ))
        });
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(lines),
    )
        .into_response()
}

/// A remote proxy's finished requests, kept for the console.
async fn service_requests(
    State(s): State<ApiState>,
    ApiJson(batch): ApiJson<RequestBatch>,
) -> Response {
    if batch.records.len() > MAX_REQUEST_BATCH {
        return ApiError(VaultError::Invalid(format!(
            "at most {MAX_REQUEST_BATCH} records per batch"
        )))
        .into_response();
    }
    let clip = |text: &mut String| {
        if text.len() > MAX_FIELD {
            let mut end = MAX_FIELD;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
    };
    let mut records = batch.records;
    for r in &mut records {
        for field in [
            &mut r.sandbox,
            &mut r.mode,
            &mut r.method,
            &mut r.host,
            &mut r.path,
            &mut r.outcome,
        ] {
            clip(field);
        }
        r.swapped.truncate(32);
        r.swapped.iter_mut().for_each(clip);
    }
    let mut proxy = batch.proxy;
    clip(&mut proxy);
    match s.vault.store().insert_requests(&proxy, &records).await {
        Ok(()) => Json(RequestsAccepted {
            accepted: records.len(),
        })
        .into_response(),
        Err(e) => ApiError(e).into_response(),
    }
}

/// Longest text kept of a reported request's field.
const MAX_FIELD: usize = 2048;
/// Largest batch body: [`MAX_REQUEST_BATCH`] records of ordinary size.
const REQUESTS_BODY_LIMIT: usize = 4 * 1024 * 1024;

pub(super) fn routes(state: &ApiState) -> Router<ApiState> {
    Router::new()
        // A full batch is larger than the API's usual body limit.
        .route(
            paths::REQUESTS,
            post(service_requests).layer(axum::extract::DefaultBodyLimit::max(REQUESTS_BODY_LIMIT)),
        )
        .route(paths::CHANGES, get(service_changes))
        .route(paths::RESOLVE, post(service_resolve))
        .route(paths::REFRESH, post(service_refresh))
        .route(paths::GUARDED, post(service_guarded))
        .route(paths::AUTHENTICATE, post(service_authenticate))
        .route(paths::BOUND_HOST, post(service_bound_host))
        .route(paths::STEP_UP, post(service_step_up))
        .route(paths::STATUS, post(service_status))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_service,
        ))
}
