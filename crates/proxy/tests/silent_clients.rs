//! Clients that connect and never send a request head (nothing at all, or a few bytes of one)
//! are closed once the header read timeout has passed since the connection was accepted, on
//! the outbound and the inbound listener, while other clients are served meanwhile. (Before,
//! hyper's protocol detection waited for them forever.)

#[path = "support/control.rs"]
mod control;
#[path = "support/harness.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use paymesh_api::model::MtlsMode;
use support::{Mesh, curl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The proxy's bound (`HEADER_READ_TIMEOUT`).
const BOUND: Duration = Duration::from_secs(10);

/// Connects to `addr`, sends `first`, and returns how long until the proxy closed it (`None`
/// when it was still open after the bound and five seconds more).
async fn closed_after(addr: SocketAddr, first: &'static [u8]) -> Option<Duration> {
    let start = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(first).await.expect("write");
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(BOUND + Duration::from_secs(5), tcp.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_stalled_first_requests_are_closed_after_the_header_timeout() {
    let mesh = Mesh::start(MtlsMode::Permissive, Duration::from_secs(3600)).await;
    let (outbound, inbound) = (mesh.client.pod.at(15001), mesh.server.pod.at(15006));
    let clients = [
        ("outbound, silent", tokio::spawn(closed_after(outbound, b""))),
        ("outbound, two bytes of a request", tokio::spawn(closed_after(outbound, b"GE"))),
        ("outbound, part of the HTTP/2 preface", tokio::spawn(closed_after(outbound, b"PRI * HTTP/2.0\r\n"))),
        ("inbound plaintext, two bytes", tokio::spawn(closed_after(inbound, b"GE"))),
    ];
    // Meanwhile the proxies serve everybody else.
    let (ok, out) = curl(vec!["-x".into(), mesh.proxy_url(), "http://echo:8080/meanwhile".into()]).await;
    assert!(ok && out.contains("path: /meanwhile"), "{out}");
    for (what, client) in clients {
        let closed = client.await.expect("client task");
        let closed =
            closed.unwrap_or_else(|| panic!("{what}: still open {:?} after connecting", BOUND * 3 / 2));
        assert!(closed >= BOUND - Duration::from_millis(500), "{what}: closed early, after {closed:?}");
    }
}
