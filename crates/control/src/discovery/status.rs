//! What the control plane knows of each proxy, for `/debug/syncz`: one entry per pod (the
//! open stream owns it), and the open stream of each pod, so a newer stream can close an older.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tokio::sync::Notify;

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
    /// The nonce of the snapshot last sent: ACKs and NACKs count only for it.
    #[serde(skip)]
    pub(super) nonce: String,
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
    pub(super) fn update(&self, key: &str, stream_id: u64, change: impl FnOnce(&mut ProxyStatus)) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(status) = entries.get_mut(key).filter(|s| s.stream_id == stream_id) {
            change(status);
        }
    }

    /// Records a new stream for `key`, closing the older one; returns what wakes this one
    /// when it is replaced in turn.
    pub(super) fn open(&self, key: String, status: ProxyStatus) -> Arc<Notify> {
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
    pub(super) fn close(&self, key: &str, stream_id: u64) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.get(key).is_some_and(|(id, _)| *id == stream_id) {
            open.remove(key);
        }
        drop(open);
        self.update(key, stream_id, |s| s.connected = false);
    }
}
