//! Who is asking: sidecar mode has one sandbox; shared mode reads
//! `Proxy-Authorization` and slows down guessing per client address.

use std::net::IpAddr;

use airlock_vault_client::SandboxId;
use http::header::{self, HeaderMap};

use crate::error::ProxyError;
use crate::parse::parse_basic;
use crate::shared::Shared;

pub(super) async fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
    peer: IpAddr,
) -> Result<SandboxId, ProxyError> {
    if !shared.settings.require_auth {
        return Ok(SandboxId::default_sandbox());
    }
    // Guessing proxy secrets is slowed down per client address.
    if let Some(wait) = shared.auth_failures.blocked(peer) {
        return Err(ProxyError::TooManyAuthFailures {
            retry_after: wait.as_secs().max(1),
        });
    }
    let result = check_credentials(shared, headers).await;
    if matches!(result, Err(ProxyError::ProxyAuth(_))) {
        shared.auth_failures.record(peer);
    }
    result
}

async fn check_credentials(shared: &Shared, headers: &HeaderMap) -> Result<SandboxId, ProxyError> {
    let value = headers
        .get(header::PROXY_AUTHORIZATION)
        .ok_or(ProxyError::ProxyAuth(
            "send Proxy-Authorization (http://SANDBOX_ID:SECRET@proxy)",
        ))?;
    let (id, secret) = parse_basic(value.as_bytes()).ok_or(ProxyError::ProxyAuth(
        "Proxy-Authorization must be Basic SANDBOX_ID:SECRET",
    ))?;
    match shared.tokens.authenticate(&id, &secret).await {
        Ok(sandbox) => Ok(sandbox),
        // The vault cannot say: not the sandbox's fault, and not a guess to slow down.
        Err(err @ airlock_vault_client::TokenError::Unavailable(_)) => Err(ProxyError::Token(err)),
        Err(_) => Err(ProxyError::ProxyAuth(
            "unknown sandbox or wrong proxy secret",
        )),
    }
}
