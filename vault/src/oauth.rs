//! Talking to OAuth providers, through the `oauth2` crate: authorization URLs
//! with PKCE, code exchange, refresh, client credentials and revocation.

use std::time::Duration;

use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenResponse};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken,
    RequestTokenError, RevocationUrl, Scope, StandardRevocableToken, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};

use crate::catalog::{ClientAuth, Provider};
use crate::error::VaultError;

type Client = BasicClient<
    EndpointMaybeSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Tokens a grant returned. Secrets stay in secret types.
pub struct Granted {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub expires_in: Option<Duration>,
    pub scopes: Option<Vec<String>>,
}

/// Which client (app or machine account) talks to the provider.
pub struct ClientCreds<'a> {
    pub client_id: &'a str,
    pub client_secret: Option<&'a SecretString>,
    /// Overrides the provider's token URL (machine accounts).
    pub token_url: Option<&'a str>,
}

pub struct OAuth {
    http: reqwest::Client,
}

fn url_err(field: &str) -> impl Fn(url::ParseError) -> VaultError + '_ {
    move |e| VaultError::Invalid(format!("{field}: {e}"))
}

impl OAuth {
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
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

    /// The URL to send the user to, the `state`, and the PKCE verifier to keep.
    pub fn authorize_url(
        &self,
        provider: &Provider,
        creds: &ClientCreds<'_>,
        redirect: &str,
        scopes: &[String],
    ) -> Result<(String, SecretString, SecretString), VaultError> {
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
        Ok((
            url.to_string(),
            SecretString::from(state.secret().clone()),
            SecretString::from(verifier.secret().clone()),
        ))
    }

    pub async fn exchange_code(
        &self,
        provider: &Provider,
        creds: &ClientCreds<'_>,
        redirect: &str,
        code: &str,
        verifier: &SecretString,
    ) -> Result<Granted, VaultError> {
        let client = self.client(provider, creds, Some(redirect))?;
        let result = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(config_err)?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.expose_secret().to_owned()))
            .request_async(&self.http)
            .await;
        granted(result)
    }

    pub async fn refresh(
        &self,
        provider: &Provider,
        creds: &ClientCreds<'_>,
        refresh_token: &SecretString,
    ) -> Result<Granted, VaultError> {
        let client = self.client(provider, creds, None)?;
        let token = RefreshToken::new(refresh_token.expose_secret().to_owned());
        let result = client
            .exchange_refresh_token(&token)
            .map_err(config_err)?
            .request_async(&self.http)
            .await;
        granted(result)
    }

    pub async fn client_credentials(
        &self,
        provider: &Provider,
        creds: &ClientCreds<'_>,
        scopes: &[String],
    ) -> Result<Granted, VaultError> {
        let client = self.client(provider, creds, None)?;
        let result = client
            .exchange_client_credentials()
            .map_err(config_err)?
            .add_scopes(scopes.iter().map(|s| Scope::new(s.clone())))
            .request_async(&self.http)
            .await;
        granted(result)
    }

    /// RFC 7009 revocation; `Ok(false)` when the provider has no revoke URL.
    pub async fn revoke(
        &self,
        provider: &Provider,
        creds: &ClientCreds<'_>,
        token: &SecretString,
        is_refresh: bool,
    ) -> Result<bool, VaultError> {
        if provider.revoke_url.is_none() {
            return Ok(false);
        }
        let client = self.client(provider, creds, None)?;
        let token = if is_refresh {
            StandardRevocableToken::RefreshToken(RefreshToken::new(
                token.expose_secret().to_owned(),
            ))
        } else {
            StandardRevocableToken::AccessToken(oauth2::AccessToken::new(
                token.expose_secret().to_owned(),
            ))
        };
        client
            .revoke_token(token)
            .map_err(config_err)?
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => {
                    VaultError::OAuth(format!("revocation refused: {}", r.error()))
                }
                other => VaultError::ProviderUnavailable(describe_transport(&other)),
            })?;
        Ok(true)
    }
}

fn config_err(e: oauth2::ConfigurationError) -> VaultError {
    VaultError::Config(e.to_string())
}

type TokenResult = Result<
    BasicTokenResponse,
    RequestTokenError<
        oauth2::HttpClientError<reqwest::Error>,
        oauth2::StandardErrorResponse<BasicErrorResponseType>,
    >,
>;

fn granted(result: TokenResult) -> Result<Granted, VaultError> {
    match result {
        Ok(token) => Ok(Granted {
            access_token: SecretString::from(token.access_token().secret().clone()),
            refresh_token: token
                .refresh_token()
                .map(|r| SecretString::from(r.secret().clone())),
            expires_in: token.expires_in(),
            scopes: token
                .scopes()
                .map(|s| s.iter().map(|s| s.to_string()).collect()),
        }),
        Err(RequestTokenError::ServerResponse(response)) => {
            let code = response.error().to_string();
            match response.error() {
                BasicErrorResponseType::InvalidGrant
                | BasicErrorResponseType::InvalidClient
                | BasicErrorResponseType::UnauthorizedClient => Err(VaultError::Reconnect(code)),
                BasicErrorResponseType::Extension(ext)
                    if ext == "temporarily_unavailable" || ext == "server_error" =>
                {
                    Err(VaultError::ProviderUnavailable(code))
                }
                _ => Err(VaultError::OAuth(format!(
                    "provider answered {code}{}",
                    response
                        .error_description()
                        .map(|d| format!(": {}", truncate(d, 200)))
                        .unwrap_or_default()
                ))),
            }
        }
        Err(other) => Err(VaultError::ProviderUnavailable(describe_transport(&other))),
    }
}

/// Transport and parse failures, described without the response body (which
/// could echo a token back).
fn describe_transport<RE: std::error::Error + 'static, T: oauth2::ErrorResponse>(
    e: &RequestTokenError<RE, T>,
) -> String {
    match e {
        RequestTokenError::Request(inner) => format!("request failed: {inner}"),
        RequestTokenError::Parse(_, body) => format!("unexpected response ({} bytes)", body.len()),
        RequestTokenError::Other(msg) => truncate(msg, 200).to_owned(),
        RequestTokenError::ServerResponse(_) => "the provider refused the request".to_owned(),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
