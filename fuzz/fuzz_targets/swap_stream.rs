//! Streaming body swap: for any body and any chunking, the stream gives
//! exactly what a whole-buffer `swap_bytes` gives (both Ok with the same
//! bytes, or both the same error), what it gives is the reference swap, and
//! a body is only let through when no placeholder in it is bound to the host
//! but kept out of bodies (unknown ones and ones bound elsewhere are inert
//! text, DESIGN.md step 4), and, when the body keeps its length, when it
//! holds no placeholder bound to the host at all.
//!
//! Input: [flags] [n] [n chunk lengths] [body...]
//!   flags bits 0-1: context (0 raw, 1 JSON, 2 URL/form, 3 raw)
//!         bit 2: StreamMode::RefuseAny instead of Swap
//!         bit 3: end the body with trailers
//!         bits 4-5: prefix (see PREFIXES)
//!         bit 6: one-byte chunks (chunk lengths ignored)
//!         bit 7: the first half of the chunks are the already-read prefix
#![no_main]

use std::collections::VecDeque;

use airlock_fuzz::{
    block_on, has_nested_prefix, ignoring, leaks_a_token, reference_swap, refused_placeholder,
    scanner, swapper, Input, RefContext, PREFIXES, RANDOM_HEADER_ONLY, RANDOM_OK,
};
use airlock_proxy::body::{BoxError, ProxyBody};
use airlock_proxy::body_swap::{streaming, StreamMode};
use airlock_proxy::swap::Context;
use airlock_proxy::ProxyError;
use airlock_vault_client::SwapLocation;
use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use libfuzzer_sys::fuzz_target;

fn body_of(chunks: Vec<Bytes>, trailers: Option<HeaderMap>) -> ProxyBody {
    let frames = chunks
        .into_iter()
        .map(Frame::data)
        .chain(trailers.map(Frame::trailers))
        .map(Ok::<_, BoxError>);
    StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let (context, ref_context) = match flags & 3 {
        1 => (Context::Json, RefContext::Json),
        2 => (Context::Url, RefContext::Url),
        _ => (Context::Raw, RefContext::Raw),
    };
    let mode = if flags & 4 != 0 {
        StreamMode::RefuseAny
    } else {
        StreamMode::Swap
    };
    let with_trailers = flags & 8 != 0;
    let prefix = PREFIXES[usize::from(flags >> 4) & 3];
    let one_byte_chunks = flags & 64 != 0;
    let split_prefix = flags & 128 != 0;
    let n = usize::from(input.byte() % 33);
    let lengths: Vec<usize> = input.take(n).iter().map(|&b| usize::from(b)).collect();
    let body = input.rest();
    if ignoring("nested-prefix") && has_nested_prefix(prefix, body) {
        return;
    }

    let mut chunks = Vec::new();
    if one_byte_chunks {
        chunks.extend(body.iter().map(|b| Bytes::copy_from_slice(&[*b])));
    } else {
        // Zero-length chunks are kept: empty DATA frames happen.
        let mut at = 0;
        for len in lengths {
            let end = (at + len).min(body.len());
            chunks.push(Bytes::copy_from_slice(&body[at..end]));
            at = end;
        }
        chunks.push(Bytes::copy_from_slice(&body[at..]));
    }
    let already_read: VecDeque<Bytes> = if split_prefix {
        chunks.drain(..chunks.len() / 2).collect()
    } else {
        VecDeque::new()
    };
    let trailers = with_trailers.then(|| {
        let mut t = HeaderMap::new();
        t.insert("x-checksum", "fuzz".parse().unwrap());
        t
    });

    let whole: Result<Vec<u8>, String> = block_on(async {
        match mode {
            StreamMode::Swap => swapper(prefix)
                .swap_bytes(body, SwapLocation::Body, context)
                .await
                .map(|out| out.unwrap_or_else(|| body.to_vec()))
                .map_err(|e| e.to_string()),
            // A body that keeps its length passes inert placeholders and
            // refuses one that would be swapped.
            StreamMode::RefuseAny => {
                let mut swap = swapper(prefix);
                let (found, _) = scanner(prefix).scan(body, true);
                match swap.body_needs_swap(&found).await {
                    Ok(false) => Ok(body.to_vec()),
                    Ok(true) => Err(ProxyError::BodyNotSwappable.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    });

    let streamed = block_on(async {
        streaming(
            already_read,
            body_of(chunks, trailers.clone()),
            swapper(prefix),
            context,
            mode,
        )
        .collect()
        .await
    });
    let (streamed, got_trailers) = match streamed {
        Ok(c) => {
            let t = c.trailers().cloned();
            (Ok(c.to_bytes().to_vec()), t)
        }
        Err(e) => (Err(e.to_string()), None),
    };

    assert_eq!(
        streamed.as_ref().map(|b| String::from_utf8_lossy(b)),
        whole.as_ref().map(|b| String::from_utf8_lossy(b)),
        "streamed swap differs from whole-buffer swap"
    );

    match &streamed {
        Ok(out) => {
            let expected = match mode {
                StreamMode::Swap => reference_swap(prefix, body, ref_context),
                StreamMode::RefuseAny => body.to_vec(),
            };
            assert_eq!(
                String::from_utf8_lossy(out),
                String::from_utf8_lossy(&expected),
                "swap differs from the reference"
            );
            // An accepted body holds no placeholder bound here but kept out
            // of bodies (RANDOM_OK was swapped, as the reference shows; one
            // unknown or bound elsewhere is inert text, passed unchanged), and
            // none bound here at all when nothing may change size.
            let left = match mode {
                StreamMode::Swap => refused_placeholder(prefix, body, &[RANDOM_HEADER_ONLY]),
                StreamMode::RefuseAny => {
                    refused_placeholder(prefix, body, &[RANDOM_OK, RANDOM_HEADER_ONLY])
                }
            };
            assert!(
                left.is_none(),
                "a body holding a placeholder that must be refused was let through: {left:?} in {:?}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(got_trailers, trailers, "trailers lost or changed");
        }
        Err(e) => assert!(!leaks_a_token(e.as_bytes()), "error shows a token: {e}"),
    }
});
