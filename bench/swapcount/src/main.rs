//! Feeds a fixed 64 MiB body through airlock's streaming request-body swapper
//! (or its response scrubber) in 16 KiB chunks, as TLS records arrive, and
//! prints what came out. Run under `valgrind --tool=callgrind`; the bench
//! divides the instruction count by the body size.
//!
//! usage: airlock-swapcount swap|scrub|copy [MiB] [placeholder every N bytes] [tokens guarded]
//! (`scrub` with more than one token guards fillers of the same length too:
//! the firewall's cost as a sandbox's token count grows.)
//! (`copy` drains the same body untouched: the baseline to subtract.
//! SWAPCOUNT_VERIFY=1 also counts the real tokens that came out.)

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use airlock_proxy::body::{BoxError, ProxyBody};
use airlock_proxy::body_swap::{streaming, StreamMode};
use airlock_proxy::firewall::{Firewall, Guarded};
use airlock_proxy::swap::{Context, Scanner, Swapper};
use airlock_vault_client::{
    HostPattern, SandboxId, SecretString, StaticSecret, StaticSecrets, SwapLocation, TokenSource,
};
use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

const PLACEHOLDER: &str = "miosa-tok-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const REAL: &str = "real-secret-value-123";
const CHUNK: usize = 16 * 1024;

fn body(total: usize, every: usize) -> Vec<Bytes> {
    // Text, so the swapper may re-frame it: "lorem ipsum…" with a placeholder
    // every `every` bytes (0 = none).
    let filler = b"lorem ipsum dolor sit amet, consectetur adipiscing elit. ";
    let mut data = Vec::with_capacity(total);
    while data.len() < total {
        if every > 0 && data.len() % every < filler.len() && data.len() >= every {
            data.extend_from_slice(PLACEHOLDER.as_bytes());
            data.push(b' ');
        }
        data.extend_from_slice(filler);
    }
    data.truncate(total);
    data.chunks(CHUNK).map(Bytes::copy_from_slice).collect()
}

fn as_body(chunks: Vec<Bytes>) -> ProxyBody {
    let stream = futures_util::stream::iter(
        chunks.into_iter().map(|b| Ok::<_, BoxError>(Frame::data(b))),
    );
    StreamBody::new(stream).boxed_unsync()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("swap");
    let mib: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let every: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(65536);
    let guarded: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    let chunks = body(mib << 20, every);
    let input: usize = chunks.iter().map(Bytes::len).sum();

    let secrets = StaticSecrets::new(
        "miosa-tok-",
        SandboxId::default_sandbox(),
        vec![StaticSecret {
            name: "API_TOKEN".into(),
            value: SecretString::from(REAL.to_owned()),
            placeholder: PLACEHOLDER.into(),
            hosts: vec![HostPattern::parse("bench.test").unwrap()],
            swap_in: BTreeSet::from([SwapLocation::Header, SwapLocation::Body]),
            on_foreign_body: Default::default(),
            rules: Default::default(),
            signing: None,
            inject_when_absent: None,
        }],
    );
    let tokens: Arc<dyn TokenSource> = Arc::new(secrets);
    let out_body = match mode {
        "swap" => {
            let scanner = Arc::new(Scanner::new(tokens.placeholder_prefix()));
            let swapper = Swapper::new(tokens, scanner, SandboxId::default_sandbox(), "bench.test");
            streaming(VecDeque::new(), as_body(chunks), swapper, Context::Raw, StreamMode::Swap)
        }
        "scrub" => {
            // The response firewall, as every intercepted answer meets it.
            let fillers = (1..guarded).map(|i| Guarded {
                token: SecretString::from(format!("filler-secret-{i:08}-{:x}", i * 7919)),
                placeholder: format!("miosa-tok-F{i:031}"),
            });
            let firewall = Firewall::new(
                std::iter::once(Guarded {
                    token: SecretString::from(REAL.to_owned()),
                    placeholder: PLACEHOLDER.to_owned(),
                })
                .chain(fillers),
            )
            .expect("tokens");
            eprintln!(
                "firewall: {} tokens, {} spellings, {} KiB",
                firewall.token_count(),
                firewall.pattern_count(),
                firewall.memory_usage() / 1024
            );
            Arc::new(firewall).body(as_body(chunks))
        }
        _ => as_body(chunks),
    };
    // Counting tokens costs instructions: only when asked (not under callgrind).
    let verify = std::env::var_os("SWAPCOUNT_VERIFY").is_some();
    let mut out_body = out_body;
    let (mut bytes, mut frames, mut reals) = (0usize, 0usize, 0usize);
    while let Some(frame) = out_body.frame().await {
        let frame = frame.expect("body frame");
        if let Ok(data) = frame.into_data() {
            bytes += data.len();
            frames += 1;
            if verify {
                reals += data.windows(REAL.len()).filter(|w| *w == REAL.as_bytes()).count();
            }
        }
    }
    println!("{{\"mode\":\"{mode}\",\"input_bytes\":{input},\"output_bytes\":{bytes},\"frames\":{frames},\"tokens_out\":{reals}}}");
}
