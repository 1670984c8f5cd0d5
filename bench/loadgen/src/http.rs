//! HTTP operations: HTTP/1.1 keep-alive requests (one connection per worker), h2c requests
//! (prior knowledge; workers share a few multiplexed connections), and slow clients that
//! trickle an unfinished request header to the proxy while the measured load runs.
//!
//! Each request is `GET path` with the target's Host (HTTP/1.1) or `:authority` (h2); a
//! response counts as a success only when its status is 2xx and its whole body was read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::engine::Op;

/// Where requests go: the socket address dialled and the Host / `:authority` sent.
#[derive(Debug, Clone)]
pub struct Target {
    /// The address the client connects to.
    pub addr: SocketAddr,
    /// Host header (HTTP/1.1) or `:authority` (h2).
    pub authority: String,
    /// Request path.
    pub path: String,
}

async fn dial(addr: SocketAddr) -> Result<TcpStream, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

async fn read_response<B>(response: http::Response<B>) -> Result<(), String>
where
    B: hyper::body::Body,
    B::Error: std::fmt::Display,
{
    let status = response.status();
    response.into_body().collect().await.map_err(|e| format!("reading body: {e}"))?;
    if status.is_success() { Ok(()) } else { Err(format!("status {status}")) }
}

/// HTTP/1.1 on one keep-alive connection, re-dialled after it fails.
pub struct H1 {
    target: Arc<Target>,
    sender: Option<http1::SendRequest<Empty<Bytes>>>,
}

impl H1 {
    /// A worker for `target`; it connects on its first request.
    pub fn new(target: Arc<Target>) -> Self {
        Self { target, sender: None }
    }

    async fn connect(&self) -> Result<http1::SendRequest<Empty<Bytes>>, String> {
        let tcp = dial(self.target.addr).await?;
        let (sender, conn) =
            http1::handshake(TokioIo::new(tcp)).await.map_err(|e| format!("h1 handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(sender)
    }

    async fn request(&mut self) -> Result<(), String> {
        let sender = match self.sender.take() {
            Some(sender) if !sender.is_closed() => self.sender.insert(sender),
            _ => {
                let sender = self.connect().await?;
                self.sender.insert(sender)
            }
        };
        sender.ready().await.map_err(|e| format!("connection not ready: {e}"))?;
        let request = Request::get(self.target.path.as_str())
            .header(header::HOST, self.target.authority.as_str())
            .body(Empty::new())
            .map_err(|e| format!("building request: {e}"))?;
        let response = sender.send_request(request).await.map_err(|e| format!("h1 request: {e}"))?;
        read_response(response).await
    }
}

impl Op for H1 {
    async fn call(&mut self) -> Result<(), String> {
        let outcome = self.request().await;
        if outcome.is_err() {
            self.sender = None;
        }
        outcome
    }
}

/// h2c (prior knowledge) on a connection shared with other workers.
pub struct H2 {
    uri: http::Uri,
    sender: http2::SendRequest<Empty<Bytes>>,
}

impl H2 {
    /// Opens `connections` h2c connections to `target` and returns `workers` operations spread
    /// over them round-robin.
    pub async fn open(target: &Target, connections: usize, workers: usize) -> Result<Vec<Self>, String> {
        let uri: http::Uri = format!("http://{}{}", target.authority, target.path)
            .parse()
            .map_err(|e| format!("bad authority or path: {e}"))?;
        let mut senders = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            let tcp = dial(target.addr).await?;
            let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(conn);
            senders.push(sender);
        }
        Ok((0..workers)
            .map(|i| Self { uri: uri.clone(), sender: senders[i % senders.len()].clone() })
            .collect())
    }
}

impl Op for H2 {
    async fn call(&mut self) -> Result<(), String> {
        self.sender.ready().await.map_err(|e| format!("h2 connection: {e}"))?;
        let request = Request::get(self.uri.clone())
            .body(Empty::new())
            .map_err(|e| format!("building request: {e}"))?;
        let response = self.sender.send_request(request).await.map_err(|e| format!("h2 request: {e}"))?;
        read_response(response).await
    }
}

/// Connections that send an HTTP/1.1 request header one byte at a time and never finish it.
pub struct SlowClients {
    tasks: Vec<JoinHandle<()>>,
    opened: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
}

/// What became of the slow clients.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct SlowReport {
    /// Slow connections asked for.
    pub wanted: u64,
    /// Slow connections that connected.
    pub opened: u64,
    /// Of those, still open (not closed by the proxy) when the measured load ended.
    pub open_at_end: u64,
}

impl SlowClients {
    /// Opens `count` slow connections to `target` (waits up to `deadline` for them to connect);
    /// each sends the request line and Host at once, then one more header byte every `interval`.
    pub async fn open(target: &Target, count: usize, interval: Duration, deadline: Duration) -> Self {
        let opened = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicU64::new(0));
        let head = format!("GET {} HTTP/1.1\r\nHost: {}\r\nX-Slow: ", target.path, target.authority);
        let tasks = (0..count)
            .map(|_| {
                let (addr, head) = (target.addr, head.clone());
                let (opened, closed) = (Arc::clone(&opened), Arc::clone(&closed));
                tokio::spawn(async move {
                    let Ok(tcp) = dial(addr).await else { return };
                    opened.fetch_add(1, Ordering::Relaxed);
                    trickle(tcp, head.as_bytes(), interval).await;
                    closed.fetch_add(1, Ordering::Relaxed);
                })
            })
            .collect();
        let until = Instant::now() + deadline;
        let wanted = u64::try_from(count).unwrap_or(u64::MAX);
        while opened.load(Ordering::Relaxed) + closed.load(Ordering::Relaxed) < wanted
            && Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { tasks, opened, closed }
    }

    /// Counts what is still open, then closes every slow connection.
    pub fn finish(self) -> SlowReport {
        let opened = self.opened.load(Ordering::Relaxed);
        let report = SlowReport {
            wanted: u64::try_from(self.tasks.len()).unwrap_or(u64::MAX),
            opened,
            open_at_end: opened.saturating_sub(self.closed.load(Ordering::Relaxed)),
        };
        for task in self.tasks {
            task.abort();
        }
        report
    }
}

/// Writes `head`, then one `a` every `interval`, until the peer closes or a write fails.
async fn trickle(mut tcp: TcpStream, head: &[u8], interval: Duration) {
    if tcp.write_all(head).await.is_err() {
        return;
    }
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            read = tcp.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                // An answer (e.g. 408) means the proxy gave up on this request; keep reading to EOF.
                Ok(_) => continue,
            },
            () = tokio::time::sleep(interval) => {
                if tcp.write_all(b"a").await.is_err() {
                    return;
                }
            }
        }
    }
}
