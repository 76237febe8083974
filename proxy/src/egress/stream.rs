//! What the dialler hands out: an upstream socket that holds its descriptor
//! in the proxy's budget until it is closed.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::limits::Slot;

/// An upstream TCP connection and its descriptor in the budget (given back
/// when the connection is dropped, in the pool or out of it).
#[derive(Debug)]
pub struct UpstreamStream {
    stream: TcpStream,
    _descriptor: Option<Slot>,
}

impl UpstreamStream {
    pub(crate) fn new(stream: TcpStream, descriptor: Option<Slot>) -> Self {
        Self {
            stream,
            _descriptor: descriptor,
        }
    }

    /// A socket the budget does not count (tests that dial by hand).
    #[cfg(test)]
    pub(crate) fn uncounted(stream: TcpStream) -> Self {
        Self::new(stream, None)
    }

    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
