//! Narrowed placeholders: `Narrowed::decode` and `verify` on fuzz runs, and
//! `narrow` with fuzz caveats.
//!
//! Input: lines. Line 1: a base62 run to decode as a narrowed placeholder.
//! The other lines: caveats to narrow a fixed placeholder with.
//!
//! Properties: nothing panics; a decoded fuzz run never verifies against the
//! fixed root unless it is that root's own narrowing (a forgery would need
//! the HMAC); `narrow` either refuses or gives a placeholder that decodes,
//! verifies against its root with exactly its caveats, and verifies against
//! no other root; narrowing it again keeps every earlier caveat, in order.
#![no_main]

use airlock_vault_client::{narrow, Narrowed};
use libfuzzer_sys::fuzz_target;

const PREFIX: &str = "miosa-tok-";
const ROOT: &str = "miosa-tok-FuzzRoot0123456789abcdefghij";
const OTHER: &str = "miosa-tok-FuzzOther0123456789abcdefghi";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let run = lines.next().unwrap_or("");
    if let Ok(n) = Narrowed::decode(run) {
        // Whatever it decodes to, only the real chain verifies.
        let _ = n.verify(OTHER);
        if n.verify(ROOT).is_ok() {
            panic!("a fuzz run verified against the root: {run:?}");
        }
    }
    let caveats: Vec<String> = lines.map(str::to_owned).collect();
    let Ok(narrowed) = narrow(PREFIX, ROOT, &caveats) else {
        return;
    };
    let n = Narrowed::decode(narrowed.strip_prefix(PREFIX).expect("the prefix"))
        .expect("a narrowing decodes");
    let parsed = n.verify(ROOT).expect("a narrowing verifies against its root");
    assert_eq!(parsed.len(), caveats.len());
    assert!(n.verify(OTHER).is_err(), "verified against another root");
    if let Ok(again) = narrow(PREFIX, &narrowed, &["uses=1".to_owned()]) {
        let m = Narrowed::decode(again.strip_prefix(PREFIX).unwrap()).unwrap();
        let parsed = m.verify(ROOT).expect("a second narrowing verifies");
        assert_eq!(parsed.len(), caveats.len() + 1, "a caveat was lost");
    }
});
