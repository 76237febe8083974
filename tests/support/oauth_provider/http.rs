//! Request routing and the provider's HTTP answers.

use super::*;

pub(super) async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return html(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large or broken",
            )
        }
    };
    let path = parts.uri.path().to_string();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| path.clone());

    let mut raw = format!(
        "{} {} {:?}\r\n",
        parts.method, path_and_query, parts.version
    );
    if let Some(authority) = parts.uri.authority() {
        raw.push_str(&format!(":authority: {authority}\r\n"));
    }
    for (name, value) in &parts.headers {
        raw.push_str(&format!(
            "{name}: {}\r\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    raw.push_str("\r\n");
    raw.push_str(&String::from_utf8_lossy(
        &body[..body.len().min(RAW_BODY_LIMIT)],
    ));
    lock(&state).raw.push(raw);

    let method = &parts.method;
    let headers = &parts.headers;
    match path.as_str() {
        "/authorize" if method == Method::GET => {
            let mut state = lock(&state);
            state.authorize_count += 1;
            match parse_form(parts.uri.query().unwrap_or("")) {
                Ok(query) => state.authorize(&query),
                Err(why) => html(StatusCode::BAD_REQUEST, &why),
            }
        }
        "/token" if method == Method::POST => {
            let form = parse_form(&String::from_utf8_lossy(&body));
            let grant_type = match &form {
                Ok(form) => form.get("grant_type").cloned().unwrap_or_default(),
                Err(_) => String::new(),
            };
            let delay = {
                let mut state = lock(&state);
                *state.token_requests.entry(grant_type).or_insert(0) += 1;
                let presented = form.as_ref().ok().and_then(|f| f.get("refresh_token"));
                match &state.refresh_delay_for {
                    Some((token, delay)) if Some(token) == presented => *delay,
                    _ => state.token_delay,
                }
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let mut state = lock(&state);
            match form {
                Ok(form) => state.token(headers, &form),
                Err(_) if state.fail_5xx => state.token(headers, &HashMap::new()),
                Err(why) => {
                    oauth_error(OAuthError(StatusCode::BAD_REQUEST, "invalid_request", why))
                }
            }
        }
        "/revoke" if method == Method::POST => {
            let mode = {
                let mut state = lock(&state);
                state.revoke_requests += 1;
                state.revoke_mode
            };
            match mode {
                RevokeMode::Normal => {}
                RevokeMode::ServerError => {
                    return oauth_error(OAuthError(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        "revocation backend down".into(),
                    ))
                }
                RevokeMode::Hang => {
                    tokio::time::sleep(Duration::from_secs(120)).await;
                    return html(StatusCode::SERVICE_UNAVAILABLE, "gave up");
                }
            }
            match parse_form(&String::from_utf8_lossy(&body)) {
                Ok(form) => lock(&state).revoke(headers, &form),
                Err(why) => {
                    oauth_error(OAuthError(StatusCode::BAD_REQUEST, "invalid_request", why))
                }
            }
        }
        p if p.starts_with("/applications/")
            && p.ends_with("/grant")
            && method == Method::DELETE =>
        {
            // GitHub's grant deletion: Basic client auth, {"access_token": …}.
            let client = p
                .trim_start_matches("/applications/")
                .trim_end_matches("/grant")
                .to_owned();
            let token = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["access_token"].as_str().map(str::to_owned));
            lock(&state).delete_grant(headers, &client, token.as_deref())
        }
        "/authorize" | "/token" | "/revoke" => {
            html(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        p if p == "/api" || p.starts_with("/api/") => lock(&state).api(method, p, headers),
        _ => html(StatusCode::NOT_FOUND, "not found"),
    }
}

pub(super) fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .header("pragma", "no-cache")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

pub(super) fn oauth_error(
    OAuthError(status, error, description): OAuthError,
) -> Response<Full<Bytes>> {
    json(
        status,
        &serde_json::json!({ "error": error, "error_description": description }),
    )
}

pub(super) fn html(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let page = format!(
        "<!doctype html><title>{0}</title><h1>{0}</h1><p>{1}</p>\n",
        status,
        message.replace('&', "&amp;").replace('<', "&lt;")
    );
    Response::builder()
        .status(status)
        .header("content-type", "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(page)))
        .unwrap()
}

/// A `302` to `redirect_uri` with `params` (and `state`, if any) added to its query.
pub(super) fn redirect(
    redirect_uri: &str,
    params: &[(&str, Option<&str>)],
    state: Option<&str>,
) -> Response<Full<Bytes>> {
    let mut location = redirect_uri.to_string();
    let mut separator = if redirect_uri.contains('?') { '&' } else { '?' };
    for (name, value) in params.iter().copied().chain([("state", state)]) {
        if let Some(value) = value {
            location.push(separator);
            location.push_str(name);
            location.push('=');
            location.push_str(&form_encode(value));
            separator = '&';
        }
    }
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", location)
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::new()))
        .unwrap()
}
