//! Finding placeholders in a request and swapping them for real tokens.
//!
//! A placeholder is the configured prefix followed by a run of at least
//! [`PLACEHOLDER_MIN_RANDOM_LEN`] base62 characters. Its dashes may also be
//! written JSON-escaped (`\u002d`) or percent-encoded (`%2D`); the token put in
//! its place is encoded the same way. Every placeholder found is resolved and
//! checked against its binding (sandbox, host, location) before anything is
//! swapped: one refused placeholder refuses the whole request, so a request
//! that still holds a placeholder is never forwarded.

use std::sync::Arc;

use airlock_vault_client::{
    Binding, BindingKind, Denial, ExposeSecret, ForeignBody, HostPolicy, Injection, NarrowError,
    NarrowedBy, Resolved, RulesMode, SandboxId, SecretString, SharedToken, SwapLocation,
    TokenError, TokenSource,
};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::HeaderMap;
use prometheus_client::metrics::counter::Counter;
use smallvec::SmallVec;

use crate::error::ProxyError;
use crate::rules::RuleRequest;

mod scanner;
#[cfg(test)]
mod tests;

pub use scanner::{encode_token, Context, Finds, Found, Scanner, Spelling, MAX_RANDOM_LEN};

/// Where in a request a placeholder was swapped: the evidence a later
/// "expired" answer is judged by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapSite {
    /// Index of the placeholder in the swapper's resolved list.
    pub resolved: usize,
    pub location: SwapLocation,
    /// The header it sat in, for header and Basic swaps.
    pub header: Option<HeaderName>,
}

/// What a request's audit line notes besides its swaps. Shared with the
/// body's fork, which adds to it while the body streams; one allocation.
#[derive(Debug, Default)]
pub struct Marks {
    /// Placeholders left in a body as inert text (bound elsewhere, or not
    /// this sandbox's): binding ids.
    pub inert: std::sync::Mutex<Vec<String>>,
    /// Refusals a dry-run binding's rules would have made (`binding: rule`).
    pub dry_run: std::sync::Mutex<Vec<String>>,
}

/// What to do with one placeholder found in a body.
enum BodyAction {
    Swap,
    /// Leave it as it is: worthless text off its binding.
    Inert,
}

/// Swaps the placeholders of one request headed to `host`. Owned, so a
/// streaming body can carry it.
pub struct Swapper {
    tokens: Arc<dyn TokenSource>,
    scanner: Arc<Scanner>,
    sandbox: SandboxId,
    host: Arc<str>,
    /// Plain-text requests may not carry placeholders at all.
    plaintext: bool,
    /// (placeholder, its binding and token); inline: most requests carry one.
    resolved: SmallVec<[(String, Resolved); 1]>,
    /// Basic credentials swapped: (as sent upstream, as the sandbox wrote it),
    /// so an echo of the encoded credential can be scrubbed too.
    basic: Vec<(Vec<u8>, Vec<u8>)>,
    sites: SmallVec<[SwapSite; 1]>,
    /// The header being swapped, so sites can name it.
    current_header: Option<HeaderName>,
    /// Made at the first mark or fork: most requests have none to note.
    marks: Option<Arc<Marks>>,
    /// `airlock_inert_placeholders`, when a proxy counts them.
    inert_counter: Option<Counter>,
    /// What the bindings' request rules are asked about; `None` refuses
    /// every binding that has rules (a path that forgot to say is closed).
    rule_request: Option<RuleRequest>,
    /// Bindings whose rules already passed for this request.
    rules_passed: Vec<String>,
    /// The sandbox's host policy, once asked.
    policy: Option<HostPolicy>,
}

impl Swapper {
    pub fn new(
        tokens: Arc<dyn TokenSource>,
        scanner: Arc<Scanner>,
        sandbox: SandboxId,
        host: impl Into<Arc<str>>,
    ) -> Self {
        let host = host.into();
        Self {
            tokens,
            scanner,
            sandbox,
            host,
            plaintext: false,
            resolved: SmallVec::new(),
            basic: Vec::new(),
            sites: SmallVec::new(),
            current_header: None,
            marks: None,
            inert_counter: None,
            rule_request: None,
            rules_passed: Vec::new(),
            policy: None,
        }
    }

    /// The request the bindings' rules judge (set again with the body once it is read).
    pub fn for_request(mut self, request: RuleRequest) -> Self {
        self.set_rule_request(request);
        self
    }

    pub fn set_rule_request(&mut self, request: RuleRequest) {
        self.rule_request = Some(request);
        self.rules_passed.clear();
    }

    /// The audit line's marks (inert placeholders, dry-run refusals), when
    /// there are any or a body's fork may still add some.
    pub fn marks(&self) -> Option<Arc<Marks>> {
        self.marks.clone()
    }

    /// The marks, made now if there are none yet: for a caller that keeps
    /// them while this swapper still adds to them.
    pub fn shared_marks(&mut self) -> Arc<Marks> {
        self.marks_mut().clone()
    }

    fn marks_mut(&mut self) -> &Arc<Marks> {
        self.marks.get_or_insert_with(Arc::default)
    }

    /// The binding's rules, once per request. A dry-run binding's refusal is
    /// logged and marked for the audit line instead.
    fn check_rules(&mut self, binding: &Binding) -> Result<(), ProxyError> {
        // Nothing to judge and no uses to count: nothing to remember either.
        if binding.narrowed.is_none() && binding.rules.is_open() {
            return Ok(());
        }
        // A narrowed placeholder is judged apart from its parent's.
        let key = binding
            .narrowed
            .as_ref()
            .map_or(binding.id.as_str(), |n| n.placeholder.as_str());
        if self.rules_passed.iter().any(|b| b == key) {
            return Ok(());
        }
        if let Some(narrowed) = &binding.narrowed {
            self.check_caveats(binding, narrowed)?;
        }
        let key = key.to_owned();
        if binding.rules.is_open() {
            self.rules_passed.push(key);
            return Ok(());
        }
        let verdict = match &self.rule_request {
            Some(request) => request.check(&binding.rules),
            None => Err(Denial {
                rule: "the rules".into(),
                detail: Some("this kind of request cannot be checked against rules".into()),
            }),
        };
        if let Err(denial) = verdict {
            self.rule_refusal(&binding.id, binding.rules.mode(), denial.to_string())?;
        }
        self.rules_passed.push(key);
        Ok(())
    }

    /// A narrowed placeholder's caveats about the request: always enforced,
    /// whatever the binding's own rules mode.
    fn check_caveats(&self, binding: &Binding, narrowed: &NarrowedBy) -> Result<(), ProxyError> {
        let refuse = |reason: NarrowError| {
            ProxyError::Token(TokenError::Narrowed {
                binding: binding.id.clone(),
                reason: reason.to_string(),
            })
        };
        let Some(request) = &self.rule_request else {
            return Err(refuse(NarrowError::NotAllowed {
                caveat: "(this kind of request cannot be checked)".into(),
            }));
        };
        for (caveat, rules) in &narrowed.allows {
            if request.check(rules).is_err() {
                return Err(refuse(NarrowError::NotAllowed {
                    caveat: caveat.clone(),
                }));
            }
        }
        if let Some(max) = narrowed.body_max {
            if request.body_len().is_none_or(|len| len > max) {
                return Err(refuse(NarrowError::BodyTooLarge { max }));
            }
        }
        Ok(())
    }

    /// (narrowed placeholder, token) of everything swapped from a narrowed
    /// placeholder: the response firewall gives those back, not the root.
    pub fn narrowed_swaps(&self) -> Vec<(String, SecretString)> {
        self.resolved
            .iter()
            .filter_map(|(_, r)| {
                let n = r.binding.narrowed.as_ref()?;
                Some((n.placeholder.clone(), r.token.to_secret_string()))
            })
            .collect()
    }

    fn rule_refusal(
        &mut self,
        binding: &str,
        mode: RulesMode,
        rule: String,
    ) -> Result<(), ProxyError> {
        if mode == RulesMode::Enforce {
            return Err(ProxyError::RuleDenied {
                binding: binding.to_owned(),
                rule,
            });
        }
        tracing::warn!(binding, rule, host = %self.host, "dry run: the binding's rules would refuse this request");
        if let Ok(mut marks) = self.marks_mut().dry_run.lock() {
            marks.push(format!("{binding}: {rule}"));
        }
        Ok(())
    }

    /// What the sandbox's bindings ask of requests to this host, asked of
    /// the source once per request.
    async fn host_policy(&mut self) -> HostPolicy {
        if self.policy.is_none() {
            let policy = match self.tokens.host_policy_now(&self.sandbox, &self.host) {
                Some(policy) => policy,
                None => self.tokens.host_policy(&self.sandbox, &self.host).await,
            };
            self.policy = Some(policy);
        }
        self.policy.clone().unwrap_or_default()
    }

    /// False only when it is known without waiting that no signing binding
    /// (generic HMAC) serves this host: the common case skips the check.
    pub fn may_have_signers(&mut self) -> bool {
        if self.plaintext {
            return false;
        }
        if self.policy.is_none() {
            self.policy = self.tokens.host_policy_now(&self.sandbox, &self.host);
        }
        !matches!(&self.policy, Some(p) if p.signers.is_empty())
    }

    /// `inject_when_absent`: a request that carries no credential at all (no
    /// `Authorization`, nothing in the binding's own header, no placeholder
    /// anywhere so far) gets the binding's placeholder in its injection
    /// slot; the header swap then treats it as one the sandbox wrote (host,
    /// rules, evidence for a refresh). Never on plain `http://`.
    pub async fn inject_when_absent(&mut self, headers: &mut HeaderMap) {
        if self.plaintext || !self.resolved.is_empty() {
            return;
        }
        let Some(absent) = self.host_policy().await.inject_absent else {
            return;
        };
        let Ok(inject) = Injection::parse(&absent.inject) else {
            return;
        };
        let carries_placeholder = headers
            .values()
            .any(|v| !self.scanner.scan(v.as_bytes(), true).0.is_empty());
        if headers.contains_key(AUTHORIZATION)
            || headers.contains_key(inject.header_name())
            || carries_placeholder
        {
            return;
        }
        let p = &absent.placeholder;
        let value = match &inject {
            Injection::Bearer => format!("Bearer {p}"),
            Injection::Token => format!("token {p}"),
            Injection::Basic { user } => format!("Basic {}", BASE64.encode(format!("{user}:{p}"))),
            Injection::Header { .. } => p.clone(),
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(inject.header_name().as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            return;
        };
        headers.insert(name, value);
    }

    /// `require = true`: every binding of the sandbox that requires its
    /// placeholder on this host must have been swapped by now. Asked after
    /// the URL, headers and a whole body; a body still to stream might hold
    /// it, but cannot be waited for, so such a request is refused too.
    pub async fn check_required(&mut self) -> Result<(), ProxyError> {
        let required = self.host_policy().await.required;
        for r in required {
            let carried = self
                .resolved
                .iter()
                .any(|(_, res)| res.binding.id == r.binding && res.binding.allows_host(&self.host));
            if !carried {
                let mode = if r.dry_run {
                    RulesMode::DryRun
                } else {
                    RulesMode::Enforce
                };
                self.rule_refusal(
                    &r.binding,
                    mode,
                    format!(
                        "require: requests to {} must carry its placeholder (in the URL, a header or a body airlock reads whole)",
                        self.host
                    ),
                )?;
            }
        }
        Ok(())
    }

    /// Counts every inert placeholder on `counter` too.
    pub fn counting_inert(mut self, counter: Counter) -> Self {
        self.inert_counter = Some(counter);
        self
    }

    /// For plain `http://` requests: every placeholder found is refused.
    pub fn plaintext(mut self) -> Self {
        self.plaintext = true;
        self
    }

    pub fn scanner(&self) -> &Scanner {
        &self.scanner
    }

    /// A swapper for the body that shares what this one resolved, and its
    /// marks: the audit line shows what the body's fork notes.
    pub fn fork(&mut self) -> Self {
        self.marks_mut();
        Self {
            tokens: self.tokens.clone(),
            scanner: self.scanner.clone(),
            sandbox: self.sandbox.clone(),
            host: self.host.clone(),
            plaintext: self.plaintext,
            resolved: self.resolved.clone(),
            basic: Vec::new(),
            sites: SmallVec::new(),
            current_header: None,
            marks: self.marks.clone(),
            inert_counter: self.inert_counter.clone(),
            rule_request: self.rule_request.clone(),
            rules_passed: self.rules_passed.clone(),
            policy: self.policy.clone(),
        }
    }

    pub fn basic_pairs(&self) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
        self.basic.iter().cloned()
    }

    /// (placeholder, binding, token) for everything swapped so far.
    pub fn swapped(&self) -> impl Iterator<Item = (&str, &Resolved)> {
        self.resolved.iter().map(|(p, r)| (p.as_str(), r))
    }

    /// Whether this request carries any binding's token.
    pub fn has_swapped(&self) -> bool {
        !self.resolved.is_empty()
    }

    /// The bindings whose tokens this request carries, each once, for the
    /// audit line.
    pub fn swapped_ids(&self) -> crate::telemetry::Swapped {
        let mut swapped = crate::telemetry::Swapped::default();
        for (_, r) in &self.resolved {
            swapped.add(&r.binding);
        }
        swapped
    }

    /// Bindings whose tokens this request carries, each once.
    pub fn swapped_bindings(&self) -> Vec<Arc<Binding>> {
        let mut out: Vec<Arc<Binding>> = Vec::new();
        for (_, r) in &self.resolved {
            if !out.iter().any(|b| b.id == r.binding.id) {
                out.push(r.binding.clone());
            }
        }
        out
    }

    /// Whether `placeholder`'s token sat where its provider expects it (the
    /// header its `inject` names, or inside Basic for `basic:USER`). Only
    /// then can an answer say anything about that token. A binding that does
    /// not say where its token goes counts any header or Basic swap.
    pub fn in_injection_slot(&self, placeholder: &str, inject: Option<&Injection>) -> bool {
        self.sites
            .iter()
            .filter(|s| self.resolved[s.resolved].0 == placeholder)
            .any(|site| match inject {
                None => matches!(site.location, SwapLocation::Header | SwapLocation::Basic),
                Some(Injection::Basic { .. }) => site.location == SwapLocation::Basic,
                Some(i @ (Injection::Bearer | Injection::Token | Injection::Header { .. })) => {
                    site.location == SwapLocation::Header
                        && site
                            .header
                            .as_ref()
                            .is_some_and(|h| h.as_str() == i.header_name())
                }
            })
    }

    /// Uses `fresh` for `placeholder` from now on (after a refresh).
    pub fn replace_token(&mut self, placeholder: &str, fresh: Resolved) {
        if let Some(entry) = self.resolved.iter_mut().find(|(p, _)| p == placeholder) {
            entry.1 = fresh;
        }
    }

    /// The placeholder's binding and token, asked of the source once per request.
    async fn lookup(&mut self, placeholder: &str) -> Result<usize, TokenError> {
        if let Some(found) = self.lookup_now(placeholder) {
            return found;
        }
        let resolved = self.tokens.resolve(&self.sandbox, placeholder).await?;
        self.resolved.push((placeholder.to_owned(), resolved));
        Ok(self.resolved.len() - 1)
    }

    /// [`Self::lookup`] when the answer is at hand; `None` when the source
    /// must be asked and waited for.
    fn lookup_now(&mut self, placeholder: &str) -> Option<Result<usize, TokenError>> {
        if let Some(i) = self.resolved.iter().position(|(p, _)| p == placeholder) {
            return Some(Ok(i));
        }
        let resolved = match self.tokens.resolve_now(&self.sandbox, placeholder)? {
            Ok(resolved) => resolved,
            Err(err) => return Some(Err(err)),
        };
        self.resolved.push((placeholder.to_owned(), resolved));
        Some(Ok(self.resolved.len() - 1))
    }

    async fn resolve(
        &mut self,
        placeholder: &str,
        location: SwapLocation,
    ) -> Result<&SharedToken, ProxyError> {
        let index = self.lookup(placeholder).await?;
        let binding = &self.resolved[index].1.binding;
        if self.plaintext {
            return Err(ProxyError::PlainHttp {
                binding: binding.id.clone(),
            });
        }
        if !binding.allows_host(&self.host) {
            return Err(ProxyError::HostNotAllowed {
                binding: binding.id.clone(),
                host: self.host.to_string(),
                allowed: binding.hosts_display(),
            });
        }
        if binding.kind.is_signing() || self.resolved[index].1.signing.is_some() {
            // Its token is a key that only works inside a signature
            // airlock makes (crate::signing); as text it would only leak.
            return Err(crate::signing::SigningError::NotSwappable {
                binding: binding.id.clone(),
            }
            .into());
        }
        if !binding.allows(location) {
            return Err(ProxyError::location_not_allowed(binding, location));
        }
        let binding = binding.clone();
        self.check_rules(&binding)?;
        let site = SwapSite {
            resolved: index,
            location,
            header: self.current_header.clone(),
        };
        if !self.sites.contains(&site) {
            self.sites.push(site);
        }
        Ok(&self.resolved[index].1.token)
    }

    /// The binding of a signing placeholder (an AWS access key id the
    /// request was signed with), checked like a header swap: sandbox, host,
    /// rules. Recorded as swapped in `Authorization`.
    pub async fn resolve_signing(
        &mut self,
        placeholder: &str,
        kind: BindingKind,
    ) -> Result<Resolved, ProxyError> {
        self.resolve_signed_with(placeholder, |r| {
            (r.binding.kind != kind).then(|| crate::signing::SigningError::NotSigV4 {
                binding: r.binding.id.clone(),
            })
        })
        .await
    }

    /// [`Self::resolve_signing`] for an OAuth 1.0a connection's access token
    /// placeholder (an `oauth_token` the request was signed with).
    pub async fn resolve_oauth1(&mut self, placeholder: &str) -> Result<Resolved, ProxyError> {
        self.resolve_signed_with(placeholder, |r| {
            (!matches!(
                r.signing.as_deref(),
                Some(airlock_vault_client::SigningKeys::OAuth1(_))
            ))
            .then(|| crate::signing::SigningError::NotOAuth1 {
                binding: r.binding.id.clone(),
            })
        })
        .await
    }

    /// Whether `placeholder` names an OAuth 1.0a connection's binding (an
    /// unknown or refused one is not: the usual swap says why).
    pub async fn is_oauth1(&mut self, placeholder: &str) -> bool {
        let found = self.lookup(placeholder).await;
        self.names_oauth1(found)
    }

    /// [`Self::is_oauth1`] when the answer is at hand without waiting.
    pub fn is_oauth1_now(&mut self, placeholder: &str) -> Option<bool> {
        let found = self.lookup_now(placeholder)?;
        Some(self.names_oauth1(found))
    }

    fn names_oauth1(&self, found: Result<usize, TokenError>) -> bool {
        found.is_ok_and(|i| {
            matches!(
                self.resolved[i].1.signing.as_deref(),
                Some(airlock_vault_client::SigningKeys::OAuth1(_))
            )
        })
    }

    async fn resolve_signed_with(
        &mut self,
        placeholder: &str,
        wrong_kind: impl Fn(&Resolved) -> Option<crate::signing::SigningError>,
    ) -> Result<Resolved, ProxyError> {
        let index = self.lookup(placeholder).await?;
        let binding = self.resolved[index].1.binding.clone();
        if self.plaintext {
            return Err(ProxyError::PlainHttp {
                binding: binding.id.clone(),
            });
        }
        if !binding.allows_host(&self.host) {
            return Err(ProxyError::HostNotAllowed {
                binding: binding.id.clone(),
                host: self.host.to_string(),
                allowed: binding.hosts_display(),
            });
        }
        if let Some(e) = wrong_kind(&self.resolved[index].1) {
            return Err(e.into());
        }
        self.check_rules(&binding)?;
        let site = SwapSite {
            resolved: index,
            location: SwapLocation::Header,
            header: Some(AUTHORIZATION),
        };
        if !self.sites.contains(&site) {
            self.sites.push(site);
        }
        Ok(self.resolved[index].1.clone())
    }

    /// The placeholders of the signing (HMAC) bindings for this host, each
    /// with its binding as the source gives it (nothing is checked or
    /// recorded: [`Self::resolve_signing`] does that for the ones a request uses).
    pub async fn signers(&mut self) -> Vec<(String, Resolved)> {
        if self.plaintext {
            return Vec::new();
        }
        let mut out = Vec::new();
        for p in self.host_policy().await.signers {
            if let Ok(r) = self.tokens.resolve(&self.sandbox, &p).await {
                out.push((p, r));
            }
        }
        out
    }

    /// A placeholder in a body is swapped when its binding allows this host
    /// and bodies; bound elsewhere (or not this sandbox's at all) it is inert
    /// text, passed on with an audit mark unless its binding says `refuse`.
    /// Plain `http://` refuses every placeholder.
    async fn body_action(&mut self, placeholder: &str) -> Result<BodyAction, ProxyError> {
        if self.plaintext {
            let binding = match self.lookup(placeholder).await {
                Ok(i) => self.resolved[i].1.binding.id.clone(),
                Err(_) => "unknown".to_owned(),
            };
            return Err(ProxyError::PlainHttp { binding });
        }
        let index = match self.lookup(placeholder).await {
            Ok(i) => i,
            Err(TokenError::UnknownPlaceholder) => {
                self.mark_inert("unknown");
                return Ok(BodyAction::Inert);
            }
            Err(TokenError::WrongSandbox { binding } | TokenError::Revoked { binding }) => {
                self.mark_inert(&binding);
                return Ok(BodyAction::Inert);
            }
            Err(e) => return Err(e.into()),
        };
        let binding = self.resolved[index].1.binding.clone();
        if !binding.allows_host(&self.host) {
            if binding.on_foreign_body == ForeignBody::Refuse {
                return Err(ProxyError::HostNotAllowed {
                    binding: binding.id.clone(),
                    host: self.host.to_string(),
                    allowed: binding.hosts_display(),
                });
            }
            // Only this request's swap list holds what was really swapped.
            self.resolved.remove(index);
            self.mark_inert(&binding.id);
            return Ok(BodyAction::Inert);
        }
        if !binding.allows(SwapLocation::Body) {
            return Err(ProxyError::location_not_allowed(
                &binding,
                SwapLocation::Body,
            ));
        }
        self.check_rules(&binding)?;
        Ok(BodyAction::Swap)
    }

    fn mark_inert(&mut self, binding: &str) {
        if let Ok(mut marks) = self.marks_mut().inert.lock() {
            if !marks.iter().any(|m| m == binding) {
                marks.push(binding.to_owned());
            }
        }
        if let Some(counter) = &self.inert_counter {
            counter.inc();
        }
    }

    /// Whether any of `found` would be swapped into a body (the others are
    /// inert): a body that must keep its length cannot take those.
    pub async fn body_needs_swap(&mut self, found: &[Found]) -> Result<bool, ProxyError> {
        for f in found {
            if matches!(self.body_action(&f.placeholder).await?, BodyAction::Swap) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Swaps the given finds in `input`.
    pub async fn apply(
        &mut self,
        input: &[u8],
        found: &[Found],
        location: SwapLocation,
        context: Context,
    ) -> Result<Vec<u8>, ProxyError> {
        let mut out = Vec::with_capacity(input.len() + 64 * found.len());
        let mut last = 0;
        for f in found {
            // Overlaps a find already swapped (the longer reading wins).
            if f.range.start < last {
                continue;
            }
            if location == SwapLocation::Body
                && matches!(self.body_action(&f.placeholder).await?, BodyAction::Inert)
            {
                continue;
            }
            // Only bodies and URLs carry escaped spellings; a header holding
            // one is still refused unless it may carry the token.
            let token = self.resolve(&f.placeholder, location).await?;
            out.extend_from_slice(&input[last..f.range.start]);
            scanner::write_token(&mut out, token.expose_secret(), f.spelling, context);
            last = f.range.end;
        }
        out.extend_from_slice(&input[last..]);
        Ok(out)
    }

    /// `input` with every placeholder replaced, or `None` when it holds none.
    pub async fn swap_bytes(
        &mut self,
        input: &[u8],
        location: SwapLocation,
        context: Context,
    ) -> Result<Option<Vec<u8>>, ProxyError> {
        let (found, _) = self.scanner.scan(input, true);
        if found.is_empty() {
            return Ok(None);
        }
        self.apply(input, &found, location, context).await.map(Some)
    }

    /// Swaps in every header value, and inside `Authorization: Basic`.
    pub async fn swap_headers(&mut self, headers: &mut HeaderMap) -> Result<(), ProxyError> {
        for name in headers.keys() {
            // A header name is a credential position too, but never a place
            // a token can be written: checked like a value, then refused.
            let (found, _) = self.scanner.scan(name.as_str().as_bytes(), true);
            if let Some(f) = found.first() {
                self.current_header = None;
                self.resolve(&f.placeholder, SwapLocation::Header).await?;
                return Err(ProxyError::BadRequest(
                    "a placeholder in a header name cannot be swapped; put it in the header's value"
                        .into(),
                ));
            }
        }
        // In place: repeated headers keep their order, and nothing is copied
        // but the swapped values.
        for (name, value) in headers.iter_mut() {
            self.current_header = Some(name.clone());
            let mut swapped = self
                .swap_bytes(value.as_bytes(), SwapLocation::Header, Context::Raw)
                .await?;
            if name == AUTHORIZATION {
                let current = swapped.as_deref().unwrap_or(value.as_bytes());
                if let Some(basic) = self.swap_basic(current).await? {
                    swapped = Some(basic);
                }
            }
            if let Some(bytes) = swapped {
                let mut swapped = HeaderValue::from_maybe_shared(bytes::Bytes::from(bytes))
                    .map_err(|_| ProxyError::InvalidToken {
                        binding: self.swapped_ids().ids().collect::<Vec<_>>().join(","),
                    })?;
                // HPACK must never index a header that carries a credential.
                swapped.set_sensitive(true);
                *value = swapped;
            }
        }
        self.current_header = None;
        Ok(())
    }

    /// The `Basic` credential with placeholders swapped in its decoded `user:pass`.
    async fn swap_basic(&mut self, value: &[u8]) -> Result<Option<Vec<u8>>, ProxyError> {
        let Some(encoded) = strip_scheme(value, b"basic") else {
            return Ok(None);
        };
        let Ok(decoded) = BASE64.decode(encoded.trim_ascii()) else {
            return Ok(None);
        };
        let Some(swapped) = self
            .swap_bytes(&decoded, SwapLocation::Basic, Context::Raw)
            .await?
        else {
            return Ok(None);
        };
        let sent = BASE64.encode(swapped);
        self.basic
            .push((sent.clone().into_bytes(), encoded.trim_ascii().to_vec()));
        let mut out = b"Basic ".to_vec();
        out.extend_from_slice(sent.as_bytes());
        Ok(Some(out))
    }

    /// Swaps in the URL's path and query (`query` location), percent-encoding tokens.
    pub async fn swap_path_and_query(&mut self, pq: &str) -> Result<Option<String>, ProxyError> {
        Ok(self
            .swap_bytes(pq.as_bytes(), SwapLocation::Query, Context::Url)
            .await?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }
}

fn strip_scheme<'v>(value: &'v [u8], scheme: &[u8]) -> Option<&'v [u8]> {
    let value = value.trim_ascii_start();
    if value.len() > scheme.len()
        && value[..scheme.len()].eq_ignore_ascii_case(scheme)
        && value[scheme.len()] == b' '
    {
        Some(&value[scheme.len() + 1..])
    } else {
        None
    }
}
