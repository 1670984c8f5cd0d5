//! What a load run measured, and the money check that ends it.
//!
//! Latencies go into an HDR histogram (microseconds, 3 significant digits) measured from each
//! request's *scheduled* start; status counts and outcomes are plain counters. The money
//! check compares each account's balance after the run with its balance before plus every
//! completed payment into it minus every completed payment out of it: equality for every
//! account means each accepted payment was applied exactly once, and nothing else moved.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

/// How one payment (or transfer) ended, as far as the client knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted: the money moved.
    Completed,
    /// Refused or compensated (the code says why): no money moved.
    Failed(String),
    /// Not known yet (still processing, timed out, server error).
    Unknown(String),
}

/// Counters and latencies of a run.
#[derive(Debug)]
pub struct Stats {
    latency_us: Histogram<u64>,
    statuses: BTreeMap<String, u64>,
    /// Requests sent.
    pub sent: u64,
    /// Requests not sent because too many were in flight (the client, not the server, was the limit).
    pub dropped: u64,
}

impl Stats {
    /// Empty stats: latencies from 1 µs to 1 hour at 3 significant digits.
    pub fn new() -> Result<Self, hdrhistogram::CreationError> {
        let latency_us = Histogram::new_with_bounds(1, 3_600_000_000, 3)?;
        Ok(Self { latency_us, statuses: BTreeMap::new(), sent: 0, dropped: 0 })
    }

    /// Records one finished request.
    pub fn record(&mut self, status: &str, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        self.latency_us.saturating_record(us);
        *self.statuses.entry(status.to_owned()).or_default() += 1;
    }

    /// Requests that finished (any status).
    pub fn finished(&self) -> u64 {
        self.latency_us.len()
    }

    /// Latency at a quantile.
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_micros(self.latency_us.value_at_quantile(q))
    }

    /// Largest latency.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.latency_us.max())
    }

    /// Count per status label (`201`, `422`, `timeout`, ...).
    pub fn statuses(&self) -> &BTreeMap<String, u64> {
        &self.statuses
    }
}

/// One account's balances and the flows the client saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountFlow {
    /// Balance before the run.
    pub before: i64,
    /// Balance after the run.
    pub after: i64,
    /// Sum of completed payments into the account.
    pub completed_in: i128,
    /// Sum of completed payments out of the account.
    pub completed_out: i128,
}

/// The verdict of the money check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoneyCheck {
    /// Sum of balances before.
    pub total_before: i128,
    /// Sum of balances after.
    pub total_after: i128,
    /// Payments accepted (completed).
    pub completed: u64,
    /// Payments that failed (no money moved).
    pub failed: u64,
    /// Payments whose outcome stayed unknown after resolution.
    pub unresolved: u64,
    /// Accounts whose final balance is not before + in - out.
    pub mismatched: Vec<String>,
    /// The ledger's own check (`/v1/ledger/check` balanced).
    pub ledger_balanced: bool,
}

impl MoneyCheck {
    /// Builds the check from each account's flows.
    pub fn new(
        accounts: &BTreeMap<String, AccountFlow>,
        completed: u64,
        failed: u64,
        unresolved: u64,
        ledger_balanced: bool,
    ) -> Self {
        let mismatched = accounts
            .iter()
            .filter(|(_, f)| i128::from(f.before) + f.completed_in - f.completed_out != i128::from(f.after))
            .map(|(id, _)| id.clone())
            .collect();
        Self {
            total_before: accounts.values().map(|f| i128::from(f.before)).sum(),
            total_after: accounts.values().map(|f| i128::from(f.after)).sum(),
            completed,
            failed,
            unresolved,
            mismatched,
            ledger_balanced,
        }
    }

    /// Sum of balances unchanged.
    pub fn conserved(&self) -> bool {
        self.total_before == self.total_after
    }

    /// Every accepted payment applied exactly once (and no outcome left unknown).
    pub fn exactly_once(&self) -> bool {
        self.mismatched.is_empty() && self.unresolved == 0
    }

    /// Everything holds.
    pub fn passed(&self) -> bool {
        self.conserved() && self.exactly_once() && self.ledger_balanced
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// The end-of-run summary.
pub fn summary(stats: &Stats, elapsed: Duration, rate: f64, money: &MoneyCheck) -> String {
    let mut out = String::new();
    let secs = elapsed.as_secs_f64().max(f64::EPSILON);
    let _ = writeln!(
        out,
        "requests:  {} sent at {rate}/s, {} finished, {} dropped by the client, {:.1}/s achieved",
        stats.sent,
        stats.finished(),
        stats.dropped,
        stats.finished() as f64 / secs
    );
    let statuses: Vec<String> = stats.statuses().iter().map(|(s, n)| format!("{s}: {n}")).collect();
    let _ = writeln!(out, "status:    {}", statuses.join(", "));
    let _ = writeln!(
        out,
        "latency:   p50 {}  p90 {}  p99 {}  max {}  (from the scheduled start)",
        ms(stats.quantile(0.50)),
        ms(stats.quantile(0.90)),
        ms(stats.quantile(0.99)),
        ms(stats.max())
    );
    let yes = |b: bool| if b { "yes" } else { "NO" };
    let _ = writeln!(
        out,
        "money:     balances before {} after {}: conserved {}; {} accepted, {} failed, {} unresolved; \
         every accepted payment applied exactly once: {}; ledger balanced: {}",
        money.total_before,
        money.total_after,
        yes(money.conserved()),
        money.completed,
        money.failed,
        money.unresolved,
        yes(money.exactly_once()),
        yes(money.ledger_balanced)
    );
    if !money.mismatched.is_empty() {
        let _ = writeln!(out, "mismatched accounts: {}", money.mismatched.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(before: i64, after: i64, completed_in: i128, completed_out: i128) -> AccountFlow {
        AccountFlow { before, after, completed_in, completed_out }
    }

    #[test]
    fn money_check_catches_double_and_missing_application() {
        let ok =
            BTreeMap::from([("a".to_owned(), flow(100, 70, 0, 30)), ("b".to_owned(), flow(0, 30, 30, 0))]);
        let check = MoneyCheck::new(&ok, 1, 0, 0, true);
        assert!(check.passed());
        // Applied twice on the destination: conserved fails and b mismatches.
        let twice =
            BTreeMap::from([("a".to_owned(), flow(100, 70, 0, 30)), ("b".to_owned(), flow(0, 60, 30, 0))]);
        let check = MoneyCheck::new(&twice, 1, 0, 0, true);
        assert!(!check.conserved());
        assert_eq!(check.mismatched, ["b"]);
        // A failed payment that moved money anyway: conserved, but not exactly once.
        let leaked =
            BTreeMap::from([("a".to_owned(), flow(100, 70, 0, 0)), ("b".to_owned(), flow(0, 30, 0, 0))]);
        let check = MoneyCheck::new(&leaked, 0, 1, 0, true);
        assert!(check.conserved() && !check.exactly_once());
        assert!(!MoneyCheck::new(&ok, 1, 0, 1, true).passed());
        assert!(!MoneyCheck::new(&ok, 1, 0, 0, false).passed());
    }

    #[test]
    fn stats_report_quantiles_and_statuses() {
        let mut stats = Stats::new().expect("valid bounds");
        for ms in 1..=100 {
            stats.record(if ms % 10 == 0 { "422" } else { "201" }, Duration::from_millis(ms));
        }
        assert_eq!(stats.finished(), 100);
        assert_eq!(stats.statuses()["201"], 90);
        assert_eq!(stats.statuses()["422"], 10);
        let p50 = stats.quantile(0.5).as_millis();
        assert!((49..=51).contains(&p50), "p50 {p50}");
        assert!(stats.max() >= Duration::from_millis(100));
        let money = MoneyCheck::new(&BTreeMap::new(), 0, 0, 0, true);
        let text = summary(&stats, Duration::from_secs(1), 100.0, &money);
        assert!(text.contains("201: 90, 422: 10"), "{text}");
        assert!(text.contains("exactly once: yes"), "{text}");
    }
}
