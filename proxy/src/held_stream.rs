//! A socket that carries what its connection holds (a descriptor in the
//! budget, a place under `max_connections`) for exactly as long as the
//! socket lives, wherever it is handed: into the upstream pool, or from the
//! HTTP server to a tunnel or interception after a CONNECT.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP connection and `G`, dropped with it.
#[derive(Debug)]
pub struct HeldStream<G> {
    stream: TcpStream,
    _held: G,
}

impl<G> HeldStream<G> {
    pub(crate) fn new(stream: TcpStream, held: G) -> Self {
        Self {
            stream,
            _held: held,
        }
    }

    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }
}

impl<G: Unpin> AsyncRead for HeldStream<G> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<G: Unpin> AsyncWrite for HeldStream<G> {
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
