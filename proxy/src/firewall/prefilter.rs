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

/// Bytes read per probe (one unaligned `u64` load).
const GRAM: usize = 8;
/// Below this stride the probes save too little: the automaton searches alone.
const MIN_STRIDE: usize = 8;
/// Probes a round of the scan's loop: the loop's own count, compare and
/// jump once for all of them.
const ROUND: usize = 8;
/// The shortest spelling probed: shorter ones would put the probes too
/// close together to save anything.
pub(super) const PROBED_LEN: usize = GRAM + MIN_STRIDE - 1;
/// Table bits per kept gram. With two bits set per gram, about one probe in
/// 270 of data that holds no spelling wakes the automaton.
const BITS_PER_GRAM: usize = 32;
/// Bounds of the table: 512 B to 32 MiB.
const MIN_BITS: usize = 1 << 12;
const MAX_BITS: usize = 1 << 28;
/// A table that would stay small anyway grows up to this (16 KiB, half a
/// core's L1 data cache) at 4 × [`BITS_PER_GRAM`]: a quarter of the probes
/// of hex or random data wake the automaton in vain (one 40-byte token:
/// 0.035 → 0.027 ns a byte on hex, timed).
const ROOMY_BITS: usize = 1 << 17;
/// Pairs of odd multipliers, one for each hash: each product's top bits
/// index the table. The first pair that leaves table bit 0 unset is kept
/// (see [`GramFilter::new`]); each pair leaves it unset for about fifteen
/// token sets in sixteen.
const MULTIPLIERS: [[u64; 2]; 5] = [
    [0x9E37_79B9_7F4A_7C15, 0xC2B2_AE3D_27D4_EB4F],
    [0x1656_67B1_9E37_79F9, 0x85EB_CA77_C2B2_AE63],
    [0x27D4_EB2F_1656_67C5, 0xFF51_AFD7_ED55_8CCD],
    [0xC4CE_B9FE_1A85_EC53, 0xBF58_476D_1CE4_E5B9],
    [0x94D0_49BB_1331_11EB, 0xD6E8_FEB8_6659_FD93],
];
/// XORed into a gram before the second multiply. Without it the gram of
/// eight zero bytes (sparse files, padding, binary data) gives bit 0 under
/// both multipliers: one bit, not two, so a zeroed download woke the
/// automaton at every probe whenever any kept gram had set bit 0 (about one
/// token set in 16: measured, 10.2 s of CPU per GB instead of 0.8). The
/// first hash, run at every probe, stays a bare multiply (salting it too
/// cost 20 % of the scan, timed).
const SALTS: [u64; 2] = [0, 0x1319_8A2E_0370_7344];

/// A Bloom filter of the grams, two bits per gram: it may wake the automaton
/// in vain, never miss a gram it was given. A probe is one load, one
/// multiply and one bit test (a second of each only where the first bit is
/// set) in a table smaller than a hash set of the grams: with 1 000 tokens,
/// half its memory and 1.8× its throughput on random data (9.3 against
/// 5.1 GB/s).
pub(super) struct GramFilter {
    bits: Box<[u64]>,
    multipliers: [u64; 2],
    /// 64 less log2 of the table's words: the product's bits that index a word.
    word_shift: u32,
    stride: usize,
    /// A gram the filter lets through at most one bit of: where a probe's
    /// search starts from, as the last gram refused by its second bit.
    refused: u64,
}

impl GramFilter {
    /// `None` when some spelling is too short for probes to pay off.
    pub(super) fn new<'a>(needles: impl IntoIterator<Item = &'a [u8]> + Clone) -> Option<Self> {
        let shortest = needles.clone().into_iter().map(<[u8]>::len).min()?;
        let stride = (shortest + 1).checked_sub(GRAM)?;
        if stride < MIN_STRIDE {
            return None;
        }
        // Spellings of one token share many grams: the table is sized by
        // the distinct ones.
        let mut grams: Vec<u64> = needles
            .into_iter()
            .flat_map(|needle| (0..stride).map(move |offset| gram_at(needle, offset)))
            .collect();
        grams.sort_unstable();
        grams.dedup();
        let sized = |bits_per_gram: usize| {
            grams
                .len()
                .saturating_mul(bits_per_gram)
                .next_power_of_two()
        };
        let bit_count = sized(BITS_PER_GRAM)
            .max(sized(4 * BITS_PER_GRAM).min(ROOMY_BITS))
            .clamp(MIN_BITS, MAX_BITS);
        // Eight zero bytes (sparse files, padding: the commonest data that
        // repeats itself) give the product 0 under any multiplier, so their
        // first bit is table bit 0. Left unset, a zeroed download never
        // leaves the scan's round loop; set by a kept gram, it is searched
        // one probe at a time (a gram refused at every probe).
        let mut filter = Self::with_multipliers(&grams, bit_count, stride, MULTIPLIERS[0]);
        for multipliers in &MULTIPLIERS[1..] {
            if !is_set(&filter.bits, 0) {
                break;
            }
            filter = Self::with_multipliers(&grams, bit_count, stride, *multipliers);
        }
        Some(filter)
    }

    fn with_multipliers(
        grams: &[u64],
        bit_count: usize,
        stride: usize,
        multipliers: [u64; 2],
    ) -> Self {
        let mut filter = GramFilter {
            bits: vec![0u64; bit_count / 64].into_boxed_slice(),
            multipliers,
            word_shift: 64 - (bit_count / 64).trailing_zeros(),
            stride,
            refused: 0,
        };
        for &gram in grams {
            for bit in filter.bits_of(gram) {
                filter.bits[bit / 64] |= 1 << (bit % 64);
            }
        }
        // At most one gram in 256 or so passes both bits: one of the first
        // few does not.
        filter.refused = (0..)
            .find(|&gram| !filter.passes(gram))
            .expect("a filter with unset bits");
        filter
    }

    fn passes(&self, gram: u64) -> bool {
        self.bits_of(gram)
            .iter()
            .all(|&bit| is_set(&self.bits, bit))
    }

    /// Distance between probes; every occurrence starts at most `stride - 1`
    /// bytes before a probe that hits.
    pub(super) fn stride(&self) -> usize {
        self.stride
    }

    /// The first of `probe`, `probe + stride`, … whose gram may be kept
    /// (a spelling could start up to `stride - 1` bytes before it), or
    /// `None` when the data ends first. A download spends its time here.
    pub(super) fn next_hit(&self, data: &[u8], probe: usize) -> Option<usize> {
        // The scan is built once per table size, so that the word's shift
        // is a constant and the table's length a type: no mask, no bounds
        // check and no shift count in a register a probe.
        macro_rules! by_table_size {
            ($($log:literal)*) => {
                match self.bits.len().trailing_zeros() {
                    $($log => {
                        if let Ok(bits) = <&[u64; 1 << $log]>::try_from(&*self.bits) {
                            return self.scan(bits, data, probe);
                        }
                    })*
                    _ => {}
                }
            };
        }
        const _: () = assert!(MIN_BITS == 64 << 6 && MAX_BITS == 64 << 22);
        by_table_size!(6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22);
        debug_assert!(false, "a table of {} words has a scan", self.bits.len());
        self.next_hit_refusing(data, probe, self.refused)
    }

    /// [`next_hit`](Self::next_hit) over a table of `WORDS` words. Probes
    /// go [`ROUND`] a round, read from one slice so that only the round is
    /// bounds-checked, the loop's count, compare and jump once for all. A
    /// probe is a `mul` from memory, a shift, a load, a bit test and a
    /// branch: 57 instructions a round of eight (66 with the grams read
    /// ahead, 81 with a 64-bit product's top bits for both word and place
    /// and the shift count in a register). A probe whose first bit is set
    /// leaves the round for its second bit only; one the second refuses
    /// goes on from the next probe, not back through the caller (1 000
    /// tokens over random data: one probe in 18).
    /// Not inlined: inlined into the automaton's search, whose state fills
    /// the registers, a probe took 11 to 12 (the whole build's, counted).
    #[inline(never)]
    fn scan<const WORDS: usize>(
        &self,
        bits: &[u64; WORDS],
        data: &[u8],
        mut probe: usize,
    ) -> Option<usize> {
        let word_shift = 64 - WORDS.trailing_zeros();
        debug_assert_eq!(word_shift, self.word_shift);
        let multiplier = self.multipliers[0];
        // As [`bit`](Self::bit) gives the first bit (whose salt is 0); the
        // word is below `WORDS` whatever the product.
        let first_bit_set = |gram: u64| {
            let product = u128::from(gram) * u128::from(multiplier);
            let word = bits[((product as u64) >> word_shift) as usize];
            (word >> ((product >> 64) as u64 & 63)) & 1 != 0
        };
        let mut refused = self.refused;
        // Where a probe whose first bit is set leads: `Ok` the hit (or
        // none), `Err` the probe to go on from.
        let mut second = |probe: usize| {
            std::hint::cold_path();
            let gram = gram_at(data, probe);
            if gram == refused {
                // The same gram refused twice in a row: data that repeats
                // itself (zeros above all: sparse files, padding) gives it
                // at every probe. Leaving the round at each would double
                // the scan; the loop that remembers it does not.
                return Ok(self.next_hit_refusing(data, probe, refused));
            }
            if is_set(bits, self.bit(gram, 1)) {
                return Ok(Some(probe));
            }
            refused = gram;
            Err(probe + self.stride)
        };
        let stride = self.stride;
        // A round reads its probes from one slice that ends where its last
        // gram does. With a stride that fits 32 bits no `k * stride` of a
        // round overflows, so every probe's bounds check follows from the
        // slice's length whatever the stride, and none is left in the loop
        // (a profile-guided build kept in it those that needed a stride of
        // at least a gram). Every filter [`new`](Self::new) builds has such
        // a stride; without one, the one-probe loop below searches alone.
        if let Ok(narrow) = u32::try_from(stride) {
            let stride = narrow as usize;
            let span = stride * (ROUND - 1) + GRAM;
            if let Some(last_round) = data.len().checked_sub(span) {
                while probe <= last_round {
                    let chunk = &data[probe..probe + span];
                    // Where the probes are, not their grams: a gram read
                    // ahead of the probes before it held a register, and
                    // the stride's multiples went to the stack.
                    let grams: [&[u8; GRAM]; ROUND] = std::array::from_fn(|k| {
                        chunk[k * stride..]
                            .first_chunk()
                            .expect("a round's grams inside its slice")
                    });
                    let passes_first =
                        |gram: &&[u8; GRAM]| first_bit_set(u64::from_le_bytes(**gram));
                    if !grams.iter().any(passes_first) {
                        probe += stride * ROUND;
                        continue;
                    }
                    // Which probe, found again: carried out of the round,
                    // its number cost an instruction at every probe.
                    let k = grams.iter().position(passes_first).unwrap_or(0);
                    match second(probe + k * stride) {
                        Ok(hit) => return hit,
                        Err(next) => probe = next,
                    }
                }
            }
        }
        let last = data.len().checked_sub(GRAM)?;
        while probe <= last {
            if !first_bit_set(gram_at(data, probe)) {
                probe += stride;
                continue;
            }
            match second(probe) {
                Ok(hit) => return hit,
                Err(next) => probe = next,
            }
        }
        None
    }

    /// [`next_hit`](Self::next_hit) one probe at a time, a gram whose first
    /// bit is set costing one compare when it is the last one refused.
    fn next_hit_refusing(&self, data: &[u8], mut probe: usize, mut refused: u64) -> Option<usize> {
        let bits = &*self.bits;
        let words = bits.len().checked_sub(1)?;
        let last = data.len().checked_sub(GRAM)?;
        while probe <= last {
            let gram = gram_at(data, probe);
            if self.first_bit_set(bits, words, gram) {
                // Off the loop's straight line whatever a profile says: a
                // profile-guided build whose training met a gram through
                // this branch at every probe folded the compare below into
                // every probe (17 to 18 instructions a probe instead of 14).
                std::hint::cold_path();
                if gram != refused {
                    if is_set(bits, self.bit(gram, 1)) {
                        return Some(probe);
                    }
                    refused = gram;
                }
            }
            probe += self.stride;
        }
        None
    }

    #[inline]
    fn first_bit_set(&self, bits: &[u64], words: usize, gram: u64) -> bool {
        let first = self.bit(gram, 0);
        // Masking the word index (a no-op, the shift already bounds it)
        // spares a bounds check a probe.
        (bits[(first / 64) & words] >> (first % 64)) & 1 != 0
    }

    #[inline]
    fn bits_of(&self, gram: u64) -> [usize; 2] {
        [self.bit(gram, 0), self.bit(gram, 1)]
    }

    /// The table bit the `hash`th hash gives `gram`, from the 128-bit
    /// product: its word the low half's top bits, its place in the word the
    /// high half's low bits. Both depend on every bit of the gram, and a
    /// probe takes them from one `mul` with one shift (the top bits of a
    /// 64-bit product alone took three instructions more).
    #[inline]
    fn bit(&self, gram: u64, hash: usize) -> usize {
        let product = u128::from(gram ^ SALTS[hash]) * u128::from(self.multipliers[hash]);
        let word = (product as u64) >> self.word_shift;
        let place = (product >> 64) as u64 & 63;
        (word << 6 | place) as usize
    }

    pub(super) fn memory_usage(&self) -> usize {
        self.bits.len() * std::mem::size_of::<u64>()
    }
}

#[inline]
fn is_set(bits: &[u64], bit: usize) -> bool {
    bits[bit / 64] & (1 << (bit % 64)) != 0
}

#[inline]
fn gram_at(data: &[u8], at: usize) -> u64 {
    let (gram, _) = data[at..]
        .split_first_chunk::<GRAM>()
        .expect("GRAM bytes at a probe");
    u64::from_le_bytes(*gram)
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

#[cfg(test)]
mod tests {
    use super::*;

    const NEEDLE: &[u8] = b"real-secret-value-123";

    #[test]
    fn every_occurrence_gets_a_probe_in_its_first_stride_bytes() {
        let filter = GramFilter::new([NEEDLE]).expect("21 bytes: long enough to probe");
        let stride = filter.stride();
        assert_eq!(stride, NEEDLE.len() + 1 - GRAM);
        for at in 0..3 * stride {
            let mut data = vec![b'.'; at];
            data.extend_from_slice(NEEDLE);
            data.resize(data.len() + at % 7, b'.');
            let hit = filter.next_hit(&data, 0).expect("the occurrence is probed");
            assert!(
                (at..at + stride).contains(&hit),
                "needle at {at}, first hit at {hit}"
            );
            // Probing resumes one stride on and finds nothing more.
            assert_eq!(filter.next_hit(&data, hit + stride), None);
        }
    }

    /// A gram whose first hash under the first multipliers is table bit 0,
    /// the bit eight zero bytes test first, at every table size.
    fn gram_on_the_zero_bit() -> [u8; GRAM] {
        // The multiplier's inverse modulo 2^64 (Newton's iteration).
        let m = MULTIPLIERS[0][0];
        let mut inverse = m;
        for _ in 0..6 {
            inverse = inverse.wrapping_mul(2u64.wrapping_sub(m.wrapping_mul(inverse)));
        }
        assert_eq!(m.wrapping_mul(inverse), 1);
        // `t × inverse` has the product's low half `t`: word 0 at every
        // size for a small `t`; about one in 64 has place 0 in the word.
        (1..1u64 << 16)
            .map(|t| t.wrapping_mul(inverse))
            .find(|&gram| (u128::from(gram) * u128::from(m)) >> 64 & 63 == 0)
            .expect("a gram on bit 0")
            .to_le_bytes()
    }

    /// A needle whose first gram's first hash under the first multipliers
    /// is table bit 0, the bit eight zero bytes test first.
    fn needle_on_the_zero_bit() -> Vec<u8> {
        let mut needle = gram_on_the_zero_bit().to_vec();
        needle.extend_from_slice(b"-and-the-rest-of-a-token");
        needle
    }

    #[test]
    fn the_multipliers_chosen_leave_the_zero_bit_unset_and_hits_found() {
        let needle = needle_on_the_zero_bit();
        let filter = GramFilter::new([needle.as_slice()]).unwrap();
        assert_ne!(filter.multipliers, MULTIPLIERS[0]);
        assert!(!is_set(&filter.bits, 0));
        assert!(!is_set(&filter.bits, filter.bit(0, 0)));
        zeros_refused_and_hits_found(&filter, &needle);
    }

    #[test]
    fn zeros_after_a_kept_gram_set_their_first_bit_are_refused_and_hits_still_found() {
        // The filter the first multipliers give, as when every pair sets
        // bit 0.
        let needle = needle_on_the_zero_bit();
        let chosen = GramFilter::new([needle.as_slice()]).unwrap();
        let stride = chosen.stride();
        let grams: Vec<u64> = (0..stride).map(|offset| gram_at(&needle, offset)).collect();
        let mut filter =
            GramFilter::with_multipliers(&grams, chosen.bits.len() * 64, stride, MULTIPLIERS[0]);
        let [zero_first, zero_second] = filter.bits_of(0);
        assert_eq!(zero_first, 0);
        assert!(is_set(&filter.bits, zero_first), "the case under test");
        assert!(!is_set(&filter.bits, zero_second));
        // Zeros refused from the start (the filter's own starting point),
        // and refused on the way (another starting point).
        assert!(!filter.passes(u64::MAX));
        for start in [filter.refused, u64::MAX] {
            filter.refused = start;
            zeros_refused_and_hits_found(&filter, &needle);
        }
    }

    /// A repeatable stream of pseudo-random words (xorshift64).
    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    /// The reference: every probe's two bits, one probe after another.
    fn probing_one_gram_at_a_time(
        filter: &GramFilter,
        data: &[u8],
        mut probe: usize,
    ) -> Option<usize> {
        while probe + GRAM <= data.len() {
            if filter.passes(gram_at(data, probe)) {
                return Some(probe);
            }
            probe += filter.stride();
        }
        None
    }

    #[test]
    fn rounds_find_what_probing_one_gram_at_a_time_finds() {
        let filter = GramFilter::new([NEEDLE]).unwrap();
        let stride = filter.stride();
        // Letters from a xorshift: some probes pass the first bit in vain.
        let mut random = xorshift(0x2545_F491_4F6C_DD1D);
        let noise: Vec<u8> = (0..3 * ROUND * stride + 2 * GRAM)
            .map(|_| b'a' + (random() % 26) as u8)
            .collect();
        assert_eq!(filter.next_hit(&noise, 0), None);
        let froms = [
            0,
            1,
            stride - 1,
            stride,
            ROUND * stride - 1,
            ROUND * stride + 3,
        ];
        for at in 0..=noise.len() - NEEDLE.len() {
            let mut data = noise.clone();
            data[at..at + NEEDLE.len()].copy_from_slice(NEEDLE);
            for from in froms {
                assert_eq!(
                    filter.next_hit(&data, from),
                    probing_one_gram_at_a_time(&filter, &data, from),
                    "needle at {at}, from {from}"
                );
            }
        }
    }

    fn zeros_refused_and_hits_found(filter: &GramFilter, needle: &[u8]) {
        let stride = filter.stride();
        let naive = |data: &[u8], probe: usize| probing_one_gram_at_a_time(filter, data, probe);
        assert_eq!(filter.next_hit(&vec![0u8; 1 << 20], 0), None);
        // The needle after any run of zeros, then zeros again: found where
        // probing one gram at a time finds it, and nothing after it. Runs
        // longer than a round reach the one-probe loop from the rounds.
        for at in 0..(ROUND + 4) * stride {
            let mut data = vec![0u8; at];
            data.extend_from_slice(needle);
            data.resize(data.len() + 3 * stride, 0);
            for from in 0..2 * stride {
                let hit = filter.next_hit(&data, from);
                assert_eq!(hit, naive(&data, from), "needle at {at}, from {from}");
                if let Some(hit) = hit {
                    assert_eq!(
                        filter.next_hit(&data, hit + stride),
                        naive(&data, hit + stride)
                    );
                }
            }
        }
    }

    #[test]
    fn every_table_size_finds_what_probing_one_gram_at_a_time_finds() {
        let stride = NEEDLE.len() + 1 - GRAM;
        let grams: Vec<u64> = (0..stride).map(|offset| gram_at(NEEDLE, offset)).collect();
        let mut random = xorshift(0x9E37_79B9_7F4A_7C15);
        let mut noise: Vec<u8> = (0..4 * ROUND * stride).map(|_| random() as u8).collect();
        for at in [5, 2 * ROUND * stride + 3, noise.len() - NEEDLE.len()] {
            noise[at..at + NEEDLE.len()].copy_from_slice(NEEDLE);
        }
        let mut bit_count = MIN_BITS;
        while bit_count <= MAX_BITS {
            for multipliers in MULTIPLIERS {
                let filter = GramFilter::with_multipliers(&grams, bit_count, stride, multipliers);
                let mut from = 0;
                loop {
                    let hit = filter.next_hit(&noise, from);
                    assert_eq!(
                        hit,
                        probing_one_gram_at_a_time(&filter, &noise, from),
                        "{bit_count} table bits, from {from}"
                    );
                    let Some(hit) = hit else { break };
                    from = hit + stride;
                }
            }
            bit_count *= 2;
        }
    }

    #[test]
    fn probes_refused_by_their_second_bit_inside_a_round_go_on_from_the_next() {
        // A table about one sixteenth full: many probes of random data pass
        // the first bit in vain, in every place of a round.
        let mut random = xorshift(0x2545_F491_4F6C_DD1D);
        let needles: Vec<Vec<u8>> = (0..3_000)
            .map(|_| (0..24).map(|_| random() as u8).collect())
            .collect();
        let filter = GramFilter::new(needles.iter().map(Vec::as_slice)).unwrap();
        let stride = filter.stride();
        let mut data: Vec<u8> = (0..64 * ROUND * stride).map(|_| random() as u8).collect();
        let at = 17 * ROUND * stride + 5;
        data[at..at + needles[7].len()].copy_from_slice(&needles[7]);
        let (words, bits) = (filter.bits.len() - 1, &*filter.bits);
        let in_vain = (0..=data.len() - GRAM)
            .step_by(stride)
            .map(|probe| gram_at(&data, probe))
            .filter(|&gram| filter.first_bit_set(bits, words, gram) && !filter.passes(gram))
            .count();
        assert!(in_vain > 20, "{in_vain} probes pass the first bit in vain");
        for from in 0..2 * stride {
            let mut from = from;
            let mut hits = 0;
            while let Some(hit) = filter.next_hit(&data, from) {
                assert_eq!(Some(hit), probing_one_gram_at_a_time(&filter, &data, from));
                hits += 1;
                from = hit + stride;
            }
            assert_eq!(None, probing_one_gram_at_a_time(&filter, &data, from));
            assert!(hits >= 1, "the needle is found");
        }
    }

    #[test]
    fn data_shorter_than_a_gram_has_no_probe() {
        let filter = GramFilter::new([NEEDLE]).unwrap();
        for len in 0..GRAM {
            assert_eq!(filter.next_hit(&NEEDLE[..len], 0), None);
        }
        assert_eq!(filter.next_hit(NEEDLE, 0), Some(0));
        assert_eq!(filter.next_hit(NEEDLE, NEEDLE.len() - GRAM + 1), None);
    }

    #[test]
    fn a_gram_sets_two_bits_whatever_its_bytes() {
        // Every table size: the two bits of a gram of one repeated byte (zeros
        // above all) differ, so it is not let through by one kept gram's bit.
        for grams in [1usize, 40, 5_000, 100_000, 1 << 20] {
            let needles: Vec<Vec<u8>> = (0..grams.min(2_000))
                .map(|i| format!("needle-{i:08}-{}", "x".repeat(grams / 2_000)).into_bytes())
                .collect();
            let filter = GramFilter::new(needles.iter().map(Vec::as_slice)).unwrap();
            for byte in [0u8, b' ', b'0', b'A', 0xFF] {
                let [a, b] = filter.bits_of(u64::from_le_bytes([byte; GRAM]));
                assert_ne!(
                    a,
                    b,
                    "byte {byte:#x}, {} table bits",
                    filter.bits.len() * 64
                );
            }
        }
    }

    #[test]
    fn spellings_too_short_for_probes_get_no_filter() {
        assert!(GramFilter::new([&b"abcdefghijklmn"[..]]).is_none());
        assert!(GramFilter::new([&b"abcdefghijklmno"[..]]).is_some());
    }
}
