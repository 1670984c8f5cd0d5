//! The proxy against its control plane: a NACKed snapshot keeps the running config, certificates
//! rotate under 30 s of continuous traffic (unary requests and one bidirectional stream on one
//! HTTP/2 connection) without a failed request or a broken stream, every connection to the
//! control plane comes from the pod IP, the proxy keeps serving while the control plane is gone
//! and re-subscribes when it is back, and SIGTERM drains in-flight requests and exits cleanly.

#[path = "support/control.rs"]
mod control;
#[path = "support/harness.rs"]
mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use control::Answer;
use http::Request;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use paymesh_api::model::{MtlsMode, RouteAction, WeightedCluster};
use support::{
    DEADLINE, Mesh, SLOW_ARRIVED, SLOW_DELAY, client_config, curl, eventually, parse_response, raw_exchange,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

type Chunks = mpsc::Sender<Result<Frame<Bytes>, std::convert::Infallible>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_snapshot_keeps_the_old_config() {
    let mesh = Mesh::start(MtlsMode::Strict, Duration::from_secs(3600)).await;
    let client = &mesh.client.pod;
    let server = &mesh.server.pod;
    let mut broken = client_config("v2", client, server, &mesh.down);
    std::sync::Arc::make_mut(&mut broken.routes[0].virtual_hosts[0]).routes[0].action =
        RouteAction::Forward {
            clusters: vec![WeightedCluster { cluster: "outbound|1||missing".into(), weight: 100 }],
        };
    mesh.cp.set_config(broken);
    let reason = eventually("a NACK for v2", || async {
        mesh.cp.answers().into_iter().find_map(|answer| match answer {
            Answer::Nack { pod, version, reason } if pod == "sleep-0" && version == "v2" => Some(reason),
            _ => None,
        })
    })
    .await;
    assert_eq!(
        reason,
        "route `default` of virtual host `echo.test.svc.cluster.local:8080` refers to unknown cluster `outbound|1||missing`"
    );
    assert_eq!(mesh.client.config_dump().await["version"], "v1");
    let (ok, out) = curl(vec!["-x".into(), mesh.proxy_url(), "http://echo:8080/still".into()]).await;
    assert!(ok && out.contains("path: /still"), "{out}");

    mesh.cp.set_config(client_config("v3", client, server, &mesh.down));
    eventually("an ACK for v3", || async {
        mesh.cp.answers().contains(&Answer::Ack { pod: "sleep-0".into(), version: "v3".into() }).then_some(())
    })
    .await;
    assert_eq!(mesh.client.config_dump().await["version"], "v3");
}

/// How long traffic runs while certificates rotate.
const ROTATION_RUN: Duration = Duration::from_secs(30);

/// Certificate lifetime in the rotation test: renewed about every 3 s.
const ROTATION_TTL: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_without_a_failed_request_or_a_broken_stream() {
    let mesh = Mesh::start(MtlsMode::Strict, ROTATION_TTL).await;
    let tcp = tokio::net::TcpStream::connect(mesh.client.pod.at(15001)).await.expect("connect");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2c");
    let connection = tokio::spawn(connection);
    let first_serial = mesh.server.config_dump().await["certificate"]["serial"].clone();
    let started = Instant::now();

    // One bidirectional stream open the whole time, on the same connection: a message every
    // 100 ms, each echoed back before the next is sent.
    let (chunks, rx): (Chunks, _) = mpsc::channel(4);
    let request = Request::post("http://grpc-echo:9090/echo.Echo/Stream")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(StreamBody::new(ReceiverStream::new(rx)).boxed())
        .expect("request");
    let mut stream_sender = sender.clone();
    let stream = tokio::spawn(async move {
        let response = tokio::time::timeout(DEADLINE, stream_sender.send_request(request))
            .await
            .map_err(|_| "stream: no response in time".to_owned())?
            .map_err(|e| format!("stream: {e}"))?;
        let mut body = response.into_body();
        let mut echoed = 0u32;
        while started.elapsed() < ROTATION_RUN && echoed < 1_000 {
            let message = Bytes::from(format!("message-{echoed}"));
            chunks.send(Ok(Frame::data(message.clone()))).await.map_err(|_| "stream: send side closed")?;
            let frame = tokio::time::timeout(DEADLINE, body.frame())
                .await
                .map_err(|_| format!("stream: echo {echoed} late"))?
                .ok_or_else(|| format!("stream ended after {echoed} messages"))?
                .map_err(|e| format!("stream broke after {echoed} messages: {e}"))?;
            if frame.data_ref() != Some(&message) {
                return Err(format!("stream: echo {echoed} was {frame:?}"));
            }
            echoed += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(chunks);
        loop {
            let frame = tokio::time::timeout(DEADLINE, body.frame())
                .await
                .map_err(|_| "stream: trailers late".to_owned())?
                .ok_or("stream: no trailers")?
                .map_err(|e| format!("stream: {e}"))?;
            if let Ok(trailers) = frame.into_trailers() {
                return if trailers.get("grpc-status").is_some_and(|s| s == "0") {
                    Ok(echoed)
                } else {
                    Err(format!("stream: trailers {trailers:?}"))
                };
            }
        }
    });

    // Unary requests on the same connection meanwhile.
    let mut sender = sender;
    let (mut ok, mut failed) = (0u32, Vec::new());
    while started.elapsed() < ROTATION_RUN && ok + (failed.len() as u32) < 100_000 {
        let request =
            Request::get("http://echo:8080/rotating").body(Empty::<Bytes>::new().boxed()).expect("request");
        match tokio::time::timeout(DEADLINE, sender.send_request(request)).await {
            Ok(Ok(response)) if response.status() == 200 => {
                let body = response.into_body().collect().await.expect("body").to_bytes();
                if body.starts_with(b"path: /rotating") { ok += 1 } else { failed.push(format!("{body:?}")) }
            }
            Ok(Ok(response)) => failed.push(format!("status {}", response.status())),
            Ok(Err(error)) => failed.push(error.to_string()),
            Err(_) => failed.push("timeout".into()),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let echoed = stream.await.expect("stream task");
    let client_rotations =
        mesh.client.config_dump().await["certificate"]["rotations"].as_u64().expect("rotations");
    let server_dump = mesh.server.config_dump().await;
    let server_rotations = server_dump["certificate"]["rotations"].as_u64().expect("rotations");
    eprintln!(
        "{ok} requests, {} failed; stream: {echoed:?} messages echoed; rotations: client {client_rotations}, server {server_rotations}",
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    let echoed = echoed.expect("the stream stayed whole");
    assert!(echoed >= 200, "only {echoed} messages echoed");
    assert!(ok > 300, "only {ok} requests");
    assert!(!connection.is_finished(), "the client connection stayed open");
    assert!(client_rotations >= 3 && server_rotations >= 3, "{client_rotations} / {server_rotations}");
    assert_ne!(server_dump["certificate"]["serial"], first_serial);
    // Every connection to the control plane (CA and discovery) came from a pod IP.
    let pods = [mesh.client.pod.ip, mesh.server.pod.ip];
    let peers = mesh.cp.peers();
    assert!(peers.len() >= 6, "{peers:?}");
    assert!(peers.iter().all(|peer| pods.contains(peer)), "{peers:?} not all in {pods:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_request_and_refuses_new_connections() {
    let mut mesh = Mesh::start(MtlsMode::Strict, Duration::from_secs(3600)).await;
    let outbound = mesh.client.pod.at(15001);
    let in_flight = tokio::spawn(raw_exchange(
        outbound,
        b"GET http://echo:8080/slow HTTP/1.1\r\nHost: echo:8080\r\nConnection: close\r\n\r\n",
    ));
    eventually("the slow request reaches the app", || async {
        (SLOW_ARRIVED.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    let signalled = Instant::now();
    mesh.client.signal_term();
    eventually("new connections are refused", || async {
        tokio::net::TcpStream::connect(outbound).await.is_err().then_some(())
    })
    .await;
    assert!(!in_flight.is_finished(), "refused while the request was still in flight");
    let (status, body) = parse_response(&in_flight.await.expect("in-flight task"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("path: /slow\n"), "{body}");
    let exit = mesh.client.wait_exit();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(signalled.elapsed() >= SLOW_DELAY / 2, "the proxy waited for the response");
    let logs = mesh.client.logs();
    assert!(logs.contains("\"GET /slow HTTP/1.1\" 200 - via_upstream - \"-\" 0 "), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_continues_without_the_control_plane_and_resubscribes() {
    let mut mesh = Mesh::start(MtlsMode::Strict, Duration::from_secs(3600)).await;
    mesh.cp.stop().await;
    for i in 0..3 {
        let (ok, out) =
            curl(vec!["-x".into(), mesh.proxy_url(), format!("http://echo:8080/offline-{i}")]).await;
        assert!(ok && out.contains(&format!("path: /offline-{i}")), "{out}");
    }
    let acks_before = mesh.cp.answers().len();
    mesh.cp.serve().await;
    eventually("the client re-subscribes with its running version and ACKs", || async {
        let hello =
            mesh.cp.hellos().iter().filter(|(pod, version)| pod == "sleep-0" && version == "v1").count() >= 1;
        let acked = mesh.cp.answers()[acks_before..]
            .contains(&Answer::Ack { pod: "sleep-0".into(), version: "v1".into() });
        (hello && acked).then_some(())
    })
    .await;
    let status = mesh.client.terminate();
    assert!(status.success(), "exit status {status:?}");
}
