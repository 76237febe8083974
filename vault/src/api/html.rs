//! What the console and the OAuth callback page share: escaping and the
//! security headers of every page.

use axum::http::{header, HeaderMap, HeaderValue};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The connect and callback pages show a tenant's logo: from its https://
/// address or inline as a data: image (both checked when stored).
const BRANDED_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                           img-src 'self' https: data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Headers every console answer carries.
pub fn secure(headers: &mut HeaderMap) {
    secure_with(headers, CSP);
}

/// [`secure`], for the pages that may show a tenant's logo.
pub fn secure_branded(headers: &mut HeaderMap) {
    secure_with(headers, BRANDED_CSP);
}

fn secure_with(headers: &mut HeaderMap, csp: &'static str) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
