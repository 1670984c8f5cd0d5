//! The load tool measures what really happened: against servers on ephemeral loopback ports
//! that count what they serve (and fail every other request on `/half`), each mode's report
//! has exactly the scheduled number of operations, the right split of successes and errors,
//! and the servers saw the same number.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use paymesh_bench_loadgen::http::Target;
use paymesh_bench_loadgen::{Config, Mode, Report, run};
use tokio::net::TcpListener;

/// An HTTP/1.1 + h2c server counting requests; `/half` answers 500 to every odd request.
async fn http_server() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicU64::new(0));
    let served = Arc::clone(&count);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let served = Arc::clone(&served);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let n = served.fetch_add(1, Ordering::Relaxed);
                    let status = if req.uri().path() == "/half" && n % 2 == 1 {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    };
                    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                    *response.status_mut() = status;
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, count)
}

fn config(mode: Mode, addr: SocketAddr, path: &str) -> Config {
    Config {
        mode,
        target: Target { addr, authority: "svc.test:80".to_owned(), path: path.to_owned() },
        rate: Some(400.0),
        duration: Duration::from_millis(500),
        warmup: Duration::ZERO,
        concurrency: 4,
        connections: 2,
        timeout: Duration::from_secs(2),
        payload: 64,
        tunnel: None,
        tls: None,
        slow_clients: 0,
        slow_interval: Duration::from_millis(50),
    }
}

fn assert_counts(report: &Report, ok: u64, errors: u64) {
    assert_eq!(
        (report.started, report.ok, report.errors, report.dropped),
        (ok + errors, ok, errors, 0),
        "{report:?}"
    );
    if ok > 0 {
        assert!(
            report.p50_ms > 0.0 && report.p50_ms <= report.p99_ms && report.p99_ms <= report.max_ms,
            "{report:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_modes_count_successes_and_failures() {
    let (addr, served) = http_server().await;
    let h1 = run(&config(Mode::H1, addr, "/")).await.expect("h1");
    assert_counts(&h1, 200, 0);
    let h2 = run(&config(Mode::H2, addr, "/")).await.expect("h2");
    assert_counts(&h2, 200, 0);
    let per_request = run(&config(Mode::ConnectRate, addr, "/")).await.expect("connect-rate");
    assert_counts(&per_request, 200, 0);
    assert_eq!(served.load(Ordering::Relaxed), 600);
    let half = run(&config(Mode::H1, addr, "/half")).await.expect("h1 /half");
    assert_counts(&half, 100, 100);
    assert!(half.first_error.as_deref().is_some_and(|e| e.contains("500")), "{half:?}");
    assert_eq!(served.load(Ordering::Relaxed), 800);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_stay_open_beside_the_measured_load() {
    let (addr, served) = http_server().await;
    let mut slow = config(Mode::SlowClients, addr, "/");
    slow.slow_clients = 20;
    let report = run(&slow).await.expect("slow clients");
    assert_counts(&report, 200, 0);
    let s = report.slow.expect("slow report");
    assert_eq!((s.wanted, s.opened, s.open_at_end), (20, 20, 20));
    assert_eq!(served.load(Ordering::Relaxed), 200, "slow clients never finish a request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_tcp_modes_round_trip() {
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
    let grpc_addr = grpc.local_addr().expect("addr");
    let service = paymesh_echo::grpc::EchoService::new("pod-a".to_owned());
    tokio::spawn(paymesh_echo::grpc::serve(grpc, service, std::future::pending()));
    assert_counts(&run(&config(Mode::GrpcUnary, grpc_addr, "/")).await.expect("unary"), 200, 0);
    assert_counts(&run(&config(Mode::GrpcStream, grpc_addr, "/")).await.expect("stream"), 200, 0);

    let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
    let echo_addr = echo.local_addr().expect("addr");
    let bytes = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&bytes);
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = echo.accept().await else { continue };
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                if let Ok(n) = tokio::io::copy(&mut r, &mut w).await {
                    seen.fetch_add(n, Ordering::Relaxed);
                }
            });
        }
    });
    let tcp = run(&config(Mode::Tcp, echo_addr, "/")).await.expect("tcp");
    assert_counts(&tcp, 200, 0);
    // The echo server counts a connection's bytes when the client closes it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while bytes.load(Ordering::Relaxed) < 200 * 64 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(bytes.load(Ordering::Relaxed), 200 * 64);
}

#[tokio::test]
async fn unreachable_target_fails_set_up_or_counts_errors() {
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    assert!(run(&config(Mode::H2, addr, "/")).await.is_err(), "h2 set-up must fail");
    let h1 = run(&config(Mode::H1, addr, "/")).await.expect("h1 runs and counts");
    assert_counts(&h1, 0, 200);
    assert!(h1.first_error.as_deref().is_some_and(|e| e.contains("connect")), "{h1:?}");
}
