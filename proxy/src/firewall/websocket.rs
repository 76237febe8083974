//! WebSocket frames from the server, scrubbed (RFC 6455).
//!
//! Data messages are one stream each: their payload goes through a
//! [`Holdback`] across continuation frames, so a token split over fragments is
//! found. A frame's scrubbed part goes out as soon as the frame is read (large
//! frames even before), the held tail rides on the next fragment; an
//! intermediary may re-fragment a message when no extension is negotiated
//! (RFC 6455 §5.4). Control frames are scrubbed whole.

use std::io;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Firewall, FirewallError, Holdback};

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Data frames up to this payload are read whole before they are forwarded
/// (keeping the server's framing when nothing is held); longer ones are
/// forwarded in pieces as their bytes arrive, bounding memory.
pub const WHOLE_FRAME_MAX: u64 = 64 * 1024;

const CONTROL_MAX: usize = 125;

/// What was wrong with the frames the server sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WsViolation {
    #[error("a control frame is fragmented")]
    FragmentedControl,
    #[error("a control frame is longer than 125 bytes")]
    ControlTooLong,
    #[error("a continuation frame came without a message to continue")]
    OrphanContinuation,
    #[error("a new message began before the previous one finished")]
    UnfinishedMessage,
    #[error("a frame length has its most significant bit set")]
    LengthOverflow,
}

#[derive(Clone, Copy)]
struct Head {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
}

/// The data message being relayed.
struct Message {
    opcode: u8,
    /// Its first frame went out: later ones are continuations.
    started: bool,
    hold: Holdback,
}

/// Transforms the server→client byte stream of an upgraded connection.
pub struct WsScrubber {
    fw: Arc<Firewall>,
    input: BytesMut,
    /// The frame whose payload is being read, and how much of it is left.
    frame: Option<(Head, u64)>,
    /// Payload bytes of the current frame already consumed (the mask offset).
    offset: u64,
    message: Option<Message>,
    scratch: BytesMut,
}

impl Firewall {
    /// A scrubber for the frames a server sends after a `101`.
    pub fn websocket_server_to_client(self: Arc<Self>) -> WsScrubber {
        WsScrubber {
            fw: self,
            input: BytesMut::new(),
            frame: None,
            offset: 0,
            message: None,
            scratch: BytesMut::new(),
        }
    }
}

impl WsScrubber {
    /// Bytes read but not yet forwarded (incomplete frames and held tails).
    pub fn buffered(&self) -> usize {
        self.input.len() + self.message.as_ref().map_or(0, |m| m.hold.held_len())
    }

    /// Feeds bytes from the server; appends whole frames for the client to
    /// `out`. After an error the connection must be closed: nothing more may
    /// be forwarded.
    pub fn push(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), FirewallError> {
        self.input.extend_from_slice(input);
        loop {
            let (head, left) = match self.frame {
                Some(frame) => frame,
                None => match parse_head(&self.input)? {
                    None => return Ok(()),
                    Some((head, used)) => {
                        self.input.advance(used);
                        self.start_frame(head)?;
                        self.offset = 0;
                        self.frame = Some((head, head.len));
                        (head, head.len)
                    }
                },
            };
            let available = self.input.len() as u64;
            if head.opcode >= OP_CLOSE {
                if available < left {
                    return Ok(());
                }
                let mut payload = self.input.split_to(left as usize);
                unmask(&mut payload, head.mask, 0);
                self.control(head, &payload, out);
                self.frame = None;
                continue;
            }
            if available < left && (head.len <= WHOLE_FRAME_MAX || available == 0) {
                return Ok(());
            }
            let take = left.min(available);
            let mut piece = self.input.split_to(take as usize);
            unmask(&mut piece, head.mask, self.offset);
            self.offset += take;
            let last = take == left;
            let finished = last && head.fin;
            let message = self
                .message
                .as_mut()
                .expect("a data frame always has its message");
            self.scratch.clear();
            message
                .hold
                .push_into(&self.fw, &piece, finished, &mut self.scratch);
            if finished || !self.scratch.is_empty() {
                let opcode = if message.started {
                    OP_CONTINUATION
                } else {
                    message.opcode
                };
                message.started = true;
                write_frame(out, finished, opcode, head.mask, &self.scratch);
            }
            if last {
                self.frame = None;
                if head.fin {
                    self.message = None;
                }
            } else {
                self.frame = Some((head, left - take));
                return Ok(());
            }
        }
    }

    fn start_frame(&mut self, head: Head) -> Result<(), FirewallError> {
        match head.opcode {
            OP_TEXT | OP_BINARY => {
                if self.message.is_some() {
                    return Err(FirewallError::WsProtocol(WsViolation::UnfinishedMessage));
                }
                self.message = Some(Message {
                    opcode: head.opcode,
                    started: false,
                    hold: Holdback::new(),
                });
            }
            OP_CONTINUATION if self.message.is_none() => {
                return Err(FirewallError::WsProtocol(WsViolation::OrphanContinuation));
            }
            OP_CONTINUATION => {}
            OP_CLOSE | OP_PING | OP_PONG => {
                if !head.fin {
                    return Err(FirewallError::WsProtocol(WsViolation::FragmentedControl));
                }
                if head.len > CONTROL_MAX as u64 {
                    return Err(FirewallError::WsProtocol(WsViolation::ControlTooLong));
                }
            }
            other => return Err(FirewallError::WsReservedOpcode(other)),
        }
        Ok(())
    }

    /// A control frame, scrubbed whole and cut to 125 bytes if a longer
    /// placeholder grew it (a close reason at a character boundary).
    fn control(&self, head: Head, payload: &[u8], out: &mut BytesMut) {
        let mut clean = if head.opcode == OP_CLOSE && payload.len() >= 2 {
            let mut clean = payload[..2].to_vec();
            clean.extend_from_slice(&self.fw.scrub(&payload[2..]));
            clean
        } else {
            self.fw.scrub(payload).into_owned()
        };
        if clean.len() > CONTROL_MAX {
            let mut cut = CONTROL_MAX;
            if head.opcode == OP_CLOSE {
                while cut > 2 && std::str::from_utf8(&clean[2..cut]).is_err() {
                    cut -= 1;
                }
            }
            clean.truncate(cut);
        }
        write_frame(out, true, head.opcode, head.mask, &clean);
    }

    /// Relays server→client until the server's end closes, then shuts the
    /// client side down. Returns the bytes written to the client. On a frame
    /// that cannot be scrubbed, sends the client a close (1008) and fails
    /// with `InvalidData`; nothing unscrubbed is forwarded.
    pub async fn pump<R, W>(mut self, mut from_server: R, mut to_client: W) -> io::Result<u64>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = BytesMut::new();
        let mut written = 0u64;
        loop {
            let n = from_server.read(&mut buf).await?;
            if n == 0 {
                to_client.shutdown().await?;
                return Ok(written);
            }
            let result = self.push(&buf[..n], &mut out);
            if let Err(err) = &result {
                let mut close = 1008u16.to_be_bytes().to_vec();
                close.extend_from_slice(close_reason(err));
                write_frame(&mut out, true, OP_CLOSE, None, &close);
            }
            if !out.is_empty() {
                to_client.write_all(&out).await?;
                to_client.flush().await?;
                written += out.len() as u64;
                out.clear();
            }
            if let Err(err) = result {
                return Err(io::Error::new(io::ErrorKind::InvalidData, err));
            }
        }
    }
}

fn close_reason(err: &FirewallError) -> &'static [u8] {
    match err {
        FirewallError::WsExtension { .. } => b"airlock cannot scrub compressed frames",
        _ => b"airlock refused a malformed frame",
    }
}

/// A frame header, or `None` until enough bytes arrived. Extension bits are
/// refused as soon as the first byte is seen.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, FirewallError> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    let rsv = (b0 >> 4) & 0x7;
    if rsv != 0 {
        return Err(FirewallError::WsExtension { rsv });
    }
    let Some(&b1) = buf.get(1) else {
        return Ok(None);
    };
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(FirewallError::WsProtocol(WsViolation::LengthOverflow));
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    let mask = if masked {
        let Some(key) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some(key.try_into().expect("4 bytes"))
    } else {
        None
    };
    Ok(Some((
        Head {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0F,
            mask,
            len,
        },
        at,
    )))
}

fn unmask(data: &mut [u8], mask: Option<[u8; 4]>, offset: u64) {
    if let Some(key) = mask {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= key[((offset + i as u64) % 4) as usize];
        }
    }
}

/// Writes one frame with the shortest length form; masked with `mask` when
/// the server masked its frame.
fn write_frame(out: &mut BytesMut, fin: bool, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) {
    out.reserve(payload.len() + 14);
    out.extend_from_slice(&[if fin { 0x80 } else { 0 } | opcode]);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        len @ 0..=125 => out.extend_from_slice(&[mask_bit | len as u8]),
        len @ 126..=0xFFFF => {
            out.extend_from_slice(&[mask_bit | 126]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.extend_from_slice(&[mask_bit | 127]);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    let start = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[start..], mask, 0);
}

#[cfg(test)]
pub(crate) mod test_frames {
    //! A plain frame codec for tests, independent of the scrubber.
    use super::*;

    pub fn encode(fin: bool, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        write_frame(&mut out, fin, opcode, mask, payload);
        out.to_vec()
    }

    /// `(fin, opcode, masked, length form, payload)` for each frame.
    pub fn decode(mut data: &[u8]) -> Vec<(bool, u8, bool, u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while !data.is_empty() {
            let (head, used) = parse_head(data).unwrap().expect("whole frames");
            let form = data[1] & 0x7F;
            let form = if form < 126 {
                7
            } else if form == 126 {
                16
            } else {
                64
            };
            let mut payload = data[used..used + head.len as usize].to_vec();
            unmask(&mut payload, head.mask, 0);
            frames.push((head.fin, head.opcode, head.mask.is_some(), form, payload));
            data = &data[used + head.len as usize..];
        }
        frames
    }
}
