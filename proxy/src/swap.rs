//! Finding placeholders in a request and swapping them for real tokens.
//!
//! A placeholder is the configured prefix followed by a run of at least
//! [`PLACEHOLDER_MIN_RANDOM_LEN`] base62 characters. Its dashes may also be
//! written JSON-escaped (`\u002d`) or percent-encoded (`%2D`); the token put in
//! its place is encoded the same way. Every placeholder found is resolved and
//! checked against its binding (sandbox, host, location) before anything is
//! swapped: one refused placeholder refuses the whole request, so a request
//! that still holds a placeholder is never forwarded.

use std::ops::Range;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use airlock_vault_client::{
    Binding, ExposeSecret, Resolved, SandboxId, SecretString, SwapLocation, TokenSource,
    PLACEHOLDER_MIN_RANDOM_LEN,
};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use http::header::{HeaderValue, AUTHORIZATION};
use http::HeaderMap;

use crate::error::ProxyError;

/// Longest base62 run a placeholder may have; longer runs are refused whole
/// (and bound how much a stream holds back).
pub const MAX_RANDOM_LEN: usize = 128;

/// How a placeholder's dashes were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    Plain,
    /// `\u002d`: inside a JSON string.
    JsonEscaped,
    /// `%2D`: in a URL or a form body.
    Percent,
}

/// Where the bytes being scanned sit, which decides how a token is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Header values, Basic credentials, opaque bodies: the token as is.
    Raw,
    /// JSON text: the token JSON-escaped.
    Json,
    /// URL or `application/x-www-form-urlencoded`: the token percent-encoded.
    Url,
}

/// One placeholder found in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub range: Range<usize>,
    /// The placeholder as generated (dashes plain).
    pub placeholder: String,
    pub spelling: Spelling,
}

/// Finds placeholder-shaped strings in any spelling.
pub struct Scanner {
    patterns: AhoCorasick,
    /// The prefix in each spelling, in pattern order.
    pattern_bytes: Vec<Vec<u8>>,
    longest_pattern: usize,
    spellings: Vec<Spelling>,
    prefix: String,
}

impl Scanner {
    pub fn new(prefix: &str) -> Self {
        let mut patterns = vec![prefix.to_owned()];
        let mut spellings = vec![Spelling::Plain];
        if prefix.contains('-') {
            for (dash, spelling) in [
                ("\\u002d", Spelling::JsonEscaped),
                ("\\u002D", Spelling::JsonEscaped),
                ("%2D", Spelling::Percent),
                ("%2d", Spelling::Percent),
            ] {
                patterns.push(prefix.replace('-', dash));
                spellings.push(spelling);
            }
        }
        Self {
            patterns: AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(&patterns)
                .expect("prefix patterns build"),
            longest_pattern: patterns.iter().map(String::len).max().unwrap_or(0),
            pattern_bytes: patterns.into_iter().map(String::into_bytes).collect(),
            spellings,
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every placeholder in `haystack`. With `complete == false` (a stream
    /// that may go on), a run that reaches the end is left out, and the
    /// second value is where the bytes that might still become a placeholder
    /// start.
    pub fn scan(&self, haystack: &[u8], complete: bool) -> (Vec<Found>, usize) {
        let mut found = Vec::new();
        let mut hold_from = haystack.len();
        let mut at = 0;
        while let Some(m) = self.patterns.find(&haystack[at..]) {
            let start = at + m.start();
            let body_start = at + m.end();
            let run = haystack[body_start..]
                .iter()
                .take(MAX_RANDOM_LEN + 1)
                .take_while(|b| b.is_ascii_alphanumeric())
                .count();
            let reaches_end = body_start + run == haystack.len();
            if reaches_end && !complete && run <= MAX_RANDOM_LEN {
                hold_from = start;
                break;
            }
            if run >= PLACEHOLDER_MIN_RANDOM_LEN {
                found.push(Found {
                    range: start..body_start + run,
                    placeholder: format!(
                        "{}{}",
                        self.prefix,
                        std::str::from_utf8(&haystack[body_start..body_start + run])
                            .unwrap_or_default()
                    ),
                    spelling: self.spellings[m.pattern().as_usize()],
                });
                at = body_start + run;
            } else {
                // Too short to be a placeholder; another prefix may start inside
                // it (`miosa-tok-miosa-tok-…`), so look again right after this one.
                at = start + 1;
            }
        }
        if !complete && hold_from == haystack.len() {
            hold_from =
                haystack.len() - self.partial_prefix_len(&haystack[at.min(haystack.len())..]);
        }
        (found, hold_from)
    }

    /// Length of the longest suffix of `tail` that begins some spelling of
    /// the prefix. Only positions holding the prefix's first byte can start
    /// one, so those are the only ones tried.
    fn partial_prefix_len(&self, tail: &[u8]) -> usize {
        let window = self.longest_pattern.saturating_sub(1).min(tail.len());
        let start = tail.len() - window;
        let Some(&first) = self.pattern_bytes[0].first() else {
            return 0;
        };
        memchr::memchr_iter(first, &tail[start..])
            .map(|i| &tail[start + i..])
            .find(|suffix| self.pattern_bytes.iter().any(|p| p.starts_with(suffix)))
            .map_or(0, <[u8]>::len)
    }

    pub fn contains(&self, haystack: &[u8]) -> bool {
        !self.scan(haystack, true).0.is_empty()
    }
}

/// Writes `token` for the place a placeholder was found.
pub fn encode_token(token: &str, spelling: Spelling, context: Context) -> Vec<u8> {
    let json = || serde_json::to_string(token).expect("strings serialise");
    match (spelling, context) {
        (Spelling::JsonEscaped, _) | (Spelling::Plain, Context::Json) => {
            let quoted = json();
            quoted.as_bytes()[1..quoted.len() - 1].to_vec()
        }
        (Spelling::Percent, _) | (Spelling::Plain, Context::Url) => {
            percent_encode(token).into_bytes()
        }
        (Spelling::Plain, Context::Raw) => token.as_bytes().to_vec(),
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Swaps the placeholders of one request headed to `host`. Owned, so a
/// streaming body can carry it.
pub struct Swapper {
    tokens: Arc<dyn TokenSource>,
    scanner: Arc<Scanner>,
    sandbox: SandboxId,
    host: String,
    /// Plain-text requests may not carry placeholders at all.
    plaintext: bool,
    resolved: Vec<(String, Resolved)>,
    /// Basic credentials swapped: (as sent upstream, as the sandbox wrote it),
    /// so an echo of the encoded credential can be scrubbed too.
    basic: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Swapper {
    pub fn new(
        tokens: Arc<dyn TokenSource>,
        scanner: Arc<Scanner>,
        sandbox: SandboxId,
        host: String,
    ) -> Self {
        Self {
            tokens,
            scanner,
            sandbox,
            host,
            plaintext: false,
            resolved: Vec::new(),
            basic: Vec::new(),
        }
    }

    /// For plain `http://` requests: every placeholder found is refused.
    pub fn plaintext(mut self) -> Self {
        self.plaintext = true;
        self
    }

    pub fn scanner(&self) -> &Scanner {
        &self.scanner
    }

    /// A swapper for the body that shares what this one resolved.
    pub fn fork(&self) -> Self {
        Self {
            tokens: self.tokens.clone(),
            scanner: self.scanner.clone(),
            sandbox: self.sandbox.clone(),
            host: self.host.clone(),
            plaintext: self.plaintext,
            resolved: self.resolved.clone(),
            basic: Vec::new(),
        }
    }

    pub fn basic_pairs(&self) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
        self.basic.iter().cloned()
    }

    /// (placeholder, binding, token) for everything swapped so far.
    pub fn swapped(&self) -> impl Iterator<Item = (&str, &Resolved)> {
        self.resolved.iter().map(|(p, r)| (p.as_str(), r))
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

    /// Uses `fresh` for `placeholder` from now on (after a refresh).
    pub fn replace_token(&mut self, placeholder: &str, fresh: Resolved) {
        if let Some(entry) = self.resolved.iter_mut().find(|(p, _)| p == placeholder) {
            entry.1 = fresh;
        }
    }

    async fn resolve(
        &mut self,
        placeholder: &str,
        location: SwapLocation,
    ) -> Result<&SecretString, ProxyError> {
        let index = match self.resolved.iter().position(|(p, _)| p == placeholder) {
            Some(i) => i,
            None => {
                let resolved = self.tokens.resolve(&self.sandbox, placeholder).await?;
                self.resolved.push((placeholder.to_owned(), resolved));
                self.resolved.len() - 1
            }
        };
        let binding = &self.resolved[index].1.binding;
        if self.plaintext {
            return Err(ProxyError::PlainHttp {
                binding: binding.id.clone(),
            });
        }
        if !binding.allows_host(&self.host) {
            return Err(ProxyError::HostNotAllowed {
                binding: binding.id.clone(),
                host: self.host.clone(),
                allowed: binding.hosts_display(),
            });
        }
        if !binding.allows(location) {
            return Err(ProxyError::location_not_allowed(binding, location));
        }
        Ok(&self.resolved[index].1.token)
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
            // Only bodies and URLs carry escaped spellings; a header holding
            // one is still refused unless it may carry the token.
            let token = self.resolve(&f.placeholder, location).await?;
            out.extend_from_slice(&input[last..f.range.start]);
            out.extend_from_slice(&encode_token(token.expose_secret(), f.spelling, context));
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
        let mut replacements = Vec::new();
        for (name, value) in headers.iter() {
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
                replacements.push((name.clone(), value.clone(), bytes));
            }
        }
        for (name, old, bytes) in replacements {
            let mut value =
                HeaderValue::from_bytes(&bytes).map_err(|_| ProxyError::InvalidToken {
                    binding: self
                        .swapped_bindings()
                        .iter()
                        .map(|b| b.id.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                })?;
            // HPACK must never index a header that carries a credential.
            value.set_sensitive(true);
            // Replace exactly the value that was swapped; repeated headers keep their order.
            let all: Vec<HeaderValue> = headers
                .get_all(&name)
                .iter()
                .map(|v| if v == old { value.clone() } else { v.clone() })
                .collect();
            headers.remove(&name);
            for v in all {
                headers.append(name.clone(), v);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_vault_client::{generate_placeholder, HostPattern, StaticSecret, StaticSecrets};

    const REAL: &str = "ghp_REALSECRETVALUE123";

    fn setup(swap_in: &[SwapLocation]) -> (Arc<StaticSecrets>, String) {
        let placeholder = generate_placeholder("miosa-tok-");
        let secrets = StaticSecrets::new(
            "miosa-tok-",
            SandboxId::default_sandbox(),
            vec![StaticSecret {
                name: "GITHUB_TOKEN".into(),
                value: SecretString::from(REAL),
                placeholder: placeholder.clone(),
                hosts: vec![HostPattern::parse("api.github.com").unwrap()],
                swap_in: swap_in.iter().copied().collect(),
            }],
        );
        (Arc::new(secrets), placeholder)
    }

    fn swapper(src: Arc<StaticSecrets>, host: &str) -> Swapper {
        Swapper::new(
            src,
            Arc::new(Scanner::new("miosa-tok-")),
            SandboxId::default_sandbox(),
            host.into(),
        )
    }

    #[test]
    fn scanner_finds_whole_placeholders_in_every_spelling() {
        let scanner = Scanner::new("miosa-tok-");
        let p = generate_placeholder("miosa-tok-");
        let random = &p["miosa-tok-".len()..];
        let text =
            format!("a miosa-tok-short {p}, miosa\\u002dtok\\u002d{random} miosa%2Dtok%2D{random}");
        let (found, hold) = scanner.scan(text.as_bytes(), true);
        assert_eq!(hold, text.len());
        assert_eq!(found.len(), 3);
        assert!(found.iter().all(|f| f.placeholder == p));
        assert_eq!(found[1].spelling, Spelling::JsonEscaped);
        assert_eq!(found[2].spelling, Spelling::Percent);
        assert!(!scanner.contains(b"miosa-tok-"));
    }

    #[test]
    fn a_prefix_inside_a_false_start_is_still_found() {
        // Found by the `scanner` fuzz target.
        let scanner = Scanner::new("miosa-tok-");
        let text = b"\0\0\0miosa-tok-miosa-tok-AbCdEfGhIjKlMnOpQrStUv ";
        let (found, _) = scanner.scan(text, true);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].placeholder, "miosa-tok-AbCdEfGhIjKlMnOpQrStUv");
        let (found, hold) = scanner.scan(&text[..text.len() - 1], false);
        assert!(found.is_empty());
        assert_eq!(hold, 13, "the inner placeholder may still be growing");
    }

    #[test]
    fn streams_hold_back_only_what_could_become_a_placeholder() {
        let scanner = Scanner::new("miosa-tok-");
        assert_eq!(scanner.scan(b"hello world", false).1, 11);
        assert_eq!(scanner.scan(b"hello mio", false).1, 6);
        assert_eq!(scanner.scan(b"hello miosa%2", false).1, 6);
        assert_eq!(scanner.scan(b"x miosa-tok-abc", false).1, 2);
        assert_eq!(scanner.scan(b"x miosa-tok-abc ", false).1, 16);
        assert_eq!(
            scanner.scan(b"data: event\n\n", false).1,
            13,
            "SSE events are never held"
        );
    }

    #[test]
    fn tokens_are_written_for_their_context() {
        assert_eq!(
            encode_token("a+b/c", Spelling::Plain, Context::Url),
            b"a%2Bb%2Fc"
        );
        assert_eq!(
            encode_token("a\"b", Spelling::Plain, Context::Json),
            b"a\\\"b"
        );
        assert_eq!(
            encode_token("a+b", Spelling::Percent, Context::Raw),
            b"a%2Bb"
        );
        assert_eq!(encode_token("a+b", Spelling::Plain, Context::Raw), b"a+b");
    }

    #[tokio::test]
    async fn swaps_bearer_and_basic() {
        let (src, p) = setup(&[SwapLocation::Header, SwapLocation::Basic]);
        let mut swap = swapper(src, "api.github.com");
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, format!("Bearer {p}").parse().unwrap());
        headers.append("x-other", "plain".parse().unwrap());
        swap.swap_headers(&mut headers).await.unwrap();
        assert_eq!(headers[AUTHORIZATION], format!("Bearer {REAL}").as_str());
        assert!(headers[AUTHORIZATION].is_sensitive());

        let mut headers = HeaderMap::new();
        let basic = BASE64.encode(format!("x-access-token:{p}"));
        headers.insert(AUTHORIZATION, format!("basic {basic}").parse().unwrap());
        swap.swap_headers(&mut headers).await.unwrap();
        let expected = format!("Basic {}", BASE64.encode(format!("x-access-token:{REAL}")));
        assert_eq!(headers[AUTHORIZATION], expected.as_str());
        assert_eq!(swap.swapped_bindings().len(), 1);
    }

    #[tokio::test]
    async fn refuses_other_hosts_locations_and_plaintext() {
        let (src, p) = setup(&[SwapLocation::Header]);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, format!("Bearer {p}").parse().unwrap());

        let mut swap = swapper(src.clone(), "evil.test");
        let err = swap.swap_headers(&mut headers.clone()).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("secret:GITHUB_TOKEN") && msg.contains("evil.test"),
            "{msg}"
        );
        assert!(!msg.contains(REAL));

        let mut swap = swapper(src.clone(), "api.github.com");
        let err = swap
            .swap_path_and_query(&format!("/x?token={p}"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProxyError::LocationNotAllowed { .. }),
            "{err}"
        );

        let mut basic = HeaderMap::new();
        let encoded = BASE64.encode(format!("u:{p}"));
        basic.insert(AUTHORIZATION, format!("Basic {encoded}").parse().unwrap());
        let err = swap.swap_headers(&mut basic).await.unwrap_err();
        assert!(
            matches!(err, ProxyError::LocationNotAllowed { .. }),
            "{err}"
        );

        let mut swap = swapper(src.clone(), "api.github.com").plaintext();
        let err = swap.swap_headers(&mut headers.clone()).await.unwrap_err();
        assert!(matches!(err, ProxyError::PlainHttp { .. }), "{err}");

        let unknown = generate_placeholder("miosa-tok-");
        let mut h = HeaderMap::new();
        h.insert("x-token", unknown.parse().unwrap());
        let mut swap = swapper(src, "api.github.com");
        assert!(matches!(
            swap.swap_headers(&mut h).await.unwrap_err(),
            ProxyError::UnknownPlaceholder
        ));
    }

    #[tokio::test]
    async fn token_with_line_break_is_refused_not_injected() {
        let placeholder = generate_placeholder("miosa-tok-");
        let src = Arc::new(StaticSecrets::new(
            "miosa-tok-",
            SandboxId::default_sandbox(),
            vec![StaticSecret {
                name: "EVIL".into(),
                value: SecretString::from("abc\r\nX-Injected: 1"),
                placeholder: placeholder.clone(),
                hosts: vec![HostPattern::parse("api.github.com").unwrap()],
                swap_in: SwapLocation::defaults(),
            }],
        ));
        let mut swap = swapper(src, "api.github.com");
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            format!("Bearer {placeholder}").parse().unwrap(),
        );
        let err = swap.swap_headers(&mut headers).await.unwrap_err();
        assert!(matches!(err, ProxyError::InvalidToken { .. }));
        assert!(!err.to_string().contains("Injected"));
    }
}
