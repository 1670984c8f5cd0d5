//! Certificate rotation under load: with `--cert-ttl 6s`, 30 s of gRPC between two pods through
//! their sidecars (unary calls and one bidirectional stream, all on one long-lived HTTP/2
//! connection from the test to the client pod's outbound listener) see zero failures while both
//! proxies rotate their certificates at least three times.

#![cfg(unix)]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use paymesh_echo::proto::EchoMessage;
use paymesh_echo::proto::echo_client::EchoClient;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

#[path = "support/up.rs"]
mod support;

#[path = "support/mesh.rs"]
mod mesh;

use mesh::*;
use support::*;

const GRPC_PORT: u16 = 9191;
const TRAFFIC: Duration = Duration::from_secs(30);
const PACE: Duration = Duration::from_millis(50);

fn rotations(ip: Ipv4Addr) -> u64 {
    let dump = config_dump(ip).unwrap_or_else(|| panic!("config_dump of {ip}"));
    dump["certificate"]["rotations"].as_u64().unwrap_or_else(|| panic!("no certificate.rotations: {dump}"))
}

/// One bidirectional stream kept open for [`TRAFFIC`]: every message comes back in order from
/// echo-b. Returns how many round trips succeeded.
async fn chat_for(mut client: EchoClient<Channel>) -> Result<u64, String> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut answers = client
        .chat(ReceiverStream::new(rx))
        .await
        .map_err(|e| format!("opening the stream: {e}"))?
        .into_inner();
    let start = Instant::now();
    let mut seq = 0;
    while start.elapsed() < TRAFFIC {
        seq += 1;
        let message = EchoMessage { seq, payload: format!("chat {seq}"), pod: String::new() };
        tx.send(message).await.map_err(|_| format!("stream closed before message {seq}"))?;
        let answer = tokio::time::timeout(Duration::from_secs(5), answers.next())
            .await
            .map_err(|_| format!("no answer to message {seq} within 5 s"))?
            .ok_or_else(|| format!("stream ended before answer {seq}"))?
            .map_err(|e| format!("answer {seq}: {e}"))?;
        if answer.seq != seq || !answer.pod.starts_with("echo-b-") {
            return Err(format!("message {seq} answered with {answer:?}"));
        }
        tokio::time::sleep(PACE).await;
    }
    drop(tx);
    Ok(seq)
}

/// Unary calls one after another for [`TRAFFIC`]: (successes, failures with their errors).
async fn unary_for(mut client: EchoClient<Channel>) -> (u64, Vec<String>) {
    let start = Instant::now();
    let (mut ok, mut failed) = (0, Vec::new());
    let mut seq = 0;
    while start.elapsed() < TRAFFIC {
        seq += 1;
        let message = EchoMessage { seq, payload: "unary".into(), pod: String::new() };
        match tokio::time::timeout(Duration::from_secs(5), client.unary(message)).await {
            Ok(Ok(answer)) if answer.get_ref().seq == seq && answer.get_ref().pod.starts_with("echo-b-") => {
                ok += 1
            }
            Ok(Ok(answer)) => failed.push(format!("call {seq}: wrong answer {:?}", answer.get_ref())),
            Ok(Err(status)) => failed.push(format!("call {seq}: {status}")),
            Err(_) => failed.push(format!("call {seq}: no answer within 5 s")),
        }
        tokio::time::sleep(PACE).await;
    }
    (ok, failed)
}

#[test]
fn grpc_over_one_connection_survives_three_rotations_without_a_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    let grpc_arg = GRPC_PORT.to_string();
    let apps = format!(
        "{INJECTED}{}{}",
        echo_app("echo-a", 9090, &[], &[]),
        echo_app("echo-b", 9091, &["--grpc-port", &grpc_arg], &[("grpc", GRPC_PORT)])
    );
    std::fs::write(&file, apps).expect("write");
    let state_dir = dir.path().join("state");
    let up = start_mesh(&file, &state_dir, random_base(), &["--cert-ttl", "6s"]);
    let (ip_a, ip_b) = (pod_ip(&up, "mesh", "echo-a"), pod_ip(&up, "mesh", "echo-b"));
    let before = (rotations(ip_a), rotations(ip_b));

    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (chatted, (unary_ok, unary_failed)) = runtime.block_on(async {
        // The sidecar is the HTTP/2 proxy: connect to its outbound port, name the service as
        // the authority of every request.
        let channel = Endpoint::from_shared(format!("http://{ip_a}:15001"))
            .expect("endpoint")
            .origin(format!("http://echo-b.mesh:{GRPC_PORT}").parse().expect("origin"))
            .connect()
            .await
            .expect("connect to echo-a's outbound listener");
        let chat = tokio::spawn(chat_for(EchoClient::new(channel.clone())));
        let unary = unary_for(EchoClient::new(channel)).await;
        (chat.await.expect("chat task"), unary)
    });
    let after = (rotations(ip_a), rotations(ip_b));
    println!(
        "rotation test: {unary_ok} unary calls, {} stream round trips; rotations echo-a {} → {}, echo-b {} → {}",
        chatted.as_ref().map_or(0, |n| *n),
        before.0,
        after.0,
        before.1,
        after.1
    );
    assert!(unary_failed.is_empty(), "{} unary calls failed: {:?}", unary_failed.len(), unary_failed);
    let chatted = chatted.expect("the bidirectional stream failed");
    assert!(unary_ok >= 100 && chatted >= 100, "too little traffic: {unary_ok} unary, {chatted} streamed");
    assert!(after.0 - before.0 >= 3, "echo-a rotated {} times in 30 s", after.0 - before.0);
    assert!(after.1 - before.1 >= 3, "echo-b rotated {} times in 30 s", after.1 - before.1);
}
