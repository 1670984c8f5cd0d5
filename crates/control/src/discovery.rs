//! `paymesh.discovery.v1.MeshDiscovery/Subscribe`: pushes each proxy its compiled config.
//!
//! One stream per proxy, in named phases: [`authenticate`] (the client certificate's SPIFFE
//! identity), read the Hello, [`authorize`] (the pod is in the registry and runs under that
//! identity's service account), then a push loop that compiles the proxy's config on connect
//! and on every accepted config change, and sends a Snapshot only when the compiled content
//! differs from what the proxy last got. ACKs and NACKs land in [`SyncStatus`], which
//! `/debug/syncz` shows. The loop ends when the proxy hangs up, the control plane drains, or
//! a newer stream for the same pod replaces it (one stream per pod, as a restarted proxy
//! reconnects before its old connection times out).
//!
//! A sidecar's snapshot is spliced from its scope's outbound part, compiled and encoded once
//! per scope and version for all streams ([`scopes`], [`crate::compile::scope`]), and its own
//! node and listeners; a stream keeps only the digest of what it last sent.
//!
//! Every send races shutdown, so a proxy that stops reading cannot hold up SIGTERM; compiling
//! runs on the blocking pool. NACKs count only for the snapshot in flight (their nonce), their
//! reasons are cut to [`MAX_NACK_REASON`] bytes and logged once per version.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use paymesh_api::model::ProxyKind;
use paymesh_api::pb::mesh_discovery_server::MeshDiscovery;
use paymesh_api::pb::subscribe_request::Kind;
use paymesh_api::pb::{Hello, Snapshot, SubscribeRequest};
use paymesh_tls::{Identity, LeafInfo};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::compile::scope::{self, Encoded, Outbound};
use crate::compile::{self, CompileError, Inputs, Settings};
use crate::config_store::{Accepted, ConfigStore};
use crate::registry::spiffe_id;

mod scopes;

use scopes::Scopes;

/// How long a proxy has to send its Hello after opening the stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Snapshots queued towards one proxy.
const STREAM_QUEUE: usize = 4;

/// Longest NACK reason kept, in bytes.
pub const MAX_NACK_REASON: usize = 1024;

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
    /// The stream this entry belongs to (a reconnect starts a new one).
    pub stream_id: u64,
    #[serde(skip)]
    nonce: String,
}

/// Every proxy ever connected, by `namespace/pod`, and the open stream of each.
#[derive(Debug, Default)]
pub struct SyncStatus {
    entries: Mutex<BTreeMap<String, ProxyStatus>>,
    /// Wakes the open stream of a pod when a newer one replaces it.
    open: Mutex<HashMap<String, (u64, Arc<Notify>)>>,
}

impl SyncStatus {
    /// A copy of every entry, sorted by `namespace/pod`.
    pub fn snapshot(&self) -> Vec<ProxyStatus> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    /// Changes the entry of `key` when it still belongs to stream `stream_id`.
    fn update(&self, key: &str, stream_id: u64, change: impl FnOnce(&mut ProxyStatus)) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(status) = entries.get_mut(key).filter(|s| s.stream_id == stream_id) {
            change(status);
        }
    }

    /// Records a new stream for `key`, closing the older one; returns what wakes this one
    /// when it is replaced in turn.
    fn open(&self, key: String, status: ProxyStatus) -> Arc<Notify> {
        let stream_id = status.stream_id;
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).insert(key.clone(), status);
        let replaced = Arc::new(Notify::new());
        let older = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, (stream_id, Arc::clone(&replaced)));
        if let Some((_, older)) = older {
            // notify_one keeps a permit: an older stream not yet waiting still sees it.
            older.notify_one();
        }
        replaced
    }

    /// Forgets stream `stream_id` of `key` when it is still the open one.
    fn close(&self, key: &str, stream_id: u64) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.get(key).is_some_and(|(id, _)| *id == stream_id) {
            open.remove(key);
        }
        drop(open);
        self.update(key, stream_id, |s| s.connected = false);
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
    /// Compilations running at once on the blocking pool.
    compiling: Arc<Semaphore>,
    /// The current version's outbound parts, by scope.
    scopes: Arc<Scopes>,
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
        let slots = std::thread::available_parallelism().map_or(2, usize::from);
        Discovery {
            config,
            settings,
            status,
            metrics,
            shutdown,
            nonces: Arc::new(AtomicU64::new(0)),
            compiling: Arc::new(Semaphore::new(slots)),
            scopes: Arc::new(Scopes::default()),
        }
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
        // Subscribe before compiling: a change accepted meanwhile is then seen by run().
        let mut changes = self.config.subscribe();
        let current = Arc::clone(&changes.borrow_and_update());
        authorize(&current, &self.settings.trust_domain, &hello, &identity).inspect_err(|status| {
            warn!(%identity, pod = %hello.pod, namespace = %hello.namespace, reason = status.message(), "discovery refused a proxy");
        })?;
        let target = Target { namespace: hello.namespace.clone(), pod: hello.pod.clone(), kind };
        let first = self
            .build(current, target.clone())
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let key = format!("{}/{}", hello.namespace, hello.pod);
        let stream_id = self.nonces.fetch_add(1, Ordering::Relaxed) + 1;
        let replaced = self.status.open(
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
                stream_id,
                nonce: String::new(),
            },
        );
        info!(%identity, proxy = %key, kind = kind.as_str(), stream_id, "proxy subscribed");
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let stream = ProxyStream {
            discovery: self.clone(),
            key,
            stream_id,
            target,
            tx,
            shutdown: self.shutdown.clone(),
            logged_nack: None,
        };
        tokio::spawn(stream.run(first, inbound, changes, replaced));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Which proxy a config is compiled for.
#[derive(Debug, Clone)]
struct Target {
    namespace: String,
    pod: String,
    kind: ProxyKind,
}

impl Discovery {
    /// `target`'s snapshot at `current`'s version. Compiling runs on the blocking pool
    /// (it walks the whole config), at most one job per core at once: a change for a
    /// thousand proxies queues here instead of starting a thousand threads. A sidecar's
    /// outbound part comes from its scope's shared slot, compiled by the first stream to ask.
    async fn build(&self, current: Arc<Accepted>, target: Target) -> Result<Encoded, CompileError> {
        let unknown =
            || CompileError::UnknownPod { namespace: target.namespace.clone(), pod: target.pod.clone() };
        if target.kind == ProxyKind::Gateway {
            let (settings, target) = (Arc::clone(&self.settings), target.clone());
            return self
                .blocking(unknown(), move || {
                    let config = compile::compile(
                        &current.store,
                        &current.registry,
                        &settings,
                        &target.namespace,
                        &target.pod,
                        target.kind,
                        current.version,
                    )?;
                    Encoded::whole(&config)
                })
                .await;
        }
        let proxy = current.registry.workload(&target.namespace, &target.pod).ok_or_else(unknown)?;
        let slot = self.scopes.slot(&current, proxy);
        let outbound = slot
            .get_or_try_init(|| {
                let (current, settings, target) =
                    (Arc::clone(&current), Arc::clone(&self.settings), target.clone());
                self.blocking(unknown(), move || {
                    let proxy =
                        current.registry.workload(&target.namespace, &target.pod).ok_or_else(|| {
                            CompileError::UnknownPod {
                                namespace: target.namespace.clone(),
                                pod: target.pod.clone(),
                            }
                        })?;
                    let inputs = Inputs {
                        store: &current.store,
                        registry: &current.registry,
                        settings: &settings,
                        proxy,
                    };
                    Outbound::compile(&inputs).map(Arc::new)
                })
            })
            .await
            .map(Arc::clone)?;
        let settings = Arc::clone(&self.settings);
        self.blocking(unknown(), move || {
            scope::encode_sidecar(
                &current.store,
                &current.registry,
                &settings,
                &target.namespace,
                &target.pod,
                current.version,
                &outbound,
            )
        })
        .await
    }

    /// Runs `job` on the blocking pool once a compile slot is free; `panicked` if it panics
    /// (the compiler does not; if it ever did, the proxy is told, not left waiting).
    async fn blocking<T: Send + 'static>(
        &self,
        panicked: CompileError,
        job: impl FnOnce() -> Result<T, CompileError> + Send + 'static,
    ) -> Result<T, CompileError> {
        // Never closed: acquiring only waits.
        let _slot = self.compiling.acquire().await.ok();
        tokio::task::spawn_blocking(job).await.unwrap_or(Err(panicked))
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
    stream_id: u64,
    target: Target,
    tx: mpsc::Sender<Result<Snapshot, Status>>,
    shutdown: watch::Receiver<bool>,
    /// The version whose NACK was last logged.
    logged_nack: Option<String>,
}

impl ProxyStream {
    async fn run(
        mut self,
        first: Encoded,
        mut inbound: Streaming<SubscribeRequest>,
        mut changes: watch::Receiver<Arc<Accepted>>,
        replaced: Arc<Notify>,
    ) {
        let d = self.discovery.clone();
        d.metrics.connected.fetch_add(1, Ordering::Relaxed);
        let mut shutdown = self.shutdown.clone();
        let mut last = first.digest;
        let mut open = self.send(first).await;
        while open {
            tokio::select! {
                _ = async { shutdown.wait_for(|stop| *stop).await.is_ok() } => break,
                () = replaced.notified() => {
                    info!(proxy = %self.key, stream_id = self.stream_id, "a newer stream for this pod replaced this one");
                    break;
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let current = Arc::clone(&changes.borrow_and_update());
                    open = self.push_if_changed(current, &mut last).await;
                }
                message = inbound.message() => match message {
                    Ok(Some(request)) => self.record(request),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        d.metrics.connected.fetch_sub(1, Ordering::Relaxed);
        d.status.close(&self.key, self.stream_id);
        info!(proxy = %self.key, stream_id = self.stream_id, "proxy stream ended");
    }

    /// Compiles for the new version; sends when the content changed. `false`: the stream is gone.
    async fn push_if_changed(&mut self, current: Arc<Accepted>, last: &mut u64) -> bool {
        match self.discovery.build(current, self.target.clone()).await {
            Ok(encoded) => {
                if encoded.digest == *last {
                    return true;
                }
                *last = encoded.digest;
                self.send(encoded).await
            }
            Err(error) => {
                warn!(proxy = %self.key, %error, "no config for proxy at this version; it keeps its last one");
                true
            }
        }
    }

    /// Queues `config`; `false` when the stream is gone or the control plane is stopping
    /// (a proxy that stops reading does not hold up shutdown).
    async fn send(&mut self, encoded: Encoded) -> bool {
        let d = &self.discovery;
        let Encoded { version, json: config_json, .. } = encoded;
        let nonce = format!("{:x}", d.nonces.fetch_add(1, Ordering::Relaxed) + 1);
        d.status.update(&self.key, self.stream_id, |s| {
            s.sent_version = Some(version.clone());
            s.nonce = nonce.clone();
        });
        let snapshot = Snapshot { version, nonce, config_json, ..Snapshot::default() };
        let shutdown = &mut self.shutdown;
        tokio::select! {
            sent = self.tx.send(Ok(snapshot)) => if sent.is_err() {
                return false;
            },
            _ = shutdown.wait_for(|stop| *stop) => return false,
        }
        d.metrics.pushes.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn record(&mut self, request: SubscribeRequest) {
        let d = &self.discovery;
        match request.kind {
            Some(Kind::Ack(ack)) => d.status.update(&self.key, self.stream_id, |s| {
                if s.nonce == ack.nonce {
                    s.acked_version = Some(ack.version.clone());
                }
                s.cert_serial = non_empty(&ack.cert_serial).or(s.cert_serial.take());
                s.cert_expiry = rfc3339(ack.cert_expiry_unix).or(s.cert_expiry.take());
            }),
            Some(Kind::Nack(nack)) => {
                let reason = truncate(&nack.reason, MAX_NACK_REASON);
                let mut current = false;
                d.status.update(&self.key, self.stream_id, |s| {
                    if s.nonce == nack.nonce {
                        current = true;
                        s.nacked_version = Some(nack.version.clone());
                        s.nack_reason = Some(reason.to_owned());
                    }
                });
                if !current {
                    return;
                }
                d.metrics.nacks.fetch_add(1, Ordering::Relaxed);
                if self.logged_nack.as_deref() != Some(nack.version.as_str()) {
                    warn!(proxy = %self.key, version = %nack.version, %reason, "proxy refused a config");
                    self.logged_nack = Some(nack.version);
                }
            }
            Some(Kind::Hello(_)) | None => {
                debug!(proxy = %self.key, "ignored a second Hello or an empty message")
            }
        }
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let end = (0..=max).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    &text[..end]
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// Largest time RFC 3339 can write: 9999-12-31T23:59:59Z.
const MAX_RFC3339_UNIX: u64 = 253_402_300_799;

/// `unix` as RFC 3339; `None` when unset, negative or past year 9999.
fn rfc3339(unix: i64) -> Option<String> {
    let secs = u64::try_from(unix).ok().filter(|s| (1..=MAX_RFC3339_UNIX).contains(s))?;
    let time = UNIX_EPOCH.checked_add(Duration::from_secs(secs))?;
    Some(humantime::format_rfc3339_seconds(time).to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use paymesh_api::model::{MeshSettings, Node, ProxyConfig, ProxyKind};
    use tokio::sync::{mpsc, watch};

    use super::{
        Discovery, MAX_RFC3339_UNIX, Metrics, ProxyStream, STREAM_QUEUE, SyncStatus, Target, rfc3339,
        truncate,
    };
    use crate::compile::Settings;
    use crate::compile::scope::Encoded;
    use crate::config_store::{ConfigStore, Sources};

    #[tokio::test]
    async fn a_proxy_that_stops_reading_does_not_hold_up_shutdown() {
        let dir = std::env::temp_dir().join(format!("paymesh-discovery-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let sources = Sources { config: vec![dir.clone()], pods: None, trust_domain: "cluster.local".into() };
        let config = ConfigStore::load(sources).expect("empty config loads");
        let _ = std::fs::remove_dir_all(&dir);
        let settings = Arc::new(Settings {
            trust_domain: "cluster.local".into(),
            cert_ttl_secs: 60,
            gateway_port_offset: 0,
            credentials_dir: "/nowhere".into(),
            root_namespace: "istio-system".into(),
        });
        let (stop, stopped) = watch::channel(false);
        let discovery = Discovery::new(
            config,
            settings,
            Arc::new(SyncStatus::default()),
            Arc::new(Metrics::default()),
            stopped.clone(),
        );
        // The receiving half is never read, as a stalled proxy's stream.
        let (tx, _unread) = mpsc::channel(STREAM_QUEUE);
        let mut stream = ProxyStream {
            discovery,
            key: "shop/p".into(),
            stream_id: 1,
            target: Target { namespace: "shop".into(), pod: "p".into(), kind: ProxyKind::Sidecar },
            tx,
            shutdown: stopped,
            logged_nack: None,
        };
        let snapshot = ProxyConfig {
            version: "1-1".into(),
            node: Node {
                pod: "p".into(),
                namespace: "shop".into(),
                ip: "127.0.0.1".parse().expect("ip"),
                kind: ProxyKind::Sidecar,
                identity: "spiffe://cluster.local/ns/shop/sa/p".into(),
            },
            mesh: MeshSettings { trust_domain: "cluster.local".into(), cert_ttl_secs: 60 },
            listeners: Vec::new(),
            routes: Vec::new(),
            clusters: Vec::new(),
            endpoints: Vec::new(),
        };
        let encoded = move || Encoded::whole(&snapshot).expect("encodes");
        for _ in 0..STREAM_QUEUE {
            assert!(stream.send(encoded()).await, "queued");
        }
        let blocked = tokio::spawn(async move { stream.send(encoded()).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!blocked.is_finished(), "the queue is full: the send waits");
        stop.send(true).expect("stop");
        let sent = tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .expect("shutdown ends the send")
            .expect("task");
        assert!(!sent, "the stream is told to stop");
    }

    #[test]
    fn rfc3339_refuses_years_past_9999_instead_of_panicking() {
        assert_eq!(rfc3339(4_102_444_800).as_deref(), Some("2100-01-01T00:00:00Z"));
        assert_eq!(rfc3339(253_402_300_799).as_deref(), Some("9999-12-31T23:59:59Z"));
        assert_eq!(rfc3339(253_402_300_800), None);
        assert_eq!(rfc3339(i64::MAX), None);
        assert_eq!(rfc3339(0), None);
        assert_eq!(rfc3339(-5), None);
        assert_eq!(MAX_RFC3339_UNIX + 1, 253_402_300_800);
    }

    #[test]
    fn truncate_keeps_whole_characters() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate(&"x".repeat(5000), 1024).len(), 1024);
    }
}
