//! Keys of bindings whose requests airlock signs again instead of swapping a
//! token in place (AWS SigV4: the signature covers the access key id, so a
//! placeholder key id cannot simply be replaced).

use std::fmt;

use secrecy::SecretString;

/// What a signing binding needs beyond its [`crate::Binding`]: the
/// placeholder secret the sandbox signs with, and the real credentials
/// airlock signs with. Only the proxy's signing stage reads it.
pub enum SigningKeys {
    AwsSigV4(AwsSigV4Keys),
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AwsSigV4(k) => f
                .debug_struct("AwsSigV4")
                .field("secret_variable", &k.secret_variable)
                .field("session_token", &k.session_token.is_some())
                .finish_non_exhaustive(),
        }
    }
}

/// An AWS SigV4 binding. The binding's placeholder is the sandbox's access
/// key id; its token (`Resolved::token`) is the real access key id.
pub struct AwsSigV4Keys {
    /// The sandbox's variable holding `placeholder_secret` (`AWS_SECRET_ACCESS_KEY`).
    pub secret_variable: String,
    /// The secret access key the sandbox holds: a placeholder it signs with.
    pub placeholder_secret: SecretString,
    /// The real secret access key.
    pub secret_access_key: SecretString,
    /// The real session token (temporary credentials), and the sandbox's
    /// variable and placeholder for it.
    pub session_token: Option<SessionToken>,
}

pub struct SessionToken {
    pub variable: String,
    pub placeholder: String,
    pub token: SecretString,
}
