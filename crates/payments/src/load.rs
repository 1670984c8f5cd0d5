//! `payments load`: an open-loop load generator with a money check.
//!
//! Open loop: request `i` is scheduled at `start + i / rate` by the clock, whether or not
//! earlier requests have answered, and its latency is measured from that scheduled instant.
//! A slow server therefore shows up as latency instead of silently lowering the offered load
//! (no coordinated omission). Phases:
//!
//! 1. setup: open `--accounts` accounts per tenant ([`workload`]) and read their balances;
//! 2. run: send `rate × duration` requests on schedule (progress bar on a TTY);
//! 3. resolve: re-send every request whose outcome is unknown (timeouts, 5xx, still
//!    processing) with the same idempotency key until it is final;
//! 4. check: read the balances again; the sum must be unchanged and every account must equal
//!    before + completed in − completed out ([`report::MoneyCheck`]); print the summary.

pub mod report;
pub mod workload;

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use self::report::{AccountFlow, MoneyCheck, Outcome, Stats};
use self::workload::{Mode, Plan, Setup, Workload};

/// `payments load` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// payment-service base URL (payments mode) or account-service base URL (transfers mode).
    #[arg(long)]
    pub target: String,
    /// Requests per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// How long to send.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Tenants (comma-separated); payments stay within a tenant.
    #[arg(long, value_delimiter = ',', default_value = "acme")]
    pub tenants: Vec<String>,
    /// Accounts per tenant (at least 2).
    #[arg(long, default_value_t = 20)]
    pub accounts: usize,
    /// What a request is.
    #[arg(long, value_enum, default_value = "payments")]
    pub mode: Mode,
    /// account-service base URL, for opening accounts and reading balances (transfers mode: --target).
    #[arg(long, env = "ACCOUNT_SERVICE_URL", default_value = "http://account-service:8083")]
    pub account_url: String,
    /// Opening balance of each account, in minor units.
    #[arg(long, default_value_t = 10_000_000)]
    pub opening_balance: i64,
    /// Largest payment, in minor units (amounts are uniform in 1..=max).
    #[arg(long, default_value_t = 10_000)]
    pub max_amount: i64,
    /// Currency of the accounts and payments.
    #[arg(long, default_value = "EUR")]
    pub currency: String,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Requests allowed in flight; beyond it a scheduled request is dropped and counted.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// How long to keep re-sending unknown outcomes after the run.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub resolve_timeout: Duration,
    /// Seed of the payment generator (random when unset).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Proxy for every request.
    #[arg(long, env = "HTTP_PROXY")]
    pub http_proxy: Option<String>,
}

/// One finished request: what was planned and how it ended.
type Record = (Plan, Outcome);

/// Runs the load and prints the summary; fails when the money check fails.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate.is_finite() && args.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(args.accounts >= 2, "--accounts must be at least 2");
    anyhow::ensure!(!args.tenants.is_empty(), "--tenants must name at least one tenant");
    anyhow::ensure!(args.max_amount > 0 && args.opening_balance >= 0, "amounts must be positive");
    let account_url = match args.mode {
        Mode::Payments => args.account_url.clone(),
        Mode::Transfers => args.target.clone(),
    };
    let setup = Setup {
        mode: args.mode,
        target: args.target.clone(),
        account_url,
        tenants: args.tenants.clone(),
        accounts: args.accounts,
        opening_balance: args.opening_balance,
        max_amount: args.max_amount,
        currency: args.currency.clone(),
        timeout: args.timeout,
        proxy: args.http_proxy.clone(),
    };
    let workload = Arc::new(Workload::setup(&setup).await?);
    let before = workload.balances().await?;
    let total = (args.rate * args.duration.as_secs_f64()).round().max(1.0) as u64;
    eprintln!(
        "run {}: {total} {:?} at {}/s for {:?} over {} tenants x {} accounts",
        workload.run_id(),
        args.mode,
        args.rate,
        args.duration,
        args.tenants.len(),
        args.accounts
    );

    let (stats, records, elapsed) = send_all(&workload, &args, total).await?;
    let records = resolve(&workload, records, args.resolve_timeout).await;
    let after = workload.balances().await?;
    let ledger_balanced = workload.ledger_balanced().await?;
    let money = money_check(&before, &after, &records, ledger_balanced);
    print!("{}", report::summary(&stats, elapsed, args.rate, &money));
    anyhow::ensure!(money.passed(), "money check failed");
    Ok(())
}

/// Phase 2: the open-loop schedule.
async fn send_all(
    workload: &Arc<Workload>,
    args: &Args,
    total: u64,
) -> anyhow::Result<(Stats, Vec<Record>, Duration)> {
    let bar = progress(total);
    let mut stats = Stats::new()?;
    let mut rng = args.seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Plan, String, Duration, Outcome)>();
    let start = Instant::now();
    let mut dropped = 0;
    let schedule = async {
        for i in 0..total {
            let at = start + Duration::from_secs_f64(i as f64 / args.rate);
            tokio::time::sleep_until(at).await;
            if in_flight.load(Ordering::Relaxed) >= args.max_in_flight {
                dropped += 1;
                continue;
            }
            let plan = workload.plan(i, &mut rng);
            let (workload, tx, in_flight) = (Arc::clone(workload), tx.clone(), Arc::clone(&in_flight));
            in_flight.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let (status, outcome) = workload.execute(&plan).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
                // The receiver lives until every sender is gone.
                let _ = tx.send((plan, status, at.elapsed(), outcome));
            });
        }
        drop(tx);
    };
    let mut records = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let collect = async {
        while let Some((plan, status, latency, outcome)) = rx.recv().await {
            stats.record(&status, latency);
            bar.inc(1);
            records.push((plan, outcome));
        }
    };
    tokio::join!(schedule, collect);
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    stats.sent = total - dropped;
    stats.dropped = dropped;
    Ok((stats, records, elapsed))
}

fn progress(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} answered ({per_sec})")
    {
        bar.set_style(style);
    }
    bar
}

/// Phase 3: re-send unknown outcomes (same key, so never twice applied) until final.
async fn resolve(workload: &Arc<Workload>, mut records: Vec<Record>, timeout: Duration) -> Vec<Record> {
    let deadline = Instant::now() + timeout;
    loop {
        let unknown: Vec<usize> = records
            .iter()
            .enumerate()
            .filter(|(_, (_, o))| matches!(o, Outcome::Unknown(_)))
            .map(|(i, _)| i)
            .collect();
        if unknown.is_empty() || Instant::now() >= deadline {
            if !unknown.is_empty() {
                eprintln!("{} outcomes still unknown after {timeout:?}", unknown.len());
            }
            return records;
        }
        eprintln!("resolving {} unknown outcomes", unknown.len());
        for chunk in unknown.chunks(64) {
            let mut tasks = JoinSet::new();
            for &i in chunk {
                let (workload, plan) = (Arc::clone(workload), records[i].0.clone());
                tasks.spawn(async move { (i, workload.execute(&plan).await.1) });
            }
            while let Some(Ok((i, outcome))) = tasks.join_next().await {
                records[i].1 = outcome;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Phase 4: compare every account with the flows of the completed payments.
fn money_check(
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
    records: &[Record],
    ledger_balanced: bool,
) -> MoneyCheck {
    let mut flows: BTreeMap<String, AccountFlow> = before
        .iter()
        .map(|(id, b)| {
            let flow = AccountFlow {
                before: *b,
                after: after.get(id).copied().unwrap_or(i64::MIN),
                ..AccountFlow::default()
            };
            (id.clone(), flow)
        })
        .collect();
    let (mut completed, mut failed, mut unresolved) = (0, 0, 0);
    for (plan, outcome) in records {
        match outcome {
            Outcome::Completed => {
                completed += 1;
                if let Some(f) = flows.get_mut(&plan.from) {
                    f.completed_out += i128::from(plan.amount);
                }
                if let Some(f) = flows.get_mut(&plan.to) {
                    f.completed_in += i128::from(plan.amount);
                }
            }
            Outcome::Failed(_) => failed += 1,
            Outcome::Unknown(_) => unresolved += 1,
        }
    }
    MoneyCheck::new(&flows, completed, failed, unresolved, ledger_balanced)
}
