//! `paymesh.discovery.v1.MeshDiscovery/Subscribe`: pushes each proxy its compiled config.
//!
//! One stream per proxy, in named phases: [`authenticate`] (the client certificate's SPIFFE
//! identity), read the Hello, [`authorize`] (the pod is in the registry and runs under that
//! identity's service account), then a push loop ([`stream`]) that compiles the proxy's config
//! on connect and on every accepted config change, and sends a Snapshot only when the compiled
//! content differs from what the proxy last got. ACKs and NACKs land in [`SyncStatus`], which
//! `/debug/syncz` shows. The loop ends when the proxy hangs up, the control plane drains, or
//! a newer stream for the same pod replaces it (one stream per pod, as a restarted proxy
//! reconnects before its old connection times out).
//!
//! A sidecar's config is its scope's outbound part, compiled and encoded once per scope and
//! version for all streams ([`scopes`], [`crate::compile::scope`]), and its own node and
//! listeners ([`built`]). A proxy that accepts deltas gets a full snapshot first (and after a
//! NACK), then only what changed against the version it last ACKed; the outbound part of each
//! delta is computed once per scope and pair of versions and shared like the full part. A
//! stream keeps only `Arc`s of shared parts, its own small head, and digests.
//!
//! Every send races shutdown, so a proxy that stops reading cannot hold up SIGTERM; compiling
//! and encoding run on the blocking pool. NACKs count only for the snapshot in flight (their
//! nonce), their reasons are cut to [`MAX_NACK_REASON`] bytes and logged once per version.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use paymesh_api::model::ProxyKind;
use paymesh_api::pb::mesh_discovery_server::MeshDiscovery;
use paymesh_api::pb::subscribe_request::Kind;
use paymesh_api::pb::{Hello, Snapshot, SubscribeRequest};
use paymesh_tls::{Identity, LeafInfo};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::compile::Settings;
use crate::config_store::{Accepted, ConfigStore};
use crate::registry::spiffe_id;

mod built;
mod scopes;
mod status;
mod stream;

pub use stream::ANSWER_TIMEOUT;

use scopes::Scopes;
pub use status::{ProxyStatus, SyncStatus};
use stream::ProxyStream;

/// How long a proxy has to send its Hello after opening the stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Snapshots queued towards one proxy.
const STREAM_QUEUE: usize = 4;

/// Longest NACK reason kept, in bytes.
pub const MAX_NACK_REASON: usize = 1024;

/// Push counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Snapshots sent, full and delta.
    pub pushes: AtomicU64,
    /// Full snapshots sent.
    pub full_pushes: AtomicU64,
    /// Delta snapshots sent.
    pub delta_pushes: AtomicU64,
    /// Bytes of `config_json` sent in full snapshots.
    pub full_bytes: AtomicU64,
    /// Bytes of `delta_json` sent in delta snapshots.
    pub delta_bytes: AtomicU64,
    /// NACKs received.
    pub nacks: AtomicU64,
    /// Streams open now.
    pub connected: AtomicI64,
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
        let stream = ProxyStream::new(self.clone(), key, stream_id, target, hello.accepts_delta, tx);
        tokio::spawn(stream.run(first, inbound, changes, replaced));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Which proxy a config is compiled for.
#[derive(Debug, Clone)]
pub(super) struct Target {
    namespace: String,
    pod: String,
    kind: ProxyKind,
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
    use super::{MAX_RFC3339_UNIX, rfc3339, truncate};

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
