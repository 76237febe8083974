//! Request bodies sent compressed: decoded (with a cap, so a bomb is refused
//! rather than filling memory), swapped, and encoded again the same way.

use std::io::{Read, Write};

use bytes::Bytes;
use http::header::{self, HeaderMap};

use crate::error::ProxyError;

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
        "" | "identity" => None,
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
    let reader: Box<dyn Read + '_> = match encoding {
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(data)),
        Encoding::Deflate => Box::new(DeflateReader::new(data)),
        Encoding::Brotli => Box::new(brotli::Decompressor::new(data, 8192)),
        Encoding::Zstd => Box::new(
            zstd::stream::read::Decoder::new(data)
                .map_err(|e| ProxyError::BadRequest(format!("invalid zstd request body: {e}")))?,
        ),
    };
    let mut out = Vec::with_capacity(data.len().saturating_mul(3).min(cap));
    let read = reader
        .take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            ProxyError::BadRequest(format!("invalid {} request body: {e}", encoding.as_str()))
        })?;
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
