//! Fixtures and reference implementations shared by airlock's fuzz targets.
//!
//! The references here are written independently of airlock's code (naive
//! byte-by-byte searches), so a target can compare what airlock does with
//! what the placeholder contract says it should do.

use std::cell::RefCell;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use airlock_proxy::swap::{Scanner, Swapper};
use airlock_vault_client::{
    HostPattern, SandboxId, SecretString, StaticSecret, StaticSecrets, SwapLocation,
};

/// Fewest base62 characters a placeholder has.
pub const MIN_RANDOM: usize = airlock_vault_client::PLACEHOLDER_MIN_RANDOM_LEN;
/// Longest base62 run the scanner reads; longer runs are refused whole.
pub const MAX_RANDOM: usize = airlock_proxy::swap::MAX_RANDOM_LEN;

/// Prefixes the targets switch between. Each is valid for `airlock.toml`
/// (at least 4 of letters, digits, `-`, `_`) and holds a character that is
/// not base62, so no prefix spelling can hide inside a base62 run.
pub const PREFIXES: [&str; 4] = ["miosa-tok-", "x-y-", "tok_", "a--b"];

/// The host every swapper is for.
pub const HOST: &str = "api.test";

/// Random part of the placeholder bound to [`HOST`], swappable everywhere.
/// 22 characters: the minimum, so one more base62 character makes it unknown.
pub const RANDOM_OK: &str = "AbCdEfGhIjKlMnOpQrStUv";
/// Random part of a placeholder bound to another host.
pub const RANDOM_OTHER_HOST: &str = "ZyXwVuTsRqPoNmLkJiHgFeDcBa9876543210";
/// Random part of a placeholder bound to [`HOST`] but allowed only in headers.
pub const RANDOM_HEADER_ONLY: &str = "HdrOnly0123456789abcdefghijKLMNOP";

/// The real token behind [`RANDOM_OK`]: starts with a short base62 run and
/// ends with a non-base62 character (so a swapped token never extends a
/// neighbouring run into a placeholder), and holds characters that JSON and
/// percent-encoding must escape.
pub const TOKEN_OK: &str = "tok_RE\"AL+v/al=ue\\\u{fc}~ %-end!";
pub const TOKEN_OTHER_HOST: &str = "tok_OTHER_HOST_SECRET!";
pub const TOKEN_HEADER_ONLY: &str = "tok_HEADER_ONLY_SECRET!";

pub fn placeholder(prefix: &str, random: &str) -> String {
    format!("{prefix}{random}")
}

/// The three secrets above, for `prefix`.
pub fn secrets(prefix: &str) -> Arc<StaticSecrets> {
    fixture(prefix).0.clone()
}

/// A scanner for `prefix`, built once per prefix of [`PREFIXES`].
pub fn scanner(prefix: &str) -> Arc<Scanner> {
    fixture(prefix).1.clone()
}

fn fixture(prefix: &str) -> &'static (Arc<StaticSecrets>, Arc<Scanner>) {
    static FIXTURES: OnceLock<Vec<(Arc<StaticSecrets>, Arc<Scanner>)>> = OnceLock::new();
    let all = FIXTURES.get_or_init(|| {
        PREFIXES
            .iter()
            .map(|p| (build_secrets(p), Arc::new(Scanner::new(p))))
            .collect()
    });
    let i = PREFIXES
        .iter()
        .position(|p| *p == prefix)
        .expect("a prefix of PREFIXES");
    &all[i]
}

fn build_secrets(prefix: &str) -> Arc<StaticSecrets> {
    let host = |h: &str| vec![HostPattern::parse(h).expect("fixture host")];
    let all = [
        SwapLocation::Header,
        SwapLocation::Basic,
        SwapLocation::Query,
        SwapLocation::Body,
    ];
    Arc::new(StaticSecrets::new(
        prefix,
        SandboxId::default_sandbox(),
        vec![
            StaticSecret {
                name: "OK".into(),
                value: SecretString::from(TOKEN_OK),
                placeholder: placeholder(prefix, RANDOM_OK),
                hosts: host(HOST),
                swap_in: all.into_iter().collect(),
                on_foreign_body: Default::default(),
                rules: Default::default(),
                signing: None,
                inject_when_absent: None,
            },
            StaticSecret {
                name: "OTHER_HOST".into(),
                value: SecretString::from(TOKEN_OTHER_HOST),
                placeholder: placeholder(prefix, RANDOM_OTHER_HOST),
                hosts: host("other.test"),
                swap_in: all.into_iter().collect(),
                on_foreign_body: Default::default(),
                rules: Default::default(),
                signing: None,
                inject_when_absent: None,
            },
            StaticSecret {
                name: "HEADER_ONLY".into(),
                value: SecretString::from(TOKEN_HEADER_ONLY),
                placeholder: placeholder(prefix, RANDOM_HEADER_ONLY),
                hosts: host(HOST),
                swap_in: [SwapLocation::Header].into_iter().collect(),
                on_foreign_body: Default::default(),
                rules: Default::default(),
                signing: None,
                inject_when_absent: None,
            },
        ],
    ))
}

/// A fresh swapper for a request to [`HOST`] over the fixture secrets.
pub fn swapper(prefix: &str) -> Swapper {
    Swapper::new(
        secrets(prefix),
        scanner(prefix),
        SandboxId::default_sandbox(),
        HOST,
    )
}

/// Known findings that `AIRLOCK_FUZZ_IGNORE` (comma-separated) lets a local
/// run step over, to look for other bugs while a known one is unfixed. CI
/// never sets it.
pub fn ignoring(finding: &str) -> bool {
    static IGNORED: OnceLock<Vec<String>> = OnceLock::new();
    IGNORED
        .get_or_init(|| {
            std::env::var("AIRLOCK_FUZZ_IGNORE")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .iter()
        .any(|f| f == finding)
}

/// Finding `nested-prefix` (fuzz/artifacts-found/scanner/nested-prefix): a
/// prefix spelling that starts inside an earlier prefix spelling or the
/// base62 run right after it. True when `data` has one.
pub fn has_nested_prefix(prefix: &str, data: &[u8]) -> bool {
    let spells = spellings(prefix);
    let starts: Vec<(usize, usize)> = (0..data.len())
        .flat_map(|i| {
            spells
                .iter()
                .filter(move |(s, _)| data[i..].starts_with(s))
                .map(move |(s, _)| {
                    let body = i + s.len();
                    let run = data[body..]
                        .iter()
                        .take_while(|b| b.is_ascii_alphanumeric())
                        .count();
                    (i, body + run)
                })
        })
        .collect();
    starts
        .iter()
        .any(|&(a, end)| starts.iter().any(|&(b, _)| a < b && b < end))
}

/// How a placeholder's dashes may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefSpelling {
    Plain,
    Json,
    Percent,
}

/// Every spelling of `prefix` the contract allows, longest first where they
/// share a start (they never do: each spelling differs at its first dash).
pub fn spellings(prefix: &str) -> Vec<(Vec<u8>, RefSpelling)> {
    let mut out = vec![(prefix.as_bytes().to_vec(), RefSpelling::Plain)];
    if prefix.contains('-') {
        for (dash, s) in [
            ("\\u002d", RefSpelling::Json),
            ("\\u002D", RefSpelling::Json),
            ("%2D", RefSpelling::Percent),
            ("%2d", RefSpelling::Percent),
        ] {
            out.push((prefix.replace('-', dash).into_bytes(), s));
        }
    }
    out
}

/// A placeholder-shaped string found by the naive reference search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefFind {
    /// Where the prefix spelling starts.
    pub start: usize,
    /// Where the prefix spelling ends and the base62 run starts.
    pub body_start: usize,
    /// Length of the whole base62 run that follows (not capped).
    pub run: usize,
    pub spelling: RefSpelling,
}

/// Every position where some spelling of `prefix` is followed by at least
/// [`MIN_RANDOM`] base62 characters: text that must never reach an upstream
/// unswapped. Overlapping finds are all reported.
pub fn naive_placeholders(prefix: &str, data: &[u8]) -> Vec<RefFind> {
    let spells = spellings(prefix);
    let mut out = Vec::new();
    for start in 0..data.len() {
        for (s, spelling) in &spells {
            if data[start..].starts_with(s) {
                let body_start = start + s.len();
                let run = data[body_start..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric())
                    .count();
                if run >= MIN_RANDOM {
                    out.push(RefFind {
                        start,
                        body_start,
                        run,
                        spelling: *spelling,
                    });
                }
            }
        }
    }
    out
}

/// The first placeholder-shaped string in `data` that is not exactly one of
/// `allowed` (random parts) in some spelling, if any: text that must have
/// been refused, since airlock may only let a request through when every
/// placeholder in it was swapped.
pub fn unexpected_placeholder(prefix: &str, data: &[u8], allowed: &[&str]) -> Option<RefFind> {
    naive_placeholders(prefix, data).into_iter().find(|n| {
        !allowed
            .iter()
            .any(|r| n.run == r.len() && data[n.body_start..].starts_with(r.as_bytes()))
    })
}

/// The first placeholder in `data` that is exactly one of `refused` (random
/// parts) in some spelling, if any.
pub fn refused_placeholder(prefix: &str, data: &[u8], refused: &[&str]) -> Option<RefFind> {
    naive_placeholders(prefix, data).into_iter().find(|n| {
        refused
            .iter()
            .any(|r| n.run == r.len() && data[n.body_start..].starts_with(r.as_bytes()))
    })
}

/// `token` JSON-string-escaped (without the quotes), written from RFC 8259.
pub fn json_escape(token: &str) -> Vec<u8> {
    let mut out = String::new();
    for c in token.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.into_bytes()
}

/// `token` percent-encoded, everything but RFC 3986 unreserved characters.
pub fn percent_escape(token: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for b in token.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// Where swapped bytes sit (mirrors airlock's `swap::Context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefContext {
    Raw,
    Json,
    Url,
}

/// How [`TOKEN_OK`] must be written for a placeholder spelled `spelling` in `context`:
/// an escaped placeholder gets the token escaped the same way, a plain one
/// gets it in the encoding of its context.
pub fn reference_token(spelling: RefSpelling, context: RefContext) -> Vec<u8> {
    match (spelling, context) {
        (RefSpelling::Json, _) | (RefSpelling::Plain, RefContext::Json) => json_escape(TOKEN_OK),
        (RefSpelling::Percent, _) | (RefSpelling::Plain, RefContext::Url) => {
            percent_escape(TOKEN_OK)
        }
        (RefSpelling::Plain, RefContext::Raw) => TOKEN_OK.as_bytes().to_vec(),
    }
}

/// Reference swap: every spelling of the [`RANDOM_OK`] placeholder, not
/// followed by more base62, replaced by [`TOKEN_OK`] written as
/// [`reference_token`] says. Only meaningful for input that airlock accepted
/// (which then holds no other placeholder).
pub fn reference_swap(prefix: &str, data: &[u8], context: RefContext) -> Vec<u8> {
    let spells = spellings(prefix);
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    'outer: while i < data.len() {
        for (s, spelling) in &spells {
            let mut whole = s.clone();
            whole.extend_from_slice(RANDOM_OK.as_bytes());
            if data[i..].starts_with(&whole) {
                let end = i + whole.len();
                if data.get(end).is_some_and(|b| b.is_ascii_alphanumeric()) {
                    continue;
                }
                out.extend_from_slice(&reference_token(*spelling, context));
                i = end;
                continue 'outer;
            }
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

/// Whether any real token, in any encoding, appears in `text`.
pub fn leaks_a_token(text: &[u8]) -> bool {
    TOKENS.iter().any(|t| {
        contains(text, t.as_bytes())
            || contains(text, &json_escape(t))
            || contains(text, &percent_escape(t))
    })
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every real token of the fixtures.
pub const TOKENS: [&str; 3] = [TOKEN_OK, TOKEN_OTHER_HOST, TOKEN_HEADER_ONLY];

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Runs `fut` on a current-thread runtime kept for the thread.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    RUNTIME.with(|rt| {
        let mut rt = rt.borrow_mut();
        let rt = rt.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("current-thread runtime")
        });
        rt.block_on(fut)
    })
}

/// Reads the fuzzer's bytes front to back.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// The next byte, or 0 once the input is used up.
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}
