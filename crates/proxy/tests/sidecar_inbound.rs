//! The inbound listener's peer authentication and robustness: plaintext to STRICT is refused,
//! TLS without a client certificate or with one from another root is refused, PERMISSIVE accepts
//! plaintext, and a slow client delays nobody else.

#[path = "support/control.rs"]
mod control;
#[path = "support/harness.rs"]
mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::{Answer, Ca};
use paymesh_api::model::MtlsMode;
use paymesh_tls::{CredentialStore, ExpectedIdentities, Identity, PrivateKey, client_config};
use rustls_pki_types::ServerName;
use support::{DEADLINE, Mesh, curl, eventually, server_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_refuses_plaintext_and_foreign_or_missing_client_certs() {
    let mesh = Mesh::start(MtlsMode::Strict, Duration::from_secs(3600)).await;
    let inbound = mesh.server.pod.at(15006);

    let (ok, out) =
        curl(vec!["-H".into(), "Host: echo:8080".into(), format!("http://{inbound}/plain")]).await;
    assert!(!ok, "plaintext to STRICT must fail: {out}");
    assert!(out.contains("Empty reply") || out.contains("reset") || out.contains("closed"), "{out}");

    let addr = inbound.to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &addr, "-quiet", "-alpn", "http/1.1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl runs");
        let _ = child.stdin.take().expect("stdin").write_all(b"GET / HTTP/1.1\r\nHost: echo:8080\r\n\r\n");
        let output = child.wait_with_output().expect("openssl output");
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    })
    .await
    .expect("openssl task");
    assert!(!out.contains("HTTP/1.1"), "no HTTP answer without a client certificate: {out}");
    assert!(out.contains("alert") || out.contains("certificate required"), "{out}");

    // A client certificate for the right identity, issued by another root.
    let foreign_ca = Ca::new(Duration::from_secs(600));
    let sleep: Identity = "spiffe://cluster.local/ns/test/sa/sleep".parse().expect("identity");
    let credential = foreign_ca
        .issue_local(&sleep, &[], PrivateKey::generate().expect("key"), Duration::from_secs(600))
        .expect("foreign credential");
    let store = CredentialStore::new(sleep);
    store.install(credential).expect("install");
    let echo: Identity = "spiffe://cluster.local/ns/test/sa/echo".parse().expect("identity");
    let config =
        client_config(Some(store), mesh.cp.ca.trust_bundle(), ExpectedIdentities::one(echo)).expect("tls");
    let tcp = tokio::net::TcpStream::connect(inbound).await.expect("connect");
    let result = async {
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::IpAddress(inbound.ip().into()), tcp)
            .await?;
        tls.write_all(b"GET / HTTP/1.1\r\nHost: echo:8080\r\n\r\n").await?;
        let mut buf = vec![0u8; 64];
        let n = tls.read(&mut buf).await?;
        Ok::<_, std::io::Error>(n)
    };
    match tokio::time::timeout(DEADLINE, result).await.expect("in time") {
        Ok(0) => {}
        Ok(n) => panic!("foreign client certificate got {n} bytes of answer"),
        Err(error) => assert!(
            error.to_string().contains("UnknownIssuer") || error.to_string().contains("alert"),
            "{error}"
        ),
    }

    // The mesh still works for the real client.
    let (ok, out) = curl(vec!["-x".into(), mesh.proxy_url(), "http://echo:8080/after".into()]).await;
    assert!(ok && out.contains("path: /after"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_accepts_plaintext_and_mutual_tls() {
    let mesh = Mesh::start(MtlsMode::Strict, Duration::from_secs(3600)).await;
    mesh.cp.set_config(server_config("s2", &mesh.server.pod, MtlsMode::Permissive));
    eventually("the server ACKs s2", || async {
        mesh.cp.answers().contains(&Answer::Ack { pod: "echo-0".into(), version: "s2".into() }).then_some(())
    })
    .await;
    let inbound = mesh.server.pod.at(15006);
    let (ok, out) =
        curl(vec!["-i".into(), "-H".into(), "Host: echo:8080".into(), format!("http://{inbound}/plain")])
            .await;
    assert!(ok, "{out}");
    assert!(out.starts_with("HTTP/1.1 200") && out.contains("path: /plain"), "{out}");
    assert!(!out.contains("x-forwarded-client-cert"), "plaintext has no peer identity: {out}");
    let (ok, out) = curl(vec!["-x".into(), mesh.proxy_url(), "http://echo:8080/mtls".into()]).await;
    assert!(ok && out.contains("URI=spiffe://cluster.local/ns/test/sa/sleep"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_delays_nobody_and_is_timed_out() {
    let mesh = Mesh::start(MtlsMode::Strict, Duration::from_secs(3600)).await;
    let mut slow = tokio::net::TcpStream::connect(mesh.client.pod.at(15001)).await.expect("connect");
    let started = Instant::now();
    let request = b"GET http://echo:8080/slow HTTP/1.1\r\nHost: echo:8080\r\n";
    let mut sent = 0;
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(15) && sent < request.len() {
        if slow.write_all(&request[sent..=sent]).await.is_err() {
            closed = true;
            break;
        }
        sent += 1;
        if sent == 2 {
            // Another client is served at once while the slow one dribbles.
            let before = Instant::now();
            let (ok, out) = curl(vec!["-x".into(), mesh.proxy_url(), "http://echo:8080/fast".into()]).await;
            assert!(ok && out.contains("path: /fast"), "{out}");
            assert!(before.elapsed() < Duration::from_secs(3), "fast client took {:?}", before.elapsed());
        }
        let mut probe = [0u8; 256];
        if let Ok(read) = tokio::time::timeout(Duration::from_secs(1), slow.read(&mut probe)).await {
            closed = matches!(read, Ok(0) | Err(_)) || closed;
            if closed || read.is_ok() {
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    assert!(closed || sent < request.len(), "slow client was never cut off");
    assert!(
        elapsed >= Duration::from_secs(9) && elapsed < Duration::from_secs(14),
        "cut off after {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_garbage_on_the_inbound_port_closes_that_connection_only() {
    let mesh = Mesh::start(MtlsMode::Strict, Duration::from_secs(3600)).await;
    // A TLS record header (handshake, TLS 1.0) followed by bytes that are no ClientHello.
    let mut garbage = tokio::net::TcpStream::connect(mesh.server.pod.at(15006)).await.expect("connect");
    let mut record = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    record.extend(std::iter::repeat_n(0xAB, 64));
    garbage.write_all(&record).await.expect("write");
    let mut answer = Vec::new();
    let read =
        tokio::time::timeout(DEADLINE, garbage.read_to_end(&mut answer)).await.expect("closed in time");
    // Either a TLS alert then close, or a reset: never an HTTP answer, never a hang.
    assert!(!String::from_utf8_lossy(&answer).contains("HTTP/"), "{answer:?}");
    assert!(read.is_err() || answer.len() < 64, "{read:?} {answer:?}");

    // Everyone else is still served through the same inbound listener.
    let (ok, out) = curl(vec!["-x".into(), mesh.proxy_url(), "http://echo:8080/after-garbage".into()]).await;
    assert!(ok && out.contains("path: /after-garbage"), "{out}");
}
