//! Finding placeholders in a request and swapping them for real tokens.
//!
//! A placeholder is the configured prefix followed by a run of at least
//! [`PLACEHOLDER_MIN_RANDOM_LEN`] base62 characters. Every placeholder found is
//! resolved and checked against its binding (host, location, sandbox) before
//! anything is swapped: one refused placeholder refuses the whole request, so
//! a request that still holds a placeholder is never forwarded.

use std::ops::Range;
use std::sync::Arc;

use airlock_vault_client::{
    Binding, ExposeSecret, Resolved, SandboxId, SwapLocation, TokenSource,
    PLACEHOLDER_MIN_RANDOM_LEN,
};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use http::header::{HeaderValue, AUTHORIZATION};
use http::HeaderMap;
use memchr::memmem;

use crate::error::ProxyError;

/// Finds placeholder-shaped strings.
#[derive(Clone)]
pub struct Scanner {
    finder: memmem::Finder<'static>,
}

impl Scanner {
    pub fn new(prefix: &str) -> Self {
        Self {
            finder: memmem::Finder::new(prefix.as_bytes()).into_owned(),
        }
    }

    fn prefix_len(&self) -> usize {
        self.finder.needle().len()
    }

    /// Byte ranges of every placeholder in `haystack`, in order.
    pub fn find_all(&self, haystack: &[u8]) -> Vec<Range<usize>> {
        let mut found = Vec::new();
        let mut from = 0;
        while let Some(pos) = self.finder.find(&haystack[from..]) {
            let start = from + pos;
            let body_start = start + self.prefix_len();
            let body_len = haystack[body_start..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric())
                .count();
            if body_len >= PLACEHOLDER_MIN_RANDOM_LEN {
                found.push(start..body_start + body_len);
                from = body_start + body_len;
            } else {
                from = body_start;
            }
        }
        found
    }

    pub fn contains(&self, haystack: &[u8]) -> bool {
        !self.find_all(haystack).is_empty()
    }
}

/// Swaps the placeholders of one request headed to `host`.
pub struct RequestSwap<'a> {
    tokens: &'a dyn TokenSource,
    scanner: &'a Scanner,
    sandbox: &'a SandboxId,
    host: &'a str,
    /// Plain-text requests may not carry placeholders at all.
    plaintext: bool,
    resolved: Vec<(String, Resolved)>,
}

impl<'a> RequestSwap<'a> {
    pub fn new(
        tokens: &'a dyn TokenSource,
        scanner: &'a Scanner,
        sandbox: &'a SandboxId,
        host: &'a str,
    ) -> Self {
        Self {
            tokens,
            scanner,
            sandbox,
            host,
            plaintext: false,
            resolved: Vec::new(),
        }
    }

    /// For plain `http://` requests: every placeholder found is refused.
    pub fn plaintext(mut self) -> Self {
        self.plaintext = true;
        self
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

    async fn resolve(
        &mut self,
        placeholder: &str,
        location: SwapLocation,
    ) -> Result<usize, ProxyError> {
        let index = match self.resolved.iter().position(|(p, _)| p == placeholder) {
            Some(i) => i,
            None => {
                let resolved = self.tokens.resolve(self.sandbox, placeholder).await?;
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
        if !binding.allows_host(self.host) {
            return Err(ProxyError::HostNotAllowed {
                binding: binding.id.clone(),
                host: self.host.to_owned(),
                allowed: binding.hosts_display(),
            });
        }
        if !binding.allows(location) {
            return Err(ProxyError::location_not_allowed(binding, location));
        }
        Ok(index)
    }

    /// `input` with every placeholder replaced, or `None` when it holds none.
    pub async fn swap_bytes(
        &mut self,
        input: &[u8],
        location: SwapLocation,
    ) -> Result<Option<Vec<u8>>, ProxyError> {
        let ranges = self.scanner.find_all(input);
        if ranges.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(input.len() + 64);
        let mut last = 0;
        for range in ranges {
            // Placeholders are ASCII by construction.
            let placeholder = std::str::from_utf8(&input[range.clone()]).unwrap_or_default();
            let index = self.resolve(placeholder, location).await?;
            out.extend_from_slice(&input[last..range.start]);
            out.extend_from_slice(self.resolved[index].1.token.expose_secret().as_bytes());
            last = range.end;
        }
        out.extend_from_slice(&input[last..]);
        Ok(Some(out))
    }

    /// Swaps in every header value, and inside `Authorization: Basic`.
    pub async fn swap_headers(&mut self, headers: &mut HeaderMap) -> Result<(), ProxyError> {
        let mut replacements = Vec::new();
        for (name, value) in headers.iter() {
            let mut swapped = self
                .swap_bytes(value.as_bytes(), SwapLocation::Header)
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
        let Some(swapped) = self.swap_bytes(&decoded, SwapLocation::Basic).await? else {
            return Ok(None);
        };
        let mut out = b"Basic ".to_vec();
        out.extend_from_slice(BASE64.encode(swapped).as_bytes());
        Ok(Some(out))
    }

    /// Swaps in the URL's path and query (`query` location).
    pub async fn swap_path_and_query(&mut self, pq: &str) -> Result<Option<String>, ProxyError> {
        Ok(self
            .swap_bytes(pq.as_bytes(), SwapLocation::Query)
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
    use airlock_vault_client::{
        generate_placeholder, HostPattern, SecretString, StaticSecret, StaticSecrets,
    };

    const REAL: &str = "ghp_REALSECRETVALUE123";

    fn setup(swap_in: &[SwapLocation]) -> (StaticSecrets, String) {
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
        (secrets, placeholder)
    }

    #[test]
    fn scanner_finds_whole_placeholders_only() {
        let scanner = Scanner::new("miosa-tok-");
        let p = generate_placeholder("miosa-tok-");
        let text = format!("a miosa-tok-short {p}, {p}");
        let found = scanner.find_all(text.as_bytes());
        assert_eq!(found.len(), 2);
        assert_eq!(&text[found[0].clone()], p);
        assert!(!scanner.contains(b"miosa-tok-"));
        assert!(!scanner.contains(b""));
    }

    #[tokio::test]
    async fn swaps_bearer_and_basic() {
        let (src, p) = setup(&[SwapLocation::Header, SwapLocation::Basic]);
        let scanner = Scanner::new("miosa-tok-");
        let sandbox = SandboxId::default_sandbox();
        let mut swap = RequestSwap::new(&src, &scanner, &sandbox, "api.github.com");
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
        let scanner = Scanner::new("miosa-tok-");
        let sandbox = SandboxId::default_sandbox();
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, format!("Bearer {p}").parse().unwrap());

        let mut swap = RequestSwap::new(&src, &scanner, &sandbox, "evil.test");
        let err = swap.swap_headers(&mut headers.clone()).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("secret:GITHUB_TOKEN") && msg.contains("evil.test"),
            "{msg}"
        );
        assert!(!msg.contains(REAL));

        let mut swap = RequestSwap::new(&src, &scanner, &sandbox, "api.github.com");
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

        let mut swap = RequestSwap::new(&src, &scanner, &sandbox, "api.github.com").plaintext();
        let err = swap.swap_headers(&mut headers.clone()).await.unwrap_err();
        assert!(matches!(err, ProxyError::PlainHttp { .. }), "{err}");

        let unknown = generate_placeholder("miosa-tok-");
        let mut h = HeaderMap::new();
        h.insert("x-token", unknown.parse().unwrap());
        let mut swap = RequestSwap::new(&src, &scanner, &sandbox, "api.github.com");
        assert!(matches!(
            swap.swap_headers(&mut h).await.unwrap_err(),
            ProxyError::UnknownPlaceholder
        ));
    }

    #[tokio::test]
    async fn token_with_line_break_is_refused_not_injected() {
        let placeholder = generate_placeholder("miosa-tok-");
        let src = StaticSecrets::new(
            "miosa-tok-",
            SandboxId::default_sandbox(),
            vec![StaticSecret {
                name: "EVIL".into(),
                value: SecretString::from("abc\r\nX-Injected: 1"),
                placeholder: placeholder.clone(),
                hosts: vec![HostPattern::parse("api.github.com").unwrap()],
                swap_in: SwapLocation::defaults(),
            }],
        );
        let scanner = Scanner::new("miosa-tok-");
        let sandbox = SandboxId::default_sandbox();
        let mut swap = RequestSwap::new(&src, &scanner, &sandbox, "api.github.com");
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
