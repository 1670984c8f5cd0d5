//! One subscribed proxy's push loop: what to send it, whole or as a delta, and when.
//!
//! The stream remembers the config its proxy last ACKed ([`Built`]: `Arc`s of shared parts and
//! a small head) and the snapshot in flight. A proxy that accepts deltas gets a full snapshot
//! first, then deltas against what it ACKed; after a NACK, or when no delta can be made, a
//! full snapshot again (a NACKed delta is answered with a full snapshot at once; a NACKed full
//! snapshot is not resent, the proxy keeps its config until the next change, as before).
//! While a delta stream's snapshot is unanswered, a change waits for the answer, so every
//! delta's base is what the proxy runs; the newest change wins, and a proxy that does not
//! answer within [`ANSWER_TIMEOUT`] is sent a full snapshot instead. A proxy that does not
//! accept deltas gets full snapshots only, sent as soon as its config changes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use paymesh_api::pb::subscribe_request::Kind;
use paymesh_api::pb::{Snapshot, SubscribeRequest};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tonic::{Status, Streaming};
use tracing::{debug, info, warn};

use super::built::Built;
use super::{Discovery, MAX_NACK_REASON, Target, non_empty, rfc3339, truncate};
use crate::config_store::Accepted;

/// How long a delta stream waits for the answer to its snapshot before it stops assuming what
/// its proxy runs and sends the next change whole.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a snapshot carries.
enum Payload {
    /// `config_json`.
    Full(Vec<u8>),
    /// `delta_json` against `base_version`.
    Delta { base_version: String, json: Vec<u8> },
}

/// A snapshot sent and not answered yet.
struct InFlight {
    nonce: String,
    built: Built,
    delta: bool,
    sent: Instant,
}

/// One subscribed proxy.
pub(super) struct ProxyStream {
    discovery: Discovery,
    key: String,
    stream_id: u64,
    target: Target,
    /// The proxy said it applies deltas.
    accepts_delta: bool,
    tx: mpsc::Sender<Result<Snapshot, Status>>,
    shutdown: watch::Receiver<bool>,
    /// The version whose NACK was last logged.
    logged_nack: Option<String>,
    /// What the proxy runs: the config it last ACKed on this stream.
    acked: Option<Built>,
    in_flight: Option<InFlight>,
    /// The newest change that arrived while a delta stream's snapshot was in flight.
    pending: Option<Arc<Accepted>>,
    /// The digest of the config last sent: equal, nothing to send.
    last_digest: Option<u64>,
}

impl ProxyStream {
    pub(super) fn new(
        discovery: Discovery,
        key: String,
        stream_id: u64,
        target: Target,
        accepts_delta: bool,
        tx: mpsc::Sender<Result<Snapshot, Status>>,
    ) -> Self {
        let shutdown = discovery.shutdown.clone();
        ProxyStream {
            discovery,
            key,
            stream_id,
            target,
            accepts_delta,
            tx,
            shutdown,
            logged_nack: None,
            acked: None,
            in_flight: None,
            pending: None,
            last_digest: None,
        }
    }

    pub(super) async fn run(
        mut self,
        first: Built,
        mut inbound: Streaming<SubscribeRequest>,
        mut changes: watch::Receiver<Arc<Accepted>>,
        replaced: Arc<Notify>,
    ) {
        let d = self.discovery.clone();
        d.metrics.connected.fetch_add(1, Ordering::Relaxed);
        let mut shutdown = self.shutdown.clone();
        let mut open = self.push_built(first).await;
        while open {
            let overdue = self.in_flight.as_ref().map(|f| f.sent + ANSWER_TIMEOUT);
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
                    if self.accepts_delta && self.in_flight.is_some() {
                        self.pending = Some(current);
                    } else {
                        open = self.push(current).await;
                    }
                }
                () = tokio::time::sleep_until(overdue.unwrap_or_else(Instant::now)),
                    if overdue.is_some() && self.pending.is_some() =>
                {
                    warn!(proxy = %self.key, "no answer to the last snapshot; sending the next one whole");
                    self.in_flight = None;
                    self.acked = None;
                    open = self.push_pending().await;
                }
                message = inbound.message() => match message {
                    Ok(Some(request)) => open = self.answer(request).await,
                    Ok(None) | Err(_) => break,
                },
            }
        }
        d.metrics.connected.fetch_sub(1, Ordering::Relaxed);
        d.status.close(&self.key, self.stream_id);
        info!(proxy = %self.key, stream_id = self.stream_id, "proxy stream ended");
    }

    /// Compiles for the new version; sends when the content changed. `false`: the stream is gone.
    async fn push(&mut self, current: Arc<Accepted>) -> bool {
        match self.discovery.build(current, self.target.clone()).await {
            Ok(built) if self.last_digest == Some(built.digest) => true,
            Ok(built) => self.push_built(built).await,
            Err(error) => {
                warn!(proxy = %self.key, %error, "no config for proxy at this version; it keeps its last one");
                true
            }
        }
    }

    /// Pushes the change that waited for an answer, if any.
    async fn push_pending(&mut self) -> bool {
        match self.pending.take() {
            Some(current) => self.push(current).await,
            None => true,
        }
    }

    /// Sends `built` as a delta against what the proxy runs when it can, else whole.
    async fn push_built(&mut self, built: Built) -> bool {
        self.last_digest = Some(built.digest);
        let d = self.discovery.clone();
        if let Some(base) = self.acked.as_ref().filter(|_| self.accepts_delta) {
            match d.encode_delta(base, &built).await {
                Ok(None) => return true,
                Ok(Some(json)) => {
                    let base_version = base.version.to_string();
                    return self.send(built, Payload::Delta { base_version, json }).await;
                }
                Err(error) => debug!(proxy = %self.key, %error, "no delta; sending the config whole"),
            }
        }
        match d.encode_full(&built).await {
            Ok(json) => self.send(built, Payload::Full(json)).await,
            Err(error) => {
                warn!(proxy = %self.key, %error, "config did not encode; the proxy keeps its last one");
                true
            }
        }
    }

    /// Queues a snapshot; `false` when the stream is gone or the control plane is stopping
    /// (a proxy that stops reading does not hold up shutdown).
    async fn send(&mut self, built: Built, payload: Payload) -> bool {
        let d = &self.discovery;
        let version = built.version.to_string();
        let nonce = format!("{:x}", d.nonces.fetch_add(1, Ordering::Relaxed) + 1);
        d.status.update(&self.key, self.stream_id, |s| {
            s.sent_version = Some(version.clone());
            s.nonce = nonce.clone();
        });
        let (delta, bytes) = match &payload {
            Payload::Full(json) => (false, json.len()),
            Payload::Delta { json, .. } => (true, json.len()),
        };
        let snapshot = match payload {
            Payload::Full(config_json) => {
                Snapshot { version, nonce: nonce.clone(), config_json, ..Snapshot::default() }
            }
            Payload::Delta { base_version, json } => Snapshot {
                version,
                nonce: nonce.clone(),
                base_version,
                delta_json: json,
                ..Snapshot::default()
            },
        };
        let shutdown = &mut self.shutdown;
        tokio::select! {
            sent = self.tx.send(Ok(snapshot)) => if sent.is_err() {
                return false;
            },
            _ = shutdown.wait_for(|stop| *stop) => return false,
        }
        d.metrics.pushes.fetch_add(1, Ordering::Relaxed);
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        if delta {
            d.metrics.delta_pushes.fetch_add(1, Ordering::Relaxed);
            d.metrics.delta_bytes.fetch_add(bytes, Ordering::Relaxed);
        } else {
            d.metrics.full_pushes.fetch_add(1, Ordering::Relaxed);
            d.metrics.full_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        self.in_flight = Some(InFlight { nonce, built, delta, sent: Instant::now() });
        true
    }

    /// Records an ACK or NACK; answers a NACKed delta with a full snapshot, and pushes the
    /// change that waited for the answer. `false`: the stream is gone.
    async fn answer(&mut self, request: SubscribeRequest) -> bool {
        let d = self.discovery.clone();
        match request.kind {
            Some(Kind::Ack(ack)) => {
                d.status.update(&self.key, self.stream_id, |s| {
                    if s.nonce == ack.nonce {
                        s.acked_version = Some(ack.version.clone());
                    }
                    s.cert_serial = non_empty(&ack.cert_serial).or(s.cert_serial.take());
                    s.cert_expiry = rfc3339(ack.cert_expiry_unix).or(s.cert_expiry.take());
                });
                if let Some(acked) = self.take_in_flight(&ack.nonce) {
                    self.acked = Some(acked.built);
                }
            }
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
                if current {
                    d.metrics.nacks.fetch_add(1, Ordering::Relaxed);
                    if self.logged_nack.as_deref() != Some(nack.version.as_str()) {
                        warn!(proxy = %self.key, version = %nack.version, %reason, "proxy refused a config");
                        self.logged_nack = Some(nack.version.clone());
                    }
                }
                if let Some(refused) = self.take_in_flight(&nack.nonce) {
                    // The proxy keeps what it ran, but the next snapshot is whole.
                    self.acked = None;
                    if refused.delta {
                        self.last_digest = None;
                        if self.pending.is_none() {
                            return self.push_built(refused.built).await;
                        }
                    }
                }
            }
            Some(Kind::Hello(_)) | None => {
                debug!(proxy = %self.key, "ignored a second Hello or an empty message");
                return true;
            }
        }
        if self.in_flight.is_none() {
            return self.push_pending().await;
        }
        true
    }

    /// The snapshot in flight, when `nonce` names it.
    fn take_in_flight(&mut self, nonce: &str) -> Option<InFlight> {
        self.in_flight.take_if(|f| f.nonce == nonce)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use paymesh_api::model::{MeshSettings, Node, ProxyConfig, ProxyKind};
    use tokio::sync::{mpsc, watch};

    use super::{Built, Payload, ProxyStream};
    use crate::compile::Settings;
    use crate::config_store::{ConfigStore, Sources, Version};
    use crate::discovery::{Discovery, Metrics, STREAM_QUEUE, SyncStatus, Target};

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
            stopped,
        );
        // The receiving half is never read, as a stalled proxy's stream.
        let (tx, _unread) = mpsc::channel(STREAM_QUEUE);
        let target = Target { namespace: "shop".into(), pod: "p".into(), kind: ProxyKind::Sidecar };
        let mut stream = ProxyStream::new(discovery, "shop/p".into(), 1, target, true, tx);
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
        let json = snapshot.encode().expect("encodes");
        let built = Built::whole(Version { boot: 1, n: 1 }, snapshot);
        for _ in 0..STREAM_QUEUE {
            assert!(stream.send(built.clone(), Payload::Full(json.clone())).await, "queued");
        }
        let blocked = tokio::spawn(async move { stream.send(built, Payload::Full(json)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!blocked.is_finished(), "the queue is full: the send waits");
        stop.send(true).expect("stop");
        let sent = tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .expect("shutdown ends the send")
            .expect("task");
        assert!(!sent, "the stream is told to stop");
    }
}
