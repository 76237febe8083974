//! `Scanner::scan`: what it finds is well formed and complete, and what it
//! holds back from a stream is exactly what a later chunk could still change.
//!
//! Input: [prefix choice] [cut: u16 LE] [bytes...]; the bytes are scanned
//! whole and as `head` (before the cut) with `head ++ ext` as its stream
//! continuation.
#![no_main]

use airlock_fuzz::{
    has_nested_prefix, ignoring, naive_placeholders, scanner, spellings, Input, RefSpelling,
    MAX_RANDOM, MIN_RANDOM, PREFIXES,
};
use airlock_proxy::swap::{Found, Spelling};
use libfuzzer_sys::fuzz_target;

/// Found ranges are in bounds (end <= `limit`) and ordered by start, each a
/// spelling of the prefix then a maximal (or capped) base62 run. Two overlap
/// only when the later starts inside the earlier's run (two placeholders
/// written back to back read first as one).
fn check_found(prefix: &str, hay: &[u8], found: &[Found], limit: usize) {
    let spells = spellings(prefix);
    let mut prev_run_start = 0;
    for f in found {
        let r = f.range.clone();
        assert!(
            r.start >= prev_run_start,
            "unordered, or starting inside a prefix: {found:?}"
        );
        assert!(r.start < r.end && r.end <= limit, "{r:?} out of 0..{limit}");
        let matching: Vec<_> = spells
            .iter()
            .filter(|(s, _)| hay[r.start..r.end].starts_with(s))
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{r:?} does not start with exactly one spelling of {prefix:?}"
        );
        let (s, spelling) = matching[0];
        let expected = match spelling {
            RefSpelling::Plain => Spelling::Plain,
            RefSpelling::Json => Spelling::JsonEscaped,
            RefSpelling::Percent => Spelling::Percent,
        };
        assert_eq!(f.spelling, expected);
        prev_run_start = r.start + s.len();
        let body = &hay[r.start + s.len()..r.end];
        assert!(body.iter().all(u8::is_ascii_alphanumeric), "{r:?}");
        assert!(
            (MIN_RANDOM..=MAX_RANDOM + 1).contains(&body.len()),
            "run of {} in {r:?}",
            body.len()
        );
        if body.len() <= MAX_RANDOM {
            assert!(
                !hay.get(r.end).is_some_and(u8::is_ascii_alphanumeric),
                "{r:?} cuts a base62 run short"
            );
        }
        assert_eq!(
            f.placeholder.as_bytes(),
            [prefix.as_bytes(), body].concat(),
            "placeholder text of {r:?}"
        );
    }
}

/// Every placeholder-shaped string that starts before `limit` lies in a found range.
fn check_complete(prefix: &str, hay: &[u8], found: &[Found], limit: usize) {
    for n in naive_placeholders(prefix, hay) {
        if n.start >= limit {
            continue;
        }
        assert!(
            found.iter().any(|f| f.range.contains(&n.start)),
            "placeholder-shaped text at {}..{} ({:?}) was not found; found {found:?} in {:?}",
            n.start,
            n.body_start + n.run,
            n.spelling,
            String::from_utf8_lossy(hay),
        );
    }
}

/// Whether more bytes could still change what `tail` holds: a proper
/// beginning of a prefix spelling, a spelling and a base62 run reaching the
/// end, or a spelling whose run holds the start of such a tail.
fn may_grow(prefix: &str, tail: &[u8]) -> bool {
    spellings(prefix).iter().any(|(s, _)| {
        if tail.len() < s.len() {
            return s.starts_with(tail);
        }
        if !tail.starts_with(s) {
            return false;
        }
        let run = tail[s.len()..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        (s.len() + run == tail.len() && run <= MAX_RANDOM)
            || (0..run).any(|i| may_grow(prefix, &tail[s.len() + i..]))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let prefix = PREFIXES[usize::from(input.byte()) % PREFIXES.len()];
    let cut = usize::from(input.u16());
    let all = input.rest();
    let cut = cut % (all.len() + 1);
    let head = &all[..cut];
    if ignoring("nested-prefix") && has_nested_prefix(prefix, all) {
        return;
    }
    let scanner = scanner(prefix);
    assert_eq!(scanner.prefix(), prefix);

    for hay in [all, head] {
        let (found, hold) = scanner.scan(hay, true);
        assert_eq!(hold, hay.len(), "a complete buffer holds nothing back");
        check_found(prefix, hay, &found, hay.len());
        check_complete(prefix, hay, &found, hay.len());
        assert_eq!(scanner.contains(hay), !found.is_empty());
    }

    // A stream that may go on with `all[cut..]`.
    let (found, hold) = scanner.scan(head, false);
    assert!(hold <= head.len(), "hold {hold} past {}", head.len());
    check_found(prefix, head, &found, hold);
    check_complete(prefix, head, &found, hold);

    // What is held back could still become a placeholder: a proper beginning
    // of a prefix spelling, or a spelling and a base62 run reaching the end.
    let tail = &head[hold..];
    if !tail.is_empty() {
        assert!(
            may_grow(prefix, tail),
            "held back {:?}, which can never become a placeholder",
            String::from_utf8_lossy(tail)
        );
    }

    // Emitting head[..hold] with its finds, then scanning on from `hold`,
    // finds exactly what one scan of the whole stream finds.
    let (whole, _) = scanner.scan(all, true);
    let (after, _) = scanner.scan(&all[hold..], true);
    let stepped: Vec<Found> = found
        .iter()
        .cloned()
        .chain(after.into_iter().map(|f| Found {
            range: f.range.start + hold..f.range.end + hold,
            ..f
        }))
        .collect();
    assert_eq!(
        whole.as_slice(),
        stepped.as_slice(),
        "stream step at {hold} differs from one scan"
    );
});
