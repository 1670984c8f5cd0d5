//! `paymesh-proxy`: the sidecar and gateway binary. Flags (each with its environment variable,
//! so the same binary runs in containers) become an [`app::Config`]; [`app::build`] binds and
//! spawns; `main` prints `paymesh-proxy ready` once ready and drains on SIGTERM/SIGINT.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use paymesh_lifecycle::signal::Signals;
use paymesh_proxy::app::{self, Ports};
use paymesh_tls::TrustDomain;
use tracing::{info, warn};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Sidecar,
    Gateway,
}

/// paymesh's data plane: sidecar or ingress gateway.
#[derive(Debug, Parser)]
#[command(name = "paymesh-proxy", version)]
struct Args {
    /// Sidecar (outbound 15001, inbound 15006) or gateway (its Gateway listeners).
    #[arg(long, value_enum, env = "PAYMESH_PROXY_MODE", default_value = "sidecar")]
    mode: ModeArg,
    /// Pod name.
    #[arg(long, env = "POD_NAME")]
    pod: String,
    /// Pod namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    /// The pod's service account.
    #[arg(long, env = "SERVICE_ACCOUNT")]
    service_account: String,
    /// The pod IP: listeners bind it, outgoing connections come from it.
    #[arg(long, env = "POD_IP")]
    ip: IpAddr,
    /// The control plane's CA + discovery endpoint.
    #[arg(long, env = "PAYMESH_CONTROL")]
    control: SocketAddr,
    /// The mesh trust bundle (PEM).
    #[arg(long, env = "PAYMESH_ROOT_CERT")]
    root_cert: PathBuf,
    /// Bootstrap token file (read once, then deleted).
    #[arg(long, env = "PAYMESH_TOKEN_FILE")]
    token_file: PathBuf,
    /// SPIFFE trust domain.
    #[arg(long, env = "PAYMESH_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: TrustDomain,
    /// How long in-flight requests may finish after SIGTERM.
    #[arg(long, env = "PAYMESH_DRAIN_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Worker threads of the data path (Istio's `concurrency`); all cores when unset.
    #[arg(long, env = "PAYMESH_PROXY_WORKERS")]
    workers: Option<NonZeroUsize>,
}

impl Args {
    fn into_config(self) -> app::Config {
        app::Config {
            mode: match self.mode {
                ModeArg::Sidecar => app::Mode::Sidecar,
                ModeArg::Gateway => app::Mode::Gateway,
            },
            pod: self.pod,
            namespace: self.namespace,
            service_account: self.service_account,
            ip: self.ip,
            control: self.control,
            root_cert: self.root_cert,
            token_file: self.token_file,
            trust_domain: self.trust_domain,
            drain_timeout: self.drain_timeout,
            ports: Ports::default(),
        }
    }
}

fn main() -> anyhow::Result<()> {
    // Colours only on a terminal: under `paymesh up` stderr is a log file.
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    match paymesh_lifecycle::limits::raise_open_files() {
        Ok(limit) => info!(limit, "open-file limit"),
        Err(error) => warn!(%error, "could not raise the open-file limit"),
    }
    let workers = args.workers;
    let config = args.into_config();
    info!(
        mode = ?config.mode, pod = %config.pod, namespace = %config.namespace,
        service_account = %config.service_account, ip = %config.ip, control = %config.control,
        root_cert = %config.root_cert.display(), trust_domain = %config.trust_domain,
        drain_timeout = ?config.drain_timeout, ports = ?config.ports, workers = ?workers, "effective config"
    );
    data_runtime(workers).context("data runtime starts")?.block_on(run(config))
}

/// The data path's runtime. Multi-threaded even for one worker: a single-threaded scheduler ran
/// 7 % fewer instructions per request but cost more CPU time in two interleaved measurements
/// (bench/RESULTS.md).
fn data_runtime(workers: Option<NonZeroUsize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers.get());
    }
    builder.enable_all().build()
}

async fn run(config: app::Config) -> anyhow::Result<()> {
    let mut signals = Signals::install().context("SIGTERM and SIGINT handlers")?;
    let app = app::build(config).await.context("proxy starts")?;
    tokio::select! {
        () = app.ready() => {
            println!("paymesh-proxy ready");
            info!(bound = ?app.bound(), "proxy ready");
        }
        () = signals.recv() => return shutdown(app, &mut signals).await,
    }
    signals.recv().await;
    shutdown(app, &mut signals).await
}

/// Drains; a second signal exits at once.
async fn shutdown(app: app::App, signals: &mut Signals) -> anyhow::Result<()> {
    info!("shutdown signal: draining");
    tokio::select! {
        () = app.shutdown() => Ok(()),
        () = signals.recv() => { warn!("second signal: exiting now"); Ok(()) }
    }
}
