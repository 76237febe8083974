//! Request bodies sent compressed: decoded (with a cap, so a bomb is refused
//! rather than filling memory), swapped, and encoded again the same way.

use std::io::{Read, Write};

use bytes::Bytes;
use http::header::{self, HeaderMap};

use crate::error::ProxyError;
use crate::limits::{Budget, Reservation};

/// Bytes read from a decoder at a time.
const fn chunk_len() -> usize {
    64 * 1024
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
            Self::Brotli => "br",
            Self::Zstd => "zstd",
        }
    }
}

/// The body's single content coding. `Ok(None)` for none/identity; an error
/// for codings the proxy cannot look inside (it will not forward unseen bytes).
pub fn encoding_of(headers: &HeaderMap) -> Result<Option<Encoding>, ProxyError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
    Ok(match value.as_str() {
        // S3's chunk framing (`aws-chunked`): the data in plain sight
        // between chunk headers, left as it is (crate::signing).
        "" | "identity" | "aws-chunked" => None,
        "gzip" | "x-gzip" => Some(Encoding::Gzip),
        "deflate" => Some(Encoding::Deflate),
        "br" => Some(Encoding::Brotli),
        "zstd" => Some(Encoding::Zstd),
        other => {
            return Err(ProxyError::BadRequest(format!(
                "request Content-Encoding {other:?} is not supported (gzip, deflate, br, zstd are)"
            )))
        }
    })
}

/// Decodes at most `cap` bytes; more is a 413, corrupt input a 400.
pub fn decode(encoding: Encoding, data: &[u8], cap: usize) -> Result<Vec<u8>, ProxyError> {
    decode_inner(encoding, data, cap, None)
}

/// As [`decode`], with the memory it allocates taken from `budget` into
/// `held` as it grows; a spent budget is a 503.
pub fn decode_budgeted(
    encoding: Encoding,
    data: &[u8],
    cap: usize,
    budget: &Budget,
    held: &mut Reservation,
) -> Result<Vec<u8>, ProxyError> {
    decode_inner(encoding, data, cap, Some((budget, held)))
}

/// Seconds a client is asked to wait when the decompression budget is spent.
const BUDGET_RETRY_AFTER: u64 = 1;

fn decode_inner(
    encoding: Encoding,
    data: &[u8],
    cap: usize,
    mut budget: Option<(&Budget, &mut Reservation)>,
) -> Result<Vec<u8>, ProxyError> {
    let reader: Box<dyn Read + '_> = match encoding {
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(data)),
        Encoding::Deflate => Box::new(DeflateReader::new(data)),
        Encoding::Brotli => Box::new(brotli::Decompressor::new(data, 8192)),
        Encoding::Zstd => Box::new(
            zstd::stream::read::Decoder::new(data)
                .map_err(|e| ProxyError::BadRequest(format!("invalid zstd request body: {e}")))?,
        ),
    };
    let invalid = |e: std::io::Error| {
        ProxyError::BadRequest(format!("invalid {} request body: {e}", encoding.as_str()))
    };
    let mut reader = reader.take(cap as u64 + 1);
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; chunk_len()];
    // Capacity grows geometrically and each growth is taken from the budget
    // first, so what the budget counts is what is allocated.
    let mut grow_to = |out: &mut Vec<u8>, needed: usize| -> Result<(), ProxyError> {
        let mut target = out
            .capacity()
            .saturating_mul(2)
            .min(cap + chunk_len())
            .max(needed);
        if let Some((budget, held)) = budget.as_mut() {
            // Doubling first; near the limit, one chunk at a time, so a body
            // that fits the budget is not refused for the doubling's slack.
            let step = needed.saturating_add(chunk_len()).min(target);
            if !budget.grow(held, target - out.capacity()) {
                target = step;
                if !budget.grow(held, target - out.capacity()) {
                    return Err(ProxyError::DecompressionBudget {
                        budget: budget.limit(),
                        retry_after: BUDGET_RETRY_AFTER,
                    });
                }
            }
        }
        out.reserve_exact(target - out.len());
        Ok(())
    };
    grow_to(&mut out, data.len().saturating_mul(3).min(cap).max(1))?;
    let read = loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break out.len(),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(invalid(e)),
        };
        let needed = out.len() + n;
        if needed > out.capacity() {
            grow_to(&mut out, needed)?;
        }
        out.extend_from_slice(&chunk[..n]);
    };
    if read > cap {
        return Err(ProxyError::BodyTooLarge(format!(
            "the {} request body decodes to more than {cap} bytes",
            encoding.as_str()
        )));
    }
    Ok(out)
}

pub fn encode(encoding: Encoding, data: &[u8]) -> Result<Bytes, ProxyError> {
    let io = |e: std::io::Error| ProxyError::Internal(format!("re-encoding the request body: {e}"));
    let out = match encoding {
        Encoding::Gzip => {
            let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            w.write_all(data).map_err(io)?;
            w.finish().map_err(io)?
        }
        Encoding::Deflate => {
            let mut w = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            w.write_all(data).map_err(io)?;
            w.finish().map_err(io)?
        }
        Encoding::Brotli => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 8192, 5, 22);
                w.write_all(data).map_err(io)?;
            }
            out
        }
        Encoding::Zstd => zstd::stream::encode_all(data, 3).map_err(io)?,
    };
    Ok(Bytes::from(out))
}

/// HTTP's `deflate` is zlib-wrapped, but some clients send raw deflate.
struct DeflateReader<'a> {
    inner: Box<dyn Read + 'a>,
}

impl<'a> DeflateReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        // A zlib header's first byte has compression method 8 and a valid check.
        let zlib = data.len() >= 2
            && data[0] & 0x0f == 8
            && (u16::from(data[0]) << 8 | u16::from(data[1])) % 31 == 0;
        let inner: Box<dyn Read + 'a> = if zlib {
            Box::new(flate2::read::ZlibDecoder::new(data))
        } else {
            Box::new(flate2::read::DeflateDecoder::new(data))
        };
        Self { inner }
    }
}

impl Read for DeflateReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_encoding() {
        let data = b"{\"token\":\"miosa-tok-abc\"}".repeat(10);
        for enc in [
            Encoding::Gzip,
            Encoding::Deflate,
            Encoding::Brotli,
            Encoding::Zstd,
        ] {
            let packed = encode(enc, &data).unwrap();
            assert_eq!(decode(enc, &packed, 1 << 20).unwrap(), data, "{enc:?}");
        }
    }

    #[test]
    fn decoding_takes_its_memory_from_the_shared_budget() {
        let zeros = vec![0u8; 4 << 20];
        let bomb = encode(Encoding::Gzip, &zeros).unwrap();
        let budget = Budget::new(6 << 20);
        let mut first = budget.reservation();
        let decoded = decode_budgeted(Encoding::Gzip, &bomb, 8 << 20, &budget, &mut first).unwrap();
        assert_eq!(decoded, zeros);
        assert!(
            first.bytes() >= decoded.capacity(),
            "what is allocated is counted"
        );
        assert!(first.bytes() <= 6 << 20);
        // A second one while the first is held: over the budget, a 503.
        let mut second = budget.reservation();
        let err =
            decode_budgeted(Encoding::Gzip, &bomb, 8 << 20, &budget, &mut second).unwrap_err();
        assert!(
            matches!(err, ProxyError::DecompressionBudget { .. }),
            "{err}"
        );
        assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        drop(second);
        drop(first);
        drop(decoded);
        assert_eq!(budget.used(), 0, "everything is given back");
        let mut again = budget.reservation();
        assert!(decode_budgeted(Encoding::Gzip, &bomb, 8 << 20, &budget, &mut again).is_ok());
    }

    #[test]
    fn a_bomb_is_refused_and_garbage_is_a_bad_request() {
        let zeros = vec![0u8; 8 << 20];
        let bomb = encode(Encoding::Gzip, &zeros).unwrap();
        assert!(bomb.len() < 64 * 1024);
        let err = decode(Encoding::Gzip, &bomb, 1 << 20).unwrap_err();
        assert!(matches!(err, ProxyError::BodyTooLarge(_)), "{err}");
        let truncated = &encode(Encoding::Gzip, b"hello world, hello world").unwrap()[..10];
        assert!(matches!(
            decode(Encoding::Gzip, truncated, 1 << 20).unwrap_err(),
            ProxyError::BadRequest(_)
        ));
    }
}
