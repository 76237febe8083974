//! The provider's grants: codes, token issue, refresh with rotation, revocation.

use super::*;

impl State {
    pub(super) fn new(client_id: &str, client_secret: &str) -> State {
        State {
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            deny: false,
            deny_next: false,
            refuse_refresh: false,
            fail_5xx: false,
            token_delay: Duration::ZERO,
            lifetime: DEFAULT_ACCESS_TOKEN_LIFETIME,
            revoke_mode: RevokeMode::Normal,
            no_refresh_tokens: false,
            revoke_requests: 0,
            expires_in_string: false,
            garbage_refresh: false,
            refresh_delay_for: None,
            codes: HashMap::new(),
            grants: Vec::new(),
            access_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            last_code_grant: None,
            client_credentials_grant: None,
            token_requests: HashMap::new(),
            refresh_count: 0,
            authorize_count: 0,
            revocations: Vec::new(),
            api_authorizations: Vec::new(),
            raw: Vec::new(),
            issued_access: Vec::new(),
            last_code_verifier_ok: None,
        }
    }

    pub(super) fn new_grant(&mut self, scope: String) -> usize {
        self.grants.push(Grant {
            scope,
            generation: 0,
            current_refresh: None,
            revoked: false,
        });
        self.grants.len() - 1
    }

    /// Issues an access token for `grant` and, if `with_refresh`, a refresh
    /// token that replaces the grant's current one.
    pub(super) fn issue(&mut self, grant: usize, with_refresh: bool) -> serde_json::Value {
        let access = random_token(ACCESS_TOKEN_PREFIX);
        let lifetime = self.lifetime;
        let g = &mut self.grants[grant];
        g.generation += 1;
        let generation = g.generation;
        let scope = g.scope.clone();
        self.access_tokens.insert(
            access.clone(),
            AccessToken {
                grant,
                generation,
                expires_at: SystemTime::now() + lifetime,
                revoked: false,
                force_expired: false,
            },
        );
        self.issued_access.push(access.clone());

        let mut body = serde_json::json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": lifetime.as_secs(),
        });
        if self.expires_in_string {
            body["expires_in"] = lifetime.as_secs().to_string().into();
        }
        if with_refresh {
            let refresh = random_token(REFRESH_TOKEN_PREFIX);
            self.refresh_tokens.insert(refresh.clone(), grant);
            self.grants[grant].current_refresh = Some(refresh.clone());
            body["refresh_token"] = refresh.into();
        }
        if !scope.is_empty() {
            body["scope"] = scope.into();
        }
        body
    }

    /// Revokes the grant, every access token issued for it and its refresh token.
    pub(super) fn revoke_grant(&mut self, grant: usize) {
        let g = &mut self.grants[grant];
        g.revoked = true;
        g.current_refresh = None;
        for token in self.access_tokens.values_mut() {
            if token.grant == grant {
                token.revoked = true;
            }
        }
    }

    /// Checks client authentication; `None` if it passed, else the error response.
    pub(super) fn reject_client(
        &self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Option<Response<Full<Bytes>>> {
        let basic = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("basic")
                    .then(|| rest.trim().to_string())
            });
        let (id, secret) = if let Some(encoded) = &basic {
            if form.contains_key("client_secret") {
                return Some(oauth_error(OAuthError(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "more than one client authentication method".into(),
                )));
            }
            let decoded = STANDARD
                .decode(encoded)
                .or_else(|_| STANDARD_NO_PAD.decode(encoded))
                .ok()
                .and_then(|d| String::from_utf8(d).ok());
            match decoded.as_deref().and_then(|d| d.split_once(':')) {
                Some((id, secret)) => (form_decode(id), form_decode(secret)),
                None => (String::new(), String::new()),
            }
        } else {
            (
                form.get("client_id").cloned().unwrap_or_default(),
                form.get("client_secret").cloned().unwrap_or_default(),
            )
        };
        if id == self.client_id && secret == self.client_secret {
            return None;
        }
        let mut response = oauth_error(OAuthError(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed".into(),
        ));
        if basic.is_some() {
            // RFC 6749 §5.2: a 401 answers with the scheme the client used.
            response.headers_mut().insert(
                "www-authenticate",
                hyper::header::HeaderValue::from_static("Basic realm=\"acme\""),
            );
        }
        Some(response)
    }

    pub(super) fn authorize(&mut self, query: &HashMap<String, String>) -> Response<Full<Bytes>> {
        let param = |name: &str| query.get(name).map(String::as_str).unwrap_or("");
        if param("client_id") != self.client_id {
            return html(StatusCode::BAD_REQUEST, "unknown client_id");
        }
        let redirect_uri = param("redirect_uri");
        if redirect_uri.is_empty() {
            return html(StatusCode::BAD_REQUEST, "missing redirect_uri");
        }
        let state = query.get("state").map(String::as_str);
        let redirect_error = |error: &str| redirect(redirect_uri, &[("error", Some(error))], state);
        let denied = || {
            redirect(
                redirect_uri,
                &[
                    ("error", Some("access_denied")),
                    ("error_description", Some("The user cancelled the consent")),
                ],
                state,
            )
        };

        if param("response_type") != "code" {
            return redirect_error("unsupported_response_type");
        }
        let challenge = param("code_challenge");
        if challenge.is_empty() || param("code_challenge_method") != "S256" {
            return redirect_error("invalid_request");
        }
        let deny_next = std::mem::take(&mut self.deny_next);
        if self.deny || deny_next {
            return denied();
        }
        let code = random_token("");
        self.codes.insert(
            code.clone(),
            Code {
                client_id: self.client_id.clone(),
                redirect_uri: redirect_uri.to_string(),
                scope: param("scope").to_string(),
                challenge: challenge.to_string(),
                used: false,
                grant: None,
            },
        );
        redirect(redirect_uri, &[("code", Some(&code))], state)
    }

    pub(super) fn token(
        &mut self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Response<Full<Bytes>> {
        if self.fail_5xx {
            return oauth_error(OAuthError(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the provider is down".into(),
            ));
        }
        if let Some(response) = self.reject_client(headers, form) {
            return response;
        }
        let param = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
        let result = match param("grant_type") {
            "authorization_code" => self.redeem_code(
                param("code"),
                form.get("redirect_uri").map(String::as_str),
                param("code_verifier"),
            ),
            "refresh_token" => self.refresh(param("refresh_token")),
            "client_credentials" => {
                let grant = match self.client_credentials_grant {
                    Some(grant) => grant,
                    None => {
                        let grant = self.new_grant(String::new());
                        self.client_credentials_grant = Some(grant);
                        grant
                    }
                };
                self.grants[grant].scope = param("scope").to_string();
                Ok(self.issue(grant, false))
            }
            "" => Err(OAuthError(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "missing grant_type".into(),
            )),
            _ => Err(OAuthError(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "unsupported grant_type".into(),
            )),
        };
        match result {
            Ok(body) => json(StatusCode::OK, &body),
            Err(error) => oauth_error(error),
        }
    }

    pub(super) fn redeem_code(
        &mut self,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: &str,
    ) -> Result<serde_json::Value, OAuthError> {
        let invalid =
            |why: &str| OAuthError(StatusCode::BAD_REQUEST, "invalid_grant", why.to_string());
        let Some(entry) = self.codes.get_mut(code) else {
            return Err(invalid("unknown authorization code"));
        };
        if entry.used {
            // RFC 6749 §4.1.2: a replayed code revokes what it produced.
            if let Some(grant) = entry.grant {
                self.revoke_grant(grant);
            }
            return Err(invalid("authorization code already used"));
        }
        // Single use: a failed redemption burns the code too.
        entry.used = true;
        let verifier_ok = pkce_s256_matches(verifier, &entry.challenge);
        let client_ok = entry.client_id == self.client_id;
        let redirect_ok = redirect_uri == Some(entry.redirect_uri.as_str());
        let scope = entry.scope.clone();
        self.last_code_verifier_ok = Some(verifier_ok);
        if !client_ok {
            return Err(invalid("code was issued to another client"));
        }
        if !redirect_ok {
            return Err(invalid(
                "redirect_uri does not match the authorization request",
            ));
        }
        if !verifier_ok {
            return Err(invalid("code_verifier does not match code_challenge"));
        }
        let grant = self.new_grant(scope);
        if let Some(entry) = self.codes.get_mut(code) {
            entry.grant = Some(grant);
        }
        self.last_code_grant = Some(grant);
        let with_refresh = !self.no_refresh_tokens;
        Ok(self.issue(grant, with_refresh))
    }

    pub(super) fn refresh(&mut self, refresh_token: &str) -> Result<serde_json::Value, OAuthError> {
        let invalid =
            |why: &str| OAuthError(StatusCode::BAD_REQUEST, "invalid_grant", why.to_string());
        if self.refuse_refresh {
            return Err(invalid("refresh refused"));
        }
        let Some(&grant) = self.refresh_tokens.get(refresh_token) else {
            return Err(invalid("unknown refresh token"));
        };
        let g = &self.grants[grant];
        if g.revoked {
            return Err(invalid("refresh token revoked"));
        }
        if g.current_refresh.as_deref() != Some(refresh_token) {
            return Err(invalid("refresh token was rotated"));
        }
        self.refresh_count += 1;
        let body = self.issue(grant, true);
        if self.garbage_refresh {
            return Ok(serde_json::json!({
                "access_token": 42,
                "refresh_token": body["refresh_token"].clone(),
            }));
        }
        Ok(body)
    }

    /// `DELETE /applications/{client_id}/grant` (GitHub): the grant of the
    /// access token goes, with every token of it.
    pub(super) fn delete_grant(
        &mut self,
        headers: &HeaderMap,
        client: &str,
        token: Option<&str>,
    ) -> Response<Full<Bytes>> {
        self.revoke_requests += 1;
        let basic_ok = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b).ok()
            })
            .is_some_and(|d| {
                d == format!("{}:{}", self.client_id, self.client_secret).into_bytes()
            });
        if !basic_ok || client != self.client_id {
            return json(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({"message": "Bad credentials"}),
            );
        }
        let Some(grant) = token
            .and_then(|t| self.access_tokens.get(t))
            .map(|t| t.grant)
        else {
            return json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!({"message": "Invalid access token"}),
            );
        };
        self.revocations
            .push(format!("grant:{}", token.unwrap_or_default()));
        self.revoke_grant(grant);
        Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    pub(super) fn revoke(
        &mut self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Response<Full<Bytes>> {
        if let Some(response) = self.reject_client(headers, form) {
            return response;
        }
        let Some(token) = form.get("token") else {
            return oauth_error(OAuthError(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "missing token".into(),
            ));
        };
        self.revocations.push(token.clone());
        // The hint only speeds up lookups (RFC 7009 §2.1); both kinds are searched.
        if let Some(access) = self.access_tokens.get_mut(token) {
            access.revoked = true;
        } else if let Some(&grant) = self.refresh_tokens.get(token) {
            // RFC 7009 §2.1: revoking a refresh token also invalidates the
            // access tokens of the same grant. A rotated-out one is already dead.
            if self.grants[grant].current_refresh.as_deref() == Some(token.as_str()) {
                self.revoke_grant(grant);
            }
        }
        Response::builder()
            .header("cache-control", "no-store")
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    pub(super) fn api(
        &mut self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Response<Full<Bytes>> {
        let authorization = headers
            .get(AUTHORIZATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        if let Some(value) = &authorization {
            self.api_authorizations.push(value.clone());
        }
        let token = authorization.as_deref().and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        let valid = token.and_then(|t| self.access_tokens.get(t)).filter(|t| {
            !t.revoked
                && !t.force_expired
                && SystemTime::now() < t.expires_at
                && !self.grants[t.grant].revoked
        });
        if let (Some(token), Some(rest)) = (valid, path.strip_prefix("/api/scoped/")) {
            let granted = self.grants[token.grant].scope.clone();
            if let Some(refusal) = scope_refusal(rest, &granted) {
                return refusal;
            }
        }
        match valid {
            Some(token) => json(
                StatusCode::OK,
                &serde_json::json!({
                    "ok": true,
                    "method": method.as_str(),
                    "path": path,
                    "token_generation": token.generation,
                }),
            ),
            None => Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header("www-authenticate", "Bearer error=\"invalid_token\"")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(
                    br#"{"ok":false,"error":"invalid_token"}"#,
                )))
                .unwrap(),
        }
    }
}

/// `/api/scoped/STYLE/SCOPE`: when the token's grant lacks `SCOPE`, the
/// answer a real provider gives, in its STYLE: `rfc6750`, `github`, `google`
/// or `slack`. `None` when the scope was granted (the usual 200 follows).
fn scope_refusal(rest: &str, granted: &str) -> Option<Response<Full<Bytes>>> {
    let (style, needed) = rest.split_once('/')?;
    let granted_list: Vec<&str> = granted.split_whitespace().collect();
    if granted_list.contains(&needed) {
        return None;
    }
    let builder = Response::builder().header("content-type", "application/json");
    let response = match style {
        "rfc6750" => builder
            .status(StatusCode::FORBIDDEN)
            .header(
                "www-authenticate",
                format!(r#"Bearer realm="acme", error="insufficient_scope", scope="{needed}""#),
            )
            .body(Full::new(Bytes::from_static(br#"{"error":"insufficient_scope"}"#))),
        "github" => builder
            .status(StatusCode::FORBIDDEN)
            .header("x-accepted-oauth-scopes", format!("{needed}, admin:org"))
            .header("x-oauth-scopes", granted_list.join(", "))
            .body(Full::new(Bytes::from_static(
                br#"{"message":"Resource not accessible by integration"}"#,
            ))),
        "google" => builder
            .status(StatusCode::FORBIDDEN)
            .header(
                "www-authenticate",
                format!(r#"Bearer realm="https://accounts.google.com/", error="insufficient_scope", scope="{needed}""#),
            )
            .body(Full::new(Bytes::from_static(
                br#"{"error":{"code":403,"message":"Request had insufficient authentication scopes.","errors":[{"message":"Insufficient Permission","domain":"global","reason":"insufficientPermissions"}],"status":"PERMISSION_DENIED"}}"#,
            ))),
        "slack" => builder.status(StatusCode::OK).body(Full::new(Bytes::from(
            serde_json::json!({
                "ok": false,
                "error": "missing_scope",
                "needed": needed,
                "provided": granted_list.join(","),
            })
            .to_string(),
        ))),
        _ => return None,
    };
    Some(response.unwrap())
}
