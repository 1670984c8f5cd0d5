//! paymesh-bench-loadgen: the load tool of the sidecar-pair bench (`bench/mesh`), for what oha
//! and wrk cannot do there: h2c, gRPC unary and streaming, raw TCP echo (optionally through an
//! HTTP `CONNECT` tunnel), new connections per second, TLS handshakes per second, and slow
//! clients beside normal traffic.
//!
//! [`run`] builds one operation per worker for the chosen [`Mode`], drives them through the
//! open-loop [`engine`] (latency measured from each request's intended send time, so no
//! coordinated omission; or closed loop without a rate, for maximum rates) and returns a
//! [`Report`], which the binary prints as one JSON line for `bench/mesh/summarize.py`.

pub mod engine;
pub mod grpc;
pub mod http;
pub mod raw;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::engine::{Plan, Tally, drive};
use crate::http::{SlowClients, SlowReport, Target};
use crate::raw::TlsParams;

/// What one operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// HTTP/1.1 GET on keep-alive connections (one per worker).
    H1,
    /// h2c (prior knowledge) GET on `connections` shared connections.
    H2,
    /// gRPC `Echo/Unary`.
    GrpcUnary,
    /// One message and its answer on a long-lived gRPC `Echo/Chat` stream per worker.
    GrpcStream,
    /// A TCP echo round trip on a kept-open connection per worker.
    Tcp,
    /// A new TCP connection per HTTP/1.1 request (`Connection: close`).
    ConnectRate,
    /// A new TCP connection and full TLS 1.3 handshake with a client certificate.
    TlsHandshake,
    /// [`Mode::H1`] load while `slow_clients` connections trickle unfinished requests.
    SlowClients,
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The operation.
    pub mode: Mode,
    /// Where requests go (address, authority, path).
    pub target: Target,
    /// Open-loop rate per second; `None` runs closed loop (maximum rate).
    pub rate: Option<f64>,
    /// How long the measured schedule runs.
    pub duration: Duration,
    /// Unmeasured warm-up at the same rate before the measured run.
    pub warmup: Duration,
    /// Concurrent operations (workers).
    pub concurrency: usize,
    /// Connections the workers share (h2, gRPC); h1 and TCP use one per worker.
    pub connections: usize,
    /// Per-operation timeout.
    pub timeout: Duration,
    /// Payload bytes (TCP echo, gRPC message).
    pub payload: usize,
    /// `CONNECT` this authority first (TCP through an HTTP proxy such as paymesh's outbound).
    pub tunnel: Option<String>,
    /// Client certificate and handshake parameters (TLS handshake mode).
    pub tls: Option<TlsParams>,
    /// Slow connections (slow-clients mode).
    pub slow_clients: usize,
    /// Interval between a slow client's bytes.
    pub slow_interval: Duration,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The latency histogram could not be created.
    #[error("latency histogram: {0}")]
    Histogram(#[from] hdrhistogram::CreationError),
    /// Setting up connections, streams or TLS failed before the schedule started.
    #[error("{mode:?} set-up against {addr}: {reason}")]
    Setup {
        /// The mode.
        mode: Mode,
        /// The target address.
        addr: SocketAddr,
        /// What failed.
        reason: String,
    },
}

/// One run's result: the line the summarizer reads.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The operation.
    pub mode: Mode,
    /// Target address.
    pub addr: String,
    /// Target authority.
    pub authority: String,
    /// Intended rate (`null`: closed loop).
    pub rate: Option<f64>,
    /// Measured duration, seconds.
    pub duration_s: f64,
    /// Workers.
    pub concurrency: usize,
    /// Operations started.
    pub started: u64,
    /// Successful operations.
    pub ok: u64,
    /// Failed or timed-out operations.
    pub errors: u64,
    /// Scheduled operations never started (the client fell behind).
    pub dropped: u64,
    /// Successful operations per second of the run.
    pub achieved_rps: f64,
    /// Latency percentiles of successful operations, milliseconds.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p90_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// See `p50_ms`.
    pub p999_ms: f64,
    /// See `p50_ms`.
    pub max_ms: f64,
    /// The first error, if any.
    pub first_error: Option<String>,
    /// Slow clients (slow-clients mode only).
    pub slow: Option<SlowReport>,
}

impl Report {
    fn new(config: &Config, tally: &Tally, slow: Option<SlowReport>) -> Self {
        let h = &tally.histogram;
        let ms = |q: f64| if h.is_empty() { f64::NAN } else { h.value_at_quantile(q) as f64 / 1000.0 };
        let secs = tally.elapsed.as_secs_f64().max(config.duration.as_secs_f64());
        Self {
            mode: config.mode,
            addr: config.target.addr.to_string(),
            authority: config.target.authority.clone(),
            rate: config.rate,
            duration_s: config.duration.as_secs_f64(),
            concurrency: config.concurrency,
            started: tally.started,
            ok: tally.ok,
            errors: tally.errors,
            dropped: tally.dropped,
            achieved_rps: if secs > 0.0 { tally.ok as f64 / secs } else { 0.0 },
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: if h.is_empty() { f64::NAN } else { h.max() as f64 / 1000.0 },
            first_error: tally.first_error.clone(),
            slow,
        }
    }
}

/// Runs the warm-up (if any), then the measured schedule, and reports the measured part.
pub async fn run(config: &Config) -> Result<Report, LoadError> {
    if !config.warmup.is_zero() {
        let warm =
            Config { warmup: Duration::ZERO, duration: config.warmup, slow_clients: 0, ..config.clone() };
        measure(&warm).await?;
    }
    measure(config).await
}

async fn measure(config: &Config) -> Result<Report, LoadError> {
    let plan = Plan { rate: config.rate, duration: config.duration, timeout: config.timeout };
    let setup = |reason: String| LoadError::Setup { mode: config.mode, addr: config.target.addr, reason };
    let workers = config.concurrency.max(1);
    let target = Arc::new(config.target.clone());
    let payload = "x".repeat(config.payload);
    let tally = match config.mode {
        Mode::H1 => drive(plan, (0..workers).map(|_| http::H1::new(Arc::clone(&target))).collect()).await?,
        Mode::SlowClients => {
            let slow =
                SlowClients::open(&target, config.slow_clients, config.slow_interval, config.timeout).await;
            let tally =
                drive(plan, (0..workers).map(|_| http::H1::new(Arc::clone(&target))).collect()).await?;
            return Ok(Report::new(config, &tally, Some(slow.finish())));
        }
        Mode::H2 => {
            drive(plan, http::H2::open(&target, config.connections, workers).await.map_err(setup)?).await?
        }
        Mode::GrpcUnary => {
            drive(
                plan,
                grpc::Unary::open(&target, config.connections, workers, &payload).await.map_err(setup)?,
            )
            .await?
        }
        Mode::GrpcStream => {
            drive(
                plan,
                grpc::Chat::open(&target, config.connections, workers, &payload).await.map_err(setup)?,
            )
            .await?
        }
        Mode::Tcp => {
            let mut ops = Vec::with_capacity(workers);
            for _ in 0..workers {
                let mut op = raw::TcpEcho::new(target.addr, config.tunnel.clone(), config.payload);
                op.connect().await.map_err(setup)?;
                ops.push(op);
            }
            drive(plan, ops).await?
        }
        Mode::ConnectRate => {
            let ops = (0..workers)
                .map(|_| raw::ConnectPerRequest::new(target.addr, &target.authority, &target.path))
                .collect();
            drive(plan, ops).await?
        }
        Mode::TlsHandshake => {
            let params =
                config.tls.as_ref().ok_or_else(|| setup("no client certificate given".to_owned()))?;
            let first = raw::TlsHandshake::new(target.addr, params).map_err(setup)?;
            drive(plan, workers_of(first, workers)).await?
        }
    };
    Ok(Report::new(config, &tally, None))
}

fn workers_of(first: raw::TlsHandshake, workers: usize) -> Vec<raw::TlsHandshake> {
    let mut ops: Vec<_> = (1..workers).map(|_| first.worker()).collect();
    ops.push(first);
    ops
}
