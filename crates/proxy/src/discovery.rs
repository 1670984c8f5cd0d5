//! The discovery client: one `MeshDiscovery/Subscribe` stream to the control plane over mutual
//! TLS (the proxy's own certificate; the server must be the control plane's identity).
//!
//! Flow: Hello (who we are, what we run, our certificate, that we apply deltas) → for each
//! Snapshot: decode the [`ProxyConfig`] — or, for a delta snapshot, apply its [`ConfigDelta`]
//! to the config the running [`Index`] was built from, which must be the delta's base — then
//! build and check an [`Index`] (off the data path), swap it in and ACK; or NACK with the reason
//! and keep the old one. A NACKed delta is answered by the control plane with a full snapshot.
//! When the stream breaks the proxy keeps serving its last config and reconnects with
//! [`Backoff`] (100 ms → 5 s), forever.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper_util::rt::TokioIo;
use paymesh_api::model::ProxyKind;
use paymesh_api::pb::mesh_discovery_client::MeshDiscoveryClient;
use paymesh_api::pb::subscribe_request::Kind;
use paymesh_api::pb::{Ack, Hello, Nack, Snapshot, SubscribeRequest};
use paymesh_api::{ConfigDelta, MAX_CONFIG_BYTES, MAX_SNAPSHOT_MESSAGE_BYTES, ProxyConfig};
use paymesh_tls::{ALPN_H2, CredentialStore, ExpectedIdentities, Identity, TrustBundle, client_config};
use rustls_pki_types::ServerName;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Endpoint, Uri};
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::identity::CertStatus;
use crate::index::Index;
use crate::readiness::BlockReady;
use crate::store::Store;
use crate::transport::pool::{CONNECT_TIMEOUT, Pools};

/// HTTP/2 pings on the discovery stream, so a control plane that vanished without closing
/// the connection (host gone, cable pulled) is noticed and the proxy reconnects.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How long a ping may go unanswered.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Who this proxy is, as the Hello says.
#[derive(Debug, Clone)]
pub struct Node {
    /// Pod name.
    pub pod: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod IP.
    pub ip: IpAddr,
    /// Sidecar or gateway.
    pub kind: ProxyKind,
}

/// Where the control plane is.
#[derive(Debug, Clone)]
pub struct Config {
    /// The control plane's gRPC address.
    pub addr: SocketAddr,
    /// The identity its serving certificate must carry.
    pub control_identity: Identity,
    /// The mesh roots.
    pub trust: TrustBundle,
    /// This proxy.
    pub node: Node,
}

/// Why a subscription ended.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The TLS configuration could not be built.
    #[error("discovery TLS: {0}")]
    Tls(#[from] paymesh_tls::ConfigError),
    /// Connecting failed.
    #[error("connecting to the control plane at {addr}: {source}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
    /// The stream failed.
    #[error("discovery stream: {}: {}", .0.code(), .0.message())]
    Stream(Box<tonic::Status>),
    /// Our own request stream closed (shutting down).
    #[error("discovery request stream closed")]
    Closed,
}

/// The discovery client's state.
pub struct Discovery {
    config: Config,
    store: Arc<CredentialStore>,
    cert: watch::Receiver<Option<CertStatus>>,
    index: Arc<ArcSwapOption<Index>>,
    /// Pools and cluster state, kept across snapshots.
    state: Store,
    changed: watch::Sender<u64>,
}

impl Discovery {
    /// A client publishing indexes into `index` (and a tick on `changed` after each swap).
    pub fn new(
        config: Config,
        store: Arc<CredentialStore>,
        cert: watch::Receiver<Option<CertStatus>>,
        index: Arc<ArcSwapOption<Index>>,
        changed: watch::Sender<u64>,
    ) -> Self {
        let pools = Pools::new(config.node.ip, Arc::clone(&store), config.trust.clone());
        Discovery { config, store, cert, index, state: Store::new(pools), changed }
    }

    /// Waits for the first certificate, then subscribes forever; `ready` is released by the
    /// first accepted snapshot.
    pub async fn run(mut self, ready: BlockReady) {
        let mut ready = Some(ready);
        if self.cert.wait_for(Option::is_some).await.is_err() {
            return;
        }
        let mut backoff = Backoff::default();
        loop {
            match self.subscribe(&mut ready, &mut backoff).await {
                Ok(()) => info!("control plane closed the discovery stream"),
                Err(error) => warn!(%error, "discovery stream failed"),
            }
            let pause = backoff.next_pause();
            tokio::time::sleep(pause).await;
        }
    }

    async fn subscribe(
        &mut self,
        ready: &mut Option<BlockReady>,
        backoff: &mut Backoff,
    ) -> Result<(), DiscoveryError> {
        let mut client = MeshDiscoveryClient::new(self.connect().await?)
            .max_decoding_message_size(MAX_SNAPSHOT_MESSAGE_BYTES);
        let (requests, outgoing) = mpsc::channel(4);
        let running = self.index.load().as_ref().map(|index| index.version().to_owned()).unwrap_or_default();
        let cert = self.cert.borrow().clone();
        let hello = Hello {
            pod: self.config.node.pod.clone(),
            namespace: self.config.node.namespace.clone(),
            ip: self.config.node.ip.to_string(),
            kind: self.config.node.kind.as_str().to_owned(),
            running_version: running,
            cert_expiry_unix: cert.as_ref().map_or(0, CertStatus::not_after_unix),
            cert_serial: cert.map(|c| c.serial).unwrap_or_default(),
            accepts_delta: true,
        };
        send(&requests, Kind::Hello(hello)).await?;
        let response = client
            .subscribe(ReceiverStream::new(outgoing))
            .await
            .map_err(|status| DiscoveryError::Stream(Box::new(status)))?;
        info!(addr = %self.config.addr, "subscribed to the control plane");
        let mut snapshots = response.into_inner();
        while let Some(snapshot) =
            snapshots.message().await.map_err(|s| DiscoveryError::Stream(Box::new(s)))?
        {
            backoff.reset();
            let answer = self.apply(&snapshot);
            if matches!(answer, Kind::Ack(_)) {
                ready.take();
            }
            send(&requests, answer).await?;
        }
        Ok(())
    }

    /// Decodes, checks and swaps in one snapshot; the ACK or NACK to send.
    fn apply(&mut self, snapshot: &Snapshot) -> Kind {
        let built = self.config_of(snapshot).and_then(|config| {
            if config.version != snapshot.version {
                return Err(format!(
                    "snapshot version {} does not match its config's version {}",
                    snapshot.version, config.version
                ));
            }
            Index::build(config, &self.config.node.pod, self.config.node.ip, &mut self.state)
                .map_err(|e| e.to_string())
        });
        match built {
            Ok(index) => {
                self.index.store(Some(Arc::new(index)));
                self.changed.send_modify(|tick| *tick += 1);
                info!(version = %snapshot.version, "config applied");
                let cert = self.cert.borrow().clone();
                Kind::Ack(Ack {
                    version: snapshot.version.clone(),
                    nonce: snapshot.nonce.clone(),
                    cert_expiry_unix: cert.as_ref().map_or(0, CertStatus::not_after_unix),
                    cert_serial: cert.map(|c| c.serial).unwrap_or_default(),
                })
            }
            Err(reason) => {
                warn!(version = %snapshot.version, %reason, "config rejected; keeping the previous one");
                Kind::Nack(Nack { version: snapshot.version.clone(), nonce: snapshot.nonce.clone(), reason })
            }
        }
    }

    /// The config `snapshot` carries: decoded whole, or the running config with its delta
    /// applied. The error is the NACK's reason.
    fn config_of(&self, snapshot: &Snapshot) -> Result<ProxyConfig, String> {
        let (field, bytes) = if snapshot.base_version.is_empty() {
            ("config_json", &snapshot.config_json)
        } else {
            ("delta_json", &snapshot.delta_json)
        };
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(format!("{field} is {} bytes, over the limit of {MAX_CONFIG_BYTES}", bytes.len()));
        }
        if snapshot.base_version.is_empty() {
            return ProxyConfig::decode(bytes).map_err(|e| e.to_string());
        }
        let running = self.index.load();
        let Some(index) = running.as_ref().filter(|index| index.version() == snapshot.base_version) else {
            let running = running.as_ref().map_or("no config", |index| index.version());
            return Err(format!(
                "delta snapshot {} applies to version {}, but this proxy runs {running}",
                snapshot.version, snapshot.base_version
            ));
        };
        let delta =
            ConfigDelta::decode(bytes).map_err(|e| format!("delta snapshot {}: {e}", snapshot.version))?;
        delta.apply(index.config()).map_err(|e| format!("delta snapshot {}: {e}", snapshot.version))
    }

    async fn connect(&self) -> Result<tonic::transport::Channel, DiscoveryError> {
        let expected = ExpectedIdentities::one(self.config.control_identity.clone());
        let mut tls = client_config(Some(Arc::clone(&self.store)), &self.config.trust, expected)?;
        tls.alpn_protocols = vec![ALPN_H2.to_vec()];
        let connector = TlsConnector::from(Arc::new(tls));
        let addr = self.config.addr;
        let source = self.config.node.ip;
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|source| DiscoveryError::Connect { addr, source })?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        endpoint
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let connector = connector.clone();
                async move {
                    let tcp =
                        crate::transport::pool::connect_tcp(source, addr, CONNECT_TIMEOUT).await.map_err(
                            |e| std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e.to_string()),
                        )?;
                    let tls = connector.connect(ServerName::IpAddress(addr.ip().into()), tcp).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }))
            .await
            .map_err(|source| DiscoveryError::Connect { addr, source })
    }
}

async fn send(requests: &mpsc::Sender<SubscribeRequest>, kind: Kind) -> Result<(), DiscoveryError> {
    requests.send(SubscribeRequest { kind: Some(kind) }).await.map_err(|_| DiscoveryError::Closed)
}

/// A tick channel for "a new index was swapped in".
pub fn changes() -> (watch::Sender<u64>, watch::Receiver<u64>) {
    watch::channel(0)
}
