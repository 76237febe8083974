//! Talking to OAuth providers, through the `oauth2` crate: authorization URLs
//! with PKCE, code exchange, refresh, client credentials and revocation.

use std::time::Duration;

use base64::Engine as _;
use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, AuthUrl, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    PkceCodeChallenge, RedirectUrl, RevocationUrl, Scope, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};

mod answer;
pub mod oauth1;
#[cfg(test)]
mod tests;

use answer::{describe_reqwest, form_encode, ErrorBody};
pub use answer::{interpret, interpret_at, refused, salvage_refresh_token};

use crate::catalog::{ClientAuth, Inject, Provider, RevokeBody, RevokeRequest};
use crate::error::{OAuthAnswer, OAuthErrorCode, ProviderError, Step, VaultError};

type Client = BasicClient<
    EndpointMaybeSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The most of a token endpoint's answer that is read.
const MAX_TOKEN_ANSWER: usize = 256 * 1024;

/// What is asked of the token endpoint.
pub enum Grant<'a> {
    Code {
        code: &'a str,
        redirect: &'a str,
        verifier: &'a SecretString,
    },
    Refresh(&'a SecretString),
    ClientCredentials(&'a [String]),
}

impl Grant<'_> {
    pub fn step(&self) -> Step {
        match self {
            Self::Code { .. } => Step::CodeExchange,
            Self::Refresh(_) => Step::Refresh,
            Self::ClientCredentials(_) => Step::ClientCredentials,
        }
    }
}

/// A token endpoint's answer as it arrived. The body may hold tokens: it is
/// sealed before it is kept anywhere and never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct RawAnswer {
    pub status: u16,
    pub body: Vec<u8>,
    /// When it arrived: `expires_in` counts from here.
    pub received_at: i64,
}

impl std::fmt::Debug for RawAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawAnswer")
            .field("status", &self.status)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl RawAnswer {
    /// A text form to seal: `STATUS RECEIVED_AT BASE64(BODY)`.
    pub fn to_secret(&self) -> SecretString {
        SecretString::from(format!(
            "{} {} {}",
            self.status,
            self.received_at,
            base64::engine::general_purpose::STANDARD.encode(&self.body)
        ))
    }

    pub fn from_secret(text: &SecretString) -> Option<Self> {
        let mut parts = text.expose_secret().splitn(3, ' ');
        let status = parts.next()?.parse().ok()?;
        let received_at = parts.next()?.parse().ok()?;
        let body = base64::engine::general_purpose::STANDARD
            .decode(parts.next()?)
            .ok()?;
        Some(Self {
            status,
            body,
            received_at,
        })
    }
}

/// Tokens a grant returned. Secrets stay in secret types.
pub struct Granted {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub expires_in: Option<Duration>,
    pub scopes: Option<Vec<String>>,
}

/// Which client (app or machine account) talks to the provider.
/// Where a connect flow sends the user, and what the vault keeps to finish it.
pub struct AuthorizeLink {
    pub url: String,
    pub state: SecretString,
    pub pkce_verifier: SecretString,
}

pub struct ClientCreds<'a> {
    pub client_id: &'a str,
    pub client_secret: Option<&'a SecretString>,
    /// Overrides the provider's token URL (machine accounts).
    pub token_url: Option<&'a str>,
}

pub struct OAuth {
    http: reqwest::Client,
    /// Revocation is bounded apart from grants: a disconnect waits for it.
    revoke_timeout: Duration,
}

fn url_err(field: &str) -> impl Fn(url::ParseError) -> VaultError + '_ {
    move |e| VaultError::Invalid(format!("{field}: {e}"))
}

impl OAuth {
    pub fn new(http: reqwest::Client) -> Self {
        Self {
            http,
            revoke_timeout: Duration::from_secs(10),
        }
    }

    pub fn with_revoke_timeout(mut self, timeout: Duration) -> Self {
        self.revoke_timeout = timeout;
        self
    }

    fn client(
        &self,
        provider: &Provider,
        creds: &ClientCreds<'_>,
        redirect: Option<&str>,
    ) -> Result<Client, VaultError> {
        let mut client = BasicClient::new(ClientId::new(creds.client_id.to_owned()))
            .set_auth_uri_option(
                provider
                    .authorize_url
                    .as_ref()
                    .map(|u| AuthUrl::new(u.clone()))
                    .transpose()
                    .map_err(url_err("authorize_url"))?,
            )
            .set_token_uri_option(Some(
                TokenUrl::new(creds.token_url.unwrap_or(&provider.token_url).to_owned())
                    .map_err(url_err("token_url"))?,
            ))
            .set_revocation_url_option(
                provider
                    .revoke_url
                    .as_ref()
                    .map(|u| RevocationUrl::new(u.clone()))
                    .transpose()
                    .map_err(url_err("revoke_url"))?,
            )
            .set_auth_type(match provider.client_auth {
                ClientAuth::Basic => AuthType::BasicAuth,
                ClientAuth::Body => AuthType::RequestBody,
            });
        if let Some(secret) = creds.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()));
        }
        if let Some(redirect) = redirect {
            client = client.set_redirect_uri(
                RedirectUrl::new(redirect.to_owned()).map_err(url_err("redirect"))?,
            );
        }
        Ok(client)
    }

    /// The URL to send the user to, its `state`, and the PKCE verifier to keep.
    pub fn authorize_url(
        &self,
        provider: &Provider,
        creds: &ClientCreds<'_>,
        redirect: &str,
        scopes: &[String],
    ) -> Result<AuthorizeLink, VaultError> {
        let client = self.client(provider, creds, Some(redirect))?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(CsrfToken::new_random)
            .map_err(|_| {
                VaultError::Invalid(format!("provider {} has no authorize_url", provider.name))
            })?
            .set_pkce_challenge(challenge)
            .add_scopes(scopes.iter().map(|s| Scope::new(s.clone())));
        for (k, v) in &provider.authorize_params {
            request = request.add_extra_param(k.clone(), v.clone());
        }
        let (url, state) = request.url();
        Ok(AuthorizeLink {
            url: url.to_string(),
            state: SecretString::from(state.secret().clone()),
            pkce_verifier: SecretString::from(verifier.secret().clone()),
        })
    }

    pub async fn exchange_code(
        &self,
        provider: &Provider,
        creds: &ClientCreds<'_>,
        redirect: &str,
        code: &str,
        verifier: &SecretString,
    ) -> Result<Granted, VaultError> {
        let grant = Grant::Code {
            code,
            redirect,
            verifier,
        };
        let raw = self.token_request(provider, creds, &grant).await?;
        interpret_at(&raw, Step::CodeExchange, provider, creds.client_id)
    }

    pub async fn refresh(
        &self,
        provider: &Provider,
        creds: &ClientCreds<'_>,
        refresh_token: &SecretString,
    ) -> Result<Granted, VaultError> {
        let grant = Grant::Refresh(refresh_token);
        let raw = self.token_request(provider, creds, &grant).await?;
        interpret_at(&raw, Step::Refresh, provider, creds.client_id)
    }

    pub async fn client_credentials(
        &self,
        provider: &Provider,
        creds: &ClientCreds<'_>,
        scopes: &[String],
    ) -> Result<Granted, VaultError> {
        let grant = Grant::ClientCredentials(scopes);
        let raw = self.token_request(provider, creds, &grant).await?;
        interpret_at(&raw, Step::ClientCredentials, provider, creds.client_id)
    }

    /// Sends a grant to the token endpoint and returns its answer unread, so
    /// the caller can keep it before interpreting it. Only transport failures
    /// are errors here.
    pub async fn token_request(
        &self,
        provider: &Provider,
        creds: &ClientCreds<'_>,
        grant: &Grant<'_>,
    ) -> Result<RawAnswer, VaultError> {
        let url = creds.token_url.unwrap_or(&provider.token_url);
        url::Url::parse(url).map_err(url_err("token_url"))?;
        let mut form: Vec<(&str, &str)> = Vec::new();
        let joined;
        match grant {
            Grant::Code {
                code,
                redirect,
                verifier,
            } => form.extend([
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect),
                ("code_verifier", verifier.expose_secret()),
            ]),
            Grant::Refresh(token) => form.extend([
                ("grant_type", "refresh_token"),
                ("refresh_token", token.expose_secret()),
            ]),
            Grant::ClientCredentials(scopes) => {
                form.push(("grant_type", "client_credentials"));
                joined = scopes.join(" ");
                if !joined.is_empty() {
                    form.push(("scope", &joined));
                }
            }
        }
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json");
        match (provider.client_auth, creds.client_secret) {
            (ClientAuth::Basic, Some(secret)) => {
                // RFC 6749 §2.3.1: both parts form-encoded before Base64.
                let user = form_encode(creds.client_id);
                let pass = form_encode(secret.expose_secret());
                let basic =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
                request = request.header(reqwest::header::AUTHORIZATION, format!("Basic {basic}"));
            }
            (_, secret) => {
                form.push(("client_id", creds.client_id));
                if let Some(secret) = secret {
                    form.push(("client_secret", secret.expose_secret()));
                }
            }
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&form)
            .finish();
        let mut response = request
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| ProviderError::transport(&provider.name, grant.step(), e))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ProviderError::transport(&provider.name, grant.step(), e))?
        {
            if body.len() + chunk.len() > MAX_TOKEN_ANSWER {
                return Err(VaultError::ProviderUnavailable(format!(
                    "the token endpoint's answer is larger than {MAX_TOKEN_ANSWER} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(RawAnswer {
            status,
            body,
            received_at: crate::store::now(),
        })
    }

    /// Asks `url` (a host the token is bound to) whether `token` is live,
    /// presented the way the provider's `inject` says. The HTTP status.
    pub async fn probe(
        &self,
        provider: &Provider,
        url: &str,
        token: &SecretString,
    ) -> Result<u16, VaultError> {
        let inject = crate::catalog::parse_inject(&provider.inject).map_err(VaultError::Config)?;
        let t = token.expose_secret();
        let (name, value) = match inject {
            Inject::Bearer => ("authorization".to_owned(), format!("Bearer {t}")),
            Inject::Token => ("authorization".to_owned(), format!("token {t}")),
            Inject::Basic { user } => (
                "authorization".to_owned(),
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{t}"))
                ),
            ),
            Inject::Header { name } => (name, t.to_owned()),
        };
        let mut value = reqwest::header::HeaderValue::from_str(&value)
            .map_err(|_| VaultError::Invalid("the token cannot be sent in a header".into()))?;
        value.set_sensitive(true);
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(name.as_str(), value)
            .send()
            .await
            .map_err(|e| VaultError::ProviderUnavailable(describe_reqwest(e)))?;
        Ok(response.status().as_u16())
    }

    /// RFC 7009 revocation; `Ok(false)` when the provider has no revoke URL.
    /// Sent here rather than through `oauth2` to keep the HTTP status and the
    /// provider's `error_description` for the operator. Anything but 200 is a
    /// failure, except `unsupported_token_type` (the provider cannot revoke
    /// that kind of token: nothing more to do for it).
    /// A revocation the catalog describes (not RFC 7009). `Ok(false)` for a
    /// token it does not send; a 2xx or 404 (already gone) is done.
    async fn revoke_as(
        &self,
        provider: &Provider,
        how: &RevokeRequest,
        creds: &ClientCreds<'_>,
        token: &SecretString,
        is_refresh: bool,
    ) -> Result<bool, VaultError> {
        if !how.tokens.includes(is_refresh) {
            return Ok(false);
        }
        let step = Step::Revocation;
        let url = how
            .url
            .replace("{client_id}", &form_encode(creds.client_id));
        let method = reqwest::Method::from_bytes(how.method.as_bytes())
            .map_err(|_| VaultError::Config(format!("revoke.method {:?}", how.method)))?;
        let mut fields: Vec<(&str, &str)> = vec![(how.token_field.as_str(), token.expose_secret())];
        let mut request = self
            .http
            .request(method, &url)
            .header("accept", "application/json");
        match (how.client_auth, creds.client_secret) {
            (ClientAuth::Basic, Some(secret)) => {
                request = request.basic_auth(creds.client_id, Some(secret.expose_secret()));
            }
            (_, secret) => {
                fields.push(("client_id", creds.client_id));
                if let Some(secret) = secret {
                    fields.push(("client_secret", secret.expose_secret()));
                }
            }
        }
        request = match how.body {
            RevokeBody::Form => request.form(&fields),
            RevokeBody::Json => {
                let body: serde_json::Map<String, serde_json::Value> = fields
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String((*v).to_owned())))
                    .collect();
                request.json(&body)
            }
        };
        let response = request
            .timeout(self.revoke_timeout)
            .send()
            .await
            .map_err(|e| ProviderError::transport(&provider.name, step, e))?;
        let status = response.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            return Ok(true);
        }
        Err(ProviderError::Status {
            provider: provider.name.clone(),
            step,
            status: status.as_u16(),
            answer: None,
        }
        .into())
    }

    pub async fn revoke(
        &self,
        provider: &Provider,
        creds: &ClientCreds<'_>,
        token: &SecretString,
        is_refresh: bool,
    ) -> Result<bool, VaultError> {
        if let Some(how) = &provider.revoke {
            return self
                .revoke_as(provider, how, creds, token, is_refresh)
                .await;
        }
        let Some(url) = &provider.revoke_url else {
            return Ok(false);
        };
        let step = Step::Revocation;
        let mut form: Vec<(&str, &str)> = vec![
            ("token", token.expose_secret()),
            (
                "token_type_hint",
                if is_refresh {
                    "refresh_token"
                } else {
                    "access_token"
                },
            ),
        ];
        let mut request = self.http.post(url).header("accept", "application/json");
        match (provider.client_auth, creds.client_secret) {
            (ClientAuth::Basic, Some(secret)) => {
                // RFC 6749 §2.3.1: both parts form-encoded before Basic.
                request = request.basic_auth(
                    form_encode(creds.client_id),
                    Some(form_encode(secret.expose_secret())),
                );
            }
            (_, secret) => {
                form.push(("client_id", creds.client_id));
                if let Some(secret) = secret {
                    form.push(("client_secret", secret.expose_secret()));
                }
            }
        }
        let response = request
            .form(&form)
            .timeout(self.revoke_timeout)
            .send()
            .await
            .map_err(|e| ProviderError::transport(&provider.name, step, e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(true);
        }
        // Only the OAuth fields are kept; the rest of the body is not read into messages.
        let body = response.bytes().await.unwrap_or_default();
        let answer = serde_json::from_slice::<ErrorBody>(&body)
            .ok()
            .map(|b| OAuthAnswer::new(&b.error, b.error_description.as_deref()));
        if answer
            .as_ref()
            .is_some_and(|a| a.code() == Some(OAuthErrorCode::UnsupportedTokenType))
        {
            return Ok(false);
        }
        if answer
            .as_ref()
            .is_some_and(|a| a.code() == Some(OAuthErrorCode::InvalidClient))
        {
            return Err(VaultError::ClientRefused {
                provider: provider.name.clone(),
                client_id: creds.client_id.to_owned(),
                answer: answer.expect("checked above"),
            });
        }
        Err(ProviderError::Status {
            provider: provider.name.clone(),
            step,
            status: status.as_u16(),
            answer,
        }
        .into())
    }
}
