//! Readiness as drop guards: each startup task holds a [`BlockReady`] and the proxy is ready
//! once all are dropped (first certificate installed, first config applied).
//!
//! `/healthz/ready` reads the pending set and names what is still missing; `main` waits on it to
//! print `paymesh-proxy ready`.

use std::collections::BTreeSet;

use tokio::sync::watch;

/// The set of pending startup tasks.
#[derive(Debug, Clone)]
pub struct Readiness(watch::Sender<BTreeSet<&'static str>>);

/// Holds readiness back until dropped.
#[derive(Debug)]
pub struct BlockReady {
    readiness: Readiness,
    task: &'static str,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness(watch::channel(BTreeSet::new()).0)
    }
}

impl Readiness {
    /// Registers `task` as pending until the returned guard is dropped.
    pub fn register(&self, task: &'static str) -> BlockReady {
        self.0.send_modify(|pending| {
            pending.insert(task);
        });
        BlockReady { readiness: self.clone(), task }
    }

    /// What is still pending (empty when ready).
    pub fn pending(&self) -> Vec<&'static str> {
        self.0.borrow().iter().copied().collect()
    }

    /// Completes once nothing is pending.
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(BTreeSet::is_empty).await;
    }
}

impl Drop for BlockReady {
    fn drop(&mut self) {
        let task = self.task;
        self.readiness.0.send_modify(|pending| {
            pending.remove(task);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_once_every_guard_is_dropped() {
        let readiness = Readiness::default();
        let cert = readiness.register("certificate");
        let config = readiness.register("config");
        assert_eq!(readiness.pending(), ["certificate", "config"]);
        drop(cert);
        assert_eq!(readiness.pending(), ["config"]);
        drop(config);
        assert!(readiness.pending().is_empty());
        readiness.wait().await;
    }
}
