//! The open-loop engine: a fixed schedule of intended send times, workers that each own one
//! operation (a connection, a stream), and per-worker HDR histograms merged at the end.
//!
//! Slot `k` of a run at `rate` per second is due at `start + k / rate`. Workers claim slots from
//! one shared counter. A slot claimed late (every worker was busy past its time) records
//! `finish - due`, so time a request spent waiting behind slow ones is counted (no coordinated
//! omission, as wrk2 and oha's `--latency-correction` do); a slot claimed early is slept for
//! and records `finish - wake`, so the timer's millisecond granularity is not charged to the
//! server (tokio wakes a sleep up to 1 ms late). With no rate the run is closed-loop:
//! every worker starts its next operation as soon as the last one ends (a maximum-rate
//! measurement, latency from the actual start).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

/// Longest latency the histograms hold (longer values are clamped to it).
const MAX_LATENCY_US: u64 = 60_000_000;

/// How long past the end of the schedule workers may still start overdue slots; slots not
/// started by then are counted as `dropped`.
const OVERDUE_GRACE: Duration = Duration::from_secs(2);

/// One unit of load: an HTTP request, a gRPC call, a TCP round trip, a handshake.
pub trait Op: Send + 'static {
    /// Runs the operation once; `Err` carries a short reason (counted, first one reported).
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

/// When operations are started.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Operations per second (open loop), or `None` for closed loop (as fast as possible).
    pub rate: Option<f64>,
    /// How long the schedule runs.
    pub duration: Duration,
    /// How long one operation may take before it counts as an error.
    pub timeout: Duration,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latencies of successful operations, microseconds.
    pub histogram: Histogram<u64>,
    /// Operations started.
    pub started: u64,
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations that failed or timed out.
    pub errors: u64,
    /// Slots of the schedule never started (workers too far behind); open loop only.
    pub dropped: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Wall time from the first slot to the last completion.
    pub elapsed: Duration,
}

impl Tally {
    fn new(template: &Histogram<u64>) -> Self {
        Self {
            histogram: Histogram::new_from(template),
            started: 0,
            ok: 0,
            errors: 0,
            dropped: 0,
            first_error: None,
            elapsed: Duration::ZERO,
        }
    }

    fn merge(&mut self, other: Tally) {
        // Both histograms share the same bounds, so adding cannot fail; clamped values are kept.
        let _ = self.histogram.add(&other.histogram);
        self.started += other.started;
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn record(&mut self, latency: Duration, outcome: Result<(), String>) {
        self.started += 1;
        match outcome {
            Ok(()) => {
                self.ok += 1;
                let us =
                    u64::try_from(latency.as_micros()).unwrap_or(MAX_LATENCY_US).clamp(1, MAX_LATENCY_US);
                self.histogram.saturating_record(us);
            }
            Err(reason) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(reason);
                }
            }
        }
    }
}

/// Runs `ops` (one worker each) through `plan` and merges what they measured. Fails only if
/// the histogram cannot be created (its bounds are constants, so in practice never).
pub async fn drive<O: Op>(plan: Plan, ops: Vec<O>) -> Result<Tally, hdrhistogram::CreationError> {
    let template = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?;
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + plan.duration;
    let mut tasks = Vec::with_capacity(ops.len());
    for op in ops {
        tasks.push(tokio::spawn(worker(op, plan, Arc::clone(&next), start, end, Tally::new(&template))));
    }
    let mut total = Tally::new(&template);
    for task in tasks {
        match task.await {
            Ok(tally) => total.merge(tally),
            Err(e) => {
                total.errors += 1;
                total.first_error.get_or_insert_with(|| format!("worker failed: {e}"));
            }
        }
    }
    total.elapsed = Instant::now().saturating_duration_since(start);
    if let Some(rate) = plan.rate {
        let due = slots_due(rate, plan.duration);
        total.dropped = due.saturating_sub(total.started);
    }
    Ok(total)
}

/// Number of slots the schedule holds: `rate × duration`, rounded up.
pub fn slots_due(rate: f64, duration: Duration) -> u64 {
    let due = (rate * duration.as_secs_f64()).ceil();
    if due.is_finite() && due > 0.0 { due as u64 } else { 0 }
}

async fn worker<O: Op>(
    mut op: O,
    plan: Plan,
    next: Arc<AtomicU64>,
    start: Instant,
    end: Instant,
    mut tally: Tally,
) -> Tally {
    loop {
        let due = match plan.rate {
            Some(rate) => {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let due = start + Duration::from_secs_f64(k as f64 / rate);
                let now = Instant::now();
                if due >= end || now > end + OVERDUE_GRACE {
                    break;
                }
                if now < due {
                    // Idle until the slot: the timer wakes up to a millisecond late, which is
                    // the client's delay, not the server's, so the latency starts at the wake.
                    tokio::time::sleep_until(due).await;
                    Instant::now()
                } else {
                    // Overdue: every worker was busy with earlier requests past this slot's
                    // time, so that wait counts (the coordinated-omission correction).
                    due
                }
            }
            None => {
                tokio::time::sleep_until(start).await;
                let now = Instant::now();
                if now >= end {
                    break;
                }
                now
            }
        };
        let outcome = match tokio::time::timeout(plan.timeout, op.call()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("timed out after {:?}", plan.timeout)),
        };
        tally.record(Instant::now().saturating_duration_since(due), outcome);
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(Arc<AtomicU64>, bool);

    impl Op for Counter {
        async fn call(&mut self) -> Result<(), String> {
            let n = self.0.fetch_add(1, Ordering::Relaxed);
            if self.1 && n % 2 == 1 { Err(format!("odd {n}")) } else { Ok(()) }
        }
    }

    #[tokio::test]
    async fn open_loop_runs_exactly_the_scheduled_slots() {
        let calls = Arc::new(AtomicU64::new(0));
        let plan =
            Plan { rate: Some(500.0), duration: Duration::from_millis(400), timeout: Duration::from_secs(1) };
        let ops = (0..4).map(|_| Counter(Arc::clone(&calls), true)).collect();
        let tally = drive(plan, ops).await.expect("histogram");
        assert_eq!(tally.started, 200);
        assert_eq!(calls.load(Ordering::Relaxed), 200);
        assert_eq!(tally.ok, 100);
        assert_eq!(tally.errors, 100);
        assert_eq!(tally.dropped, 0);
        assert_eq!(tally.histogram.len(), 100);
        assert!(tally.first_error.is_some_and(|e| e.starts_with("odd ")));
    }

    struct Slow(Duration);

    impl Op for Slow {
        async fn call(&mut self) -> Result<(), String> {
            tokio::time::sleep(self.0).await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_slow_server_is_charged_for_the_requests_it_held_back() {
        // One worker, a slot every 10 ms, 40 ms per request: slot k starts at 40k ms instead
        // of 10k ms, so the last of 20 slots waits ~570 ms before its 40 ms; coordinated
        // omission would report 40 ms for every request.
        let plan =
            Plan { rate: Some(100.0), duration: Duration::from_millis(200), timeout: Duration::from_secs(2) };
        let tally = drive(plan, vec![Slow(Duration::from_millis(40))]).await.expect("histogram");
        assert_eq!((tally.started, tally.ok, tally.dropped), (20, 20, 0));
        assert!(tally.histogram.min() >= 40_000, "min {} us", tally.histogram.min());
        assert!(tally.histogram.max() >= 550_000, "max {} us", tally.histogram.max());
        assert!(
            tally.histogram.value_at_quantile(0.5) >= 200_000,
            "p50 {} us",
            tally.histogram.value_at_quantile(0.5)
        );
    }

    #[test]
    fn slots_due_rounds_up_and_rejects_nonsense() {
        assert_eq!(slots_due(1000.0, Duration::from_secs(5)), 5000);
        assert_eq!(slots_due(3.0, Duration::from_millis(500)), 2);
        assert_eq!(slots_due(f64::NAN, Duration::from_secs(1)), 0);
        assert_eq!(slots_due(-5.0, Duration::from_secs(1)), 0);
    }
}
