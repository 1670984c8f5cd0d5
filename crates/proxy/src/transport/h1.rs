//! Keep-alive HTTP/1.1 connections to one address: plaintext to the app behind an inbound chain
//! or an endpoint without a sidecar, or mutual TLS to a peer sidecar for an HTTP port that does
//! not upgrade to HTTP/2 (Istio's default `h2UpgradePolicy`; `UPGRADE` opts out).
//!
//! A request leases an idle connection (most recently used first, so few stay warm) or dials
//! a new one; the lease rides in the response body and goes back to the pool when the body is
//! dropped, that is once the response is done, so a long download never blocks another
//! request. The mutex is held only to push or pop. A connection the app closed while idle is
//! skipped at lease time; when it closes just as the request is written, the request comes back
//! unsent ([`super::Failed::request`]) and the retry stage sends it again, so keep-alive races
//! do not become 503s.
//! Lighter than hyper-util's pooled client (no pool key hashing, no task per request).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::Request;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use super::pool::{Dial, MeshTls, dial_tcp, spawn_connection};
use super::{Attempt, Failed, Sent, UpstreamError, classify, error_chain};
use crate::http::{Body, HEADER_READ_TIMEOUT, Watch, Watched};

/// An idle connection to an app older than this is closed instead of reused (hyper-util's
/// default).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The same towards a peer sidecar: well below the peer's header read timeout, which also
/// closes keep-alive connections idle that long, so this side always gives a connection up
/// first and never writes a request into one the peer is closing (Istio's classic `503 UC`).
pub const MESH_IDLE_TIMEOUT: Duration = Duration::from_secs(HEADER_READ_TIMEOUT.as_secs() / 2);

/// Idle connections kept per address; more are closed when their response ends.
pub const MAX_IDLE: usize = 256;

/// Idle HTTP/1.1 connections to one address.
pub struct H1Pool {
    addr: SocketAddr,
    source: IpAddr,
    dial: Dial,
    tls: Option<MeshTls>,
    idle_timeout: Duration,
    idle: Mutex<VecDeque<Idle>>,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
    /// Requests the connection has carried.
    used: u32,
}

impl H1Pool {
    /// A pool of connections from `source` (the pod IP) to `addr`, over `tls` when given,
    /// reusing none idle for longer than `idle_timeout`.
    pub fn new(source: IpAddr, addr: SocketAddr, tls: Option<MeshTls>, idle_timeout: Duration) -> Self {
        H1Pool { addr, source, dial: Dial::default(), tls, idle_timeout, idle: Mutex::new(VecDeque::new()) }
    }

    /// The pool, dialing as `dial` says (the cluster's connect timeout, keepalive, and requests
    /// per connection).
    pub fn with_dial(self, dial: Dial) -> Self {
        H1Pool { dial, ..self }
    }

    /// The address connections go to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.lock().len()
    }

    /// Sends `req` (origin-form URI, `Host` set) on an idle connection or a new one. A request
    /// that never left (the connection was closed under it) comes back in the error, for the
    /// retry stage to resend.
    pub async fn send(self: &Arc<Self>, req: Request<Body>) -> Attempt {
        let (mut sender, used) = match self.lease().await {
            Some(leased) => leased,
            None => match Box::pin(self.connect()).await {
                Ok(sender) => (sender, 0),
                Err(error) => return Err(Failed::unsent(error, req)),
            },
        };
        let connected = Instant::now();
        let response = sender.try_send_request(req).await.map_err(|error| classify(self.addr, error))?;
        let lease = Lease { pool: Arc::clone(self), sender: Some(sender), used: used + 1 };
        let response = response.map(|body| http_body_util::BodyExt::boxed_unsync(Watched::new(body, lease)));
        Ok(Sent { response, connected })
    }

    /// The most recently used idle connection that still works, dropping expired and closed
    /// ones on the way.
    async fn lease(&self) -> Option<(SendRequest<Body>, u32)> {
        loop {
            let Idle { mut sender, since, used } = self.lock().pop_back()?;
            if sender.is_closed() || since.elapsed() > self.idle_timeout {
                continue;
            }
            // Ready at once unless the connection has not yet seen its last response end.
            if sender.ready().await.is_ok() {
                return Some((sender, used));
            }
        }
    }

    /// Keeps `sender` for the next request, unless it is closed or has carried its share.
    fn checkin(&self, sender: SendRequest<Body>, used: u32) {
        if sender.is_closed() || self.dial.max_requests_per_connection.is_some_and(|max| used >= max) {
            return;
        }
        let mut idle = self.lock();
        while idle.front().is_some_and(|oldest| oldest.since.elapsed() > self.idle_timeout) {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { sender, since: Instant::now(), used });
        }
    }

    async fn connect(&self) -> Result<SendRequest<Body>, UpstreamError> {
        let tcp = dial_tcp(self.source, self.addr, &self.dial).await?;
        let fail = |e: hyper::Error| UpstreamError::Connect { endpoint: self.addr, cause: error_chain(&e) };
        let sender = match &self.tls {
            Some(mesh) => {
                let tls = mesh.connect(self.addr, tcp, self.dial.connect_timeout).await?;
                let (sender, connection) = http1::handshake(TokioIo::new(tls)).await.map_err(fail)?;
                spawn_connection(self.addr, connection);
                sender
            }
            None => {
                let (sender, connection) = http1::handshake(TokioIo::new(tcp)).await.map_err(fail)?;
                spawn_connection(self.addr, connection);
                sender
            }
        };
        Ok(sender)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection out of the pool until the response that holds it is dropped.
struct Lease {
    pool: Arc<H1Pool>,
    sender: Option<SendRequest<Body>>,
    /// Requests the connection has carried, this one included.
    used: u32,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.checkin(sender, self.used);
        }
    }
}

/// A response body holds its connection's lease, and does nothing else with it.
impl Watch for Lease {}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http::Response;
    use http::header::HOST;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::http::empty;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// Reads one request head (the tests send no bodies); false at EOF.
    async fn read_head(tcp: &mut TcpStream) -> bool {
        let mut head = Vec::new();
        let mut byte = [0; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                return false;
            }
            head.push(byte[0]);
        }
        true
    }

    /// An app answering `reply` to each request and closing a connection after `per_connection`
    /// of them; counts the connections it accepted.
    async fn app(reply: &'static [u8], per_connection: usize) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    for _ in 0..per_connection {
                        if !read_head(&mut tcp).await || tcp.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn get() -> Request<Body> {
        Request::builder().uri("/").header(HOST, "app").body(empty()).expect("request")
    }

    async fn body_of(response: Response<Body>) -> Bytes {
        response.into_body().collect().await.expect("body").to_bytes()
    }

    #[tokio::test]
    async fn one_connection_serves_requests_one_after_another() {
        let (addr, accepted) = app(OK, usize::MAX).await;
        let pool = Arc::new(H1Pool::new(LOCALHOST, addr, None, IDLE_TIMEOUT));
        for _ in 0..5 {
            let response = pool.send(get()).await.expect("response").response;
            assert_eq!(body_of(response).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_connection_is_closed_after_max_requests_per_connection() {
        let (addr, accepted) = app(OK, usize::MAX).await;
        let dial = Dial { max_requests_per_connection: Some(2), ..Dial::default() };
        let pool = Arc::new(H1Pool::new(LOCALHOST, addr, None, IDLE_TIMEOUT).with_dial(dial));
        for _ in 0..5 {
            let response = pool.send(get()).await.expect("response").response;
            assert_eq!(body_of(response).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "two requests each, then a new connection");
    }

    #[tokio::test]
    async fn a_connection_idle_past_the_timeout_is_not_reused() {
        let (addr, accepted) = app(OK, usize::MAX).await;
        let pool = Arc::new(H1Pool::new(LOCALHOST, addr, None, Duration::ZERO));
        for _ in 0..3 {
            let response = pool.send(get()).await.expect("response").response;
            assert_eq!(body_of(response).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn connections_the_app_closes_after_each_response_cost_no_request() {
        let (addr, accepted) = app(OK, 1).await;
        let pool = Arc::new(H1Pool::new(LOCALHOST, addr, None, IDLE_TIMEOUT));
        for i in 0..20 {
            // A request caught by the close comes back unsent, once at most: the retry stage's
            // resend goes out on a fresh connection.
            let response = match pool.send(get()).await {
                Ok(sent) => sent.response,
                Err(Failed { error: UpstreamError::Unsent { .. }, request: Some(req) }) => {
                    pool.send(req)
                        .await
                        .unwrap_or_else(|e| panic!("request {i} resent: {:?}", e.error))
                        .response
                }
                Err(e) => panic!("request {i}: {:?}", e.error),
            };
            assert_eq!(body_of(response).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 20);
    }

    #[tokio::test]
    async fn a_response_still_streaming_does_not_hold_up_the_next_request() {
        // Promises 10 bytes, sends 5 and keeps the connection open.
        let (addr, accepted) = app(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345", 1).await;
        let pool = Arc::new(H1Pool::new(LOCALHOST, addr, None, IDLE_TIMEOUT));
        let slow = pool.send(get()).await.expect("first response head").response;
        let second = pool.send(get()).await.expect("second response head").response;
        assert_eq!(second.status(), http::StatusCode::OK);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        drop((slow, second));
    }

    #[tokio::test]
    async fn garbage_from_the_app_is_a_reset_naming_the_app() {
        let (addr, _) = app(b"garbage\r\n\r\n", 1).await;
        let pool = Arc::new(H1Pool::new(LOCALHOST, addr, None, IDLE_TIMEOUT));
        match pool.send(get()).await {
            Err(Failed { error: UpstreamError::Reset { endpoint, cause }, request: None }) => {
                assert_eq!(endpoint, addr);
                assert!(cause.contains("invalid HTTP"), "{cause}");
            }
            other => panic!("expected a reset, got {other:?}"),
        }
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn an_app_not_listening_is_a_connect_failure() {
        let addr = TcpListener::bind((LOCALHOST, 0)).await.expect("bind").local_addr().expect("addr");
        let pool = Arc::new(H1Pool::new(LOCALHOST, addr, None, IDLE_TIMEOUT));
        match pool.send(get()).await {
            Err(Failed { error: UpstreamError::Connect { endpoint, .. }, request: Some(_) }) => {
                assert_eq!(endpoint, addr)
            }
            other => panic!("expected a connect failure, got {other:?}"),
        }
    }
}
