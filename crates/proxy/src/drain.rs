//! Graceful shutdown: one signal tells every listener to stop accepting; each then waits for
//! its in-flight connections, up to the drain deadline, before its task returns.
//!
//! The signal ([`channel`], [`Trigger`], [`Shutdown`]) is paymesh-lifecycle's, shared with
//! `paymesh up`; the accept loop and the connection drain are the proxy's own.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

pub use paymesh_lifecycle::drain::{Shutdown, Trigger, channel};

/// How long a listener pauses after a failed accept (e.g. out of file descriptors), so it
/// neither spins nor gives up.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// A listener's accept loop until the shutdown signal: every listener stops the same way.
pub struct Acceptor {
    name: &'static str,
    listener: TcpListener,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Acceptor {
    /// Accepts on `listener` (named `name` in logs) until `shutdown`.
    pub fn new(name: &'static str, listener: TcpListener, shutdown: Shutdown) -> Self {
        Acceptor { name, listener, stop: Box::pin(shutdown.signaled()) }
    }

    /// The next connection, or `None` once shutdown is signaled (the listening socket closes
    /// when the acceptor is dropped).
    pub async fn next(&mut self) -> Option<(TcpStream, SocketAddr)> {
        loop {
            tokio::select! {
                () = &mut self.stop => return None,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => return Some(accepted),
                    Err(error) => {
                        warn!(listener = self.name, %error, "accept failed");
                        tokio::time::sleep(ACCEPT_RETRY).await;
                    }
                },
            }
        }
    }
}

/// Waits for the connections `graceful` watches to finish, at most `deadline`.
pub async fn drain(listener: &str, graceful: GracefulShutdown, deadline: Duration) {
    let open = graceful.count();
    if open > 0 {
        info!(listener, open, deadline_ms = deadline.as_millis() as u64, "draining connections");
    }
    if tokio::time::timeout(deadline, graceful.shutdown()).await.is_err() {
        warn!(listener, "drain deadline passed; closing the remaining connections");
    }
}
