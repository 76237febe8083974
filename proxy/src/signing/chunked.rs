//! `aws-chunked` bodies signed chunk by chunk
//! (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`): each chunk is
//! `SIZE;chunk-signature=SIG\r\nDATA\r\n`, its signature chained from the
//! previous one (the first from the header's). [`ChunkResigner`] checks each
//! chunk against the placeholder key and writes it again signed with the
//! real key: the same size text and data, so the body keeps its length.

use std::collections::VecDeque;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use ring::hmac;

use super::sigv4::{self, Scope};
use crate::body::{BoxError, ProxyBody};

/// The largest chunk read whole before it is signed again (SDKs write 64
/// or 128 KiB; S3's own limit on a part is far above, but one chunk is
/// held in memory here).
pub const MAX_CHUNK: usize = 16 * 1024 * 1024;
const MAX_LINE: usize = 1024;

/// What is wrong with an `aws-chunked` body. Quotes no signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("a chunk header must be HEXSIZE;chunk-signature=SIGNATURE")]
    Header,
    #[error("a chunk is larger than {MAX_CHUNK} bytes")]
    TooLarge,
    #[error("a chunk's data is not followed by CRLF")]
    Framing,
    #[error("the signature of chunk {index} was not made with the placeholder secret access key (or the chunk changed)")]
    Mismatch { index: u64 },
    #[error("a trailing header must be NAME:VALUE, ending with x-amz-trailer-signature")]
    Trailer,
    #[error("the trailer signature was not made with the placeholder secret access key")]
    TrailerMismatch,
    #[error("the body ended before its final chunk")]
    Truncated,
    #[error("bytes after the final chunk")]
    AfterEnd,
}

enum State {
    Header,
    Data {
        size: usize,
        size_text: Vec<u8>,
        signature: String,
    },
    Trailer,
    /// After the trailer signature: the closing empty line.
    Closing,
    Done,
}

/// Checks and re-signs one `aws-chunked` body as it streams.
pub struct ChunkResigner {
    amz_date: String,
    scope: Scope,
    placeholder: hmac::Key,
    real: hmac::Key,
    previous_in: String,
    previous_out: String,
    trailer: bool,
    state: State,
    buf: Vec<u8>,
    trailer_lines: Vec<u8>,
    index: u64,
}

impl ChunkResigner {
    /// `seed_in`: the request's signature as the sandbox made it; `seed_out`:
    /// airlock's. `trailer`: the body ends with signed trailing headers.
    pub fn new(
        amz_date: String,
        scope: Scope,
        placeholder: hmac::Key,
        real: hmac::Key,
        seeds: (String, String),
        trailer: bool,
    ) -> Self {
        Self {
            amz_date,
            scope,
            placeholder,
            real,
            previous_in: seeds.0,
            previous_out: seeds.1,
            trailer,
            state: State::Header,
            buf: Vec::new(),
            trailer_lines: Vec::new(),
            index: 0,
        }
    }

    /// Takes the next bytes of the body; appends what can be sent to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ChunkError> {
        self.buf.extend_from_slice(input);
        let mut start = 0;
        let result = loop {
            match self.step(start, out) {
                Ok(Some(used)) => start += used,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.buf.drain(..start);
        result
    }

    /// The body ended: it must have ended with its final chunk.
    pub fn finish(&self) -> Result<(), ChunkError> {
        match self.state {
            State::Done if self.buf.is_empty() => Ok(()),
            State::Done => Err(ChunkError::AfterEnd),
            _ => Err(ChunkError::Truncated),
        }
    }

    /// One step from `buf[start..]`: the bytes it used, or `None` when it
    /// needs more.
    fn step(&mut self, start: usize, out: &mut Vec<u8>) -> Result<Option<usize>, ChunkError> {
        let input = &self.buf[start..];
        match &self.state {
            State::Header => {
                let Some(line) = line_of(input, ChunkError::Header)? else {
                    return Ok(None);
                };
                let text = std::str::from_utf8(line).map_err(|_| ChunkError::Header)?;
                let (size_text, sig) = text
                    .split_once(";chunk-signature=")
                    .ok_or(ChunkError::Header)?;
                if size_text.is_empty()
                    || size_text.len() > 16
                    || !size_text.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(ChunkError::Header);
                }
                let size = usize::from_str_radix(size_text, 16).map_err(|_| ChunkError::Header)?;
                if size > MAX_CHUNK {
                    return Err(ChunkError::TooLarge);
                }
                let signature = sigv4::parse_signature(sig).map_err(|_| ChunkError::Header)?;
                let used = line.len() + 2;
                self.state = State::Data {
                    size,
                    size_text: size_text.as_bytes().to_vec(),
                    signature,
                };
                Ok(Some(used))
            }
            State::Data {
                size,
                size_text,
                signature,
            } => {
                let size = *size;
                // The final chunk of a body with trailers has no CRLF of its
                // own: the trailing headers follow its header at once.
                let last_with_trailer = size == 0 && self.trailer;
                let need = if last_with_trailer { 0 } else { size + 2 };
                if input.len() < need {
                    return Ok(None);
                }
                let data = &input[..size];
                if !last_with_trailer && &input[size..size + 2] != b"\r\n" {
                    return Err(ChunkError::Framing);
                }
                let expected = sigv4::sign(
                    &self.placeholder,
                    &sigv4::chunk_string_to_sign(
                        &self.amz_date,
                        &self.scope,
                        &self.previous_in,
                        data,
                    ),
                );
                if !sigv4::same_signature(&expected, signature) {
                    return Err(ChunkError::Mismatch { index: self.index });
                }
                let ours = sigv4::sign(
                    &self.real,
                    &sigv4::chunk_string_to_sign(
                        &self.amz_date,
                        &self.scope,
                        &self.previous_out,
                        data,
                    ),
                );
                out.extend_from_slice(size_text);
                out.extend_from_slice(b";chunk-signature=");
                out.extend_from_slice(ours.as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(data);
                if !last_with_trailer {
                    out.extend_from_slice(b"\r\n");
                }
                self.previous_in = signature.clone();
                self.previous_out = ours;
                self.index += 1;
                self.state = match (size, self.trailer) {
                    (0, true) => State::Trailer,
                    (0, false) => State::Done,
                    _ => State::Header,
                };
                Ok(Some(need))
            }
            State::Trailer => {
                let Some(line) = line_of(input, ChunkError::Trailer)? else {
                    return Ok(None);
                };
                let used = line.len() + 2;
                let text = std::str::from_utf8(line).map_err(|_| ChunkError::Trailer)?;
                let (name, value) = text.split_once(':').ok_or(ChunkError::Trailer)?;
                let name = name.trim().to_ascii_lowercase();
                if name == "x-amz-trailer-signature" {
                    let sig =
                        sigv4::parse_signature(value.trim()).map_err(|_| ChunkError::Trailer)?;
                    let expected = sigv4::sign(
                        &self.placeholder,
                        &sigv4::trailer_string_to_sign(
                            &self.amz_date,
                            &self.scope,
                            &self.previous_in,
                            &self.trailer_lines,
                        ),
                    );
                    if !sigv4::same_signature(&expected, &sig) {
                        return Err(ChunkError::TrailerMismatch);
                    }
                    let ours = sigv4::sign(
                        &self.real,
                        &sigv4::trailer_string_to_sign(
                            &self.amz_date,
                            &self.scope,
                            &self.previous_out,
                            &self.trailer_lines,
                        ),
                    );
                    out.extend_from_slice(b"x-amz-trailer-signature:");
                    out.extend_from_slice(ours.as_bytes());
                    out.extend_from_slice(b"\r\n");
                    self.state = State::Closing;
                } else {
                    if name.is_empty() || self.trailer_lines.len() > 8 * MAX_LINE {
                        return Err(ChunkError::Trailer);
                    }
                    // Signed as `name:value\n`.
                    self.trailer_lines.extend_from_slice(name.as_bytes());
                    self.trailer_lines.push(b':');
                    self.trailer_lines
                        .extend_from_slice(value.trim().as_bytes());
                    self.trailer_lines.push(b'\n');
                    out.extend_from_slice(line);
                    out.extend_from_slice(b"\r\n");
                }
                Ok(Some(used))
            }
            State::Closing => {
                if input.len() < 2 {
                    return Ok(None);
                }
                if &input[..2] != b"\r\n" {
                    return Err(ChunkError::Trailer);
                }
                out.extend_from_slice(b"\r\n");
                self.state = State::Done;
                Ok(Some(2))
            }
            State::Done => {
                if input.is_empty() {
                    Ok(None)
                } else {
                    Err(ChunkError::AfterEnd)
                }
            }
        }
    }
}

/// The line at the start of `input` (without CRLF), `None` when its end is
/// not there yet; `err` when it grows past [`MAX_LINE`].
fn line_of(input: &[u8], err: ChunkError) -> Result<Option<&[u8]>, ChunkError> {
    match memchr::memmem::find(input, b"\r\n") {
        Some(end) if end <= MAX_LINE => Ok(Some(&input[..end])),
        Some(_) => Err(err),
        None if input.len() > MAX_LINE => Err(err),
        None => Ok(None),
    }
}

/// `read` then `rest`, each chunk checked and signed again. A chunk that
/// does not verify ends the body with an error: the upstream gets a cut
/// request, never a chunk signed for something the sandbox did not sign.
pub fn resign_stream(read: VecDeque<Bytes>, rest: ProxyBody, resigner: ChunkResigner) -> ProxyBody {
    struct S {
        read: VecDeque<Bytes>,
        rest: ProxyBody,
        resigner: ChunkResigner,
        done: bool,
    }
    let state = S {
        read,
        rest,
        resigner,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            let next = match s.read.pop_front() {
                Some(b) => Some(Ok(Frame::data(b))),
                None => s.rest.frame().await,
            };
            match next {
                None => {
                    s.done = true;
                    return match s.resigner.finish() {
                        Ok(()) => None,
                        Err(e) => Some((Err(BoxError::from(super::SigningError::Chunked(e))), s)),
                    };
                }
                Some(Err(e)) => {
                    s.done = true;
                    return Some((Err(e), s));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let mut out = Vec::with_capacity(data.len() + 128);
                        if let Err(e) = s.resigner.push(&data, &mut out) {
                            s.done = true;
                            return Some((Err(BoxError::from(super::SigningError::Chunked(e))), s));
                        }
                        if !out.is_empty() {
                            return Some((Ok(Frame::data(Bytes::from(out))), s));
                        }
                    }
                    Err(frame) => return Some((Ok(frame), s)),
                },
            }
        }
    });
    StreamBody::new(stream).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::sigv4::{sign, signing_key, Scope};

    fn scope() -> Scope {
        Scope {
            date: "20130524".into(),
            region: "us-east-1".into(),
            service: "s3".into(),
        }
    }
    const DATE: &str = "20130524T000000Z";

    /// An `aws-chunked` body of `chunks` signed with `secret` from `seed`.
    fn encode(secret: &str, seed: &str, chunks: &[&[u8]], trailer: Option<&str>) -> Vec<u8> {
        let key = signing_key(secret, &scope());
        let mut prev = seed.to_owned();
        let mut out = Vec::new();
        for c in chunks.iter().chain(std::iter::once(&&b""[..])) {
            let sig = sign(&key, &sigv4::chunk_string_to_sign(DATE, &scope(), &prev, c));
            out.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", c.len()).as_bytes());
            out.extend_from_slice(c);
            if !(c.is_empty() && trailer.is_some()) {
                out.extend_from_slice(b"\r\n");
            }
            prev = sig;
        }
        if let Some(t) = trailer {
            let sig = sign(
                &key,
                &sigv4::trailer_string_to_sign(DATE, &scope(), &prev, format!("{t}\n").as_bytes()),
            );
            out.extend_from_slice(
                format!("{t}\r\nx-amz-trailer-signature:{sig}\r\n\r\n").as_bytes(),
            );
        }
        out
    }

    fn resigner(trailer: bool) -> ChunkResigner {
        ChunkResigner::new(
            DATE.into(),
            scope(),
            signing_key("placeholder", &scope()),
            signing_key("real", &scope()),
            ("a".repeat(64), "b".repeat(64)),
            trailer,
        )
    }

    fn run(r: &mut ChunkResigner, body: &[u8], piece: usize) -> Result<Vec<u8>, ChunkError> {
        let mut out = Vec::new();
        for p in body.chunks(piece.max(1)) {
            r.push(p, &mut out)?;
        }
        r.finish()?;
        Ok(out)
    }

    #[test]
    fn chunks_signed_with_the_placeholder_come_out_signed_with_the_real_key() {
        let chunks: [&[u8]; 2] = [&[b'x'; 1000], b"tail"];
        for trailer in [None, Some("x-amz-checksum-crc32:AAAAAA==")] {
            let sent = encode("placeholder", &"a".repeat(64), &chunks, trailer);
            let want = encode("real", &"b".repeat(64), &chunks, trailer);
            for piece in [1, 7, 100, sent.len()] {
                let out = run(&mut resigner(trailer.is_some()), &sent, piece).unwrap();
                assert_eq!(out, want, "piece {piece}, trailer {trailer:?}");
                assert_eq!(out.len(), sent.len(), "the length is kept");
            }
        }
    }

    #[test]
    fn a_chunk_signed_otherwise_or_changed_or_cut_is_refused() {
        let chunks: [&[u8]; 2] = [b"hello", b"world"];
        let wrong = encode("not-the-placeholder", &"a".repeat(64), &chunks, None);
        assert_eq!(
            run(&mut resigner(false), &wrong, 64),
            Err(ChunkError::Mismatch { index: 0 })
        );
        let mut changed = encode("placeholder", &"a".repeat(64), &chunks, None);
        let at = memchr::memmem::find(&changed, b"world").unwrap();
        changed[at] = b'W';
        assert_eq!(
            run(&mut resigner(false), &changed, 64),
            Err(ChunkError::Mismatch { index: 1 })
        );
        let sent = encode("placeholder", &"a".repeat(64), &chunks, None);
        assert_eq!(
            run(&mut resigner(false), &sent[..sent.len() - 3], 64),
            Err(ChunkError::Truncated)
        );
        let mut extra = sent.clone();
        extra.extend_from_slice(b"more");
        assert_eq!(
            run(&mut resigner(false), &extra, 64),
            Err(ChunkError::AfterEnd)
        );
        assert_eq!(
            run(&mut resigner(false), b"zz;chunk-signature=00\r\n", 64),
            Err(ChunkError::Header)
        );
        let with_trailer = encode(
            "placeholder",
            &"a".repeat(64),
            &chunks,
            Some("x-amz-checksum-crc32:AAAAAA=="),
        );
        let tampered = String::from_utf8(with_trailer)
            .unwrap()
            .replace("AAAAAA==", "BBBBBB==");
        assert_eq!(
            run(&mut resigner(true), tampered.as_bytes(), 64),
            Err(ChunkError::TrailerMismatch)
        );
    }
}
