//! The pause between attempts at something that keeps failing: doubling from a first pause up to
//! a cap, back to the first after a success, so a peer that comes back is found again soon
//! without a busy loop while it is gone.

use std::time::Duration;

/// The first pause of [`Backoff::default`].
pub const DEFAULT_INITIAL: Duration = Duration::from_millis(100);

/// The longest pause of [`Backoff::default`].
pub const DEFAULT_MAX: Duration = Duration::from_secs(5);

/// The pause before the next attempt.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    /// 100 ms doubling to 5 s: for reconnecting to a process that restarts within seconds (the
    /// proxy to its control plane).
    fn default() -> Self {
        Backoff::new(DEFAULT_INITIAL, DEFAULT_MAX)
    }
}

impl Backoff {
    /// Pauses of `initial`, then twice as long each time, at most `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(max);
        Backoff { initial, max, next: initial }
    }

    /// The pause to take now; the following one is twice as long, up to the cap.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }

    /// Back to the first pause after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pauses(backoff: &mut Backoff, n: usize) -> Vec<u64> {
        (0..n).map(|_| backoff.next_pause().as_millis() as u64).collect()
    }

    #[test]
    fn the_default_doubles_from_100_ms_up_to_5_s_and_resets() {
        let mut backoff = Backoff::default();
        assert_eq!(pauses(&mut backoff, 8), [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_pause(), DEFAULT_INITIAL);
    }

    #[test]
    fn first_pause_and_cap_are_configurable() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(pauses(&mut backoff, 7), [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        backoff.reset();
        assert_eq!(backoff.next_pause(), Duration::from_secs(1));
        let mut inverted = Backoff::new(Duration::from_secs(9), Duration::from_secs(2));
        assert_eq!(pauses(&mut inverted, 2), [2000, 2000], "the cap bounds the first pause too");
    }
}
