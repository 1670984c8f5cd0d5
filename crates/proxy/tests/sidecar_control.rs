//! The proxy against its control plane: a NACKed snapshot keeps the running config, certificates
//! rotate under continuous traffic on one HTTP/2 connection without a failed request, the proxy
//! keeps serving while the control plane is gone and re-subscribes when it is back, and SIGTERM
//! exits cleanly.

#[path = "support/control.rs"]
mod control;
#[path = "support/harness.rs"]
mod support;

use std::time::{Duration, Instant};

use control::Answer;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use paymesh_api::model::{MtlsMode, RouteAction, WeightedCluster};
use support::{DEADLINE, Mesh, client_config, curl, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_snapshot_keeps_the_old_config() {
    let mesh = Mesh::start(MtlsMode::Strict, Duration::from_secs(3600)).await;
    let client = &mesh.client.pod;
    let server = &mesh.server.pod;
    let mut broken = client_config("v2", client, server, &mesh.down);
    broken.routes[0].virtual_hosts[0].routes[0].action = RouteAction::Forward {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_without_a_failed_request() {
    let mesh = Mesh::start(MtlsMode::Strict, Duration::from_secs(4)).await;
    let tcp = tokio::net::TcpStream::connect(mesh.client.pod.at(15001)).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2c");
    tokio::spawn(connection);
    let first_serial = mesh.server.config_dump().await["certificate"]["serial"].clone();
    let started = Instant::now();
    let (mut ok, mut failed) = (0u32, Vec::new());
    while started.elapsed() < Duration::from_secs(12) && ok + (failed.len() as u32) < 100_000 {
        let request =
            Request::get("http://echo:8080/rotating").body(Empty::<bytes::Bytes>::new()).expect("request");
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
    let client_rotations =
        mesh.client.config_dump().await["certificate"]["rotations"].as_u64().expect("rotations");
    let server_dump = mesh.server.config_dump().await;
    let server_rotations = server_dump["certificate"]["rotations"].as_u64().expect("rotations");
    eprintln!(
        "{ok} requests, {} failed; rotations: client {client_rotations}, server {server_rotations}",
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(ok > 100, "only {ok} requests");
    assert!(client_rotations >= 2 && server_rotations >= 2, "{client_rotations} / {server_rotations}");
    assert_ne!(server_dump["certificate"]["serial"], first_serial);
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
