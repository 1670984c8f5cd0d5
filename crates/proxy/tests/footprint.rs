//! The sidecar's memory footprint: resident set size idle, and after 10,000 requests over one
//! HTTP/2 connection (16 in flight). Ignored by default (it measures, and a debug build's
//! numbers mean little); run against a release build:
//!
//! ```text
//! cargo build --release -p paymesh-proxy
//! PAYMESH_PROXY_BIN=target/release/paymesh-proxy \
//!   cargo nextest run -p paymesh-proxy --run-ignored only --no-capture footprint
//! ```
//!
//! `TOKIO_WORKER_THREADS=1` in the environment shows the effect of the data runtime's size.
//!
//! Measured (release, 2 cores, 2026-11, with the HTTP/2 hop between the sidecars, the default
//! then; the HTTP/1.1 hop keeps a connection per request in flight): idle 10.2–10.7 MiB, after
//! 10,000 requests 11.6–12.4 MiB per sidecar; one data worker instead of two saves ~0.2 MiB
//! idle, ~0.7 MiB loaded; mimalloc as global allocator doubled it (idle 20.7 MiB, loaded
//! 22–27 MiB) at the same throughput, so the system allocator stays.

#[path = "support/control.rs"]
mod control;
#[path = "support/harness.rs"]
mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use paymesh_api::model::MtlsMode;
use support::{DEADLINE, Mesh};

/// Requests sent before the second measurement.
const REQUESTS: usize = 10_000;

/// Requests in flight at once.
const CONCURRENCY: usize = 16;

/// The ceiling a sidecar must stay under (both idle and loaded), in KiB.
const RSS_CEILING_KIB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run against a release build"]
async fn footprint_idle_and_after_ten_thousand_requests() {
    let mesh = Mesh::start(MtlsMode::Strict, Duration::from_secs(3600)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = (mesh.client.rss_kib(), mesh.server.rss_kib());

    let tcp = tokio::net::TcpStream::connect(mesh.client.pod.at(15001)).await.expect("connect");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2c");
    tokio::spawn(connection);
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..CONCURRENCY {
        let mut sender = sender.clone();
        workers.push(tokio::spawn(async move {
            let mut ok = 0usize;
            for _ in (worker..REQUESTS).step_by(CONCURRENCY) {
                let request =
                    Request::get("http://echo:8080/load").body(Empty::<Bytes>::new()).expect("request");
                let response = tokio::time::timeout(DEADLINE, sender.send_request(request))
                    .await
                    .expect("in time")
                    .expect("response");
                let status = response.status();
                let body = response.into_body().collect().await.expect("body").to_bytes();
                if status == 200 && body.starts_with(b"path: /load") {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for worker in workers {
        ok += worker.await.expect("worker");
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = (mesh.client.rss_kib(), mesh.server.rss_kib());
    eprintln!(
        "RSS idle: client {} KiB, server {} KiB; after {ok} requests in {elapsed:?}: client {} KiB, server {} KiB",
        idle.0, idle.1, loaded.0, loaded.1
    );
    assert_eq!(ok, REQUESTS);
    for rss in [idle.0, idle.1, loaded.0, loaded.1] {
        assert!(rss < RSS_CEILING_KIB, "{rss} KiB");
    }
}
