//! Property tests: streams and frames against the whole-buffer reference.

use super::*;

const PT_TOKENS: [&str; 5] = [
    "ghp_Ab1+Cd2/Ef3=Gh4_Ij5.Kl6-Mn7",
    "sk-proj-QRSTUVWXYZ0123456789",
    "ya29.a0Af\"H\\/tok\u{e9}n",
    // Guarded only in the `short` sets: too short to probe, and the second
    // is where the first token begins (leftmost-longest must pick the token).
    "tok_short1",
    "ghp_Ab1+Cd2",
];
const PT_PLACEHOLDERS: [&str; 5] = [
    "miosa-tok-PLACEHOLDERone0000000",
    "miosa-tok-two",
    "miosa-tok-THREE3333333333333333333333333",
    "miosa-tok-short",
    "miosa-tok-PREFIX0000",
];

/// The three long tokens alone, or among 150 decoys; with the two short ones
/// too (`short`), whose short spellings are found beside the probes.
/// `probed` or not: unprobed, the automaton searches whole buffers (a set of
/// at most `SMALL_SET` spellings with its own DFA), the reference.
/// Built once each.
fn pt_firewall(large: bool, short: bool, probed: bool) -> Arc<Firewall> {
    static BUILT: std::sync::OnceLock<Vec<Arc<Firewall>>> = std::sync::OnceLock::new();
    let build = |decoys: usize, short: bool, probed: bool| {
        let guarded = if short { 5 } else { 3 };
        let mut pairs: Vec<(String, String)> = (0..guarded)
            .map(|i| (PT_TOKENS[i].to_owned(), PT_PLACEHOLDERS[i].to_owned()))
            .collect();
        pairs.extend((0..decoys).map(|i| {
            (
                format!("decoy_{i:03}_QwErTyUiOp"),
                format!("miosa-tok-decoy{i:03}"),
            )
        }));
        let guarded = pairs.into_iter().map(|(t, p)| Guarded {
            token: SecretString::from(t),
            placeholder: p,
        });
        let fw = if probed {
            Firewall::new(guarded)
        } else {
            Firewall::unprobed(guarded)
        }
        .unwrap();
        assert_eq!(fw.filter.is_some(), probed);
        assert_eq!(fw.short_starts.is_some(), probed && short);
        assert_eq!(
            fw.small.is_some(),
            !probed && fw.pattern_count() <= SMALL_SET
        );
        Arc::new(fw)
    };
    let all = BUILT.get_or_init(|| {
        (0..8)
            .map(|i| build(if i & 1 == 1 { 150 } else { 0 }, i & 2 != 0, i & 4 != 0))
            .collect()
    });
    all[usize::from(large) + 2 * usize::from(short) + 4 * usize::from(probed)].clone()
}

/// The tokens `pt_firewall(_, short, _)` guards.
fn pt_guarded(short: bool) -> &'static [&'static str] {
    &PT_TOKENS[..if short { 5 } else { 3 }]
}

/// One insertion: a token in some spelling, or a mere prefix of one.
#[derive(Debug, Clone)]
struct Insert {
    pos: usize,
    token: usize,
    kind: u8,
    pick: usize,
    pre: Vec<u8>,
    post: Vec<u8>,
}

fn insert_strategy(max_pos: usize) -> impl Strategy<Value = Insert> {
    (
        0..max_pos,
        0usize..PT_TOKENS.len(),
        0u8..8,
        any::<usize>(),
        proptest::collection::vec(any::<u8>(), 0..4),
        proptest::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(|(pos, token, kind, pick, pre, post)| Insert {
            pos,
            token,
            kind,
            pick,
            pre,
            post,
        })
}

fn spelled(ins: &Insert) -> Vec<u8> {
    let token = PT_TOKENS[ins.token];
    let all = patterns::spellings(token, "x");
    let around = |t: &str| {
        let mut v = ins.pre.clone();
        v.extend_from_slice(t.as_bytes());
        v.extend_from_slice(&ins.post);
        v
    };
    match ins.kind {
        0 => token.as_bytes().to_vec(),
        1 => {
            let j = serde_json::to_string(token).unwrap();
            j.into_bytes()
        }
        2 => STANDARD.encode(around(token)).into_bytes(),
        3 => URL_SAFE_NO_PAD.encode(around(token)).into_bytes(),
        4 => token
            .bytes()
            .flat_map(|b| format!("{b:02x}").into_bytes())
            .collect(),
        5 => {
            // A prefix of some spelling: must not be replaced, may be held.
            let p = &all[ins.pick % all.len()].1;
            p[..ins.pick % p.len()].to_vec()
        }
        _ => all[ins.pick % all.len()].1.clone(),
    }
}

fn build_body(filler: &[u8], inserts: &[Insert]) -> Vec<u8> {
    let mut body = filler.to_vec();
    let mut sorted = inserts.to_vec();
    sorted.sort_by_key(|b| std::cmp::Reverse(b.pos));
    for ins in &sorted {
        let at = ins.pos.min(body.len());
        body.splice(at..at, spelled(ins));
    }
    body
}

fn split(data: &[u8], cuts: &[usize], bytewise: bool) -> Vec<Vec<u8>> {
    if bytewise {
        return data.iter().map(|b| vec![*b]).collect();
    }
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.push(0);
    cuts.push(data.len());
    cuts.sort_unstable();
    cuts.windows(2).map(|w| data[w[0]..w[1]].to_vec()).collect()
}

fn filler() -> impl Strategy<Value = Vec<u8>> {
    // Bytes that often begin spellings, so partial matches are common.
    let byte = prop_oneof![
        any::<u8>(),
        Just(b'g'),
        Just(b'Z'),
        Just(b'6'),
        Just(b'\n'),
        Just(b'%'),
        Just(b'\\'),
    ];
    proptest::collection::vec(byte, 0..300)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The probes (and the short spellings' own search) only decide where
    /// the automaton looks: the matches are those of the automaton's own
    /// search over the whole buffer.
    #[test]
    fn probed_search_equals_the_automatons_own(
        filler in filler(),
        inserts in proptest::collection::vec(insert_strategy(300), 0..8),
        large in any::<bool>(),
        short in any::<bool>(),
    ) {
        let body = build_body(&filler, &inserts);
        let probed: Vec<Match> = pt_firewall(large, short, true).find_iter(&body).collect();
        let whole: Vec<Match> = pt_firewall(large, short, false).find_iter(&body).collect();
        prop_assert_eq!(probed, whole);
    }

    #[test]
    fn streamed_body_equals_whole_scrub_and_leaks_nothing(
        filler in filler(),
        inserts in proptest::collection::vec(insert_strategy(300), 0..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
        bytewise in any::<bool>(),
        large in any::<bool>(),
        short in any::<bool>(),
        probed in any::<bool>(),
    ) {
        let fw = pt_firewall(large, short, probed);
        let body = build_body(&filler, &inserts);
        let whole = fw.scrub(&body).into_owned();
        prop_assert_eq!(leaks(&whole, pt_guarded(short)), None);
        prop_assert!(!fw.contains(&whole));

        let mut hold = Holdback::new();
        let mut streamed = Vec::new();
        for chunk in split(&body, &cuts, bytewise) {
            streamed.extend_from_slice(&hold.push(&fw, Bytes::from(chunk)));
            prop_assert!(hold.held_len() < 2 * fw.longest_pattern());
        }
        streamed.extend_from_slice(&hold.finish(&fw));
        prop_assert_eq!(&streamed, &whole);

        // And through the Body wrapper.
        let frames = split(&body, &cuts, bytewise)
            .into_iter()
            .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from(c))));
        let inner = StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let out = rt.block_on(fw.clone().body(inner).collect()).unwrap().to_bytes();
        prop_assert_eq!(&out[..], &whole[..]);
    }

    /// A few chunks longer than the longest spelling, so a held tail is
    /// joined to a large chunk whose rest is searched in place: the pieces
    /// released equal the whole scrub.
    #[test]
    fn large_chunks_after_held_tails_equal_whole_scrub(
        filler in filler(),
        inserts in proptest::collection::vec(insert_strategy(1200), 1..8),
        cuts in proptest::collection::vec(any::<usize>(), 1..5),
        large in any::<bool>(),
        short in any::<bool>(),
        probed in any::<bool>(),
    ) {
        let fw = pt_firewall(large, short, probed);
        let body = build_body(&filler.repeat(4), &inserts);
        let whole = fw.scrub(&body).into_owned();
        let mut hold = Holdback::new();
        let mut streamed = Vec::new();
        for chunk in split(&body, &cuts, false) {
            let mut out = Pieces::new();
            hold.push_pieces(&fw, Bytes::from(chunk), &mut out);
            out.iter().for_each(|piece| streamed.extend_from_slice(piece));
            prop_assert!(hold.held_len() < 2 * fw.longest_pattern());
        }
        streamed.extend_from_slice(&hold.finish(&fw));
        prop_assert_eq!(&streamed, &whole);
    }

    #[test]
    fn websocket_messages_equal_whole_scrub_whatever_the_framing(
        messages in proptest::collection::vec(
            (any::<bool>(), filler(), proptest::collection::vec(insert_strategy(300), 0..4),
             proptest::collection::vec(0usize..400, 0..5)),
            1..4),
        pings in proptest::collection::vec((0usize..20, 0usize..3), 0..3),
        masked in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
        bytewise in any::<bool>(),
        large in any::<bool>(),
        short in any::<bool>(),
        probed in any::<bool>(),
    ) {
        let fw = pt_firewall(large, short, probed);
        let mask = masked.then_some([0x12, 0x34, 0x56, 0x78]);
        let mut wire = Vec::new();
        let mut expected: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut frame_no = 0usize;
        for (text, filler, inserts, frag_cuts) in &messages {
            let payload = build_body(filler, inserts);
            let opcode = if *text { 1 } else { 2 };
            let pieces = split(&payload, frag_cuts, false);
            for (i, piece) in pieces.iter().enumerate() {
                let fin = i + 1 == pieces.len();
                wire.extend(encode(fin, if i == 0 { opcode } else { 0 }, mask, piece));
                frame_no += 1;
                if fin {
                    expected.push((opcode, fw.scrub(&payload).into_owned()));
                }
                for (at, token) in &pings {
                    if *at == frame_no {
                        let p = format!("ping {}", PT_TOKENS[*token]).into_bytes();
                        wire.extend(encode(true, 9, mask, &p));
                        expected.push((9, fw.scrub(&p).into_owned()));
                    }
                }
            }
        }
        let mut scrubber = fw.clone().websocket_server_to_client();
        let mut out = BytesMut::new();
        for chunk in split(&wire, &cuts, bytewise) {
            scrubber.push(&chunk, &mut out).unwrap();
        }
        prop_assert_eq!(scrubber.buffered(), 0);
        let mut got: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut current: Option<(u8, Vec<u8>)> = None;
        for (fin, opcode, was_masked, _, payload) in decode(&out) {
            prop_assert_eq!(was_masked, masked);
            if opcode >= 8 {
                got.push((opcode, payload));
                continue;
            }
            match (&mut current, opcode) {
                (None, 1 | 2) => current = Some((opcode, payload)),
                (Some((_, buf)), 0) => buf.extend_from_slice(&payload),
                _ => prop_assert!(false, "bad framing: opcode {} ", opcode),
            }
            if fin {
                got.push(current.take().unwrap());
            }
        }
        prop_assert!(current.is_none());
        prop_assert_eq!(&got, &expected);
        for (_, payload) in &got {
            prop_assert_eq!(leaks(payload, pt_guarded(short)), None);
        }
    }
}
