//! The OAuth redirect target: finishes a connect and shows the result.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::errors;
use super::html::{escape, secure};
use super::state::ApiState;

#[derive(Deserialize)]
pub(super) struct Callback {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

pub(super) async fn oauth_callback(
    State(s): State<ApiState>,
    Query(q): Query<Callback>,
) -> Response {
    let result = s
        .vault
        .complete_connect_flow(
            q.state.as_deref().unwrap_or(""),
            q.code.as_deref(),
            q.error.as_deref(),
            q.error_description.as_deref(),
        )
        .await;
    let (status, html) = match result {
        Ok(conn) => {
            let warnings: String = conn
                .warnings
                .iter()
                .map(|w| format!("</p><p class=\"warning\">Warning: {}", escape(w)))
                .collect();
            (
                StatusCode::OK,
                page(
                    "Connected",
                    &format!(
                        "Your {} account is connected. You can close this window.{warnings}",
                        escape(&conn.provider)
                    ),
                    true,
                ),
            )
        }
        Err(e) => {
            tracing::info!(error = %e, "OAuth callback refused");
            (
                errors::status(&e),
                page("Not connected", &escape(&e.to_string()), false),
            )
        }
    };
    let mut response = (status, Html(html)).into_response();
    secure(response.headers_mut());
    response
}

/// `GET /connect/{id}`: a sandbox's one-time connect link. Sends the
/// browser to the provider's consent page, or says why the link is no good.
pub(super) async fn connect_link(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let mut response = match s.vault.open_connect_link(&id).await {
        Ok(started) => (
            StatusCode::SEE_OTHER,
            [(axum::http::header::LOCATION, started.authorization_url)],
        )
            .into_response(),
        Err(e) => {
            tracing::info!(error = %e, "connect link refused");
            (
                errors::status(&e),
                Html(page("Not connected", &escape(&e.to_string()), false)),
            )
                .into_response()
        }
    };
    secure(response.headers_mut());
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
