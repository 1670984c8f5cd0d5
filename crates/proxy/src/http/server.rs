//! The HTTP server every listener runs, with the limits and timeouts that protect the proxy from
//! slow or hostile clients.

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

/// The largest request header section accepted; larger ones get 431 (hyper's read buffer limit,
/// which is the header limit because headers must fit in it).
pub const MAX_HEADER_BYTES: usize = 60 * 1024;

/// How long a client may take to send a complete request header section.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The server every HTTP listener runs: HTTP/1.1 and HTTP/2 (prior knowledge or ALPN) on one
/// port, with the header size limit and the header read timeout.
pub fn server() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX));
    builder
}
