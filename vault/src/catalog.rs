//! Providers as data: the built-in catalog (`catalog.toml`, compiled in) plus
//! custom providers from the config file or the admin API.

use std::collections::{BTreeMap, BTreeSet};

use airlock_vault_client::{
    oauth1, ExpiredSignal, HostPattern, RequestRules, RulesMode, RulesSpec, ScopeSignal,
    SwapLocation, Verdict,
};
use serde::{Deserialize, Serialize};

use crate::error::VaultError;

const BUILT_IN: &str = include_str!("catalog.toml");

/// How the provider wants the client authenticated at its token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// `client_secret_basic`
    #[default]
    Basic,
    /// `client_secret_post`
    Body,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// OAuth 2's token endpoint; for OAuth 1.0a the access token endpoint
    /// (also written `access_token_url`).
    #[serde(alias = "access_token_url")]
    pub token_url: String,
    /// OAuth 1.0a (RFC 5849): where the vault asks for a request token. Its
    /// presence makes the provider OAuth 1.0a: connections hold an access
    /// token and a token secret, and sandboxes sign with placeholders
    /// (docs/SIGNING.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_token_url: Option<String>,
    /// OAuth 1.0a only: `HMAC-SHA1`, the one method airlock signs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_method: Option<String>,
    #[serde(default)]
    pub revoke_url: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub hosts: Vec<String>,
    #[serde(default = "default_inject")]
    pub inject: String,
    pub env: String,
    #[serde(default)]
    pub client_auth: ClientAuth,
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
    #[serde(default = "SwapLocation::defaults")]
    pub swap_in: BTreeSet<SwapLocation>,
    /// Upstream answers that mean the token expired (default: 401).
    #[serde(default = "ExpiredSignal::defaults")]
    pub expired_on: Vec<ExpiredSignal>,
    /// An endpoint on one of `hosts` that answers 2xx for a live token
    /// (userinfo, `/user`): asked before a connection without a refresh
    /// token is marked `reconnect_needed` after an upstream 401.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_url: Option<String>,
    /// Request rules for every binding of this provider (a sandbox's own
    /// binding rules replace them): `allow GET /repos/acme/**`, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_default: Option<Verdict>,
    /// Refuse requests to `hosts` that do not carry the placeholder.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require: bool,
    #[serde(default, skip_serializing_if = "is_enforce")]
    pub rules_mode: RulesMode,
    /// Put the token in its `inject` slot on requests to `hosts` that carry
    /// no credential at all (`fetch(url)` with nothing else).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inject_when_absent: bool,
    /// A revocation that is not RFC 7009 (GitHub's grant deletion): how to
    /// ask. Without it, `revoke_url` is an RFC 7009 endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke: Option<RevokeRequest>,
    /// How the provider says a token lacks a scope (default: RFC 6750's
    /// `WWW-Authenticate: Bearer error="insufficient_scope"`).
    #[serde(default = "ScopeSignal::defaults")]
    pub insufficient_scope: Vec<ScopeSignal>,
    /// Refresh a connected grant (one with a refresh token) that has not
    /// been refreshed for this long, even far from expiry, so a refresh
    /// token that lapses when unused stays alive (`"24h"`, `"12h 30m"`;
    /// `"0s"` turns it off for this provider). Unset: the vault's
    /// `keepalive_refresh_secs`.
    #[serde(
        default,
        with = "keepalive_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub refresh_keepalive: Option<std::time::Duration>,
}

/// `refresh_keepalive` as text an operator writes: `"24h"`, `"90m"`, `"1d"`.
mod keepalive_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(Some)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "refresh_keepalive is not a duration ({e}); write it like \"24h\", \"90m\" or \"1d\""
                ))
            })
    }
}

/// A provider's own way to revoke, as data.
///
/// GitHub: `{ method = "DELETE", url = "https://api.github.com/applications/{client_id}/grant",
/// body = "json", token_field = "access_token", tokens = "access", client_auth = "basic" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// `POST` or `DELETE`.
    #[serde(default = "default_revoke_method")]
    pub method: String,
    /// `{client_id}` is replaced (percent-encoded).
    pub url: String,
    /// How the token travels: a `form` or a `json` body.
    #[serde(default)]
    pub body: RevokeBody,
    /// The field that holds it.
    #[serde(default = "default_token_field")]
    pub token_field: String,
    /// Which of the connection's tokens to send: `access`, `refresh` or `both`
    /// (refresh first).
    #[serde(default)]
    pub tokens: RevokeTokens,
    /// How the client authenticates: `basic` (client id and secret) or `body`
    /// (`client_id`/`client_secret` fields next to the token).
    #[serde(default)]
    pub client_auth: ClientAuth,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevokeBody {
    #[default]
    Form,
    Json,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevokeTokens {
    Access,
    Refresh,
    #[default]
    Both,
}

impl RevokeTokens {
    pub fn includes(self, is_refresh: bool) -> bool {
        match self {
            Self::Both => true,
            Self::Access => !is_refresh,
            Self::Refresh => is_refresh,
        }
    }
}

fn default_revoke_method() -> String {
    "POST".into()
}

fn default_token_field() -> String {
    "token".into()
}

fn is_enforce(mode: &RulesMode) -> bool {
    *mode == RulesMode::Enforce
}

fn default_inject() -> String {
    "bearer".into()
}

impl Provider {
    /// Whether connections of this provider are OAuth 1.0a.
    pub fn is_oauth1(&self) -> bool {
        self.request_token_url.is_some()
    }

    pub fn label(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.name)
    }

    /// Every problem with the definition, in words an operator can act on.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            out.push(format!(
                "provider name {:?} must be lower-case letters, digits, '-' or '_'",
                self.name
            ));
        }
        if self.is_oauth1() && self.authorize_url.is_none() {
            out.push("an OAuth 1.0a provider (request_token_url) needs authorize_url".into());
        }
        if self.is_oauth1() && self.probe_url.is_some() {
            // The probe sends the token unsigned, which OAuth 1.0a APIs refuse.
            out.push(
                "probe_url is not supported for OAuth 1.0a providers (request_token_url)".into(),
            );
        }
        match self.signature_method.as_deref() {
            None => {}
            Some(m) if !self.is_oauth1() => out.push(format!(
                "signature_method {m:?} is for OAuth 1.0a providers (with request_token_url)"
            )),
            Some(oauth1::HMAC_SHA1) => {}
            Some(m) => out.push(format!(
                "signature_method {m:?} is not supported: airlock signs OAuth 1.0a with HMAC-SHA1"
            )),
        }
        for (field, url) in [
            ("request_token_url", self.request_token_url.as_deref()),
            ("authorize_url", self.authorize_url.as_deref()),
            ("token_url", Some(self.token_url.as_str())),
            ("revoke_url", self.revoke_url.as_deref()),
            ("probe_url", self.probe_url.as_deref()),
        ] {
            if let Some(url) = url {
                match url::Url::parse(url) {
                    Ok(u)
                        if u.scheme() == "https"
                            || (u.scheme() == "http" && is_loopback_url(&u)) => {}
                    Ok(_) => out.push(format!(
                        "{field} {url:?} must be https:// (http:// only on loopback)"
                    )),
                    Err(e) => out.push(format!("{field} {url:?} is not a URL: {e}")),
                }
            }
        }
        if self.hosts.is_empty() {
            out.push("hosts is empty: the token could never be sent anywhere".into());
        }
        for h in &self.hosts {
            if let Err(e) = HostPattern::parse(h) {
                out.push(e.to_string());
            }
        }
        // The probe carries the token: only to a host the token is bound to.
        if let Some(host) = self
            .probe_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_owned))
        {
            if !self.host_patterns().iter().any(|p| p.matches(&host)) {
                out.push(format!(
                    "probe_url host {host:?} is not one of hosts: the token may not be sent there"
                ));
            }
        }
        if let Err(e) = parse_inject(&self.inject) {
            out.push(e);
        }
        if let Some(r) = &self.revoke {
            if !matches!(r.method.as_str(), "POST" | "DELETE") {
                out.push(format!(
                    "revoke.method {:?} must be POST or DELETE",
                    r.method
                ));
            }
            let sample = r.url.replace("{client_id}", "client");
            match url::Url::parse(&sample) {
                Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback_url(&u)) => {
                }
                _ => out.push(format!(
                    "revoke.url {:?} must be an https:// URL (http:// only on loopback)",
                    r.url
                )),
            }
        }
        for (i, signal) in self.insufficient_scope.iter().enumerate() {
            if let Some(problem) = signal.problem() {
                out.push(format!("insufficient_scope {}: {problem}", i + 1));
            }
        }
        if let Err(bad) = RequestRules::compile(&self.rules_spec()) {
            out.extend(bad.iter().map(|e| e.to_string()));
        }
        if self.env.is_empty()
            || !self
                .env
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            || self.env.as_bytes()[0].is_ascii_digit()
        {
            out.push(format!(
                "env {:?} must be an upper-case environment variable name",
                self.env
            ));
        }
        out
    }

    pub fn validate(&self) -> Result<(), VaultError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(VaultError::Invalid(format!(
                "provider {:?}: {}",
                self.name,
                problems.join("; ")
            )))
        }
    }

    pub fn rules_spec(&self) -> RulesSpec {
        RulesSpec {
            rules: self.rules.clone(),
            default: self.rules_default,
            require: self.require,
            mode: self.rules_mode,
            inject_when_absent: None,
        }
    }

    pub fn host_patterns(&self) -> Vec<HostPattern> {
        self.hosts
            .iter()
            .filter_map(|h| HostPattern::parse(h).ok())
            .collect()
    }
}

fn is_loopback_url(u: &url::Url) -> bool {
    matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
}

/// How a sandbox presents the token; the proxy swaps it in place either way.
pub use airlock_vault_client::Injection as Inject;

pub fn parse_inject(s: &str) -> Result<Inject, String> {
    Inject::parse(s).map_err(|e| e.to_string())
}

#[derive(Deserialize)]
struct CatalogFile {
    provider: Vec<Provider>,
}

/// The providers the vault knows, by name.
#[derive(Debug, Clone)]
pub struct Catalog {
    providers: BTreeMap<String, Provider>,
}

impl Catalog {
    pub fn built_in() -> Self {
        Self::from_toml(BUILT_IN).expect("the built-in catalog is valid")
    }

    /// A catalog file in the built-in one's format; every provider is validated.
    pub fn from_toml(text: &str) -> Result<Self, VaultError> {
        let file: CatalogFile =
            toml::from_str(text).map_err(|e| VaultError::Invalid(e.to_string()))?;
        let mut catalog = Self {
            providers: BTreeMap::new(),
        };
        for p in file.provider {
            catalog.upsert(p)?;
        }
        Ok(catalog)
    }

    /// Adds or replaces a provider (config or API): same fields as the catalog.
    pub fn upsert(&mut self, provider: Provider) -> Result<(), VaultError> {
        provider.validate()?;
        self.providers.insert(provider.name.clone(), provider);
        Ok(())
    }

    /// Forgets a provider (one deleted through the API).
    pub fn remove(&mut self, name: &str) {
        self.providers.remove(name);
    }

    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.providers.get(name)
    }

    pub fn all(&self) -> impl Iterator<Item = &Provider> {
        self.providers.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_catalog_is_valid_and_complete() {
        let catalog = Catalog::built_in();
        for name in [
            "github",
            "google",
            "slack",
            "linear",
            "notion",
            "stripe",
            "hubspot",
            "microsoft",
            "linkedin",
            "x",
            "x_oauth1",
        ] {
            let p = catalog
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing"));
            assert!(p.problems().is_empty(), "{name}: {:?}", p.problems());
        }
    }

    #[test]
    fn bad_definitions_list_every_problem() {
        let p = Provider {
            name: "Bad Name".into(),
            display_name: None,
            authorize_url: Some("ftp://x".into()),
            token_url: "not a url".into(),
            request_token_url: None,
            signature_method: None,
            revoke_url: None,
            scopes: vec![],
            hosts: vec![],
            inject: "cookie".into(),
            env: "lower".into(),
            client_auth: ClientAuth::Basic,
            authorize_params: BTreeMap::new(),
            swap_in: SwapLocation::defaults(),
            expired_on: ExpiredSignal::defaults(),
            probe_url: Some("https://elsewhere.example/user".into()),
            rules: vec!["allow GET repos".into()],
            rules_default: None,
            require: false,
            rules_mode: Default::default(),
            insufficient_scope: vec![ScopeSignal::default()],
            revoke: None,
            inject_when_absent: false,
            refresh_keepalive: None,
        };
        let problems = p.problems();
        assert_eq!(problems.len(), 9, "{problems:?}");
        assert!(problems
            .iter()
            .any(|p| p.starts_with("insufficient_scope 1: a signal needs")));
        assert!(problems
            .iter()
            .any(|p| p.contains("rule 1") && p.contains("start with /")));
        assert!(problems.iter().any(|p| p.contains("probe_url host")));
    }

    #[test]
    fn refresh_keepalive_is_a_duration_in_words_and_round_trips() {
        let base = r#"
            name = "acme"
            token_url = "https://auth.acme.test/token"
            hosts = ["api.acme.test"]
            env = "ACME_TOKEN"
        "#;
        let parse = |extra: &str| toml::from_str::<Provider>(&format!("{base}{extra}"));
        assert_eq!(parse("").unwrap().refresh_keepalive, None);
        let day = parse("refresh_keepalive = \"24h\"").unwrap();
        assert_eq!(
            day.refresh_keepalive,
            Some(std::time::Duration::from_secs(86_400))
        );
        assert_eq!(
            parse("refresh_keepalive = \"12h 30m\"")
                .unwrap()
                .refresh_keepalive,
            Some(std::time::Duration::from_secs(45_000))
        );
        assert_eq!(
            parse("refresh_keepalive = \"0s\"")
                .unwrap()
                .refresh_keepalive,
            Some(std::time::Duration::ZERO),
            "zero: off for this provider"
        );
        // Stored as JSON (API-added providers) and read back the same.
        let json = serde_json::to_value(&day).unwrap();
        assert_eq!(json["refresh_keepalive"], "1day");
        let back: Provider = serde_json::from_value(json).unwrap();
        assert_eq!(back, day);
        let unset = serde_json::to_value(parse("").unwrap()).unwrap();
        assert!(unset.get("refresh_keepalive").is_none(), "{unset}");
        for bad in ["\"soon\"", "\"24\"", "86400"] {
            let err = parse(&format!("refresh_keepalive = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("refresh_keepalive") || err.contains("string"),
                "{bad}: {err}"
            );
        }
        let err = parse("refresh_keepalive = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("write it like \"24h\""), "{err}");
    }

    #[test]
    fn step_up_signals_and_body_swaps_are_catalog_data() {
        let catalog = Catalog::built_in();
        let signals = |name: &str| catalog.get(name).unwrap().insufficient_scope.clone();
        assert_eq!(
            signals("linear"),
            ScopeSignal::defaults(),
            "RFC 6750 by default"
        );
        assert!(signals("github").iter().any(|s| s.needed_any));
        assert!(signals("google")
            .iter()
            .any(|s| s.body_equals.as_deref() == Some("insufficientPermissions")));
        assert!(signals("slack")
            .iter()
            .any(|s| s.body_equals.as_deref() == Some("missing_scope")));
        let slack = catalog.get("slack").unwrap();
        assert!(
            slack.swap_in.contains(&SwapLocation::Body),
            "token= in form bodies"
        );
        let google = catalog.get("google").unwrap();
        assert_eq!(google.authorize_params["include_granted_scopes"], "true");
    }

    #[test]
    fn probe_url_must_be_on_a_bound_host() {
        let mut p = Catalog::built_in().get("github").unwrap().clone();
        assert_eq!(p.probe_url.as_deref(), Some("https://api.github.com/user"));
        p.probe_url = Some("https://api.github.com.evil.example/user".into());
        assert_eq!(p.problems().len(), 1, "{:?}", p.problems());
        p.probe_url = Some("http://api.github.com/user".into());
        assert!(p.problems()[0].contains("https"), "{:?}", p.problems());
    }

    #[test]
    fn inject_forms() {
        assert_eq!(
            parse_inject("basic:x-access-token"),
            Ok(Inject::Basic {
                user: "x-access-token".into()
            })
        );
        assert_eq!(
            parse_inject("header:X-Api-Key"),
            Ok(Inject::Header {
                name: "x-api-key".into()
            })
        );
        assert!(parse_inject("basic:").is_err());
    }
}
