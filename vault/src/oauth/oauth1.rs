//! OAuth 1.0a (RFC 5849) with a provider: the temporary credentials
//! (request token) call and the token (access token) call, each signed
//! with HMAC-SHA1 by the consumer key and secret.

use airlock_vault_client::oauth1::{self, Signer};
use secrecy::{ExposeSecret, SecretString};

use super::{ClientCreds, OAuth, MAX_TOKEN_ANSWER};
use crate::catalog::Provider;
use crate::error::{ProviderError, Step, VaultError};

/// A token and its secret, as a provider's token endpoints answer them.
pub struct TokenPair {
    pub token: SecretString,
    pub secret: SecretString,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenPair([redacted])")
    }
}

impl TokenPair {
    /// One sealable text: `TOKEN SECRET`, each percent-encoded.
    pub fn to_secret(&self) -> SecretString {
        SecretString::from(format!(
            "{} {}",
            oauth1::encode(self.token.expose_secret()),
            oauth1::encode(self.secret.expose_secret())
        ))
    }

    pub fn from_secret(text: &SecretString) -> Option<Self> {
        let (token, secret) = text.expose_secret().split_once(' ')?;
        let params = oauth1::form_params(format!("t={token}&s={secret}").as_bytes());
        match params.as_slice() {
            [(_, t), (_, s)] => Some(Self {
                token: SecretString::from(t.clone()),
                secret: SecretString::from(s.clone()),
            }),
            _ => None,
        }
    }
}

impl OAuth {
    /// RFC 5849 §2.1: a request token for `callback`. The provider must
    /// confirm the callback (`oauth_callback_confirmed=true`, 1.0a).
    pub async fn oauth1_request_token(
        &self,
        provider: &Provider,
        creds: &ClientCreds<'_>,
        callback: &str,
    ) -> Result<TokenPair, VaultError> {
        let url = provider.request_token_url.as_deref().ok_or_else(|| {
            VaultError::Invalid(format!(
                "provider {} has no request_token_url",
                provider.name
            ))
        })?;
        let answer = self
            .oauth1_post(
                provider,
                creds,
                url,
                None,
                &[("oauth_callback", callback)],
                Step::RequestToken,
            )
            .await?;
        if !answer
            .iter()
            .any(|(k, v)| k == "oauth_callback_confirmed" && v == "true")
        {
            return Err(ProviderError::Other {
                provider: provider.name.clone(),
                step: Step::RequestToken,
                detail: "the answer lacks oauth_callback_confirmed=true (not OAuth 1.0a)".into(),
            }
            .into());
        }
        pair(provider, Step::RequestToken, answer)
    }

    /// RFC 5849 §2.3: the access token for an authorized request token and
    /// the callback's verifier.
    pub async fn oauth1_access_token(
        &self,
        provider: &Provider,
        creds: &ClientCreds<'_>,
        request: &TokenPair,
        verifier: &str,
    ) -> Result<TokenPair, VaultError> {
        let answer = self
            .oauth1_post(
                provider,
                creds,
                &provider.token_url,
                Some(request),
                &[("oauth_verifier", verifier)],
                Step::AccessToken,
            )
            .await?;
        pair(provider, Step::AccessToken, answer)
    }

    async fn oauth1_post(
        &self,
        provider: &Provider,
        creds: &ClientCreds<'_>,
        url: &str,
        token: Option<&TokenPair>,
        extra: &[(&str, &str)],
        step: Step,
    ) -> Result<Vec<(String, String)>, VaultError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| VaultError::Config(format!("{step} URL {url:?}: {e}")))?;
        let secret = creds.client_secret.ok_or_else(|| {
            VaultError::Config(format!(
                "the app of provider {} has no client_secret (the OAuth 1.0a consumer secret)",
                provider.name
            ))
        })?;
        let authority = match parsed.port() {
            Some(p) => format!("{}:{p}", parsed.host_str().unwrap_or_default()),
            None => parsed.host_str().unwrap_or_default().to_owned(),
        };
        let base_uri = oauth1::base_uri(parsed.scheme(), &authority, parsed.path());
        let params = oauth1::form_params(parsed.query().unwrap_or_default().as_bytes());
        let authorization = Signer {
            consumer_key: creds.client_id,
            consumer_secret: secret.expose_secret(),
            token: token.map(|t| t.token.expose_secret()),
            token_secret: token.map_or("", |t| t.secret.expose_secret()),
        }
        .authorization(
            "POST",
            &base_uri,
            extra,
            &params,
            oauth1::unix_now(),
            &oauth1::nonce(),
        );
        let mut value = reqwest::header::HeaderValue::from_str(&authorization)
            .map_err(|_| VaultError::Invalid("the OAuth 1.0a header cannot be sent".into()))?;
        value.set_sensitive(true);
        let mut response = self
            .http
            .post(url)
            .header(reqwest::header::AUTHORIZATION, value)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body("")
            .send()
            .await
            .map_err(|e| ProviderError::transport(&provider.name, step, e))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ProviderError::transport(&provider.name, step, e))?
        {
            if body.len() + chunk.len() > MAX_TOKEN_ANSWER {
                return Err(VaultError::ProviderUnavailable(format!(
                    "the {step} answer is larger than {MAX_TOKEN_ANSWER} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if !(200..300).contains(&status) {
            // The body is the provider's text; it is not shown (it may
            // quote what was sent).
            return Err(ProviderError::Status {
                provider: provider.name.clone(),
                step,
                status,
                answer: None,
            }
            .into());
        }
        Ok(oauth1::form_params(&body))
    }
}

fn pair(
    provider: &Provider,
    step: Step,
    answer: Vec<(String, String)>,
) -> Result<TokenPair, VaultError> {
    let get = |name: &str| {
        answer
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    match (get("oauth_token"), get("oauth_token_secret")) {
        (Some(token), Some(secret)) => Ok(TokenPair {
            token: SecretString::from(token),
            secret: SecretString::from(secret),
        }),
        _ => Err(ProviderError::Other {
            provider: provider.name.clone(),
            step,
            detail: "the answer lacks oauth_token or oauth_token_secret".into(),
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_pair_survives_sealing_text() {
        let pair = TokenPair {
            token: SecretString::from("a b&c=d"),
            secret: SecretString::from("s+%/ é"),
        };
        let back = TokenPair::from_secret(&pair.to_secret()).unwrap();
        assert_eq!(back.token.expose_secret(), "a b&c=d");
        assert_eq!(back.secret.expose_secret(), "s+%/ é");
        assert!(TokenPair::from_secret(&SecretString::from("nospace")).is_none());
        assert_eq!(format!("{pair:?}"), "TokenPair([redacted])");
    }
}
