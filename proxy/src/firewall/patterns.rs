//! The spellings of a token the firewall looks for, each paired with the
//! placeholder written the same way.

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;

/// Encoded spellings shorter than this are skipped: they would match innocent
/// data. The raw token is always matched.
pub const MIN_ENCODED_LEN: usize = 8;

/// How a pattern spells its token (kept for tests and counts, never logged
/// together with the bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Spelling {
    Raw,
    Json(JsonStyle),
    Percent(PercentStyle),
    Base64 {
        url: bool,
        /// Bytes before the token in the encoded data, modulo 3.
        align: u8,
        tail: Base64Tail,
    },
    Hex {
        upper: bool,
    },
}

/// How the end of a base64 spelling is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Base64Tail {
    /// Only the characters that depend on the token alone: found whatever follows.
    Middle,
    /// The token ends the data, written without `=` (base64url, JWT).
    Final,
    /// The token ends the data, written with `=` padding.
    Padded,
}

/// One JSON encoder's habits. The encoders in the wild differ in `\/`,
/// HTML-sensitive characters, non-ASCII, `\"` versus `\u0022` and hex case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JsonStyle {
    /// `/` as `\/` (PHP).
    pub slash: bool,
    /// `<>&'+` and backtick as `\u00XX` (Go: `<>&`; .NET: all of them).
    pub html: bool,
    /// Non-ASCII as `\uXXXX` (Python, PHP).
    pub non_ascii: bool,
    /// `"`, `\` and short-escaped controls as `\u00XX` too (.NET).
    pub unicode_all: bool,
    /// Upper-case hex digits in `\u` escapes.
    pub upper: bool,
}

/// One URL encoder's habits: which bytes stay as they are, how a space is
/// written, hex case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PercentStyle {
    pub keep: KeepSet,
    /// Space as `+` (forms).
    pub plus_space: bool,
    pub upper: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeepSet {
    /// Letters and digits only.
    Alnum,
    /// RFC 3986 unreserved: `-._~`.
    Unreserved,
    /// Unreserved and `/` (Python's `quote`).
    UnreservedSlash,
    /// `encodeURIComponent`: unreserved and `!*'()`.
    Component,
    /// Java's `URLEncoder`: `.-*_`.
    Java,
    /// `encodeURI`: also the reserved characters.
    Uri,
}

impl KeepSet {
    const ALL: [KeepSet; 6] = [
        KeepSet::Alnum,
        KeepSet::Unreserved,
        KeepSet::UnreservedSlash,
        KeepSet::Component,
        KeepSet::Java,
        KeepSet::Uri,
    ];

    fn keeps(self, b: u8) -> bool {
        if b.is_ascii_alphanumeric() {
            return true;
        }
        let extra: &[u8] = match self {
            KeepSet::Alnum => b"",
            KeepSet::Unreserved => b"-._~",
            KeepSet::UnreservedSlash => b"-._~/",
            KeepSet::Component => b"-._~!*'()",
            KeepSet::Java => b".-*_",
            KeepSet::Uri => b"-._~!*'();,/?:@&=+$#",
        };
        extra.contains(&b)
    }
}

/// `(spelling, what the sandbox must not see, what it sees instead)`.
pub type Pattern = (Spelling, Vec<u8>, Vec<u8>);

/// Every spelling of `token` with its placeholder written the same way.
/// Encoded spellings equal to the raw token or shorter than
/// [`MIN_ENCODED_LEN`] are left out. Not deduplicated across tokens.
pub fn spellings(token: &str, placeholder: &str) -> Vec<Pattern> {
    let raw = token.as_bytes();
    let mut out: Vec<Pattern> =
        vec![(Spelling::Raw, raw.to_vec(), placeholder.as_bytes().to_vec())];
    let mut push = |spelling: Spelling, from: Vec<u8>, to: Vec<u8>| {
        if from.len() >= MIN_ENCODED_LEN && !out.iter().any(|(_, f, _)| *f == from) {
            out.push((spelling, from, to));
        }
    };
    for style in json_styles() {
        push(
            Spelling::Json(style),
            json_escape(token, style),
            json_escape(placeholder, style),
        );
    }
    for style in percent_styles() {
        push(
            Spelling::Percent(style),
            percent_encode(raw, style),
            percent_encode(placeholder.as_bytes(), style),
        );
    }
    for url in [false, true] {
        for align in 0..3u8 {
            for tail in [Base64Tail::Middle, Base64Tail::Final, Base64Tail::Padded] {
                let Some(from) = base64_spelling(raw, url, align, tail) else {
                    continue;
                };
                // When either side ends on a 3-byte boundary its middle is
                // complete: write the placeholder as it would end the data.
                let p = placeholder.as_bytes();
                let ends_whole = (usize::from(align) + raw.len()).is_multiple_of(3);
                let to_tail = match tail {
                    Base64Tail::Middle if ends_whole && url => Base64Tail::Final,
                    Base64Tail::Middle if ends_whole => Base64Tail::Padded,
                    other => other,
                };
                let Some(to) = base64_spelling(p, url, align, to_tail)
                    .or_else(|| base64_spelling(p, url, align, Base64Tail::Middle))
                else {
                    continue;
                };
                push(Spelling::Base64 { url, align, tail }, from, to);
            }
        }
    }
    for upper in [false, true] {
        push(
            Spelling::Hex { upper },
            hex(raw, upper),
            hex(placeholder.as_bytes(), upper),
        );
    }
    out
}

fn json_styles() -> impl Iterator<Item = JsonStyle> {
    (0u8..32).map(|bits| JsonStyle {
        slash: bits & 1 != 0,
        html: bits & 2 != 0,
        non_ascii: bits & 4 != 0,
        unicode_all: bits & 8 != 0,
        upper: bits & 16 != 0,
    })
}

fn percent_styles() -> impl Iterator<Item = PercentStyle> {
    KeepSet::ALL.into_iter().flat_map(|keep| {
        [(false, false), (false, true), (true, false), (true, true)]
            .into_iter()
            .map(move |(plus_space, upper)| PercentStyle {
                keep,
                plus_space,
                upper,
            })
    })
}

pub fn json_escape(s: &str, style: JsonStyle) -> Vec<u8> {
    let mut out = String::with_capacity(s.len() + 8);
    let unicode = |out: &mut String, unit: u16| {
        if style.upper {
            out.push_str(&format!("\\u{unit:04X}"));
        } else {
            out.push_str(&format!("\\u{unit:04x}"));
        }
    };
    for c in s.chars() {
        let short = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            _ => None,
        };
        if let Some(short) = short {
            if style.unicode_all {
                unicode(&mut out, c as u16);
            } else {
                out.push_str(short);
            }
            continue;
        }
        match c {
            '/' if style.slash && style.unicode_all => unicode(&mut out, c as u16),
            '/' if style.slash => out.push_str("\\/"),
            c if (c as u32) < 0x20 || (c == '\u{7f}' && style.unicode_all) => {
                unicode(&mut out, c as u16)
            }
            '<' | '>' | '&' | '\'' | '+' | '`' if style.html => unicode(&mut out, c as u16),
            '\u{2028}' | '\u{2029}' if style.html => unicode(&mut out, c as u16),
            c if !c.is_ascii() && style.non_ascii => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    unicode(&mut out, *unit);
                }
            }
            c => out.push(c),
        }
    }
    out.into_bytes()
}

pub fn percent_encode(data: &[u8], style: PercentStyle) -> Vec<u8> {
    let digits: &[u8; 16] = if style.upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = Vec::with_capacity(data.len() * 3);
    for &b in data {
        if style.keep.keeps(b) {
            out.push(b);
        } else if b == b' ' && style.plus_space {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[
                b'%',
                digits[usize::from(b >> 4)],
                digits[usize::from(b & 15)],
            ]);
        }
    }
    out
}

pub fn hex(data: &[u8], upper: bool) -> Vec<u8> {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    data.iter()
        .flat_map(|&b| [digits[usize::from(b >> 4)], digits[usize::from(b & 15)]])
        .collect()
}

/// The characters of base64(`align` bytes ‖ `data` ‖ …) that depend on
/// `data` alone, whatever surrounds it; with [`Base64Tail::Final`] or
/// [`Base64Tail::Padded`], also the last character and padding written when
/// `data` ends the encoded input. `None` when that tail form is the middle
/// form (the data ends on a 3-byte boundary) or nothing is stable.
pub fn base64_spelling(data: &[u8], url: bool, align: u8, tail: Base64Tail) -> Option<Vec<u8>> {
    let align = usize::from(align % 3);
    let mut input = vec![0u8; align];
    input.extend_from_slice(data);
    let encoded = if url {
        URL_SAFE.encode(&input)
    } else {
        STANDARD.encode(&input)
    };
    let encoded = encoded.as_bytes();
    // A character of a 3-byte group covers bits [6j, 6j+6); byte i covers
    // [8i, 8i+8). Leading characters that touch the `align` unknown bytes and
    // a trailing one that touches the byte after `data` are not stable.
    let start = [0, 2, 3][align];
    let rem = input.len() % 3;
    let full = input.len() / 3 * 4;
    let end = match tail {
        Base64Tail::Middle => full + [0, 1, 2][rem],
        _ if rem == 0 => return None,
        Base64Tail::Final => full + [0, 2, 3][rem],
        Base64Tail::Padded => full + 4,
    };
    (end > start).then(|| encoded[start..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_middle_is_found_in_every_surrounding() {
        let token = b"ghp_SeCrEt0123456789";
        for url in [false, true] {
            for before in 0..6usize {
                for after in 0..4usize {
                    let mut data = vec![b'x'; before];
                    data.extend_from_slice(token);
                    data.extend(std::iter::repeat_n(b'y', after));
                    let enc = if url {
                        URL_SAFE.encode(&data)
                    } else {
                        STANDARD.encode(&data)
                    };
                    let middle =
                        base64_spelling(token, url, (before % 3) as u8, Base64Tail::Middle)
                            .unwrap();
                    assert!(
                        memchr::memmem::find(enc.as_bytes(), &middle).is_some(),
                        "before {before} after {after} url {url}"
                    );
                    if after == 0 {
                        let align = (before % 3) as u8;
                        if let Some(end) = base64_spelling(token, url, align, Base64Tail::Padded) {
                            assert!(enc.as_bytes().ends_with(&end));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn json_styles_cover_common_encoders() {
        let token = "a/b+c<d\"é";
        let all: Vec<Vec<u8>> = json_styles().map(|s| json_escape(token, s)).collect();
        let serde = serde_json::to_string(token).unwrap();
        let serde = serde.as_bytes()[1..serde.len() - 1].to_vec();
        assert!(all.contains(&serde));
        assert!(all.contains(&br#"a\/b+c<d\"\u00e9"#.to_vec()));
        assert!(all.contains(&br#"a/b\u002Bc\u003Cd\u0022\u00E9"#.to_vec()));
        assert!(all.contains(&br#"a/b\u002bc\u003cd\"\u00e9"#.to_vec()));
    }

    #[test]
    fn percent_styles() {
        let p = |keep, plus_space, upper| {
            String::from_utf8(percent_encode(
                b"a b/c~",
                PercentStyle {
                    keep,
                    plus_space,
                    upper,
                },
            ))
            .unwrap()
        };
        assert_eq!(p(KeepSet::Unreserved, false, true), "a%20b%2Fc~");
        assert_eq!(p(KeepSet::UnreservedSlash, true, false), "a+b/c~");
        assert_eq!(p(KeepSet::Java, true, false), "a+b%2fc%7e");
    }

    #[test]
    fn short_encodings_are_skipped_raw_kept() {
        let s = spellings("abc", "miosa-tok-x");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, Spelling::Raw);
    }
}
