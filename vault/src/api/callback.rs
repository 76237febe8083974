//! The OAuth redirect target: finishes a connect and shows the result, in
//! the flow's tenant's branding (white-label).

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::errors;
use super::html::{escape, secure_branded};
use super::state::ApiState;
use crate::Branding;

#[derive(Deserialize)]
pub(super) struct Callback {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    /// OAuth 1.0a: the verifier of the authorized request token…
    oauth_verifier: Option<String>,
    /// …or, from providers such as X, the request token the user declined.
    denied: Option<String>,
}

pub(super) async fn oauth_callback(
    State(s): State<ApiState>,
    Query(q): Query<Callback>,
) -> Response {
    let state = q.state.as_deref().unwrap_or("");
    // Read before the completion uses the state up: whose page this is,
    // and where the browser may return (checked when the flow started).
    let context = s.vault.callback_context(state).await;
    let brand = match &context.tenant {
        Some(t) => s.vault.branding(t).await,
        None => Branding::default(),
    };
    // OAuth 1.0a answers in its own words: the verifier is the code, a
    // declined request token a denial.
    let (error, description) = match (&q.error, &q.denied) {
        (None, Some(_)) => (
            Some("access_denied"),
            Some("the user did not authorize the app"),
        ),
        _ => (q.error.as_deref(), q.error_description.as_deref()),
    };
    let result = s
        .vault
        .complete_connect_flow(
            state,
            q.code.as_deref().or(q.oauth_verifier.as_deref()),
            error,
            description,
        )
        .await;
    let mut response = match result {
        Ok(conn) => {
            if let Some(back) = &context.return_to {
                let to = return_location(back, context.flow_id.as_deref(), &conn.id);
                let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
                secure_branded(r.headers_mut());
                return r;
            }
            let warnings: String = conn
                .warnings
                .iter()
                .map(|w| format!("</p><p class=\"warning\">Warning: {}", escape(w)))
                .collect();
            (
                StatusCode::OK,
                Html(page(
                    &brand,
                    "Connected",
                    &format!(
                        "Your {} account is connected. You can close this window.{warnings}",
                        escape(&conn.provider)
                    ),
                    true,
                )),
            )
                .into_response()
        }
        Err(e) => {
            tracing::info!(error = %e, "OAuth callback refused");
            (
                errors::status(&e),
                Html(page(
                    &brand,
                    "Not connected",
                    &escape(&e.to_string()),
                    false,
                )),
            )
                .into_response()
        }
    };
    secure_branded(response.headers_mut());
    response
}

/// `return_to` with what happened added to its query.
fn return_location(back: &str, flow: Option<&str>, connection: &str) -> String {
    let Ok(mut url) = url::Url::parse(back) else {
        return back.to_owned();
    };
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("status", "connected");
        if let Some(flow) = flow {
            q.append_pair("flow", flow);
        }
        q.append_pair("connection", connection);
    }
    url.to_string()
}

/// `GET /connect/{id}`: a sandbox's one-time connect link. Sends the
/// browser to the provider's consent page, or says why the link is no good.
pub(super) async fn connect_link(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let mut response = match s.vault.open_connect_link(&id).await {
        Ok(started) => (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, started.authorization_url)],
        )
            .into_response(),
        Err(e) => {
            tracing::info!(error = %e, "connect link refused");
            let brand = match s.vault.connect_link_tenant(&id).await {
                Some(t) => s.vault.branding(&t).await,
                None => Branding::default(),
            };
            (
                errors::status(&e),
                Html(page(
                    &brand,
                    "Not connected",
                    &escape(&e.to_string()),
                    false,
                )),
            )
                .into_response()
        }
    };
    secure_branded(response.headers_mut());
    response
}

/// `GET /branding/{tenant}/style.css`: the tenant's accent colour as CSS
/// (the pages' CSP allows no inline style). Only checked colours get here.
pub(super) async fn branding_css(
    State(s): State<ApiState>,
    Path(tenant): Path<String>,
) -> Response {
    let brand = if crate::valid_name(&tenant) {
        s.vault.branding(&tenant).await
    } else {
        Branding::default()
    };
    let mut css = String::from(
        ".brand-logo { display: block; max-height: 48px; max-width: 200px; margin: 0 0 .75rem; }\n\
         .brand-name { font-weight: 600; color: var(--muted); margin: 0 0 .5rem; }\n",
    );
    if let Some(colour) = brand
        .accent_color
        .as_deref()
        .filter(|c| crate::tenants::is_hex_colour(c))
    {
        css.push_str(&format!(
            ":root {{ --accent: {colour}; }}\nh1.ok {{ color: {colour}; }}\n"
        ));
    }
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        css,
    )
        .into_response();
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    response
}

/// The callback page, in `brand`'s look. A popup opened by the console
/// tells its opener and closes itself (in `app.js`: the CSP allows no
/// inline script). Every stored value is escaped again here.
pub(super) fn page(brand: &Branding, title: &str, message: &str, ok: bool) -> String {
    let name = brand.display_name.as_deref().unwrap_or("airlock");
    let mut head_extra = String::new();
    let mut top = String::new();
    let mut bottom = String::new();
    if let Some(tenant) = &brand.tenant {
        head_extra = format!(
            "<link rel=\"stylesheet\" href=\"/branding/{}/style.css\">",
            escape(tenant)
        );
    }
    if let Some(logo) = &brand.logo_url {
        top.push_str(&format!(
            "<img class=\"brand-logo\" src=\"{}\" alt=\"{}\">",
            escape(logo),
            escape(name)
        ));
    }
    if brand.display_name.is_some() {
        top.push_str(&format!("<p class=\"brand-name\">{}</p>", escape(name)));
    }
    if let Some(back) = &brand.return_url {
        bottom.push_str(&format!(
            "<p><a class=\"button connect return\" href=\"{}\">Return to {}</a></p>",
            escape(back),
            escape(name)
        ));
    }
    if let Some(help) = &brand.support_url {
        bottom.push_str(&format!(
            "<p class=\"hint\"><a class=\"support\" href=\"{}\">Need help? Contact {} support</a></p>",
            escape(help),
            escape(name)
        ));
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title} · {}</title>\
         <link rel=\"stylesheet\" href=\"/console/style.css\">{head_extra}</head>\
         <body data-callback=\"{}\"><main><section class=\"card narrow\">{top}<h1 class=\"{}\">{title}</h1><p>{message}</p>{bottom}</section></main>\
         <script src=\"/console/app.js\"></script></body></html>",
        escape(name),
        if ok { "connected" } else { "failed" },
        if ok { "ok" } else { "err" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_branded_page_escapes_every_stored_value() {
        let brand = Branding {
            tenant: Some("acme".into()),
            display_name: Some("<script>alert(1)</script>\"Acme".into()),
            accent_color: Some("#ff5500".into()),
            logo_url: Some("https://acme.example/logo.png?a=1&b=\"><script>".into()),
            support_url: Some("https://acme.example/help\"onmouseover=\"x".into()),
            return_url: Some("https://acme.example/done".into()),
        };
        let html = page(&brand, "Connected", "ok", true);
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("\"><script>"), "{html}");
        assert!(!html.contains("\"onmouseover"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;Acme"),
            "{html}"
        );
        assert!(html
            .contains("src=\"https://acme.example/logo.png?a=1&amp;b=&quot;&gt;&lt;script&gt;\""));
        assert!(html.contains("href=\"/branding/acme/style.css\""));
        assert!(html.contains("href=\"https://acme.example/done\""));
        // The only scripts are the console's own file.
        assert_eq!(html.matches("<script").count(), 1, "{html}");
    }

    #[test]
    fn an_unbranded_page_is_airlock_s() {
        let html = page(&Branding::default(), "Not connected", "why", false);
        assert!(html.contains("<title>Not connected · airlock</title>"));
        assert!(!html.contains("/branding/") && !html.contains("<img"));
    }

    #[test]
    fn the_return_location_says_what_happened() {
        let to = return_location("https://acme.example/done?x=1", Some("flow_1"), "conn_1");
        assert_eq!(
            to,
            "https://acme.example/done?x=1&status=connected&flow=flow_1&connection=conn_1"
        );
    }
}
