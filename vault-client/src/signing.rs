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
    Hmac(HmacKeys),
    /// An OAuth 1.0a connection: the binding's token is the real access
    /// token; its placeholders come from [`crate::oauth1::placeholders`].
    OAuth1(crate::oauth1::OAuth1Keys),
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AwsSigV4(k) => f
                .debug_struct("AwsSigV4")
                .field("secret_variable", &k.secret_variable)
                .field("session_token", &k.session_token.is_some())
                .finish_non_exhaustive(),
            Self::Hmac(k) => f.debug_struct("Hmac").field("spec", &k.spec).finish(),
            Self::OAuth1(k) => f.debug_tuple("OAuth1").field(k).finish(),
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

/// A generic HMAC binding: the sandbox signs with the placeholder secret
/// (the binding's placeholder), airlock checks that signature and signs
/// again with the real secret (`Resolved::token`).
pub struct HmacKeys {
    pub spec: HmacSpec,
}

/// How a request is signed: which header carries the signature, over what
/// string, with which hash and encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacSpec {
    /// Lower-case header name carrying the signature.
    pub header: String,
    /// Written before the encoded signature in the header (`sha256=`).
    pub prefix: String,
    pub template: Vec<TemplatePart>,
    pub algorithm: HmacAlgorithm,
    pub encoding: SignatureEncoding,
    /// A header holding the signing time (Unix seconds), checked against
    /// the clock; it should be part of the template.
    pub timestamp_header: Option<String>,
}

impl HmacSpec {
    /// Whether the string to sign reads the body.
    pub fn reads_body(&self) -> bool {
        self.template
            .iter()
            .any(|p| matches!(p, TemplatePart::Body | TemplatePart::BodySha256))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlgorithm {
    Sha256,
    Sha384,
    Sha512,
    /// Only for APIs that still ask for it.
    Sha1,
}

impl HmacAlgorithm {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sha256" => Some(Self::Sha256),
            "sha384" => Some(Self::Sha384),
            "sha512" => Some(Self::Sha512),
            "sha1" => Some(Self::Sha1),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
            Self::Sha1 => "sha1",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureEncoding {
    Hex,
    Base64,
}

impl SignatureEncoding {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hex" => Some(Self::Hex),
            "base64" => Some(Self::Base64),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hex => "hex",
            Self::Base64 => "base64",
        }
    }
}

/// One piece of the string to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Literal(String),
    /// `{method}`: upper case.
    Method,
    /// `{path}`: the path and query as sent.
    PathAndQuery,
    /// `{path_only}`: the path without the query.
    Path,
    /// `{query}`: the query without `?` (empty when none).
    Query,
    /// `{host}`.
    Host,
    /// `{header:NAME}`: the header's values joined by `,` (empty when absent).
    Header(String),
    /// `{body}`: the body's bytes.
    Body,
    /// `{body_sha256}`: the body's SHA-256, lower-case hex.
    BodySha256,
}

/// Why a template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown template field {{{0}}} (method, path, path_only, query, host, header:NAME, body, body_sha256)")]
    UnknownField(String),
    #[error("a '{{' without its '}}'")]
    Unclosed,
    #[error("the template is empty")]
    Empty,
}

/// Parses `{method}\n{path}\n{header:x-timestamp}\n{body_sha256}`; `{{`
/// and `}}` are literal braces.
pub fn parse_template(s: &str) -> Result<Vec<TemplatePart>, TemplateError> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '{' => {
                let mut field = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => field.push(c),
                        None => return Err(TemplateError::Unclosed),
                    }
                }
                if !literal.is_empty() {
                    parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
                }
                parts.push(match field.as_str() {
                    "method" => TemplatePart::Method,
                    "path" => TemplatePart::PathAndQuery,
                    "path_only" => TemplatePart::Path,
                    "query" => TemplatePart::Query,
                    "host" => TemplatePart::Host,
                    "body" => TemplatePart::Body,
                    "body_sha256" => TemplatePart::BodySha256,
                    f => match f.strip_prefix("header:") {
                        Some(name) if crate::http_header_name_ok(name) => {
                            TemplatePart::Header(name.to_ascii_lowercase())
                        }
                        _ => return Err(TemplateError::UnknownField(f.to_owned())),
                    },
                });
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        parts.push(TemplatePart::Literal(literal));
    }
    if parts.is_empty() {
        return Err(TemplateError::Empty);
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_fields_literals_and_braces() {
        assert_eq!(
            parse_template("{method} {path}\n{header:X-Ts}|{{x}}{body_sha256}").unwrap(),
            vec![
                TemplatePart::Method,
                TemplatePart::Literal(" ".into()),
                TemplatePart::PathAndQuery,
                TemplatePart::Literal("\n".into()),
                TemplatePart::Header("x-ts".into()),
                TemplatePart::Literal("|{x}".into()),
                TemplatePart::BodySha256,
            ]
        );
        assert_eq!(
            parse_template("{nope}"),
            Err(TemplateError::UnknownField("nope".into()))
        );
        assert_eq!(parse_template("{method"), Err(TemplateError::Unclosed));
        assert_eq!(parse_template(""), Err(TemplateError::Empty));
        assert_eq!(
            parse_template("{header:bad name}"),
            Err(TemplateError::UnknownField("header:bad name".into()))
        );
    }
}
