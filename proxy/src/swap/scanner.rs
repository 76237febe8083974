//! The placeholder scanner: finds the prefix in its spellings and the
//! base62 run after it, without knowing any placeholder, and writes a token
//! the way the placeholder it replaces was written.

use std::ops::Range;

use airlock_vault_client::PLACEHOLDER_MIN_RANDOM_LEN;
use memchr::memmem;

/// Longest base62 run a placeholder may have; longer runs are refused whole
/// (and bound how much a stream holds back).
pub const MAX_RANDOM_LEN: usize = 512;

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

/// What one scan found: most text holds one placeholder or none, so the
/// list is inline up to two.
pub type Finds = smallvec::SmallVec<[Found; 2]>;

/// Finds placeholder-shaped strings in any spelling.
pub struct Scanner {
    /// What every spelling starts with (the prefix up to its first dash).
    /// A SIMD substring search for it, then a comparison of the spellings
    /// at each hit: on a request's header values, which are short and
    /// mostly hold no placeholder, about 300 instructions a request where an
    /// Aho-Corasick automaton over the spellings took 2 600 (callgrind).
    anchor: memmem::Finder<'static>,
    /// The prefix in each spelling, in the order they are tried at a hit.
    pattern_bytes: Vec<Vec<u8>>,
    longest_pattern: usize,
    /// The fewest bytes a placeholder takes in any spelling: shorter text
    /// (most header names and values) is not searched at all.
    shortest_placeholder: usize,
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
        let anchor_len = prefix.find('-').unwrap_or(prefix.len());
        Self {
            anchor: memmem::Finder::new(&prefix.as_bytes()[..anchor_len]).into_owned(),
            longest_pattern: patterns.iter().map(String::len).max().unwrap_or(0),
            shortest_placeholder: patterns.iter().map(String::len).min().unwrap_or(0)
                + PLACEHOLDER_MIN_RANDOM_LEN,
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
    pub fn scan(&self, haystack: &[u8], complete: bool) -> (Finds, usize) {
        if complete && haystack.len() < self.shortest_placeholder {
            return (Finds::new(), haystack.len());
        }
        let mut found = Finds::new();
        let mut hold_from = haystack.len();
        let mut at = 0;
        while let Some((start, pattern)) = self.find_prefix(haystack, at) {
            let body_start = start + self.pattern_bytes[pattern].len();
            let run = random_run(&haystack[body_start..]);
            let reaches_end = body_start + run == haystack.len();
            if reaches_end && !complete && run <= MAX_RANDOM_LEN {
                hold_from = start;
                break;
            }
            if run >= PLACEHOLDER_MIN_RANDOM_LEN {
                found.push(Found {
                    range: start..body_start + run,
                    placeholder: self.placeholder(&haystack[body_start..body_start + run]),
                    spelling: self.spellings[pattern],
                });
            }
            // Another prefix may start inside this one's run (`miosa-tok-miosa-tok-…`,
            // or a run ending in `…miosa-tok-…`: two placeholders written
            // back to back), so look again right after this one's start: a
            // placeholder hidden there is found too, and the swapper decides
            // which of two overlapping finds applies.
            at = start + 1;
        }
        if !complete && hold_from == haystack.len() {
            hold_from =
                haystack.len() - self.partial_prefix_len(&haystack[at.min(haystack.len())..]);
        }
        // What is held may start inside a find's run: that find is held too.
        while let Some(f) = found.last() {
            if f.range.end <= hold_from {
                break;
            }
            hold_from = hold_from.min(f.range.start);
            found.pop();
        }
        (found, hold_from)
    }

    /// The leftmost spelling of the prefix at or after `from`: where it
    /// starts and which it is. Spellings differ only from the first dash
    /// on, so at most one matches at a position.
    fn find_prefix(&self, haystack: &[u8], from: usize) -> Option<(usize, usize)> {
        let rest = haystack.get(from..)?;
        self.anchor.find_iter(rest).find_map(|hit| {
            let at = &rest[hit..];
            let pattern = self.pattern_bytes.iter().position(|p| at.starts_with(p))?;
            Some((from + hit, pattern))
        })
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

    /// The placeholder `text` is, when it is one and nothing else (in any
    /// spelling): what [`Self::scan`] would find spanning all of it, without
    /// scanning on or collecting.
    pub fn whole(&self, text: &[u8]) -> Option<Found> {
        if text.len() < self.shortest_placeholder {
            return None;
        }
        // Only a spelling at the very start makes the whole text one.
        let pattern = self
            .pattern_bytes
            .iter()
            .position(|p| text.starts_with(p))?;
        let random = &text[self.pattern_bytes[pattern].len()..];
        let run = random_run(random);
        if run < PLACEHOLDER_MIN_RANDOM_LEN || run != random.len() {
            return None;
        }
        Some(Found {
            range: 0..text.len(),
            placeholder: self.placeholder(random),
            spelling: self.spellings[pattern],
        })
    }

    /// The prefix and `random` (alphanumeric, so valid UTF-8), sized once:
    /// `format!` grew it three times.
    fn placeholder(&self, random: &[u8]) -> String {
        let random = std::str::from_utf8(random).unwrap_or_default();
        let mut p = String::with_capacity(self.prefix.len() + random.len());
        p.push_str(&self.prefix);
        p.push_str(random);
        p
    }

    pub fn contains(&self, haystack: &[u8]) -> bool {
        !self.scan(haystack, true).0.is_empty()
    }
}

/// Length of the alphanumeric run `after` a prefix begins with, counted up
/// to one past the longest a placeholder may have.
fn random_run(after: &[u8]) -> usize {
    after
        .iter()
        .take(MAX_RANDOM_LEN + 1)
        .take_while(|b| b.is_ascii_alphanumeric())
        .count()
}

/// Writes `token` for the place a placeholder was found.
pub fn encode_token(token: &str, spelling: Spelling, context: Context) -> Vec<u8> {
    let mut out = Vec::with_capacity(token.len());
    write_token(&mut out, token, spelling, context);
    out
}

/// [`encode_token`], appended to `out` (a raw token is not copied twice).
pub fn write_token(out: &mut Vec<u8>, token: &str, spelling: Spelling, context: Context) {
    match (spelling, context) {
        (Spelling::JsonEscaped, _) | (Spelling::Plain, Context::Json) => {
            let quoted = serde_json::to_string(token).expect("strings serialise");
            out.extend_from_slice(&quoted.as_bytes()[1..quoted.len() - 1]);
        }
        (Spelling::Percent, _) | (Spelling::Plain, Context::Url) => {
            out.extend_from_slice(percent_encode(token).as_bytes());
        }
        (Spelling::Plain, Context::Raw) => out.extend_from_slice(token.as_bytes()),
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

#[cfg(test)]
mod tests {
    use aho_corasick::{AhoCorasick, MatchKind};
    use proptest::prelude::*;

    use super::*;

    /// Text made of the pieces the spellings are made of, so that full,
    /// partial, overlapping and back-to-back spellings are common.
    fn text() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop::sample::select(vec![
            "miosa", "-", "tok", "\\u002d", "\\u002D", "%2D", "%2d", "\\u00", "%2", "m", "a", "Z9",
            " ", "-tok-",
        ]);
        prop::collection::vec(piece, 0..24).prop_map(|p| p.concat().into_bytes())
    }

    proptest! {
        /// The anchor search finds what a leftmost-first Aho-Corasick
        /// automaton over the spellings finds, from every position, for a
        /// prefix with dashes, one without, and one that starts with a dash
        /// (an empty anchor).
        #[test]
        fn the_anchor_search_finds_what_an_automaton_finds(haystack in text()) {
            for prefix in ["miosa-tok-", "miosatok", "-tok-"] {
                let scanner = Scanner::new(prefix);
                let automaton = AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(&scanner.pattern_bytes)
                    .unwrap();
                for from in 0..=haystack.len() {
                    let expected = automaton
                        .find(&haystack[from..])
                        .map(|m| (from + m.start(), m.pattern().as_usize()));
                    prop_assert_eq!(scanner.find_prefix(&haystack, from), expected);
                }
            }
        }
    }
}
