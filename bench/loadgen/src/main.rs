//! `paymesh-bench-loadgen`: runs one load (mode, target, rate, duration) and prints one JSON
//! line with counts and latency percentiles on stdout (see the library for the method).
//!
//!     paymesh-bench-loadgen --mode h2 --addr 127.0.0.1:16002 --rate 1000 --duration 10s
//!     paymesh-bench-loadgen --mode tcp --addr 127.77.0.2:15001 --tunnel svc.ns.svc.cluster.local:83 --rate 5000
//!     paymesh-bench-loadgen --mode connect-rate --addr 127.0.0.1:16001 --concurrency 16   # no rate: max
//!
//! Exit status 0 when the run happened (errors are counted in the line), 1 when it could not
//! start (set-up failed, bad arguments).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use paymesh_bench_loadgen::http::Target;
use paymesh_bench_loadgen::raw::TlsParams;
use paymesh_bench_loadgen::{Config, Mode, run};

/// Open-loop load for the sidecar-pair bench; prints one JSON line.
#[derive(Debug, Parser)]
#[command(name = "paymesh-bench-loadgen", version, about)]
struct Args {
    /// What one operation is.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Address to connect to.
    #[arg(long)]
    addr: SocketAddr,
    /// Host / `:authority` to send (default: the address).
    #[arg(long)]
    authority: Option<String>,
    /// Request path (HTTP modes).
    #[arg(long, default_value = "/")]
    path: String,
    /// Operations per second, open loop; 0 or absent: closed loop (maximum rate).
    #[arg(long)]
    rate: Option<f64>,
    /// Measured duration (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up at the same rate first.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    warmup: Duration,
    /// Concurrent operations (workers).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Connections shared by the workers (h2, gRPC).
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Per-operation timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Payload bytes (TCP echo, gRPC message).
    #[arg(long, default_value_t = 128)]
    payload: usize,
    /// TCP mode: send `CONNECT AUTHORITY` first (an HTTP proxy such as paymesh's outbound).
    #[arg(long)]
    tunnel: Option<String>,
    /// TLS handshake mode: client certificate PEM.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// TLS handshake mode: client key PEM.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// TLS handshake mode: SNI.
    #[arg(long, default_value = "localhost")]
    tls_sni: String,
    /// TLS handshake mode: ALPN protocols offered, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "h2,http/1.1")]
    alpn: Vec<String>,
    /// Runtime threads of the load client (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Slow-clients mode: how many slow connections.
    #[arg(long, default_value_t = 500)]
    slow_clients: usize,
    /// Slow-clients mode: interval between a slow client's bytes.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    slow_interval: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) =
        text.split_at(text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len()));
    let value: f64 = number.parse().map_err(|_| format!("bad duration {text:?}"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" => value * 60.0,
        _ => return Err(format!("bad duration unit in {text:?} (s, ms, m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {text:?}: {e}"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsParams {
            cert: cert.clone(),
            key: key.clone(),
            sni: args.tls_sni.clone(),
            alpn: args.alpn.clone(),
        }),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    let config = Config {
        mode: args.mode,
        target: Target {
            addr: args.addr,
            authority: args.authority.unwrap_or_else(|| args.addr.to_string()),
            path: args.path,
        },
        rate: args.rate.filter(|r| *r > 0.0),
        duration: args.duration,
        warmup: args.warmup,
        concurrency: args.concurrency,
        connections: args.connections,
        timeout: args.timeout,
        payload: args.payload,
        tunnel: args.tunnel,
        tls,
        slow_clients: args.slow_clients,
        slow_interval: args.slow_interval,
    };
    // One thread by default: on a busy two-core box every cross-thread wake-up (timer worker →
    // connection task → back) costs scheduler latency that would be charged to the target.
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()
    }
    .context("starting tokio")?;
    let report = runtime.block_on(run(&config))?;
    println!("{}", serde_json::to_string(&report).context("encoding the report")?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
