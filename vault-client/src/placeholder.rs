//! Placeholders: `<prefix><base62>`, at least 128 bits of randomness.

use rand::{rngs::OsRng, Rng};

pub const DEFAULT_PREFIX: &str = "miosa-tok-";

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// 32 base62 characters carry 190 bits.
const GENERATED_LEN: usize = 32;
/// 22 base62 characters are the fewest that carry 128 bits.
pub const MIN_RANDOM_LEN: usize = 22;

pub fn generate_placeholder(prefix: &str) -> String {
    let mut rng = OsRng;
    let mut out = String::with_capacity(prefix.len() + GENERATED_LEN);
    out.push_str(prefix);
    for _ in 0..GENERATED_LEN {
        out.push(BASE62[rng.gen_range(0..BASE62.len())] as char);
    }
    out
}

/// A configured placeholder must look like a generated one, so that the proxy's
/// scanner (prefix, then a run of base62) finds it whole.
/// The longest run a chosen (configured) placeholder may have; longer runs
/// are left to narrowed placeholders.
pub const MAX_CHOSEN_LEN: usize = 128;

pub fn is_valid_placeholder(prefix: &str, candidate: &str) -> bool {
    candidate.strip_prefix(prefix).is_some_and(|rest| {
        (MIN_RANDOM_LEN..=MAX_CHOSEN_LEN).contains(&rest.len())
            && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_placeholders_are_valid_and_distinct() {
        let a = generate_placeholder(DEFAULT_PREFIX);
        let b = generate_placeholder(DEFAULT_PREFIX);
        assert_ne!(a, b);
        assert!(is_valid_placeholder(DEFAULT_PREFIX, &a));
        assert_eq!(a.len(), DEFAULT_PREFIX.len() + GENERATED_LEN);
    }

    #[test]
    fn short_or_odd_placeholders_are_invalid() {
        assert!(!is_valid_placeholder(DEFAULT_PREFIX, "miosa-tok-short"));
        assert!(!is_valid_placeholder(
            DEFAULT_PREFIX,
            "other-tok-AAAAAAAAAAAAAAAAAAAAAAAAAA"
        ));
        assert!(!is_valid_placeholder(
            DEFAULT_PREFIX,
            "miosa-tok-AAAAAAAAAAAAAAAAAAAAAAAA-x"
        ));
    }
}
