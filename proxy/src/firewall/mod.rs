//! The response firewall: every byte an intercepted upstream sends toward the
//! sandbox is meant to pass through one [`Firewall`], which replaces each
//! spelling of each guarded token by its placeholder written the same way.
//!
//! # What is guaranteed
//!
//! For every guarded token, none of these spellings survives in the output of
//! [`Firewall::scrub`], [`Firewall::body`], [`Firewall::scrub_headers`],
//! [`Firewall::scrub_reason`] or a [`WsScrubber`], whatever the chunking or
//! WebSocket fragmentation of the input:
//!
//! - raw;
//! - JSON-escaped, in the habits of common encoders (`\/`, `\u00XX` for
//!   `"`/`\`/controls/`<>&'+`, `\uXXXX` for non-ASCII, either hex case);
//! - percent-encoded (RFC 3986 unreserved kept, or letters and digits only,
//!   or `encodeURIComponent`/Java/Python habits; `%20` or `+`; either hex case);
//! - base64 and base64url at each of the 3 alignments (so inside the base64 of
//!   `user:token` or of any surrounding bytes), padded or not;
//! - hex, lower and upper case.
//!
//! Matching is leftmost-longest over all spellings of all tokens, as one
//! Aho-Corasick pass would find them. Spellings of at least [`PROBED_LEN`]
//! bytes (real tokens are longer) are found by a gram probe every few bytes
//! ([`prefilter`]) deciding where the automaton runs, so the cost per byte
//! does not grow with the token count. Shorter spellings (a short password
//! for Basic auth, say) are found by aho-corasick's own prefiltered search
//! over them alone, and wake the automaton too. When every spelling is
//! short, up to [`SMALL_SET`] spellings get aho-corasick's prefiltered DFA
//! over all, and more its NFA. Each match is replaced by the placeholder in the same
//! spelling (same JSON/percent habit, same base64 alphabet and alignment, same
//! hex case). Streaming output is byte for byte the whole-buffer output
//! ([`Firewall::scrub`] of the concatenated input; property-tested). A
//! replacement can complete a spelling with the bytes beside it (a token's
//! prefix, then a placeholder whose first base64 digit the token's next byte
//! would give): output holding a replacement is searched again and such a
//! spelling overwritten with a byte no spelling holds. Streams hold back only
//! the longest tail that is a proper prefix of some spelling, once before
//! scrubbing and once after (together less than twice the longest
//! spelling), so a chunk whose tail cannot begin a token (an SSE event
//! ending in `\n\n`) is sent at once, uncopied.
//!
//! WebSocket messages are scrubbed as one stream each across their fragments;
//! the firewall may re-fragment a message (allowed without extensions, RFC
//! 6455 §5.4), possibly inside a UTF-8 character of a text message. Control
//! frames are scrubbed whole and kept within 125 bytes.
//!
//! # Known limits
//!
//! - Encoded spellings shorter than [`patterns::MIN_ENCODED_LEN`] bytes are
//!   not matched (false positives); the raw token always is.
//! - In base64, the character that straddles the token's edge and the data
//!   around it is kept: up to 4 bits of the token's first and last byte remain.
//!   The replacement is the placeholder's base64 at the same alignment; the
//!   result may not decode cleanly, which is accepted.
//! - A fragment of a token (truncated, or cut by a few characters at either
//!   end) is not matched: only whole spellings are.
//! - Header names (lower-cased by `http`) are compared without case, and only
//!   against the raw, JSON, percent and hex spellings, not base64.
//! - Mixed habits inside one spelling (some characters percent-encoded, others
//!   not, outside the listed encoder habits), layered encodings (percent of
//!   base64, base64 of JSON), case changes (outside header names), compression the firewall did not decode, and
//!   arbitrary transforms (reversal, encryption, splitting across fields) are
//!   out of scope: an upstream that wants to leak a token deliberately can.
//! - A WebSocket frame using an extension (RSV bits, e.g. permessage-deflate)
//!   cannot be read and is refused with [`FirewallError::WsExtension`].

pub mod patterns;
mod prefilter;
mod stream;
mod websocket;

use std::borrow::Cow;
use std::fmt;

use aho_corasick::automaton::Automaton;
use aho_corasick::nfa::contiguous;
use aho_corasick::{AhoCorasick, Anchored, Match, MatchKind};
use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use prefilter::{GramFilter, StartFilter, PROBED_LEN};
use secrecy::{ExposeSecret, SecretString};

pub use patterns::Spelling;
pub use stream::{FirewallBody, Holdback, Pieces};
pub use websocket::{WsScrubber, WsViolation};

/// One secret the sandbox must never see, and what it sees instead.
pub struct Guarded {
    pub token: SecretString,
    pub placeholder: String,
}

impl fmt::Debug for Guarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("placeholder", &self.placeholder)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("a WebSocket frame has RSV bits {rsv:#05b} set (an extension such as permessage-deflate); airlock cannot scrub it")]
    WsExtension { rsv: u8 },
    #[error("a WebSocket frame uses reserved opcode {0:#x}")]
    WsReservedOpcode(u8),
    #[error("WebSocket protocol violation: {0}")]
    WsProtocol(#[source] WsViolation),
}

/// Unprobed, up to this many spellings get their own automaton (a DFA with
/// aho-corasick's prefilter, Teddy among them up to 64 patterns); above,
/// the walker's NFA, which is what `AhoCorasick` would pick anyway.
const SMALL_SET: usize = 100;

/// Mask bytes in order of preference: printable, valid in header values,
/// JSON strings and URLs.
const MASK_CHOICES: &[u8] = b"*#~!|^";

/// Immutable, built once per token set and shared in an `Arc`.
pub struct Firewall {
    /// Where the automaton must look for the long spellings; `None` when
    /// every spelling is short.
    filter: Option<GramFilter>,
    /// Beside the probes: where a short spelling starts (leftmost first),
    /// `None` when every spelling is long.
    short_starts: Option<AhoCorasick>,
    /// Leftmost-longest search over every spelling, for small unprobed sets.
    small: Option<AhoCorasick>,
    /// Anchored walks (does a tail begin some spelling?), and the search for large sets.
    walker: contiguous::NFA,
    /// Lower-cased non-base64 spellings, for header names (`http` lower-cases them).
    names: AhoCorasick,
    name_replacements: Vec<Box<[u8]>>,
    /// Bytes that begin some spelling: most tail positions are rejected here.
    first_bytes: [bool; 256],
    /// The same for the first four bytes (`None` when a spelling is shorter):
    /// with many tokens nearly every byte begins some spelling.
    starts: Option<StartFilter>,
    /// Length of the shortest spelling: shorter data holds none.
    shortest: usize,
    /// Length of the shortest header-name spelling.
    shortest_name: usize,
    replacements: Vec<Box<[u8]>>,
    /// A byte in no spelling: it overwrites a spelling that a replacement
    /// completed with the bytes beside it, and can complete none itself.
    mask: u8,
    #[cfg_attr(not(test), allow(dead_code))]
    spellings: Vec<Spelling>,
    longest: usize,
    tokens: usize,
}

impl fmt::Debug for Firewall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Firewall")
            .field("tokens", &self.tokens)
            .field("patterns", &self.replacements.len())
            .field("longest", &self.longest)
            .finish_non_exhaustive()
    }
}

impl Firewall {
    /// `None` when there is nothing to guard (no non-empty token).
    pub fn new(guarded: impl IntoIterator<Item = Guarded>) -> Option<Firewall> {
        Self::build(guarded, true)
    }

    /// The same set searched by the automaton alone: the reference the
    /// probed search is tested against.
    #[cfg(test)]
    fn unprobed(guarded: impl IntoIterator<Item = Guarded>) -> Option<Firewall> {
        Self::build(guarded, false)
    }

    fn build(guarded: impl IntoIterator<Item = Guarded>, probes: bool) -> Option<Firewall> {
        let mut seen = std::collections::HashSet::new();
        let mut needles: Vec<Vec<u8>> = Vec::new();
        let mut replacements = Vec::new();
        let mut spellings = Vec::new();
        let mut tokens = 0;
        for g in guarded {
            let token = g.token.expose_secret();
            if token.is_empty() {
                continue;
            }
            tokens += 1;
            for (spelling, from, to) in patterns::spellings(token, &g.placeholder) {
                // The first writer of a pattern keeps it: raw spellings come first.
                if seen.insert(from.clone()) {
                    needles.push(from);
                    replacements.push(to.into_boxed_slice());
                    spellings.push(spelling);
                }
            }
        }
        if needles.is_empty() {
            return None;
        }
        // Probes for the long spellings, whatever the set's size. Timed on
        // 16 MiB (zeros, text, hex, JSON): one 40-byte token 0.026 ns a byte
        // probed against 0.072 with aho-corasick's Teddy, and 7 to 10 such
        // tokens (65 to 100 spellings, past Teddy's 64) 0.026 against 1.65
        // with its DFA alone.
        let is_long = |n: &&Vec<u8>| n.len() >= PROBED_LEN;
        let filter = probes
            .then(|| GramFilter::new(needles.iter().filter(is_long).map(Vec::as_slice)))
            .flatten();
        // The short ones, found apart: a short password beside the tokens
        // no longer turns the probes off for all of them.
        let short_starts = filter
            .is_some()
            .then(|| {
                let short: Vec<&Vec<u8>> = needles.iter().filter(|n| !is_long(n)).collect();
                (!short.is_empty()).then(|| {
                    AhoCorasick::builder()
                        .match_kind(MatchKind::LeftmostFirst)
                        .build(short)
                        .expect("token patterns build")
                })
            })
            .flatten();
        // Probed, the automaton only reads short windows: the NFA suffices.
        // Unprobed (every spelling short), a small set gets aho-corasick's
        // DFA and prefilter; a large one the NFA, whose memory stays small.
        let small = (filter.is_none() && needles.len() <= SMALL_SET).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&needles)
                .expect("token patterns build")
        });
        let walker = contiguous::NFA::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&needles)
            .expect("token patterns build");
        // Base64 is left out of names: lower-casing it is not a spelling.
        let mut name_seen = std::collections::HashSet::new();
        let mut name_needles = Vec::new();
        let mut name_replacements = Vec::new();
        for ((needle, to), spelling) in needles.iter().zip(&replacements).zip(&spellings) {
            let lower = needle.to_ascii_lowercase();
            if !matches!(spelling, Spelling::Base64 { .. }) && name_seen.insert(lower.clone()) {
                name_needles.push(lower);
                name_replacements.push(to.clone());
            }
        }
        // An NFA: header names are short, and the DFA the builder picks for
        // up to 100 patterns costs ~1 MiB per sandbox on a shared gateway.
        let names = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .kind(Some(aho_corasick::AhoCorasickKind::ContiguousNFA))
            .build(&name_needles)
            .expect("token patterns build");
        let mut first_bytes = [false; 256];
        for n in &needles {
            first_bytes[usize::from(n[0])] = true;
        }
        let starts = StartFilter::new(needles.iter().map(Vec::as_slice));
        let mut used = [false; 256];
        for &b in needles.iter().flatten() {
            used[usize::from(b)] = true;
        }
        // Spellings are UTF-8, so 0xFF is always free; a visible byte is kinder.
        let mask = MASK_CHOICES
            .iter()
            .copied()
            .chain((0..=255u8).rev())
            .find(|&b| !used[usize::from(b)])
            .unwrap_or(0xFF);
        let longest = needles.iter().map(Vec::len).max().unwrap_or(1);
        let shortest = needles.iter().map(Vec::len).min().unwrap_or(1);
        let shortest_name = name_needles.iter().map(Vec::len).min().unwrap_or(1);
        Some(Firewall {
            filter,
            short_starts,
            small,
            walker,
            names,
            name_replacements,
            first_bytes,
            starts,
            shortest,
            shortest_name,
            replacements,
            mask,
            spellings,
            longest,
            tokens,
        })
    }

    /// Number of distinct spellings searched for.
    pub fn pattern_count(&self) -> usize {
        self.replacements.len()
    }

    /// Number of tokens guarded.
    pub fn token_count(&self) -> usize {
        self.tokens
    }

    /// Length of the longest spelling: a stream holds back less than this.
    pub fn longest_pattern(&self) -> usize {
        self.longest
    }

    /// Heap bytes held by the automata.
    pub fn memory_usage(&self) -> usize {
        self.filter.as_ref().map_or(0, GramFilter::memory_usage)
            + self
                .short_starts
                .as_ref()
                .map_or(0, AhoCorasick::memory_usage)
            + self.small.as_ref().map_or(0, AhoCorasick::memory_usage)
            + self.walker.memory_usage()
            + self.names.memory_usage()
            + self.starts.as_ref().map_or(0, StartFilter::memory_usage)
    }

    /// Whether `data` holds any spelling of any token.
    pub fn contains(&self, data: &[u8]) -> bool {
        self.find_iter(data).next().is_some()
    }

    /// Leftmost-longest, non-overlapping matches.
    fn find_iter<'h>(&'h self, data: &'h [u8]) -> Matches<'h> {
        match &self.filter {
            Some(filter) => Matches::Probed(Probed {
                firewall: self,
                filter,
                data,
                next_probe: 0,
                probe_hit: None,
                short_from: 0,
                short_hit: None,
                hit: None,
                resume: 0,
            }),
            None => self.find_iter_unprobed(data),
        }
    }

    /// The automaton's own search over all of `data`.
    fn find_iter_unprobed<'h>(&'h self, data: &'h [u8]) -> Matches<'h> {
        match &self.small {
            Some(ac) => Matches::Small(ac.find_iter(data)),
            None => Matches::Large(
                self.walker
                    .try_find_iter(aho_corasick::Input::new(data))
                    .expect("unanchored searches are supported"),
            ),
        }
    }

    /// Scrubs a whole buffer; borrows when nothing matched.
    pub fn scrub<'a>(&self, data: &'a [u8]) -> Cow<'a, [u8]> {
        if data.len() < self.shortest {
            return Cow::Borrowed(data);
        }
        let mut matches = self.find_iter(data).peekable();
        if matches.peek().is_none() {
            return Cow::Borrowed(data);
        }
        let mut out = Vec::with_capacity(data.len() + 64);
        let mut at = 0;
        for m in matches {
            out.extend_from_slice(&data[at..m.start()]);
            out.extend_from_slice(&self.replacements[m.pattern()]);
            at = m.end();
        }
        out.extend_from_slice(&data[at..]);
        let completed: Vec<Match> = self.find_iter(&out).collect();
        self.mask(&mut out, &completed);
        Cow::Owned(out)
    }

    /// Overwrites `matches` with the mask byte. Run over scrubbed output: a
    /// replacement can complete a spelling with the bytes beside it (a
    /// token's prefix, then a placeholder whose first base64 digit the token
    /// shares). Nothing a mask touches can be part of a spelling, and what it
    /// leaves was searched, so one pass is final.
    pub(crate) fn mask(&self, data: &mut [u8], matches: &[Match]) {
        for m in matches {
            data[m.range()].fill(self.mask);
        }
    }

    /// [`scrub`](Self::scrub) for an owned buffer: the same `Bytes` back
    /// (no copy) when nothing matched.
    pub fn scrub_bytes(&self, data: bytes::Bytes) -> bytes::Bytes {
        match self.scrub(&data) {
            Cow::Owned(clean) => clean.into(),
            Cow::Borrowed(_) => data,
        }
    }

    /// The HTTP/1.1 reason phrase. Placeholders hold no CR or LF, so the
    /// result is a valid reason phrase when the input was.
    pub fn scrub_reason<'a>(&self, reason: &'a [u8]) -> Cow<'a, [u8]> {
        self.scrub(reason)
    }

    /// Scrubs header values and names (trailers too). A name carrying a
    /// token is renamed to carry the placeholder instead, or dropped with its
    /// values when no clean name can be written; a value that cannot be
    /// written after scrubbing is emptied.
    pub fn scrub_headers(&self, headers: &mut HeaderMap) {
        let dirty_name = headers
            .keys()
            .any(|n| n.as_str().len() >= self.shortest_name && self.names.is_match(n.as_str()));
        if !dirty_name {
            for value in headers.values_mut() {
                if let Cow::Owned(clean) = self.scrub(value.as_bytes()) {
                    *value = header_value(&clean, value.is_sensitive())
                        .unwrap_or_else(|| HeaderValue::from_static(""));
                }
            }
            return;
        }
        let old = std::mem::take(headers);
        let mut name: Option<HeaderName> = None;
        for (next, value) in old {
            if let Some(next) = next {
                name = self.scrub_name(next);
            }
            let Some(name) = &name else { continue };
            let value = match self.scrub(value.as_bytes()) {
                Cow::Borrowed(_) => value,
                Cow::Owned(clean) => header_value(&clean, value.is_sensitive())
                    .unwrap_or_else(|| HeaderValue::from_static("")),
            };
            headers.append(name.clone(), value);
        }
    }

    /// The name itself when clean, renamed when it carries a token, `None`
    /// (drop the header) when no clean name can be written.
    fn scrub_name(&self, name: HeaderName) -> Option<HeaderName> {
        let bytes = name.as_str().as_bytes();
        let mut matches = self.names.find_iter(bytes).peekable();
        if matches.peek().is_none() {
            return Some(name);
        }
        let mut out = Vec::with_capacity(bytes.len() + 32);
        let mut at = 0;
        for m in matches {
            out.extend_from_slice(&bytes[at..m.start()]);
            out.extend_from_slice(&self.name_replacements[m.pattern()]);
            at = m.end();
        }
        out.extend_from_slice(&bytes[at..]);
        out.make_ascii_lowercase();
        let renamed = HeaderName::from_bytes(&out).ok()?;
        // A rename that still matches (a placeholder spelling a token) is dropped.
        (!self.names.is_match(renamed.as_str())).then_some(renamed)
    }

    /// Matches to replace in `data` (appended to `matches`) and the length of
    /// the prefix whose output is settled. Unless `complete`, what follows may
    /// still begin or lengthen a match, so the first position whose tail is a
    /// proper prefix of a spelling, and everything after it, stay unsettled.
    /// The settled prefix scrubs exactly as the whole stream would.
    pub(crate) fn settle(&self, data: &[u8], complete: bool, matches: &mut Vec<Match>) -> usize {
        if complete {
            matches.extend(self.find_iter(data));
            return data.len();
        }
        // Invariant: `open` is the first open position at or after the last match end.
        let mut open = self.first_open(data, 0);
        for m in self.find_iter(data) {
            if m.start() >= open {
                // A spelling beginning at or before `open`'s start might still
                // complete and would win (leftmost, then longest).
                break;
            }
            matches.push(m);
            if m.end() > open {
                open = self.first_open(data, m.end());
            }
        }
        open
    }

    /// First position `i >= from` such that `data[i..]` is a proper prefix of
    /// some spelling (so more data could make a match start there), or
    /// `data.len()`. Only the last `longest - 1` positions can be one.
    pub(crate) fn first_open(&self, data: &[u8], from: usize) -> usize {
        let len = data.len();
        let mut start = from.max(len.saturating_sub(self.longest - 1));
        // Eight positions a turn, one branch: in most tails no byte begins a
        // spelling, and the tail is up to six times a token's length.
        while let Some(eight) = data.get(start..start + 8) {
            if eight
                .iter()
                .fold(false, |any, &b| any | self.first_bytes[usize::from(b)])
            {
                break;
            }
            start += 8;
        }
        (start..len)
            .find(|&i| {
                let tail = &data[i..];
                let may_begin = self.first_bytes[usize::from(tail[0])]
                    && (tail.len() < prefilter::START
                        || self.starts.as_ref().is_none_or(|s| s.may_start(tail)));
                may_begin && self.is_open(tail)
            })
            .unwrap_or(len)
    }

    /// Walks the anchored automaton over `tail`: alive at the end means some
    /// spelling begins with `tail`; a complete spelling that nothing longer
    /// extends is settled, not open.
    fn is_open(&self, tail: &[u8]) -> bool {
        let nfa = &self.walker;
        let Ok(mut sid) = nfa.start_state(Anchored::Yes) else {
            return true;
        };
        for &b in tail {
            sid = nfa.next_state(Anchored::Yes, sid, b);
            if nfa.is_dead(sid) {
                return false;
            }
        }
        !nfa.is_match(sid)
            || (0..=255u8).any(|b| !nfa.is_dead(nfa.next_state(Anchored::Yes, sid, b)))
    }

    /// Appends `data` with `matches` replaced to `out`.
    pub(crate) fn write_scrubbed(&self, data: &[u8], matches: &[Match], out: &mut BytesMut) {
        let mut at = 0;
        for m in matches {
            out.extend_from_slice(&data[at..m.start()]);
            out.extend_from_slice(&self.replacements[m.pattern()]);
            at = m.end();
        }
        out.extend_from_slice(&data[at..]);
    }

    #[cfg(test)]
    fn spelling_of(&self, m: &Match) -> Spelling {
        self.spellings[m.pattern()]
    }
}

enum Matches<'h> {
    Small(aho_corasick::FindIter<'h, 'h>),
    Large(aho_corasick::automaton::FindIter<'h, 'h, contiguous::NFA>),
    Probed(Probed<'h>),
}

impl Iterator for Matches<'_> {
    type Item = Match;

    fn next(&mut self) -> Option<Match> {
        match self {
            Matches::Small(it) => it.next(),
            Matches::Large(it) => it.next(),
            Matches::Probed(it) => it.next(),
        }
    }
}

/// The automaton run only around candidates: probes the [`GramFilter`] lets
/// through, and starts of short spellings. A long spelling starting at `p`
/// has a probe hit in `p..p + stride`, a short one is a candidate at `p`:
/// so every match starts at most `stride - 1` bytes before some candidate,
/// and candidates are taken in order.
struct Probed<'h> {
    firewall: &'h Firewall,
    filter: &'h GramFilter,
    data: &'h [u8],
    /// The next probe position not yet looked at.
    next_probe: usize,
    /// The next probe that hit, not yet taken (`Some(None)`: none left).
    probe_hit: Option<Option<usize>>,
    /// Where the next search for a short spelling starts.
    short_from: usize,
    /// The next start of a short spelling, not yet taken (`Some(None)`: none left).
    short_hit: Option<Option<usize>>,
    /// A candidate taken, while matches may still start at or before it.
    hit: Option<usize>,
    /// Where the last match ended: no match starts before it.
    resume: usize,
}

impl Probed<'_> {
    /// The leftmost-longest match in `data[span]`, by the walker's NFA (a
    /// probed firewall builds no `small` automaton: the windows are short).
    fn search(&self, span: std::ops::Range<usize>) -> Option<Match> {
        let input = aho_corasick::Input::new(self.data).range(span);
        self.firewall
            .walker
            .try_find(&input)
            .expect("unanchored searches are supported")
    }

    /// The next probe hit at or after `resume`.
    fn probe_hit(&mut self) -> Option<usize> {
        let stride = self.filter.stride();
        match self.probe_hit {
            Some(Some(hit)) if hit >= self.resume => return Some(hit),
            Some(None) => return None,
            _ => {}
        }
        // No match starts before `resume`: the probes before it are skipped.
        if self.next_probe < self.resume {
            self.next_probe += (self.resume - self.next_probe).div_ceil(stride) * stride;
        }
        let hit = self.filter.next_hit(self.data, self.next_probe);
        if let Some(hit) = hit {
            self.next_probe = hit + stride;
        }
        self.probe_hit = Some(hit);
        hit
    }

    /// The next start of a short spelling at or after `resume`.
    fn short_hit(&mut self) -> Option<usize> {
        let short = self.firewall.short_starts.as_ref()?;
        match self.short_hit {
            Some(Some(hit)) if hit >= self.resume => return Some(hit),
            Some(None) => return None,
            _ => {}
        }
        let from = self.short_from.max(self.resume);
        let hit = (from < self.data.len())
            .then(|| short.find(aho_corasick::Input::new(self.data).range(from..)))
            .flatten()
            .map(|m| m.start());
        if let Some(hit) = hit {
            self.short_from = hit + 1;
        }
        self.short_hit = Some(hit);
        hit
    }
}

impl Iterator for Probed<'_> {
    type Item = Match;

    fn next(&mut self) -> Option<Match> {
        let stride = self.filter.stride();
        loop {
            if let Some(candidate) = self.hit {
                let from = self.resume.max((candidate + 1).saturating_sub(stride));
                if from <= candidate {
                    // A spelling starting at or before the candidate ends within `longest` of it.
                    let end = self.data.len().min(candidate + self.firewall.longest);
                    if let Some(m) = self.search(from..end).filter(|m| m.start() <= candidate) {
                        self.resume = m.end();
                        return Some(m);
                    }
                }
                self.hit = None;
            }
            // The earlier of the two kinds of candidate; each is taken once.
            let candidate = match (self.probe_hit(), self.short_hit()) {
                (None, None) => return None,
                (Some(probe), None) => probe,
                (None, Some(short)) => short,
                (Some(probe), Some(short)) => probe.min(short),
            };
            if self.probe_hit == Some(Some(candidate)) {
                self.probe_hit = None;
            }
            if self.short_hit == Some(Some(candidate)) {
                self.short_hit = None;
            }
            self.hit = Some(candidate);
        }
    }
}

fn header_value(bytes: &[u8], sensitive: bool) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_bytes(bytes).ok()?;
    v.set_sensitive(sensitive);
    Some(v)
}

#[cfg(test)]
mod tests;
