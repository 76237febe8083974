//! Attenuable placeholders: a placeholder narrowed offline into one that
//! carries caveats, in the style of macaroons.
//!
//! Anyone holding a placeholder `P` can narrow it, with no call to airlock:
//!
//! ```text
//! id    = SHA-256("airlock-narrow-id-v1" || P)[..16]
//! sig_0 = HMAC-SHA256(key = P, "airlock-narrow-v1")
//! sig_i = HMAC-SHA256(key = sig_{i-1}, caveat_i)          (UTF-8, no newline)
//! bytes = 0x01 || id || sig_n || caveat_1 "\n" … "\n" caveat_n
//! narrowed = PREFIX + base62(bytes)        (big-endian, digits 0-9 A-Z a-z)
//! ```
//!
//! A narrowed placeholder narrows again the same way, from its own `sig_n`.
//! It never reveals `P` or an earlier signature, so caveats cannot be taken
//! off; the proxy finds `P` by `id` among the sandbox's placeholders,
//! recomputes the chain and applies every caveat:
//!
//! - `allow=METHODS /path-glob` — the request must match (as in request rules);
//! - `expires=UNIX-SECONDS` — refused after;
//! - `uses=N` — at most N requests (counted per proxy process);
//! - `body_max=BYTES` — the request body must be known to be this small.

use std::fmt;

use ring::hmac;

use crate::rules::{RequestRules, RulesSpec};

const VERSION: u8 = 1;
const ID_LEN: usize = 16;
const SIG_LEN: usize = 32;
/// Caveat text, all caveats together: keeps a narrowed placeholder inside
/// the scanner's longest run.
pub const MAX_CAVEAT_BYTES: usize = 280;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a narrowed placeholder cannot be made or used. Never holds a
/// placeholder's secret part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NarrowError {
    #[error("not a narrowed placeholder")]
    NotNarrowed,
    #[error("malformed caveat {caveat:?}: {problem}")]
    BadCaveat { caveat: String, problem: String },
    #[error("the caveats are longer than {MAX_CAVEAT_BYTES} bytes")]
    TooLong,
    #[error("the narrowed placeholder's signature does not verify (tampered, or not made from this sandbox's placeholder)")]
    BadSignature,
    #[error("the narrowed placeholder expired at {at} (unix seconds)")]
    Expired { at: i64 },
    #[error("the narrowed placeholder's {limit} uses are spent")]
    UsesSpent { limit: u32 },
    #[error("{limit} narrowed placeholders with a use limit are being counted already; narrow without uses= or retry later")]
    TooManyCounted { limit: usize },
    #[error("the narrowed placeholder allows bodies up to {max} bytes; this request's is larger or of unknown length")]
    BodyTooLarge { max: u64 },
    #[error("the narrowed placeholder's caveat {caveat:?} refuses this request")]
    NotAllowed { caveat: String },
}

/// One caveat, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caveat {
    /// A one-rule allow list: the request must match it.
    Allow {
        text: String,
        rules: RequestRules,
    },
    Expires(i64),
    /// At most this many requests; counted under `counter`, the chain's
    /// signature right after this caveat, which every further narrowing shares.
    Uses {
        limit: u32,
        counter: [u8; SIG_LEN],
    },
    BodyMax(u64),
}

/// A narrowed placeholder taken apart (not yet verified).
#[derive(Clone, PartialEq, Eq)]
pub struct Narrowed {
    pub id: [u8; ID_LEN],
    sig: [u8; SIG_LEN],
    caveats: Vec<String>,
}

impl fmt::Debug for Narrowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Narrowed")
            .field("caveats", &self.caveats)
            .finish_non_exhaustive()
    }
}

/// The id a placeholder's narrowings name it by.
pub fn narrow_id(placeholder: &str) -> [u8; ID_LEN] {
    let mut input = b"airlock-narrow-id-v1".to_vec();
    input.extend_from_slice(placeholder.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    digest.as_ref()[..ID_LEN]
        .try_into()
        .expect("16 of 32 bytes")
}

fn chain(key: &[u8], message: &[u8]) -> [u8; SIG_LEN] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, message)
        .as_ref()
        .try_into()
        .expect("HMAC-SHA256 is 32 bytes")
}

fn root_signature(placeholder: &str) -> [u8; SIG_LEN] {
    chain(placeholder.as_bytes(), b"airlock-narrow-v1")
}

/// Narrows `placeholder` (itself plain or narrowed) with `caveats`.
pub fn narrow(prefix: &str, placeholder: &str, caveats: &[String]) -> Result<String, NarrowError> {
    if caveats.is_empty() {
        return Err(NarrowError::BadCaveat {
            caveat: String::new(),
            problem: "give at least one caveat".into(),
        });
    }
    // A narrowed placeholder has caveats that parse; a long configured
    // placeholder that happens to decode like one does not.
    let already = placeholder
        .strip_prefix(prefix)
        .and_then(|run| Narrowed::decode(run).ok())
        .filter(|n| {
            !n.caveats.is_empty()
                && n.caveats
                    .iter()
                    .all(|c| parse_caveat(c, &[0; SIG_LEN]).is_ok())
        });
    let base = match already {
        Some(narrowed) => narrowed,
        None => Narrowed {
            id: narrow_id(placeholder),
            sig: root_signature(placeholder),
            caveats: Vec::new(),
        },
    };
    let mut out = base;
    for caveat in caveats {
        parse_caveat(caveat, &[0; SIG_LEN])?;
        out.sig = chain(&out.sig, caveat.as_bytes());
        out.caveats.push(caveat.clone());
    }
    if out.caveats.iter().map(|c| c.len() + 1).sum::<usize>() > MAX_CAVEAT_BYTES {
        return Err(NarrowError::TooLong);
    }
    Ok(format!("{prefix}{}", out.encode()))
}

impl Narrowed {
    /// Reads the base62 run after the prefix.
    pub fn decode(run: &str) -> Result<Self, NarrowError> {
        let bytes = base62_decode(run).ok_or(NarrowError::NotNarrowed)?;
        if bytes.len() < 1 + ID_LEN + SIG_LEN || bytes[0] != VERSION {
            return Err(NarrowError::NotNarrowed);
        }
        let id = bytes[1..1 + ID_LEN].try_into().expect("length checked");
        let sig = bytes[1 + ID_LEN..1 + ID_LEN + SIG_LEN]
            .try_into()
            .expect("length checked");
        let text = std::str::from_utf8(&bytes[1 + ID_LEN + SIG_LEN..])
            .map_err(|_| NarrowError::NotNarrowed)?;
        let caveats: Vec<String> = if text.is_empty() {
            Vec::new()
        } else {
            text.split('\n').map(str::to_owned).collect()
        };
        if caveats.iter().any(String::is_empty) {
            return Err(NarrowError::NotNarrowed);
        }
        Ok(Self { id, sig, caveats })
    }

    fn encode(&self) -> String {
        let mut bytes = vec![VERSION];
        bytes.extend_from_slice(&self.id);
        bytes.extend_from_slice(&self.sig);
        bytes.extend_from_slice(self.caveats.join("\n").as_bytes());
        base62_encode(&bytes)
    }

    /// Checks the chain from `root` (the placeholder whose id this names)
    /// and parses every caveat.
    pub fn verify(&self, root: &str) -> Result<Vec<Caveat>, NarrowError> {
        // The last link is checked with `hmac::verify` (constant time).
        let mut key = root.as_bytes().to_vec();
        let mut message = b"airlock-narrow-v1".to_vec();
        let mut parsed = Vec::new();
        for caveat in &self.caveats {
            key = chain(&key, &message).to_vec();
            message = caveat.as_bytes().to_vec();
            parsed.push(parse_caveat(caveat, &chain(&key, &message))?);
        }
        hmac::verify(
            &hmac::Key::new(hmac::HMAC_SHA256, &key),
            &message,
            &self.sig,
        )
        .map_err(|_| NarrowError::BadSignature)?;
        Ok(parsed)
    }
}

fn parse_caveat(text: &str, counter: &[u8; SIG_LEN]) -> Result<Caveat, NarrowError> {
    let bad = |problem: &str| NarrowError::BadCaveat {
        caveat: text.to_owned(),
        problem: problem.to_owned(),
    };
    if text.is_empty() || text.contains('\n') {
        return Err(bad("a caveat is one non-empty line"));
    }
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| bad("expected KEY=VALUE (allow, expires, uses, body_max)"))?;
    match key {
        "allow" => {
            let spec = RulesSpec {
                rules: vec![format!("allow {value}")],
                ..Default::default()
            };
            let rules = RequestRules::compile(&spec).map_err(|e| {
                bad(&e
                    .into_iter()
                    .map(|e| e.problem)
                    .collect::<Vec<_>>()
                    .join("; "))
            })?;
            Ok(Caveat::Allow {
                text: text.to_owned(),
                rules,
            })
        }
        "expires" => value
            .parse::<i64>()
            .map(Caveat::Expires)
            .map_err(|_| bad("expires takes unix seconds")),
        "uses" => match value.parse::<u32>() {
            Ok(limit) if limit > 0 => Ok(Caveat::Uses {
                limit,
                counter: *counter,
            }),
            _ => Err(bad("uses takes a whole number above 0")),
        },
        "body_max" => value
            .parse::<u64>()
            .map(Caveat::BodyMax)
            .map_err(|_| bad("body_max takes a number of bytes")),
        _ => Err(bad("unknown caveat (allow, expires, uses, body_max)")),
    }
}

fn base62_encode(bytes: &[u8]) -> String {
    // Repeated division of a big-endian number; inputs are a few hundred bytes.
    let mut number = bytes.to_vec();
    let mut digits = Vec::new();
    while number.iter().any(|&b| b != 0) {
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let value = (remainder << 8) | u32::from(*byte);
            *byte = (value / 62) as u8;
            remainder = value % 62;
        }
        digits.push(ALPHABET[remainder as usize]);
    }
    digits.reverse();
    String::from_utf8(digits).expect("ASCII digits")
}

fn base62_decode(text: &str) -> Option<Vec<u8>> {
    let mut number: Vec<u8> = Vec::new();
    for c in text.bytes() {
        let digit = ALPHABET.iter().position(|&a| a == c)? as u32;
        let mut carry = digit;
        for byte in number.iter_mut().rev() {
            let value = u32::from(*byte) * 62 + carry;
            *byte = (value & 0xff) as u8;
            carry = value >> 8;
        }
        while carry > 0 {
            number.insert(0, (carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    Some(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "miosa-tok-";
    const PARENT: &str = "miosa-tok-Parent0123456789abcdefghijkl";

    fn caveats(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn open(narrowed: &str) -> Narrowed {
        Narrowed::decode(narrowed.strip_prefix(PREFIX).unwrap()).unwrap()
    }

    #[test]
    fn base62_round_trips() {
        for bytes in [
            vec![1u8],
            vec![1, 0, 0, 255],
            (1..=200).collect::<Vec<u8>>(),
        ] {
            assert_eq!(base62_decode(&base62_encode(&bytes)).unwrap(), bytes);
        }
        assert!(base62_decode("abc-").is_none());
    }

    #[test]
    fn a_narrowed_placeholder_verifies_against_its_parent_only() {
        let narrowed = narrow(
            PREFIX,
            PARENT,
            &caveats(&["allow=GET /repos/acme/web/**", "expires=4102444800"]),
        )
        .unwrap();
        assert!(narrowed.starts_with(PREFIX));
        assert!(!narrowed.contains("Parent0123"), "the parent is not in it");
        let n = open(&narrowed);
        assert_eq!(n.id, narrow_id(PARENT));
        let parsed = n.verify(PARENT).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            n.verify("miosa-tok-Other0123456789abcdefghijklm"),
            Err(NarrowError::BadSignature)
        );
    }

    #[test]
    fn narrowing_again_adds_caveats_and_none_can_be_taken_off() {
        let once = narrow(PREFIX, PARENT, &caveats(&["uses=3"])).unwrap();
        let twice = narrow(PREFIX, &once, &caveats(&["allow=GET /user"])).unwrap();
        let n = open(&twice);
        assert_eq!(n.caveats, ["uses=3", "allow=GET /user"]);
        let parsed = n.verify(PARENT).unwrap();
        // The use counter is shared with the first narrowing.
        let counter = |c: &Caveat| match c {
            Caveat::Uses { counter, .. } => *counter,
            _ => panic!(),
        };
        assert_eq!(
            counter(&parsed[0]),
            counter(&open(&once).verify(PARENT).unwrap()[0])
        );
        // Dropping a caveat, changing one, or reordering breaks the chain.
        for forged in [
            Narrowed {
                caveats: caveats(&["allow=GET /user"]),
                ..n.clone()
            },
            Narrowed {
                caveats: caveats(&["uses=30", "allow=GET /user"]),
                ..n.clone()
            },
            Narrowed {
                caveats: caveats(&["allow=GET /user", "uses=3"]),
                ..n.clone()
            },
            Narrowed {
                caveats: caveats(&["uses=3"]),
                ..n.clone()
            },
        ] {
            assert_eq!(
                forged.verify(PARENT),
                Err(NarrowError::BadSignature),
                "{forged:?}"
            );
        }
        // Flipping any one character of the encoding never verifies.
        let run = twice.strip_prefix(PREFIX).unwrap();
        for i in 0..run.len() {
            let mut bytes = run.as_bytes().to_vec();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let flipped = String::from_utf8(bytes).unwrap();
            if let Ok(n) = Narrowed::decode(&flipped) {
                assert!(n.verify(PARENT).is_err() || flipped == run, "position {i}");
            }
        }
    }

    #[test]
    fn malformed_caveats_are_named() {
        for (caveat, problem) in [
            ("allow=get /x", "capitals"),
            ("allow=GET x", "start with /"),
            ("expires=soon", "unix seconds"),
            ("uses=0", "above 0"),
            ("body_max=-1", "bytes"),
            ("deny=GET /x", "unknown caveat"),
            ("nokey", "KEY=VALUE"),
        ] {
            let err = narrow(PREFIX, PARENT, &caveats(&[caveat])).unwrap_err();
            assert!(err.to_string().contains(problem), "{caveat}: {err}");
        }
        let long = vec![
            "allow=GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                .to_string();
            6
        ];
        assert_eq!(narrow(PREFIX, PARENT, &long), Err(NarrowError::TooLong));
    }

    #[test]
    fn a_random_placeholder_is_not_narrowed() {
        assert_eq!(
            Narrowed::decode("Parent0123456789abcdefghijkl").map(|_| ()),
            Err(NarrowError::NotNarrowed)
        );
    }
}
