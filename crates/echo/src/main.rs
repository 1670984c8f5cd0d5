//! `paymesh-echo`: the small workload paymesh's end-to-end tests run inside pods.
//!
//! It binds `POD_IP:PORT` (and, with `--tcp-port`, a raw TCP echo) before serving, prints
//! `paymesh-echo listening on ADDR` so supervisors and tests learn the real address, and serves
//! HTTP/1.1 and h2c on one port ([`http`] has the endpoints), and with `--grpc-port` the gRPC
//! echo service ([`paymesh_echo::grpc`]) in h2c. SIGTERM or SIGINT stops accepting,
//! lets in-flight requests finish (bounded by a deadline) and exits 0; `--crash-after` makes it
//! exit 1 on purpose so restart behaviour can be tested.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use paymesh_echo::grpc;

mod http;

/// How long in-flight requests get after SIGTERM before the process exits anyway.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// A test workload: echo, status codes, streaming, outbound calls through HTTP_PROXY.
#[derive(Debug, Parser)]
#[command(name = "paymesh-echo", version, about)]
struct Args {
    /// Address to listen on (the pod IP).
    #[arg(long, env = "POD_IP", default_value = "127.0.0.1")]
    ip: IpAddr,
    /// HTTP port (HTTP/1.1 and h2c).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// Also serve the gRPC echo service (`paymesh.echo.v1.Echo`, h2c) on this port.
    #[arg(long, env = "GRPC_PORT")]
    grpc_port: Option<u16>,
    /// Also echo raw TCP on this port.
    #[arg(long, env = "TCP_PORT")]
    tcp_port: Option<u16>,
    /// Pod name reported by /echo.
    #[arg(long, env = "POD_NAME", default_value = "")]
    pod: String,
    /// Pod namespace reported by /echo.
    #[arg(long, env = "POD_NAMESPACE", default_value = "")]
    namespace: String,
    /// Exit with status 1 after this many seconds (for restart tests).
    #[arg(long, value_name = "SECS")]
    crash_after: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    // Bind everything first, so a busy port fails before anything is announced.
    let http_addr = SocketAddr::new(args.ip, args.port);
    let listener = TcpListener::bind(http_addr).await.with_context(|| format!("binding {http_addr}"))?;
    let tcp_listener = match args.tcp_port {
        Some(port) => {
            let addr = SocketAddr::new(args.ip, port);
            Some(TcpListener::bind(addr).await.with_context(|| format!("binding TCP echo {addr}"))?)
        }
        None => None,
    };
    let grpc_listener = match args.grpc_port {
        Some(port) => {
            let addr = SocketAddr::new(args.ip, port);
            Some(TcpListener::bind(addr).await.with_context(|| format!("binding gRPC {addr}"))?)
        }
        None => None,
    };
    let grpc_service = grpc::EchoService::new(args.pod.clone());
    let state =
        Arc::new(http::State::new(args.pod, args.namespace, args.ip).context("building the HTTP client")?);

    println!("paymesh-echo listening on {}", listener.local_addr()?);
    if let Some(tcp) = &tcp_listener {
        println!("paymesh-echo tcp listening on {}", tcp.local_addr()?);
    }
    if let Some(grpc) = &grpc_listener {
        println!("paymesh-echo grpc listening on {}", grpc.local_addr()?);
    }
    if let Some(secs) = args.crash_after {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            eprintln!("paymesh-echo: crashing on purpose after {secs}s (--crash-after)");
            std::process::exit(1);
        });
    }
    if let Some(tcp) = tcp_listener {
        tokio::spawn(serve_tcp(tcp));
    }
    let (stop_grpc, grpc_stopped) = tokio::sync::watch::channel(());
    let grpc_task = grpc_listener.map(|listener| {
        let mut stopped = grpc_stopped;
        tokio::spawn(grpc::serve(listener, grpc_service, async move {
            let _ = stopped.changed().await;
        }))
    });

    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        eprintln!("paymesh-echo: accept failed: {e}");
                        continue;
                    }
                };
                let state = Arc::clone(&state);
                let service = hyper::service::service_fn(move |req| http::handle(Arc::clone(&state), req));
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        eprintln!("paymesh-echo: connection error: {e}");
                    }
                });
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    drop(listener);
    eprintln!("paymesh-echo: draining");
    // Senders going away ends the gRPC server's shutdown future.
    drop(stop_grpc);
    let grpc_drained = async {
        if let Some(task) = grpc_task
            && let Ok(Err(e)) = task.await
        {
            eprintln!("paymesh-echo: gRPC server failed: {e}");
        }
    };
    if tokio::time::timeout(DRAIN_DEADLINE, async { tokio::join!(graceful.shutdown(), grpc_drained) })
        .await
        .is_err()
    {
        eprintln!("paymesh-echo: drain deadline passed, exiting with requests in flight");
    }
    Ok(())
}

/// Echoes every byte of every accepted connection back to it.
async fn serve_tcp(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let (mut read, mut write) = stream.split();
            let _ = tokio::io::copy(&mut read, &mut write).await;
        });
    }
}
