//! The real `paymesh-control` binary end to end: bootstrap token over HTTP, a certificate from
//! the CA, a mutual-TLS Subscribe, ACK and NACK in /debug/syncz, a config edit pushed within
//! 1 s, an invalid edit rejected with analyze's message, a Hello for someone else's pod
//! refused, forged and reused tokens refused, bad HTTP bodies answered 400/401/413; and for a
//! proxy that accepts deltas: a full snapshot, a change waiting for its ACK, then deltas against
//! what it ACKed, nothing for a change it cannot see, a full snapshot answering a NACKed delta,
//! and the push counters; a change for a proxy that never answers goes whole after
//! `ANSWER_TIMEOUT`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hyper_util::rt::TokioIo;
use paymesh_api::ca::{BootstrapToken, CaClient, CaClientConfig};
use paymesh_api::pb::mesh_discovery_client::MeshDiscoveryClient;
use paymesh_api::pb::subscribe_request::Kind;
use paymesh_api::pb::{Ack, Hello, Nack, Snapshot, SubscribeRequest};
use paymesh_api::{ConfigDelta, ProxyConfig};
use paymesh_control::config_store::Version;
use paymesh_control::discovery::ANSWER_TIMEOUT;
use paymesh_tls::{ALPN_H2, CredentialStore, ExpectedIdentities, Identity, TrustBundle, client_config};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Endpoint, Uri};
use tonic::{Code, Streaming};

const DEADLINE: Duration = Duration::from_secs(10);
const ADMIN: &str = "admin-secret-for-tests";
const ISTIOD: &str = "spiffe://cluster.local/ns/istio-system/sa/istiod";
const CLIENT: &str = "spiffe://cluster.local/ns/shop/sa/client";

const BASE: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: account, namespace: shop}
spec:
  selector: {app: account}
  ports: [{name: http, port: 8083, targetPort: 9083}]
"#;

const PODS: &str = r#"apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: client-0, namespace: shop, labels: {app: client}, annotations: {paymesh.io/sidecar: "true"}}
  spec: {serviceAccountName: client, containers: [{name: app, image: app}]}
  status: {podIP: 127.77.0.2}
- apiVersion: v1
  kind: Pod
  metadata: {name: account-0, namespace: shop, labels: {app: account}, annotations: {paymesh.io/sidecar: "true"}}
  spec: {serviceAccountName: account-sa, containers: [{name: app, image: app, ports: [{containerPort: 9083}]}]}
  status: {podIP: 127.77.0.3}
"#;

/// A temp directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("clock").subsec_nanos();
        let dir = std::env::temp_dir().join(format!("paymesh-control-e2e-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("config")).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the control plane by PID when the test ends, whatever happened.
struct ProcessGuard(Child);

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback address of its own for this run.
fn random_loopback() -> String {
    let n = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("clock").subsec_nanos()
        ^ std::process::id();
    format!("127.{}.{}.{}", 1 + n % 250, (n >> 8) % 250, 1 + (n >> 16) % 250)
}

fn start(dir: &Path) -> (ProcessGuard, SocketAddr, SocketAddr) {
    let ip = random_loopback();
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, format!("{ADMIN}\n")).expect("admin token");
    let child = Command::new(env!("CARGO_BIN_EXE_paymesh-control"))
        .arg("-f")
        .arg(dir.join("config"))
        .arg("--pods")
        .arg(dir.join("pods.yaml"))
        .arg("--ca-dir")
        .arg(dir.join("ca"))
        .args(["--grpc-addr", &format!("{ip}:0"), "--monitoring-addr", &format!("{ip}:0")])
        .arg("--admin-token-file")
        .arg(&token_file)
        .args(["--cert-ttl", "1h"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("paymesh-control starts");
    let mut guard = ProcessGuard(child);
    let stdout = guard.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(DEADLINE).expect("ready line in time");
    let rest = line.strip_prefix("paymesh-control ready grpc=").expect("ready line");
    let (grpc, monitoring) = rest.split_once(" monitoring=").expect("two addresses");
    (guard, grpc.parse().expect("grpc addr"), monitoring.parse().expect("monitoring addr"))
}

async fn poll_json(http: &reqwest::Client, url: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let value: Value = http.get(url).send().await.expect("GET").json().await.expect("JSON");
        if done(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{url} never satisfied the condition; last: {value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn token(http: &reqwest::Client, monitoring: SocketAddr, sa: &str, pod: &str) -> BootstrapToken {
    let answer: Value = http
        .post(format!("http://{monitoring}/debug/bootstrap-token"))
        .bearer_auth(ADMIN)
        .json(&json!({"namespace": "shop", "serviceAccount": sa, "pod": pod}))
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token JSON");
    BootstrapToken::new(answer["token"].as_str().expect("token").to_owned())
}

async fn subscribe(
    grpc: SocketAddr,
    trust: &TrustBundle,
    store: Arc<CredentialStore>,
    pod: &str,
    accepts_delta: bool,
) -> (mpsc::Sender<SubscribeRequest>, Result<Streaming<Snapshot>, tonic::Status>) {
    let mut tls = client_config(Some(store), trust, ExpectedIdentities::one(ISTIOD.parse().expect("id")))
        .expect("client TLS");
    tls.alpn_protocols = vec![ALPN_H2.to_vec()];
    let connector = TlsConnector::from(Arc::new(tls));
    let channel = Endpoint::from_shared(format!("http://{grpc}"))
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(grpc).await?;
                let tls = connector.connect(ServerName::IpAddress(grpc.ip().into()), tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .expect("connects");
    let (tx, rx) = mpsc::channel(8);
    let hello = Hello {
        pod: pod.into(),
        namespace: "shop".into(),
        ip: "127.77.0.2".into(),
        kind: "sidecar".into(),
        running_version: String::new(),
        cert_expiry_unix: 0,
        cert_serial: "abc123".into(),
        accepts_delta,
    };
    tx.send(SubscribeRequest { kind: Some(Kind::Hello(hello)) }).await.expect("hello queued");
    let answer = MeshDiscoveryClient::new(channel).subscribe(ReceiverStream::new(rx)).await;
    (tx, answer.map(tonic::Response::into_inner))
}

async fn next_snapshot(stream: &mut Streaming<Snapshot>, within: Duration) -> Option<Snapshot> {
    match tokio::time::timeout(within, stream.message()).await {
        Ok(message) => message.expect("stream healthy"),
        Err(_) => None,
    }
}

#[tokio::test]
async fn control_plane_end_to_end() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("config/base.yaml"), BASE).expect("config");
    std::fs::write(dir.0.join("pods.yaml"), PODS).expect("pods");
    let (mut process, grpc, monitoring) = start(&dir.0);
    let http = reqwest::Client::new();
    let base = format!("http://{monitoring}");
    assert_eq!(http.get(format!("{base}/ready")).send().await.expect("ready").status(), 200);

    // A certificate for client-0 through its bootstrap token.
    let trust =
        TrustBundle::from_pem(&std::fs::read_to_string(dir.0.join("ca/root-cert.pem")).expect("bundle"))
            .expect("bundle parses");
    let ca = CaClient::new(
        CaClientConfig {
            addr: grpc,
            trust: trust.clone(),
            ca_identity: ISTIOD.parse().expect("id"),
            requested_ttl: None,
            timeout: DEADLINE,
            source: None,
        },
        None,
    )
    .expect("CA client");
    let client_id: Identity = CLIENT.parse().expect("id");
    let token = token(&http, monitoring, "client", "client-0").await;
    let credential = ca.certify(&client_id, Some(&token)).await.expect("certificate");
    let reused = ca.certify(&client_id, Some(&token)).await.expect_err("a token is single use");
    assert!(reused.to_string().contains("bootstrap token of pod shop/client-0 was already used"), "{reused}");
    let forged =
        ca.certify(&client_id, Some(&BootstrapToken::new("pmbt_forged".into()))).await.expect_err("forged");
    assert!(forged.to_string().contains("bootstrap token is unknown"), "{forged}");
    let store = CredentialStore::new(client_id.clone());
    store.install(credential).expect("installs");

    // Subscribe: the first snapshot, then ACK it.
    let (tx, stream) = subscribe(grpc, &trust, Arc::clone(&store), "client-0", false).await;
    let mut stream = stream.expect("subscribed");
    let first = next_snapshot(&mut stream, DEADLINE).await.expect("first snapshot");
    let first_version: Version = first.version.parse().expect("version <boot>-<n>");
    assert_eq!(first_version.n, 1);
    let config = ProxyConfig::decode(&first.config_json).expect("decodes");
    assert_eq!(config.node.identity, CLIENT);
    assert!(config.cluster("outbound|8083||account.shop.svc.cluster.local").is_some());
    let ack = Ack {
        version: first.version.clone(),
        nonce: first.nonce.clone(),
        cert_expiry_unix: 4102444800,
        cert_serial: "abc123".into(),
    };
    tx.send(SubscribeRequest { kind: Some(Kind::Ack(ack)) }).await.expect("ack");
    let syncz =
        poll_json(&http, &format!("{base}/debug/syncz"), |v| v[0]["ackedVersion"] == first.version).await;
    assert_eq!(syncz[0]["pod"], "client-0");
    assert_eq!(syncz[0]["connected"], true);
    assert_eq!(syncz[0]["certExpiry"], "2100-01-01T00:00:00Z");
    // An expiry past year 9999 is not an RFC 3339 time: ignored, and the server lives on.
    let far = Ack {
        version: first.version.clone(),
        nonce: first.nonce.clone(),
        cert_expiry_unix: 253_402_300_800,
        cert_serial: "def456".into(),
    };
    tx.send(SubscribeRequest { kind: Some(Kind::Ack(far)) }).await.expect("ack");
    let syncz = poll_json(&http, &format!("{base}/debug/syncz"), |v| v[0]["certSerial"] == "def456").await;
    assert_eq!(syncz[0]["certExpiry"], "2100-01-01T00:00:00Z");
    assert_eq!(syncz[0]["connected"], true);

    // A valid edit reaches the proxy within 1 s.
    let edited = Instant::now();
    let extra = "apiVersion: v1\nkind: Service\nmetadata: {name: ledger, namespace: shop}\nspec:\n  selector: {app: account}\n  ports: [{name: http, port: 8090, targetPort: 9083}]\n";
    std::fs::write(dir.0.join("config/ledger.yaml"), extra).expect("edit");
    let second = next_snapshot(&mut stream, DEADLINE).await.expect("pushed after the edit");
    let latency = edited.elapsed();
    println!("config edit -> snapshot at the proxy: {} ms", latency.as_millis());
    assert!(latency < Duration::from_secs(1), "push took {latency:?}");
    let second_version: Version = second.version.parse().expect("version");
    assert_eq!((second_version.boot, second_version.n), (first_version.boot, 2));
    let pushed = ProxyConfig::decode(&second.config_json).expect("decodes");
    assert!(pushed.cluster("outbound|8090||ledger.shop.svc.cluster.local").is_some());
    // A NACK with a stale nonce is ignored; the current one is recorded, its reason cut to 1 KiB.
    let stale = Nack { version: "0-9".into(), nonce: first.nonce.clone(), reason: "stale".into() };
    tx.send(SubscribeRequest { kind: Some(Kind::Nack(stale)) }).await.expect("nack");
    let nack = Nack {
        version: second.version.clone(),
        nonce: second.nonce.clone(),
        reason: format!("listener 8090 refused: {}", "x".repeat(5000)),
    };
    tx.send(SubscribeRequest { kind: Some(Kind::Nack(nack)) }).await.expect("nack");
    let syncz =
        poll_json(&http, &format!("{base}/debug/syncz"), |v| v[0]["nackedVersion"] == second.version).await;
    let reason = syncz[0]["nackReason"].as_str().expect("reason");
    assert!(reason.starts_with("listener 8090 refused: xxx") && reason.len() == 1024, "{}", reason.len());
    assert_eq!(syncz[0]["ackedVersion"], first.version);

    // An invalid edit is rejected with analyze's message; the proxy hears nothing.
    let bad = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: broken, namespace: shop}\nspec:\n  hosts: [account]\n  http:\n  - route: [{destination: {host: nowhere}}]\n";
    std::fs::write(dir.0.join("config/broken.yaml"), bad).expect("bad edit");
    let configz = poll_json(&http, &format!("{base}/debug/configz"), |v| !v["rejected"].is_null()).await;
    assert_eq!(configz["version"], second.version);
    assert_eq!(configz["unsupported"], json!([]));
    let first_message = configz["rejected"]["messages"][0].as_str().expect("a message");
    assert!(
        first_message.starts_with("Error [IST0101] (VirtualService shop/broken ")
            && first_message.contains("nowhere"),
        "{first_message}"
    );
    assert!(
        next_snapshot(&mut stream, Duration::from_millis(500)).await.is_none(),
        "nothing pushed for a rejected change"
    );
    let metrics =
        http.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
    for line in [
        "pilot_xds_pushes 2",
        "pilot_total_xds_rejects 1",
        "pilot_xds 1",
        "paymesh_config_rejections_total 1",
        "paymesh_config_version 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }

    // While the config edit stays rejected, a pods change is still accepted against the last
    // good config: a new account pod reaches the client.
    let more_pods = format!(
        "{PODS}- apiVersion: v1\n  kind: Pod\n  metadata: {{name: account-1, namespace: shop, labels: {{app: account}}, annotations: {{paymesh.io/sidecar: \"true\"}}}}\n  spec: {{serviceAccountName: account-sa, containers: [{{name: app, image: app, ports: [{{containerPort: 9083}}]}}]}}\n  status: {{podIP: 127.77.0.4}}\n"
    );
    std::fs::write(dir.0.join("pods.yaml"), more_pods).expect("pods edit");
    let third = next_snapshot(&mut stream, DEADLINE).await.expect("pushed after the pods change");
    let third_version: Version = third.version.parse().expect("version");
    assert_eq!((third_version.boot, third_version.n), (first_version.boot, 3));
    let pushed = ProxyConfig::decode(&third.config_json).expect("decodes");
    let pods: Vec<&str> = pushed
        .endpoints_of("outbound|8083||account.shop.svc.cluster.local")
        .iter()
        .map(|e| e.pod.as_str())
        .collect();
    assert_eq!(pods, ["account-0", "account-1"]);
    let configz = poll_json(&http, &format!("{base}/debug/configz"), |v| v["version"] == third.version).await;
    assert!(!configz["rejected"].is_null(), "the config edit is still rejected: {configz}");

    // client's certificate may not subscribe for account-0.
    let (_tx2, refused) = subscribe(grpc, &trust, Arc::clone(&store), "account-0", false).await;
    let status = refused.expect_err("another service account's pod");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "pod shop/account-0 runs as spiffe://cluster.local/ns/shop/sa/account-sa, but the client certificate is spiffe://cluster.local/ns/shop/sa/client"
    );

    // The monitoring port's answers to bad requests.
    let url = format!("{base}/debug/bootstrap-token");
    let answer = http.post(&url).body("{}").send().await.expect("no auth");
    assert_eq!(answer.status(), 401);
    assert_eq!(
        answer.json::<Value>().await.expect("JSON"),
        json!({"error": "missing `Authorization: Bearer <admin token>`"})
    );
    let answer =
        http.post(&url).bearer_auth("admin-secret-for-test").body("{}").send().await.expect("wrong secret");
    assert_eq!(answer.status(), 401);
    assert_eq!(answer.json::<Value>().await.expect("JSON"), json!({"error": "the admin token is not valid"}));
    let answer = http.post(&url).bearer_auth(ADMIN).body("\u{0}garbage{").send().await.expect("garbage");
    assert_eq!(answer.status(), 400);
    let reason = answer.json::<Value>().await.expect("JSON")["error"].as_str().expect("reason").to_owned();
    assert!(
        reason.starts_with("body must be JSON {\"namespace\", \"serviceAccount\", \"pod\"}: "),
        "{reason}"
    );
    let answer = http
        .post(&url)
        .bearer_auth(ADMIN)
        .json(&json!({"namespace": "Shop!", "serviceAccount": "a", "pod": "p"}))
        .send()
        .await
        .expect("bad namespace");
    assert_eq!(answer.status(), 400);
    let answer = http.post(&url).bearer_auth(ADMIN).body(vec![b'x'; 8192]).send().await.expect("oversized");
    assert_eq!(answer.status(), 413);
    assert_eq!(answer.json::<Value>().await.expect("JSON"), json!({"error": "body over 4096 bytes"}));

    // A client that stops sending in the middle of its headers is cut off after the read
    // deadline (10 s), not left holding a connection slot.
    let mut slow = TcpStream::connect(monitoring).await.expect("connects");
    slow.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\n").await.expect("partial headers");
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let read =
        tokio::time::timeout(Duration::from_secs(20), slow.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "closed without an answer: {read:?}");
    assert!(started.elapsed() >= Duration::from_secs(9), "{:?}", started.elapsed());

    // A second stream for the same pod replaces the first: the old one ends.
    let (_tx3, newer) = subscribe(grpc, &trust, Arc::clone(&store), "client-0", false).await;
    let mut newer = newer.expect("subscribed again");
    let again = next_snapshot(&mut newer, DEADLINE).await.expect("snapshot on the new stream");
    assert_eq!(again.version, third.version);
    let ended = tokio::time::timeout(DEADLINE, stream.message()).await.expect("old stream ends in time");
    assert!(matches!(ended, Ok(None) | Err(_)), "old stream ended: {ended:?}");
    let syncz =
        poll_json(&http, &format!("{base}/debug/syncz"), |v| v[0]["sentVersion"] == third.version).await;
    assert_eq!(syncz[0]["connected"], true, "the newer stream owns the entry: {syncz}");

    // SIGTERM: the stream ends, the process exits 0.
    terminate(&mut process).await;
    let ended = tokio::time::timeout(DEADLINE, newer.message()).await.expect("stream ends in time");
    assert!(matches!(ended, Ok(None) | Err(_)), "stream ended");

    // Restarted, the control plane's versions still compare greater than what it sent before.
    std::fs::remove_file(dir.0.join("config/broken.yaml")).expect("remove the bad edit");
    let (mut process, grpc, _) = start(&dir.0);
    let (_tx4, restarted) = subscribe(grpc, &trust, Arc::clone(&store), "client-0", false).await;
    let mut restarted = restarted.expect("subscribed after the restart");
    let after = next_snapshot(&mut restarted, DEADLINE).await.expect("snapshot after the restart");
    let after_version: Version = after.version.parse().expect("version");
    assert_eq!(after_version.n, 1);
    assert!(after_version > second_version, "{after_version} > {second_version}");
    terminate(&mut process).await;
}

/// client-0's trust bundle and certificate, through its bootstrap token.
async fn certified(
    dir: &Path,
    grpc: SocketAddr,
    monitoring: SocketAddr,
) -> (TrustBundle, Arc<CredentialStore>) {
    let trust =
        TrustBundle::from_pem(&std::fs::read_to_string(dir.join("ca/root-cert.pem")).expect("bundle"))
            .expect("bundle parses");
    let config = CaClientConfig {
        addr: grpc,
        trust: trust.clone(),
        ca_identity: ISTIOD.parse().expect("id"),
        requested_ttl: None,
        timeout: DEADLINE,
        source: None,
    };
    let ca = CaClient::new(config, None).expect("CA client");
    let client_id: Identity = CLIENT.parse().expect("id");
    let token = token(&reqwest::Client::new(), monitoring, "client", "client-0").await;
    let store = CredentialStore::new(client_id.clone());
    store.install(ca.certify(&client_id, Some(&token)).await.expect("certificate")).expect("installs");
    (trust, store)
}

async fn answer(tx: &mpsc::Sender<SubscribeRequest>, snapshot: &Snapshot, nack: Option<&str>) {
    let kind = match nack {
        None => Kind::Ack(Ack {
            version: snapshot.version.clone(),
            nonce: snapshot.nonce.clone(),
            cert_expiry_unix: 0,
            cert_serial: String::new(),
        }),
        Some(reason) => Kind::Nack(Nack {
            version: snapshot.version.clone(),
            nonce: snapshot.nonce.clone(),
            reason: reason.into(),
        }),
    };
    tx.send(SubscribeRequest { kind: Some(kind) }).await.expect("answer queued");
}

/// `snapshot`'s delta applied to `base`, checked against the versions it names.
fn applied(base: &ProxyConfig, snapshot: &Snapshot) -> ProxyConfig {
    assert!(snapshot.config_json.is_empty(), "a delta snapshot carries no whole config");
    assert_eq!(snapshot.base_version, base.version, "the delta's base is what the proxy ACKed");
    let delta = ConfigDelta::decode(&snapshot.delta_json).expect("delta decodes");
    assert_eq!(delta.version, snapshot.version);
    delta.apply(base).expect("delta applies")
}

fn whole(snapshot: &Snapshot) -> ProxyConfig {
    assert!(snapshot.base_version.is_empty() && snapshot.delta_json.is_empty(), "a full snapshot");
    ProxyConfig::decode(&snapshot.config_json).expect("decodes")
}

#[tokio::test]
async fn a_proxy_that_accepts_deltas_gets_a_full_snapshot_then_deltas() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("config/base.yaml"), BASE).expect("config");
    std::fs::write(dir.0.join("pods.yaml"), PODS).expect("pods");
    let (mut process, grpc, monitoring) = start(&dir.0);
    let http = reqwest::Client::new();
    let base = format!("http://{monitoring}");
    let (trust, store) = certified(&dir.0, grpc, monitoring).await;
    let (tx, stream) = subscribe(grpc, &trust, store, "client-0", true).await;
    let mut stream = stream.expect("subscribed");

    // Full first. A new Service accepted while it is unanswered waits for the answer, so the
    // delta's base is what the proxy runs.
    let first = next_snapshot(&mut stream, DEADLINE).await.expect("first snapshot");
    let v1 = whole(&first);
    let extra = "apiVersion: v1\nkind: Service\nmetadata: {name: ledger, namespace: shop}\nspec:\n  selector: {app: account}\n  ports: [{name: http, port: 8090, targetPort: 9083}]\n";
    std::fs::write(dir.0.join("config/ledger.yaml"), extra).expect("edit");
    poll_json(&http, &format!("{base}/debug/configz"), |v| v["version"] != first.version).await;
    assert!(next_snapshot(&mut stream, Duration::from_millis(300)).await.is_none(), "waits for the ACK");
    answer(&tx, &first, None).await;

    // Then a delta against v1 with the new cluster, ACKed.
    let second = next_snapshot(&mut stream, DEADLINE).await.expect("pushed after the ACK");
    let v2 = applied(&v1, &second);
    assert!(v2.cluster("outbound|8090||ledger.shop.svc.cluster.local").is_some());
    assert!(second.delta_json.len() < first.config_json.len(), "{} bytes", second.delta_json.len());
    answer(&tx, &second, None).await;
    poll_json(&http, &format!("{base}/debug/syncz"), |v| v[0]["ackedVersion"] == second.version).await;

    // A change client-0 cannot see (a Sidecar for the account pods): accepted, nothing sent.
    let other = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: shop}\nspec:\n  workloadSelector: {labels: {app: account}}\n  egress: [{hosts: [\"./*\"]}]\n";
    std::fs::write(dir.0.join("config/other.yaml"), other).expect("edit");
    let configz =
        poll_json(&http, &format!("{base}/debug/configz"), |v| v["version"] != second.version).await;
    assert!(configz["rejected"].is_null(), "{configz}");
    assert!(next_snapshot(&mut stream, Duration::from_millis(500)).await.is_none(), "nothing changed for it");

    // A new endpoint: a delta against v2 (what the proxy runs, not the version it skipped).
    // NACKed, it is answered with the same version whole, which is v2 + the delta exactly.
    let more_pods = format!(
        "{PODS}- apiVersion: v1\n  kind: Pod\n  metadata: {{name: account-1, namespace: shop, labels: {{app: account}}, annotations: {{paymesh.io/sidecar: \"true\"}}}}\n  spec: {{serviceAccountName: account-sa, containers: [{{name: app, image: app, ports: [{{containerPort: 9083}}]}}]}}\n  status: {{podIP: 127.77.0.4}}\n"
    );
    std::fs::write(dir.0.join("pods.yaml"), more_pods).expect("pods edit");
    let third = next_snapshot(&mut stream, DEADLINE).await.expect("pushed after the pods change");
    let v4 = applied(&v2, &third);
    let pods: Vec<&str> = v4
        .endpoints_of("outbound|8083||account.shop.svc.cluster.local")
        .iter()
        .map(|e| e.pod.as_str())
        .collect();
    assert_eq!(pods, ["account-0", "account-1"]);
    answer(&tx, &third, Some("base mismatch")).await;
    let fourth = next_snapshot(&mut stream, DEADLINE).await.expect("a full snapshot answers the NACK");
    assert_eq!(fourth.version, third.version);
    assert_eq!(
        String::from_utf8(whole(&fourth).encode().expect("encodes")).expect("utf-8"),
        String::from_utf8(v4.encode().expect("encodes")).expect("utf-8"),
        "base + delta is the full config, byte for byte"
    );
    answer(&tx, &fourth, None).await;
    let syncz =
        poll_json(&http, &format!("{base}/debug/syncz"), |v| v[0]["ackedVersion"] == fourth.version).await;
    assert_eq!(syncz[0]["nackReason"], "base mismatch");

    let metrics =
        http.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
    let full_bytes = first.config_json.len() + fourth.config_json.len();
    let delta_bytes = second.delta_json.len() + third.delta_json.len();
    for line in [
        "pilot_xds_pushes 4".to_owned(),
        "paymesh_xds_full_pushes_total 2".to_owned(),
        "paymesh_xds_delta_pushes_total 2".to_owned(),
        format!("paymesh_xds_full_bytes_total {full_bytes}"),
        format!("paymesh_xds_delta_bytes_total {delta_bytes}"),
        "pilot_total_xds_rejects 1".to_owned(),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    terminate(&mut process).await;
}

#[tokio::test]
async fn a_change_for_a_proxy_that_never_answers_goes_whole_after_the_answer_timeout() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("config/base.yaml"), BASE).expect("config");
    std::fs::write(dir.0.join("pods.yaml"), PODS).expect("pods");
    let (mut process, grpc, monitoring) = start(&dir.0);
    let (trust, store) = certified(&dir.0, grpc, monitoring).await;
    let (tx, stream) = subscribe(grpc, &trust, store, "client-0", true).await;
    let mut stream = stream.expect("subscribed");
    let first = next_snapshot(&mut stream, DEADLINE).await.expect("first snapshot");
    let extra = "apiVersion: v1\nkind: Service\nmetadata: {name: ledger, namespace: shop}\nspec:\n  selector: {app: account}\n  ports: [{name: http, port: 8090, targetPort: 9083}]\n";
    std::fs::write(dir.0.join("config/ledger.yaml"), extra).expect("edit");
    let asked = Instant::now();
    let second =
        next_snapshot(&mut stream, ANSWER_TIMEOUT + DEADLINE).await.expect("pushed without an answer");
    assert!(asked.elapsed() >= ANSWER_TIMEOUT - Duration::from_secs(1), "{:?}", asked.elapsed());
    assert!(second.base_version.is_empty(), "whole, not a delta against {}", second.base_version);
    assert!(whole(&second).cluster("outbound|8090||ledger.shop.svc.cluster.local").is_some());
    drop((tx, first));
    terminate(&mut process).await;
}

/// SIGTERM, then wait for a clean exit.
async fn terminate(process: &mut ProcessGuard) {
    let pid = process.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs").success());
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = process.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "paymesh-control did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
}
