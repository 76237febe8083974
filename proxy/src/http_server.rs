//! hyper's server settings for the sandbox's side, in one place: the plain
//! listener (HTTP/1.1) and intercepted connections (HTTP/1.1 or HTTP/2) take
//! the same limits from [`ProxySettings`].

use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

use crate::metrics::{Metrics, ReasonLabel};
use crate::settings::ProxySettings;

/// The HTTP/1.1 limits, for hyper's two builder types (the plain one and
/// the auto builder's HTTP/1.1 half) that share no trait.
macro_rules! http1_limits {
    ($builder:expr, $settings:expr) => {
        $builder
            .timer(TokioTimer::new())
            .header_read_timeout($settings.header_read_timeout)
            .max_buf_size(max_buf_size($settings))
            .max_headers($settings.max_headers)
    };
}

/// HTTP/1.1 with the proxy's header limits and timeouts.
pub(crate) fn http1(settings: &ProxySettings) -> http1::Builder {
    let mut builder = http1::Builder::new();
    http1_limits!(builder, settings);
    builder
}

/// HTTP/1.1 or HTTP/2 (by ALPN or preface), both with the proxy's limits;
/// HTTP/2 accepts extended CONNECT (RFC 8441 WebSocket).
pub(crate) fn auto(settings: &ProxySettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    http1_limits!(builder.http1(), settings);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(settings.max_header_bytes as u32)
        .enable_connect_protocol()
        .adaptive_window(true);
    builder
}

/// For a connection over `max_connections`: one request read quickly, then closed.
pub(crate) fn http1_busy(settings: &ProxySettings, header_timeout: Duration) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(false)
        .header_read_timeout(settings.header_read_timeout.min(header_timeout))
        .max_buf_size(max_buf_size(settings));
    builder
}

/// hyper refuses buffers under 8 KiB.
fn max_buf_size(settings: &ProxySettings) -> usize {
    settings.max_header_bytes.max(8192)
}

/// Limits hyper enforces itself (head size, header-read timeout) show up
/// here; count them so an operator can see them.
pub(crate) fn count_connection_error(metrics: &Metrics, error: &hyper::Error) {
    let reason = if error.is_parse_too_large() {
        "header_too_large"
    } else if error.is_timeout() {
        "header_read_timeout"
    } else if error.is_parse() {
        "malformed_request"
    } else if error.is_incomplete_message() {
        "client_went_away"
    } else {
        return;
    };
    metrics
        .connection_errors
        .get_or_create(&ReasonLabel { reason })
        .inc();
}
