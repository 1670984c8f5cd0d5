//! `paymesh-bench-control-scale`: how the control plane scales with the number of services.
//!
//! For each N: generate N Services × 10 pods (generate), measure the control plane's steps in
//! process (inprocess), start the real `paymesh-control`, connect P simulated proxies (proxies),
//! then make two changes — a new Service file, a pod label edit — and time each from the file
//! write until every proxy decoded the new version (applied it, for a delta). Memory is the
//! processes' VmRSS, CPU the control plane's user + system time over each change; one real
//! `paymesh-proxy` gives the data plane's footprint for that config. Prints markdown tables.
//! `--no-delta` makes the simulated proxies refuse deltas (full snapshots only, as before).

mod generate;
mod inprocess;
mod process;
mod proxies;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use paymesh_control::config_store::Version;
use paymesh_tls::TrustBundle;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::generate::{ENDPOINTS_PER_SERVICE, Mesh, PodRef};
use crate::inprocess::Breakdown;
use crate::process::{Control, Guard};
use crate::proxies::Received;

/// How long all proxies may take to get one version.
const PUSH_DEADLINE: Duration = Duration::from_secs(120);

/// Control-plane scale bench.
#[derive(Debug, Parser)]
#[command(name = "paymesh-bench-control-scale", about)]
struct Args {
    /// Numbers of Services to sweep (each with 10 pods).
    #[arg(long, value_delimiter = ',', default_value = "100,250,500,1000")]
    services: Vec<usize>,
    /// Simulated proxies connected.
    #[arg(long, default_value_t = 100)]
    proxies: usize,
    /// The `paymesh-control` binary (default: next to this binary).
    #[arg(long)]
    control_binary: Option<PathBuf>,
    /// The `paymesh-proxy` binary for the one real proxy (default: next to this binary).
    #[arg(long)]
    proxy_binary: Option<PathBuf>,
    /// Skip the real `paymesh-proxy`.
    #[arg(long)]
    no_real_proxy: bool,
    /// Keep each run's control-plane log here, as `control-<N>.log` (its "config change
    /// accepted" lines give read, analyze and registry milliseconds).
    #[arg(long)]
    logs: Option<PathBuf>,
    /// HTTP/2 receive windows of the simulated proxies, KiB (default: h2's 64 KiB, as
    /// `paymesh-proxy` has).
    #[arg(long)]
    h2_window_kib: Option<u32>,
    /// The simulated proxies do not accept deltas: every push is a full snapshot.
    #[arg(long)]
    no_delta: bool,
}

/// One N's measurements.
struct Row {
    services: usize,
    proxies: usize,
    breakdown: Breakdown,
    certify: Duration,
    first_all: Duration,
    snapshot_bytes: usize,
    clusters: usize,
    endpoints: usize,
    add_service: Push,
    relabel: Push,
    control_idle_kib: u64,
    control_connected_kib: u64,
    control_changed_kib: (u64, u64),
    proxy_kib: Option<(u64, u64)>,
}

/// One change's push.
struct Push {
    /// Write → `/debug/configz` shows the new version.
    accepted: Duration,
    /// Write → the snapshot arrived (before decoding), at the last proxy.
    arrived: Duration,
    /// Write → decoded, median over proxies.
    p50: Duration,
    /// Write → decoded at the last proxy.
    max: Duration,
    /// Bytes pushed to all proxies for this change (`config_json` or `delta_json`).
    bytes: usize,
    /// How many of the proxies got a delta.
    deltas: usize,
    /// The control plane's CPU time from the write until every proxy decoded.
    control_cpu: Duration,
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("own path")?;
    Ok(exe.parent().context("own directory")?.join(name))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let control_binary = args.control_binary.clone().map_or_else(|| sibling("paymesh-control"), Ok)?;
    let proxy_binary = args.proxy_binary.clone().map_or_else(|| sibling("paymesh-proxy"), Ok)?;
    let mut rows = Vec::new();
    for (run, &services) in args.services.iter().enumerate() {
        let octet = 20 + u8::try_from(run % 100).unwrap_or(0);
        let real_proxy = (!args.no_real_proxy).then_some(proxy_binary.as_path());
        let logs = args.logs.as_deref();
        let window = args.h2_window_kib.map(|k| k.saturating_mul(1024));
        let run = Run { proxies: args.proxies, octet, logs, window, accepts_delta: !args.no_delta };
        let row = measure(&control_binary, real_proxy, services, run).await?;
        eprintln!("N={services}: done");
        rows.push(row);
    }
    print_tables(&rows);
    Ok(())
}

/// The knobs of one N's run.
struct Run<'a> {
    proxies: usize,
    octet: u8,
    logs: Option<&'a Path>,
    window: Option<u32>,
    accepts_delta: bool,
}

async fn measure(
    control_binary: &Path,
    proxy_binary: Option<&Path>,
    services: usize,
    run: Run<'_>,
) -> anyhow::Result<Row> {
    let Run { proxies, octet, logs, window, accepts_delta } = run;
    anyhow::ensure!(services > 0 && proxies > 0, "need at least one service and one proxy");
    anyhow::ensure!(proxies < services * ENDPOINTS_PER_SERVICE, "more proxies than pods");
    let dir = tempfile::tempdir().context("temp dir")?;
    let mut mesh = Mesh::generate(dir.path(), services, octet)?;
    let total = mesh.pods.len();
    let chosen: Vec<PodRef> = (0..proxies).map(|k| mesh.pods[k * total / proxies].clone()).collect();
    let real_pod = mesh.pods[total - 1].clone();
    anyhow::ensure!(!chosen.iter().any(|p| p.name == real_pod.name), "the real proxy's pod is simulated too");
    let breakdown = tokio::task::block_in_place(|| inprocess::measure(&mesh, &chosen))?;

    let control = Control::start(control_binary, &mesh, dir.path(), Ipv4Addr::new(127, octet, 255, 1))?;
    let control_idle_kib = control.process.memory_kib()?.0;
    let http = reqwest::Client::new();
    let trust = TrustBundle::from_pem(&std::fs::read_to_string(&control.root_cert)?)?;

    let started = Instant::now();
    let mut jobs = JoinSet::new();
    for (i, pod) in chosen.iter().cloned().enumerate() {
        // One CA connection per proxy, as real proxies have.
        let (monitoring, http, ca) =
            (control.monitoring, http.clone(), proxies::ca_client(&control, &trust)?);
        jobs.spawn(async move { proxies::certify(monitoring, &http, &ca, i, pod).await });
    }
    let mut certified = Vec::with_capacity(proxies);
    while let Some(job) =
        tokio::time::timeout(PUSH_DEADLINE, jobs.join_next()).await.context("certificates took too long")?
    {
        certified.push(job??);
    }
    let certify = started.elapsed();

    let (events, mut received) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for proxy in certified {
        let (grpc, trust, events) = (control.grpc, trust.clone(), events.clone());
        tasks.spawn(async move {
            if let Err(error) = proxies::run(grpc, trust, proxy, events, window, accepts_delta).await {
                eprintln!("simulated proxy failed: {error:#}");
            }
        });
    }
    let first = wait_all(&mut received, proxies, 1, started).await?;
    let first_all = first.iter().map(|r| r.at - started).max().unwrap_or_default();
    let control_connected_kib = control.process.memory_kib()?.0;
    let (snapshot_bytes, clusters, endpoints) =
        first.first().map(|r| (r.bytes, r.clusters, r.endpoints)).unwrap_or_default();

    let proxy = match proxy_binary {
        Some(binary) => {
            let token = process::token(&http, control.monitoring, &real_pod).await?;
            Some(process::start_proxy(binary, &control, &real_pod, &token, dir.path())?)
        }
        None => None,
    };
    let proxy_ready_kib = proxy.as_ref().map(Guard::memory_kib).transpose()?;

    let add_service =
        change(&control, &http, &mut received, proxies, 2, || mesh.add_service("svc-extra")).await?;
    let relabel = change(&control, &http, &mut received, proxies, 3, || mesh.relabel(5, "svc-1")).await?;
    // Three more pod moves (untimed), so memory is read after five changes.
    for (n, app) in (4u64..).zip(["svc-2", "svc-3", "svc-0"]) {
        change(&control, &http, &mut received, proxies, n, || mesh.relabel(5, app)).await?;
    }
    // Let the last compilations' garbage settle into the allocator's free lists.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let control_changed_kib = control.process.memory_kib()?;
    let proxy_kib = match (&proxy, proxy_ready_kib) {
        (Some(proxy), Some((ready, _))) => Some((ready, proxy.memory_kib()?.0)),
        _ => None,
    };
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    drop(proxy);
    drop(control);
    if let Some(logs) = logs {
        std::fs::create_dir_all(logs).context("logs dir")?;
        std::fs::copy(dir.path().join("control.log"), logs.join(format!("control-{services}.log")))
            .context("keeping the control log")?;
    }
    Ok(Row {
        services,
        proxies,
        breakdown,
        certify,
        first_all,
        snapshot_bytes,
        clusters,
        endpoints,
        add_service,
        relabel,
        control_idle_kib,
        control_connected_kib,
        control_changed_kib,
        proxy_kib,
    })
}

/// Waits until each of `proxies` decoded a version whose `n` is at least `n`; the first such
/// snapshot of each, in proxy order.
async fn wait_all(
    received: &mut mpsc::UnboundedReceiver<Received>,
    proxies: usize,
    n: u64,
    since: Instant,
) -> anyhow::Result<Vec<Received>> {
    let mut got: Vec<Option<Received>> = (0..proxies).map(|_| None).collect();
    let mut missing = proxies;
    while missing > 0 {
        let left = PUSH_DEADLINE.saturating_sub(since.elapsed());
        let event = tokio::time::timeout(left, received.recv())
            .await
            .with_context(|| format!("{missing} proxies never got version n={n}"))?
            .context("every simulated proxy stopped")?;
        let version: Version = event.version.parse().context("snapshot version")?;
        let slot = got.get_mut(event.proxy).context("unknown proxy")?;
        if version.n >= n && slot.is_none() {
            *slot = Some(event);
            missing -= 1;
        }
    }
    Ok(got.into_iter().flatten().collect())
}

/// Applies `edit` and times it until config version `n` is accepted and decoded everywhere.
async fn change(
    control: &Control,
    http: &reqwest::Client,
    received: &mut mpsc::UnboundedReceiver<Received>,
    proxies: usize,
    n: u64,
    edit: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Push> {
    let cpu_before = control.process.cpu()?;
    let written = Instant::now();
    edit()?;
    let accepted = async {
        loop {
            let version: Option<Version> = control.version(http).await.ok().and_then(|v| v.parse().ok());
            if version.is_some_and(|v| v.n >= n) || written.elapsed() > PUSH_DEADLINE {
                return written.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (accepted, decoded) = tokio::join!(accepted, wait_all(received, proxies, n, written));
    let decoded = decoded?;
    let control_cpu = control.process.cpu()?.saturating_sub(cpu_before);
    let arrived = decoded.iter().map(|r| r.arrived - written).max().unwrap_or_default();
    let mut latencies: Vec<Duration> = decoded.iter().map(|r| r.at - written).collect();
    latencies.sort();
    Ok(Push {
        accepted,
        arrived,
        p50: latencies.get(latencies.len() / 2).copied().unwrap_or_default(),
        max: latencies.last().copied().unwrap_or_default(),
        bytes: decoded.iter().map(|r| r.bytes).sum(),
        deltas: decoded.iter().filter(|r| r.delta).count(),
        control_cpu,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn ms1(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn print_tables(rows: &[Row]) {
    println!("### Push latency (ms; write → decoded at every proxy)\n");
    println!(
        "| services | endpoints | proxies | certs for all | first snapshot, all | +Service: accepted | arrived, all | p50 | max | pod relabel: accepted | arrived, all | p50 | max |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | **{}** | {} | {} | {} | **{}** |",
            r.services,
            r.services * ENDPOINTS_PER_SERVICE,
            r.proxies,
            ms(r.certify),
            ms(r.first_all),
            ms(r.add_service.accepted),
            ms(r.add_service.arrived),
            ms(r.add_service.p50),
            ms(r.add_service.max),
            ms(r.relabel.accepted),
            ms(r.relabel.arrived),
            ms(r.relabel.p50),
            ms(r.relabel.max),
        );
    }
    println!("\n### Where the time goes (in process, one thread, ms)\n");
    println!(
        "| services | first load + analyze + registry | whole config / proxy: compile | encode | decode | × proxies (compile + encode) | scopes | per scope: compile + encode | splice / proxy | push total (scopes + splices) | delta: diff / scope | delta splice / proxy |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let b = r.breakdown;
        let proxies = u32::try_from(r.proxies).unwrap_or(u32::MAX);
        let per_push = (b.compile + b.encode) * proxies;
        let scoped = b.outbound * u32::try_from(b.scopes).unwrap_or(u32::MAX) + b.splice * proxies;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.services,
            ms(b.load),
            ms1(b.compile),
            ms1(b.encode),
            ms1(b.decode),
            ms(per_push),
            b.scopes,
            ms1(b.outbound),
            ms1(b.splice),
            ms(scoped),
            ms1(b.diff),
            ms1(b.delta_splice),
        );
    }
    println!("\n### Memory and snapshot size\n");
    println!(
        "| services | snapshot KiB / proxy | clusters | endpoints | control RSS idle MiB | + {} proxies | after 5 changes (peak) | real proxy RSS ready MiB | after 5 changes |",
        rows.first().map_or(0, |r| r.proxies)
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let (proxy_ready, proxy_after) =
            r.proxy_kib.map_or(("-".to_owned(), "-".to_owned()), |(a, b)| (mib(a), mib(b)));
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} ({}) | {} | {} |",
            r.services,
            r.snapshot_bytes as f64 / 1024.0,
            r.clusters,
            r.endpoints,
            mib(r.control_idle_kib),
            mib(r.control_connected_kib),
            mib(r.control_changed_kib.0),
            mib(r.control_changed_kib.1),
            proxy_ready,
            proxy_after,
        );
    }
    println!("\n### Bytes pushed and control-plane CPU per change (write → decoded everywhere)\n");
    println!(
        "| services | full snapshot KiB / proxy | +Service: deltas / proxies | KiB pushed, all proxies | control CPU ms | pod relabel: deltas / proxies | KiB pushed, all proxies | control CPU ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.0} | {} / {} | {:.0} | {} | {} / {} | {:.0} | {} |",
            r.services,
            r.snapshot_bytes as f64 / 1024.0,
            r.add_service.deltas,
            r.proxies,
            r.add_service.bytes as f64 / 1024.0,
            ms(r.add_service.control_cpu),
            r.relabel.deltas,
            r.proxies,
            r.relabel.bytes as f64 / 1024.0,
            ms(r.relabel.control_cpu),
        );
    }
}
