//! Simulated proxies: each is a tokio task that does what `paymesh-proxy` does up to its data
//! path (crates/proxy/src/discovery.rs): a bootstrap token over HTTP, a certificate from the CA
//! ([`CaClient`]), a `MeshDiscovery/Subscribe` stream over mutual TLS with a Hello for its pod
//! (accepting deltas, unless the bench runs `--no-delta`), then for every Snapshot: decode the
//! [`ProxyConfig`] — or decode the [`ConfigDelta`] and apply it to the config it keeps, as the
//! real proxy does — and ACK it; a delta that does not apply is NACKed with the reason.
//!
//! Each decoded snapshot is reported as a [`Received`] on one channel, stamped when decoding
//! (and applying) finished, so the bench measures "file written → config decoded at every
//! proxy".

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use paymesh_api::ca::{CaClient, CaClientConfig};
use paymesh_api::pb::mesh_discovery_client::MeshDiscoveryClient;
use paymesh_api::pb::subscribe_request::Kind;
use paymesh_api::pb::{Ack, Hello, Nack, Snapshot, SubscribeRequest};
use paymesh_api::{ConfigDelta, ProxyConfig};
use paymesh_tls::{ALPN_H2, CredentialStore, ExpectedIdentities, Identity, TrustBundle, client_config};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Endpoint, Uri};

use crate::generate::PodRef;
use crate::process::Control;

/// The control plane's serving identity.
const ISTIOD: &str = "spiffe://cluster.local/ns/istio-system/sa/istiod";

/// Limit on connecting and on CA calls.
const TIMEOUT: Duration = Duration::from_secs(60);

/// One snapshot decoded by one proxy.
#[derive(Debug)]
pub struct Received {
    /// Which proxy.
    pub proxy: usize,
    /// The snapshot's version.
    pub version: String,
    /// When the snapshot had arrived, before decoding: what the control plane's push costs.
    pub arrived: Instant,
    /// When decoding finished.
    pub at: Instant,
    /// `config_json` length, or `delta_json`'s for a delta.
    pub bytes: usize,
    /// The snapshot was a delta.
    pub delta: bool,
    /// Clusters in the decoded config.
    pub clusters: usize,
    /// Endpoints over all clusters.
    pub endpoints: usize,
}

/// A proxy with its certificate, ready to subscribe.
pub struct Certified {
    index: usize,
    pod: PodRef,
    store: Arc<CredentialStore>,
}

/// Token + certificate for `pod` (proxy number `index`).
pub async fn certify(
    monitoring: SocketAddr,
    http: &reqwest::Client,
    ca: &CaClient,
    index: usize,
    pod: PodRef,
) -> anyhow::Result<Certified> {
    let token = crate::process::token(http, monitoring, &pod).await?;
    let identity: Identity =
        format!("spiffe://cluster.local/ns/{}/sa/{}", pod.namespace, pod.service_account)
            .parse()
            .context("pod identity")?;
    let credential =
        ca.certify(&identity, Some(&token)).await.with_context(|| format!("certificate for {}", pod.name))?;
    let store = CredentialStore::new(identity);
    store.install(credential).context("installing the certificate")?;
    Ok(Certified { index, pod, store })
}

/// A CA client for `control`.
pub fn ca_client(control: &Control, trust: &TrustBundle) -> anyhow::Result<CaClient> {
    let config = CaClientConfig {
        addr: control.grpc,
        trust: trust.clone(),
        ca_identity: ISTIOD.parse().context("istiod identity")?,
        requested_ttl: None,
        timeout: TIMEOUT,
        source: None,
    };
    CaClient::new(config, None).context("CA client")
}

/// The config `snapshot` carries: decoded whole, or `running` with its delta applied (the
/// error is the NACK's reason).
fn config_of(snapshot: &Snapshot, running: Option<Arc<ProxyConfig>>) -> Result<ProxyConfig, String> {
    if snapshot.base_version.is_empty() {
        return ProxyConfig::decode(&snapshot.config_json).map_err(|e| e.to_string());
    }
    let running = running.filter(|config| config.version == snapshot.base_version).ok_or_else(|| {
        format!(
            "delta snapshot {} applies to {}, which this proxy does not run",
            snapshot.version, snapshot.base_version
        )
    })?;
    let delta = ConfigDelta::decode(&snapshot.delta_json).map_err(|e| e.to_string())?;
    delta.apply(&running).map_err(|e| e.to_string())
}

/// Subscribes `proxy` and serves its stream until the control plane closes it or the
/// receiver of `events` goes away. `window`: the HTTP/2 receive windows (`None`: h2's 64 KiB
/// default, as `paymesh-proxy` has); `accepts_delta`: what its Hello says.
pub async fn run(
    grpc: SocketAddr,
    trust: TrustBundle,
    proxy: Certified,
    events: mpsc::UnboundedSender<Received>,
    window: Option<u32>,
    accepts_delta: bool,
) -> anyhow::Result<()> {
    let expected = ExpectedIdentities::one(ISTIOD.parse().context("istiod identity")?);
    let mut tls = client_config(Some(Arc::clone(&proxy.store)), &trust, expected)?;
    tls.alpn_protocols = vec![ALPN_H2.to_vec()];
    let connector = TlsConnector::from(Arc::new(tls));
    let channel = Endpoint::from_shared(format!("http://{grpc}"))?
        .initial_stream_window_size(window)
        .initial_connection_window_size(window)
        .connect_timeout(TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(grpc).await?;
                let tls = connector.connect(ServerName::IpAddress(grpc.ip().into()), tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .context("connecting to discovery")?;
    let (requests, outgoing) = mpsc::channel(4);
    let hello = Hello {
        pod: proxy.pod.name.clone(),
        namespace: proxy.pod.namespace.clone(),
        ip: proxy.pod.ip.to_string(),
        kind: "sidecar".into(),
        running_version: String::new(),
        cert_expiry_unix: 0,
        cert_serial: String::new(),
        accepts_delta,
    };
    requests.send(SubscribeRequest { kind: Some(Kind::Hello(hello)) }).await?;
    let mut snapshots =
        MeshDiscoveryClient::new(channel).subscribe(ReceiverStream::new(outgoing)).await?.into_inner();
    let mut running: Option<Arc<ProxyConfig>> = None;
    while let Some(snapshot) = snapshots.message().await? {
        let arrived = Instant::now();
        // Decoded (and applied) off the runtime's workers, as a real proxy does in its own
        // process: a decode here does not hold up the other simulated proxies' streams.
        let base = running.clone();
        let (snapshot, config) = tokio::task::spawn_blocking(move || {
            let config = config_of(&snapshot, base);
            (snapshot, config)
        })
        .await
        .context("decode task")?;
        let delta = !snapshot.base_version.is_empty();
        let config = match config {
            Ok(config) => Arc::new(config),
            Err(reason) => {
                let nack = Nack { version: snapshot.version, nonce: snapshot.nonce, reason };
                requests.send(SubscribeRequest { kind: Some(Kind::Nack(nack)) }).await?;
                continue;
            }
        };
        let received = Received {
            proxy: proxy.index,
            version: snapshot.version.clone(),
            arrived,
            at: Instant::now(),
            bytes: if delta { snapshot.delta_json.len() } else { snapshot.config_json.len() },
            delta,
            clusters: config.clusters.len(),
            endpoints: config.endpoints.iter().map(|e| e.endpoints.len()).sum(),
        };
        running = Some(config);
        let ack = Ack {
            version: snapshot.version,
            nonce: snapshot.nonce,
            cert_expiry_unix: 0,
            cert_serial: String::new(),
        };
        requests.send(SubscribeRequest { kind: Some(Kind::Ack(ack)) }).await?;
        if events.send(received).is_err() {
            break;
        }
    }
    Ok(())
}
