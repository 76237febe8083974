//! What a static secret is, and the checks of its signing settings, shared
//! by the two places a secret is written: a config `[[secret]]` and the
//! vault's admin API (`airlock secret add`). Both say the same thing about
//! the same mistake.

use serde::{Deserialize, Serialize};

use crate::signing::{parse_template, HmacAlgorithm, HmacSpec, SignatureEncoding, TemplatePart};

/// What a static secret is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    /// A token swapped for its placeholder wherever `swap_in` allows.
    #[default]
    Static,
    /// AWS Signature Version 4 credentials, signed again by airlock.
    #[serde(rename = "aws_sigv4")]
    AwsSigV4,
    /// A secret requests are signed with (HMAC over a template), signed
    /// again by airlock.
    Hmac,
}

impl SecretKind {
    /// The word the config file, the admin API and the store use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::AwsSigV4 => "aws_sigv4",
            Self::Hmac => "hmac",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "static" => Some(Self::Static),
            "aws_sigv4" => Some(Self::AwsSigV4),
            "hmac" => Some(Self::Hmac),
            _ => None,
        }
    }

    pub fn is_signing(self) -> bool {
        self != Self::Static
    }
}

impl std::fmt::Display for SecretKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The sandbox's variable for an AWS binding's placeholder secret access key.
pub const DEFAULT_SECRET_VARIABLE: &str = "AWS_SECRET_ACCESS_KEY";
/// The sandbox's variable for an AWS binding's placeholder session token.
pub const DEFAULT_SESSION_TOKEN_VARIABLE: &str = "AWS_SESSION_TOKEN";

/// Proxy variables airlock sets for every sandbox.
pub const PROXY_VARS: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
];
/// Variables that replace a runtime's trust store: they get system roots plus
/// airlock's CA, or every host airlock only tunnels would stop verifying.
pub const REPLACING_CA_VARS: [&str; 6] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "AWS_CA_BUNDLE",
    "PIP_CERT",
];
/// Variables that add to a runtime's roots: airlock's CA alone.
pub const ADDING_CA_VARS: [&str; 2] = ["NODE_EXTRA_CA_CERTS", "DENO_CERT"];

/// A variable airlock sets itself for sandboxes: a credential may not use its name.
pub fn is_reserved_variable(name: &str) -> bool {
    PROXY_VARS
        .iter()
        .chain(&REPLACING_CA_VARS)
        .chain(&ADDING_CA_VARS)
        .any(|v| v.eq_ignore_ascii_case(name))
}

/// Letters, digits and `_`, not starting with a digit.
pub fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

/// The problem with an AWS binding's extra variable (`secret_variable`,
/// `session_token_variable`), if any.
pub fn signing_variable_problem(var: &str) -> Option<String> {
    (!is_env_name(var) || is_reserved_variable(var)).then(|| {
        format!(
            "variable {var:?} must be a valid environment variable name that airlock does not set itself"
        )
    })
}

/// The problem with a real AWS access key id, if any (said without it).
pub fn access_key_id_problem(key_id: &str) -> Option<&'static str> {
    // It goes into `Credential=ID/…`, so it cannot hold a slash.
    key_id
        .contains(['/', ',', ' ', '='])
        .then_some("access_key_id holds '/', ',', '=' or a space")
}

/// Which of a secret's kind-specific settings were given, for
/// [`misplaced_settings`].
#[derive(Debug, Clone, Copy, Default)]
pub struct GivenSettings {
    /// `value…`
    pub value: bool,
    /// `access_key_id…`, `secret_access_key…`, `session_token…` or their variables.
    pub aws: bool,
    /// `signature_…` or `timestamp_header`.
    pub hmac: bool,
    /// `swap_in`.
    pub swap_in: bool,
    /// `role_arn` (or its settings).
    pub role: bool,
    /// `inject_when_absent = true`.
    pub inject_when_absent: bool,
}

/// Said of `inject_when_absent` on a signing kind, by the config file and
/// the vault alike.
pub const INJECT_WHEN_ABSENT_SIGNING: &str =
    "inject_when_absent does not apply to signing kinds (aws_sigv4, hmac): the sandbox signs its own requests";

/// Where a role is refused: the vault holds fixed keys only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleSupport {
    Allowed,
    ConfigOnly,
}

/// The settings given that do not go with `kind`.
pub fn misplaced_settings(
    kind: SecretKind,
    given: GivenSettings,
    role: RoleSupport,
) -> Vec<String> {
    let mut problems = Vec::new();
    if kind != SecretKind::AwsSigV4 && given.aws {
        problems.push(
            "access_key_id…, secret_access_key…, session_token… and their variables go with kind = \"aws_sigv4\""
                .into(),
        );
    }
    if kind == SecretKind::AwsSigV4 && given.value {
        problems.push(
            "kind = \"aws_sigv4\" takes access_key_id… and secret_access_key…, not value…".into(),
        );
    }
    if kind != SecretKind::Hmac && given.hmac {
        problems.push("signature_… and timestamp_header go with kind = \"hmac\"".into());
    }
    if kind.is_signing() && given.swap_in {
        problems.push(
            "swap_in does not apply to signing kinds (aws_sigv4, hmac): airlock signs the request again, it swaps nothing"
                .into(),
        );
    }
    if kind.is_signing() && given.inject_when_absent {
        problems.push(INJECT_WHEN_ABSENT_SIGNING.into());
    }
    if given.role && role == RoleSupport::ConfigOnly {
        problems.push(
            "role_arn (STS AssumeRole) is config-only: a vault secret holds fixed keys; put a role in the proxy's config [[secret]] (docs/SIGNING.md)"
                .into(),
        );
    }
    problems
}

/// The settings of a `kind = "hmac"` secret, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HmacSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_header: Option<String>,
}

impl HmacSettings {
    /// Whether any is given.
    pub fn any(&self) -> bool {
        self != &Self::default()
    }

    /// The signing rule; problems go to `problems`.
    pub fn spec(&self, problems: &mut Vec<String>) -> Option<HmacSpec> {
        let header_ok = |h: &str| hyper::header::HeaderName::from_bytes(h.as_bytes()).is_ok();
        let header = match self.signature_header.as_deref() {
            Some(h) if header_ok(h) => h.to_ascii_lowercase(),
            Some(h) => {
                problems.push(format!("signature_header {h:?} is not a header name"));
                return None;
            }
            None => {
                problems.push("kind = \"hmac\" needs signature_header".into());
                return None;
            }
        };
        let template = match self.signature_template.as_deref().map(parse_template) {
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                problems.push(format!("signature_template: {e}"));
                return None;
            }
            None => {
                problems.push("kind = \"hmac\" needs signature_template".into());
                return None;
            }
        };
        let algorithm = match self.signature_algorithm.as_deref() {
            None => HmacAlgorithm::Sha256,
            Some(a) => match HmacAlgorithm::parse(a) {
                Some(a) => a,
                None => {
                    problems.push(format!(
                        "signature_algorithm {a:?} must be sha256, sha384, sha512 or sha1"
                    ));
                    return None;
                }
            },
        };
        let encoding = match self.signature_encoding.as_deref() {
            None => SignatureEncoding::Hex,
            Some(e) => match SignatureEncoding::parse(e) {
                Some(e) => e,
                None => {
                    problems.push(format!("signature_encoding {e:?} must be hex or base64"));
                    return None;
                }
            },
        };
        let timestamp_header = match self.timestamp_header.as_deref() {
            Some(h) if header_ok(h) => Some(h.to_ascii_lowercase()),
            Some(h) => {
                problems.push(format!("timestamp_header {h:?} is not a header name"));
                return None;
            }
            None => None,
        };
        Some(HmacSpec {
            header,
            prefix: self.signature_prefix.clone().unwrap_or_default(),
            template,
            algorithm,
            encoding,
            timestamp_header,
        })
    }

    /// The settings that give `spec` again (for the store and the wire).
    pub fn of(spec: &HmacSpec) -> Self {
        Self {
            signature_header: Some(spec.header.clone()),
            signature_template: Some(render_template(&spec.template)),
            signature_algorithm: Some(spec.algorithm.as_str().into()),
            signature_encoding: Some(spec.encoding.as_str().into()),
            signature_prefix: Some(spec.prefix.clone()).filter(|p| !p.is_empty()),
            timestamp_header: spec.timestamp_header.clone(),
        }
    }
}

/// A template as [`parse_template`] reads it.
pub fn render_template(parts: &[TemplatePart]) -> String {
    let mut out = String::new();
    for part in parts {
        match part {
            TemplatePart::Literal(s) => out.push_str(&s.replace('{', "{{").replace('}', "}}")),
            TemplatePart::Method => out.push_str("{method}"),
            TemplatePart::PathAndQuery => out.push_str("{path}"),
            TemplatePart::Path => out.push_str("{path_only}"),
            TemplatePart::Query => out.push_str("{query}"),
            TemplatePart::Host => out.push_str("{host}"),
            TemplatePart::Header(name) => {
                out.push_str("{header:");
                out.push_str(name);
                out.push('}');
            }
            TemplatePart::Body => out.push_str("{body}"),
            TemplatePart::BodySha256 => out.push_str("{body_sha256}"),
        }
    }
    out
}

/// The placeholders of a vault AWS binding's secret access key and session
/// token, made from its access key id placeholder (the binding's own), so
/// the vault stores nothing more and every proxy of a fleet sees the same.
/// Like OAuth 1.0a's, they give nothing the key id placeholder does not.
pub fn aws_placeholders(key_id_placeholder: &str) -> (String, String) {
    (
        format!("{key_id_placeholder}-sk"),
        format!("{key_id_placeholder}-st"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_settings_give_their_spec_again() {
        let settings = HmacSettings {
            signature_header: Some("X-Sig".into()),
            signature_template: Some("{method} {{x}}\n{header:X-Ts}{body_sha256}".into()),
            signature_encoding: Some("base64".into()),
            signature_prefix: Some("v1=".into()),
            timestamp_header: Some("X-Ts".into()),
            ..Default::default()
        };
        let mut problems = Vec::new();
        let spec = settings.spec(&mut problems).unwrap();
        assert!(problems.is_empty());
        let again = HmacSettings::of(&spec);
        assert_eq!(again.spec(&mut problems), Some(spec));
        assert!(problems.is_empty());
    }

    #[test]
    fn hmac_settings_say_what_is_wrong() {
        for (settings, says) in [
            (
                HmacSettings::default(),
                "kind = \"hmac\" needs signature_header",
            ),
            (
                HmacSettings {
                    signature_header: Some("X-S".into()),
                    ..Default::default()
                },
                "kind = \"hmac\" needs signature_template",
            ),
            (
                HmacSettings {
                    signature_header: Some("X-S".into()),
                    signature_template: Some("{method}".into()),
                    signature_algorithm: Some("md5".into()),
                    ..Default::default()
                },
                "signature_algorithm \"md5\" must be",
            ),
        ] {
            let mut problems = Vec::new();
            assert!(settings.spec(&mut problems).is_none());
            assert!(problems.join("\n").contains(says), "{problems:?}");
        }
    }

    #[test]
    fn misplaced_settings_are_named() {
        let given = GivenSettings {
            value: true,
            swap_in: true,
            role: true,
            inject_when_absent: true,
            ..Default::default()
        };
        let p = misplaced_settings(SecretKind::AwsSigV4, given, RoleSupport::ConfigOnly).join("\n");
        assert!(
            p.contains("not value…")
                && p.contains("swap_in does not apply")
                && p.contains("inject_when_absent does not apply to signing kinds"),
            "{p}"
        );
        assert!(
            p.contains("role_arn (STS AssumeRole) is config-only"),
            "{p}"
        );
        let p = misplaced_settings(SecretKind::AwsSigV4, given, RoleSupport::Allowed).join("\n");
        assert!(!p.contains("role_arn"), "{p}");
        assert!(misplaced_settings(
            SecretKind::Static,
            GivenSettings {
                value: true,
                swap_in: true,
                ..Default::default()
            },
            RoleSupport::ConfigOnly
        )
        .is_empty());
        assert_eq!(SecretKind::parse("aws_sigv4"), Some(SecretKind::AwsSigV4));
        assert_eq!(SecretKind::parse("sigv4"), None);
    }
}
