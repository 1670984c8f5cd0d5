//! The shutdown signal: one [`Trigger`], any number of [`Shutdown`] waiters.
//!
//! It is a `watch` channel, so it crosses runtimes (the proxy's data and control runtimes) and a
//! waiter that subscribes late still sees it. A dropped trigger counts as triggered, so no
//! waiter outlives its owner.

use tokio::sync::watch;

/// Sends the shutdown signal.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Waits for the shutdown signal; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A linked trigger and signal.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Tells every waiter to stop.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Completes once shutdown was triggered (or the trigger is gone).
    pub async fn signaled(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Whether shutdown was triggered.
    pub fn is_signaled(&self) -> bool {
        *self.0.borrow()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn every_waiter_sees_the_trigger_even_a_late_one() {
        let (trigger, shutdown) = channel();
        let early = tokio::spawn(shutdown.clone().signaled());
        assert!(!shutdown.is_signaled());
        trigger.trigger();
        early.await.expect("the early waiter returns");
        assert!(shutdown.is_signaled());
        let late = shutdown.clone();
        tokio::time::timeout(Duration::from_secs(1), late.signaled()).await.expect("a late waiter returns");
    }

    #[tokio::test]
    async fn a_dropped_trigger_releases_the_waiters() {
        let (trigger, shutdown) = channel();
        drop(trigger);
        tokio::time::timeout(Duration::from_secs(1), shutdown.signaled()).await.expect("released");
    }
}
