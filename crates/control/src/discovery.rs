//! `paymesh.discovery.v1.MeshDiscovery/Subscribe`: pushes each proxy its compiled config.
//!
//! One stream per proxy, in named phases: [`authenticate`] (the client certificate's SPIFFE
//! identity), read the Hello, [`authorize`] (the pod is in the registry and runs under that
//! identity's service account), then a push loop that compiles the proxy's config on connect
//! and on every accepted config change, and sends a Snapshot only when the compiled content
//! differs from what the proxy last got. ACKs and NACKs land in [`SyncStatus`], which
//! `/debug/syncz` shows. The loop ends when the proxy hangs up or the control plane drains.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use paymesh_api::model::{ProxyConfig, ProxyKind};
use paymesh_api::pb::mesh_discovery_server::MeshDiscovery;
use paymesh_api::pb::subscribe_request::Kind;
use paymesh_api::pb::{Hello, Snapshot, SubscribeRequest};
use paymesh_tls::{Identity, LeafInfo};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::compile::{self, Settings};
use crate::config_store::{Accepted, ConfigStore};
use crate::registry::spiffe_id;

/// How long a proxy has to send its Hello after opening the stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Snapshots queued towards one proxy.
const STREAM_QUEUE: usize = 4;

/// Push counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Snapshots sent.
    pub pushes: AtomicU64,
    /// NACKs received.
    pub nacks: AtomicU64,
    /// Streams open now.
    pub connected: AtomicI64,
}

/// What the control plane knows of one proxy (`/debug/syncz`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    /// Pod name.
    pub pod: String,
    /// Pod namespace.
    pub namespace: String,
    /// `sidecar` or `gateway`.
    pub kind: &'static str,
    /// Whether its stream is open.
    pub connected: bool,
    /// Last version sent.
    pub sent_version: Option<String>,
    /// Last version it accepted.
    pub acked_version: Option<String>,
    /// Last version it refused.
    pub nacked_version: Option<String>,
    /// Why it refused it.
    pub nack_reason: Option<String>,
    /// Its certificate's serial (hex), as it reports it.
    pub cert_serial: Option<String>,
    /// Its certificate's expiry, RFC 3339.
    pub cert_expiry: Option<String>,
    #[serde(skip)]
    nonce: String,
}

/// Every proxy ever connected, by `namespace/pod`.
#[derive(Debug, Default)]
pub struct SyncStatus(Mutex<BTreeMap<String, ProxyStatus>>);

impl SyncStatus {
    /// A copy of every entry, sorted by `namespace/pod`.
    pub fn snapshot(&self) -> Vec<ProxyStatus> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    fn update(&self, key: &str, change: impl FnOnce(&mut ProxyStatus)) {
        if let Some(status) = self.0.lock().unwrap_or_else(PoisonError::into_inner).get_mut(key) {
            change(status);
        }
    }

    fn insert(&self, key: String, status: ProxyStatus) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(key, status);
    }
}

/// The discovery service.
#[derive(Clone)]
pub struct Discovery {
    config: Arc<ConfigStore>,
    settings: Arc<Settings>,
    status: Arc<SyncStatus>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    nonces: Arc<AtomicU64>,
}

impl Discovery {
    /// Serves proxies from `config`; streams end when `shutdown` turns true.
    pub fn new(
        config: Arc<ConfigStore>,
        settings: Arc<Settings>,
        status: Arc<SyncStatus>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Discovery { config, settings, status, metrics, shutdown, nonces: Arc::new(AtomicU64::new(0)) }
    }
}

type SnapshotStream = ReceiverStream<Result<Snapshot, Status>>;

#[tonic::async_trait]
impl MeshDiscovery for Discovery {
    type SubscribeStream = SnapshotStream;

    async fn subscribe(
        &self,
        request: Request<Streaming<SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let identity = authenticate(&request)?;
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 10s")),
            Ok(Err(status)) => return Err(status),
            Ok(Ok(Some(SubscribeRequest { kind: Some(Kind::Hello(hello)) }))) => hello,
            Ok(Ok(_)) => return Err(Status::invalid_argument("the first message must be a Hello")),
        };
        let kind = ProxyKind::parse(&hello.kind).ok_or_else(|| {
            Status::invalid_argument(format!("Hello.kind {:?} is neither sidecar nor gateway", hello.kind))
        })?;
        let current = self.config.current();
        authorize(&current, &self.settings.trust_domain, &hello, &identity).inspect_err(|status| {
            warn!(%identity, pod = %hello.pod, namespace = %hello.namespace, reason = status.message(), "discovery refused a proxy");
        })?;
        let first = compile::compile(
            &current.store,
            &current.registry,
            &self.settings,
            &hello.namespace,
            &hello.pod,
            kind,
            current.version,
        )
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let key = format!("{}/{}", hello.namespace, hello.pod);
        self.status.insert(
            key.clone(),
            ProxyStatus {
                pod: hello.pod.clone(),
                namespace: hello.namespace.clone(),
                kind: kind.as_str(),
                connected: true,
                sent_version: None,
                acked_version: None,
                nacked_version: None,
                nack_reason: None,
                cert_serial: non_empty(&hello.cert_serial),
                cert_expiry: rfc3339(hello.cert_expiry_unix),
                nonce: String::new(),
            },
        );
        info!(%identity, proxy = %key, kind = kind.as_str(), "proxy subscribed");
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let stream = ProxyStream {
            discovery: self.clone(),
            key,
            kind,
            namespace: hello.namespace,
            pod: hello.pod,
            tx,
        };
        tokio::spawn(stream.run(first, inbound));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The caller's identity: its client certificate, valid now.
fn authenticate<T>(request: &Request<T>) -> Result<Identity, Status> {
    let certs = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|c| c.peer_certs());
    let leaf = certs
        .as_deref()
        .and_then(|c| c.first())
        .ok_or_else(|| Status::unauthenticated("Subscribe requires a mesh client certificate"))?;
    let leaf =
        LeafInfo::parse(leaf).map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?;
    if !leaf.is_valid_at(SystemTime::now()) {
        return Err(Status::unauthenticated(format!(
            "client certificate of {} is not valid now",
            leaf.identity
        )));
    }
    Ok(leaf.identity)
}

/// The Hello's pod must be known and run under the certificate's identity.
fn authorize(
    current: &Accepted,
    trust_domain: &str,
    hello: &Hello,
    identity: &Identity,
) -> Result<(), Status> {
    let workload = current.registry.workload(&hello.namespace, &hello.pod).ok_or_else(|| {
        Status::permission_denied(format!("pod {}/{} is not in the registry", hello.namespace, hello.pod))
    })?;
    let expected = spiffe_id(trust_domain, &workload.namespace, &workload.service_account);
    if identity.to_string() != expected {
        return Err(Status::permission_denied(format!(
            "pod {}/{} runs as {expected}, but the client certificate is {identity}",
            hello.namespace, hello.pod
        )));
    }
    Ok(())
}

/// One subscribed proxy.
struct ProxyStream {
    discovery: Discovery,
    key: String,
    kind: ProxyKind,
    namespace: String,
    pod: String,
    tx: mpsc::Sender<Result<Snapshot, Status>>,
}

impl ProxyStream {
    async fn run(self, first: ProxyConfig, mut inbound: Streaming<SubscribeRequest>) {
        let d = &self.discovery;
        d.metrics.connected.fetch_add(1, Ordering::Relaxed);
        let mut changes = d.config.subscribe();
        changes.borrow_and_update();
        let mut shutdown = d.shutdown.clone();
        let mut last = first;
        let mut open = self.send(&last).await;
        while open {
            tokio::select! {
                _ = async { shutdown.wait_for(|stop| *stop).await.is_ok() } => break,
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let current = Arc::clone(&changes.borrow_and_update());
                    open = self.push_if_changed(&current, &mut last).await;
                }
                message = inbound.message() => match message {
                    Ok(Some(request)) => self.record(request),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        d.metrics.connected.fetch_sub(1, Ordering::Relaxed);
        d.status.update(&self.key, |s| s.connected = false);
        info!(proxy = %self.key, "proxy stream ended");
    }

    /// Compiles for the new version; sends when the content changed. `false`: the stream is gone.
    async fn push_if_changed(&self, current: &Accepted, last: &mut ProxyConfig) -> bool {
        let d = &self.discovery;
        let compiled = compile::compile(
            &current.store,
            &current.registry,
            &d.settings,
            &self.namespace,
            &self.pod,
            self.kind,
            current.version,
        );
        match compiled {
            Ok(config) if compile::same_content(&config, last) => true,
            Ok(config) => {
                *last = config;
                self.send(last).await
            }
            Err(error) => {
                warn!(proxy = %self.key, %error, "no config for proxy at this version; it keeps its last one");
                true
            }
        }
    }

    async fn send(&self, config: &ProxyConfig) -> bool {
        let d = &self.discovery;
        let config_json = match config.encode() {
            Ok(json) => json,
            Err(error) => {
                warn!(proxy = %self.key, %error, "config did not encode");
                return true;
            }
        };
        let nonce = format!("{:x}", d.nonces.fetch_add(1, Ordering::Relaxed) + 1);
        let version = config.version.clone();
        d.status.update(&self.key, |s| {
            s.sent_version = Some(version.clone());
            s.nonce = nonce.clone();
        });
        let snapshot = Snapshot { version, nonce, config_json };
        if self.tx.send(Ok(snapshot)).await.is_err() {
            return false;
        }
        d.metrics.pushes.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn record(&self, request: SubscribeRequest) {
        let d = &self.discovery;
        match request.kind {
            Some(Kind::Ack(ack)) => d.status.update(&self.key, |s| {
                if s.nonce == ack.nonce {
                    s.acked_version = Some(ack.version.clone());
                }
                s.cert_serial = non_empty(&ack.cert_serial).or(s.cert_serial.take());
                s.cert_expiry = rfc3339(ack.cert_expiry_unix).or(s.cert_expiry.take());
            }),
            Some(Kind::Nack(nack)) => {
                d.metrics.nacks.fetch_add(1, Ordering::Relaxed);
                warn!(proxy = %self.key, version = %nack.version, reason = %nack.reason, "proxy refused a config");
                d.status.update(&self.key, |s| {
                    s.nacked_version = Some(nack.version);
                    s.nack_reason = Some(nack.reason);
                });
            }
            Some(Kind::Hello(_)) | None => {
                warn!(proxy = %self.key, "ignored a second Hello or an empty message")
            }
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn rfc3339(unix: i64) -> Option<String> {
    let secs = u64::try_from(unix).ok().filter(|s| *s > 0)?;
    let time = UNIX_EPOCH.checked_add(Duration::from_secs(secs))?;
    Some(humantime::format_rfc3339_seconds(time).to_string())
}
