//! `paymesh up`: run the mesh on this machine, every pod on its own loopback address.
//!
//! Phases, each in its own module: load the manifests and [`plan`] the pods (a pure function:
//! `--dry-run` stops there and prints it), check that every address the plan binds is free,
//! then [`start`] the control plane, each pod's sidecar before its app, and [`supervise`] them
//! all until SIGINT/SIGTERM, which stops apps, then proxies, then the control plane. The status
//! table comes from the control plane's and proxies' own debug endpoints ([`table`]).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::ValueEnum;
use paymesh_config::{Loaded, Store, load};

use crate::state::{DEFAULT_STATE_DIR, State};

pub mod bins;
mod credentials;
pub mod plan;
mod pods;
mod ports;
mod start;
mod status;
mod supervise;

/// sysexits' EX_USAGE: the manifests cannot be used.
const EXIT_USAGE: u8 = 64;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kubernetes and Istio manifests (files or directories); default `k8s`.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    files: Vec<PathBuf>,
    /// Where the CA, logs and run state live.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Pods get addresses in this /24 (`.2` is the control plane's).
    #[arg(long, default_value = "127.0.10.0")]
    ip_base: Ipv4Addr,
    /// The ingress gateway's address.
    #[arg(long, default_value = "127.0.0.1")]
    ingress_addr: Ipv4Addr,
    /// Workload certificate lifetime (`24h`, `90s`).
    #[arg(long, default_value = "24h")]
    cert_ttl: String,
    /// Print the plan (pods, addresses, commands) and start nothing.
    #[arg(long)]
    dry_run: bool,
    /// Output of `--dry-run`.
    #[arg(short = 'o', long, value_enum, default_value_t = PlanFormat::Table)]
    output: PlanFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PlanFormat {
    Table,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let files = if args.files.is_empty() { vec![PathBuf::from("k8s")] } else { args.files.clone() };
    let Loaded { resources, mut errors } = load::load_paths(&files);
    let (store, duplicates) = Store::new(resources);
    errors.extend(duplicates);
    if !errors.is_empty() {
        for error in &errors {
            eprintln!("error: {error}");
        }
        eprintln!("paymesh up: {} manifest error(s); nothing started", errors.len());
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    // Everything under the state dir (the CA's key, apps' environment, ledgers, logs) is the
    // user's alone: new files and directories of this process and its children are created
    // without group or other access, and the directory itself is closed to others.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating the state directory {}", args.state_dir.display()))?;
    std::fs::set_permissions(&args.state_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("closing the state directory {} to others", args.state_dir.display()))?;
    let state_dir = std::path::absolute(&args.state_dir)
        .with_context(|| format!("resolving {}", args.state_dir.display()))?;
    let config_paths: Vec<PathBuf> =
        files.iter().map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone())).collect();
    let bins = bins::Bins::from_env();
    let settings = plan::Settings {
        config_paths: &config_paths,
        state_dir: &state_dir,
        ip_base: args.ip_base,
        ingress_addr: args.ingress_addr,
        cert_ttl: &args.cert_ttl,
        bins: &bins,
    };
    let plan = plan::plan(&store, &settings)?;
    if args.dry_run {
        match args.output {
            PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&plan.state)?),
            PlanFormat::Table => print_plan(&plan),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !plan.missing_programs.is_empty() {
        anyhow::bail!(
            "cannot find {} (looked in ${}, beside paymesh, and on PATH)",
            plan.missing_programs.join(", "),
            bins::BIN_DIR_ENV
        );
    }
    if let Ok(running) = State::read(&state_dir)
        && let Some(pid) = running.supervisor_pid
        && supervise::alive(pid)
    {
        anyhow::bail!("paymesh up is already running with {} (pid {pid})", state_dir.display());
    }
    ports::check_free(&plan.state)?;
    if plan.state.control.is_some() {
        for name in credentials::ensure(&store, &state_dir)? {
            println!("paymesh up: gateway credential {name}: generated a self-signed certificate (curl -k)");
        }
    }
    start::run(plan)
}

fn print_plan(plan: &plan::Plan) {
    let state = &plan.state;
    match &state.control {
        Some(control) => {
            println!(
                "control plane {} grpc={} monitoring={}",
                control.ip, control.grpc_addr, control.monitoring_addr
            );
            println!("  {}", control.process.command.join(" "));
        }
        None => println!("control plane: not needed (no pod has a sidecar)"),
    }
    println!();
    let rows = state.pods.iter().map(|pod| {
        vec![
            pod.name.clone(),
            pod.namespace.clone(),
            pod.ip.to_string(),
            if pod.has_proxy() { "yes" } else { "no" }.to_owned(),
            pod.service_account.clone(),
        ]
    });
    crate::table::print(&["POD", "NAMESPACE", "IP", "SIDECAR", "SERVICE ACCOUNT"], rows);
    println!();
    for pod in &state.pods {
        println!("{}/{}:", pod.namespace, pod.name);
        if let Some(proxy) = &pod.proxy {
            println!("  proxy: {}", proxy.command.join(" "));
        }
        if let Some(app) = &pod.app {
            println!("  app:   {}", app.command.join(" "));
        }
    }
    if let Some(url) = &state.ingress_url {
        println!("\ningress: {url}");
    }
    for program in &plan.missing_programs {
        println!(
            "warning: {program} not found (looked in ${}, beside paymesh, and on PATH)",
            bins::BIN_DIR_ENV
        );
    }
}
