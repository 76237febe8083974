//! A sampling filter in front of the token automaton, so that a large
//! download is searched at memory speed whatever the number of tokens.
//!
//! Every spelling is at least `shortest` bytes long. Probing the data only at
//! multiples of `stride = shortest - GRAM + 1`, some probe of every occurrence
//! lands in its first `stride` positions, and the `GRAM` bytes read there lie
//! inside it. So the filter keeps the `GRAM`-byte grams at offsets
//! `0..stride` of every spelling, and the automaton only runs where a probe's
//! gram is one of them: from `stride - 1` bytes before the probe, until a
//! spelling starting at the probe would end. The matches are those of one
//! search over the whole buffer (leftmost-longest, non-overlapping):
//! property-tested in `firewall/tests/properties.rs`.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// Bytes read per probe (one unaligned `u64` load).
const GRAM: usize = 8;
/// Below this stride the probes save too little: the automaton searches alone.
const MIN_STRIDE: usize = 8;

pub(super) struct GramFilter {
    grams: HashSet<u64, BuildHasherDefault<GramHasher>>,
    stride: usize,
}

impl GramFilter {
    /// `None` when some spelling is too short for probes to pay off.
    pub(super) fn new<'a>(needles: impl IntoIterator<Item = &'a [u8]> + Clone) -> Option<Self> {
        let shortest = needles.clone().into_iter().map(<[u8]>::len).min()?;
        let stride = (shortest + 1).checked_sub(GRAM)?;
        if stride < MIN_STRIDE {
            return None;
        }
        let mut grams = HashSet::default();
        for needle in needles {
            for offset in 0..stride {
                grams.insert(gram_at(needle, offset));
            }
        }
        grams.shrink_to_fit();
        Some(GramFilter { grams, stride })
    }

    /// Distance between probes; every occurrence starts at most `stride - 1`
    /// bytes before a probe that hits.
    pub(super) fn stride(&self) -> usize {
        self.stride
    }

    /// Whether a spelling could start in `probe + 1 - stride ..= probe`.
    #[inline]
    pub(super) fn hits(&self, data: &[u8], probe: usize) -> bool {
        self.grams.contains(&gram_at(data, probe))
    }

    /// Whether `data` is long enough to have a probe at `probe`.
    #[inline]
    pub(super) fn can_probe(data: &[u8], probe: usize) -> bool {
        probe + GRAM <= data.len()
    }

    pub(super) fn memory_usage(&self) -> usize {
        // One control byte per bucket beside the key.
        self.grams.capacity() * (std::mem::size_of::<u64>() + 1)
    }
}

#[inline]
fn gram_at(data: &[u8], at: usize) -> u64 {
    let mut gram = [0u8; GRAM];
    gram.copy_from_slice(&data[at..at + GRAM]);
    u64::from_le_bytes(gram)
}

/// A multiply spreads a gram over the whole word (the table takes the bucket
/// from the low bits and a tag from the top seven). The table holds only
/// grams of tokens, which the sandbox and upstream do not know, so its chains
/// cannot be made long from outside; probes are lookups, never inserts.
#[derive(Default)]
struct GramHasher(u64);

impl Hasher for GramHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        let h = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

/// Bytes of a spelling's start that [`StartFilter`] keeps.
pub(super) const START: usize = 4;

/// Which 4-byte strings begin some spelling, one bit per hashed start in a
/// table about one sixteenth full. A stream's tail is open only where a
/// spelling could begin, and with many tokens nearly every byte begins one,
/// so this check (one load from a table that stays in cache) spares most
/// tail positions the automaton walk.
pub(super) struct StartFilter {
    bits: Box<[u64]>,
    shift: u32,
}

impl StartFilter {
    /// `None` when some spelling is shorter than [`START`].
    pub(super) fn new<'a>(needles: impl IntoIterator<Item = &'a [u8]> + Clone) -> Option<Self> {
        let count = needles.clone().into_iter().count();
        let bit_count = (count * 16).next_power_of_two().clamp(1 << 12, 1 << 20);
        let mut filter = StartFilter {
            bits: vec![0u64; bit_count / 64].into_boxed_slice(),
            shift: 32 - bit_count.trailing_zeros(),
        };
        for needle in needles {
            let bit = filter.bit(needle.get(..START)?);
            filter.bits[bit / 64] |= 1 << (bit % 64);
        }
        Some(filter)
    }

    /// Whether a spelling could begin with `data`'s first [`START`] bytes
    /// (`data` holds at least that many).
    #[inline]
    pub(super) fn may_start(&self, data: &[u8]) -> bool {
        let bit = self.bit(&data[..START]);
        self.bits[bit / 64] & (1 << (bit % 64)) != 0
    }

    #[inline]
    fn bit(&self, start: &[u8]) -> usize {
        let word = u32::from_le_bytes([start[0], start[1], start[2], start[3]]);
        // Fibonacci hashing: the top bits of the product index the table.
        (word.wrapping_mul(0x9E37_79B1) >> self.shift) as usize
    }

    pub(super) fn memory_usage(&self) -> usize {
        self.bits.len() * std::mem::size_of::<u64>()
    }
}
