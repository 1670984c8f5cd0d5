//! The monitoring port's listener: at most [`MAX_CONNECTIONS`] connections (a semaphore
//! permit travels with each and is returned when it closes; accepting waits while none is
//! free), TCP keepalive on each, and a read deadline: a connection that sends nothing for
//! [`READ_IDLE_TIMEOUT`] while the server waits for request bytes (headers or body) is closed,
//! so slow or silent clients cannot hold the port's slots.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tracing::warn;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;

/// How long a read may wait for the client's next bytes.
pub const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle time before TCP keepalive probes start.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Pause after a failed `accept` (out of file descriptors).
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// A bounded TCP listener for `axum::serve`.
pub struct BoundedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
}

impl BoundedListener {
    /// Wraps `listener`.
    pub fn new(listener: TcpListener) -> Self {
        BoundedListener { listener, permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)) }
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // The semaphore is never closed, so acquiring only waits.
            let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await else { continue };
            match self.listener.accept().await {
                Ok((tcp, peer)) => {
                    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
                    let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
                    let deadline = Box::pin(tokio::time::sleep(READ_IDLE_TIMEOUT));
                    return (Guarded { tcp, _permit: permit, deadline }, peer);
                }
                Err(error) => {
                    warn!(%error, "monitoring accept failed");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// A connection holding its permit, with a read deadline.
pub struct Guarded {
    tcp: TcpStream,
    _permit: OwnedSemaphorePermit,
    deadline: Pin<Box<Sleep>>,
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.tcp).poll_read(cx, buf) {
            Poll::Ready(result) => {
                self.deadline.as_mut().reset(Instant::now() + READ_IDLE_TIMEOUT);
                Poll::Ready(result)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client sent nothing in time")))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
