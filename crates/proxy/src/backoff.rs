//! Exponential backoff for reconnecting to the control plane and retrying the CA: 100 ms,
//! doubling, at most 5 s, reset after a success, so a restarted control plane is found again
//! within seconds without a busy loop while it is gone.

use std::time::Duration;

/// The first pause.
pub const INITIAL: Duration = Duration::from_millis(100);

/// The longest pause.
pub const MAX: Duration = Duration::from_secs(5);

/// The pause before the next attempt.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: INITIAL }
    }
}

impl Backoff {
    /// The pause to take now; the following one is twice as long, up to [`MAX`].
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(MAX);
        pause
    }

    /// Back to [`INITIAL`] after a success.
    pub fn reset(&mut self) {
        self.next = INITIAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::default();
        let pauses: Vec<u128> = (0..8).map(|_| backoff.next_pause().as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_pause(), INITIAL);
    }
}
