//! `paymesh-control`: the control plane binary. Parses flags (each with an environment
//! variable, so the same binary runs in a container), builds the control plane with its ports
//! bound, prints the ready line, and serves until SIGINT or SIGTERM.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use paymesh_control::app::{self, Config};
use paymesh_control::config_store::Sources;
use tokio::signal::unix::{SignalKind, signal};

/// paymesh's control plane: config store, registry, compiler, push server and CA.
#[derive(Debug, Parser)]
#[command(name = "paymesh-control", version, about)]
struct Args {
    /// Istio + Kubernetes config (files or directories), watched.
    #[arg(
        short = 'f',
        long = "config",
        value_name = "PATH",
        required = true,
        env = "PAYMESH_CONFIG",
        value_delimiter = ','
    )]
    config: Vec<PathBuf>,
    /// Pod manifests of the running pods (`kind: List`), watched.
    #[arg(long, value_name = "FILE", env = "PAYMESH_PODS")]
    pods: Option<PathBuf>,
    /// The CA's directory: its root, or Istio's plug-in CA files in a `cacerts/` subdirectory.
    #[arg(long, value_name = "DIR", env = "PAYMESH_CA_DIR", default_value = ".paymesh/ca")]
    ca_dir: PathBuf,
    /// TLS gRPC: Istio's CA API and MeshDiscovery.
    #[arg(long, env = "PAYMESH_GRPC_ADDR", default_value = "127.0.0.1:15012")]
    grpc_addr: SocketAddr,
    /// HTTP: /ready, /metrics, /debug/*.
    #[arg(long, env = "PAYMESH_MONITORING_ADDR", default_value = "127.0.0.1:15014")]
    monitoring_addr: SocketAddr,
    /// File holding the secret that authorises POST /debug/bootstrap-token.
    #[arg(long, value_name = "FILE", env = "PAYMESH_ADMIN_TOKEN_FILE")]
    admin_token_file: PathBuf,
    /// The SPIFFE trust domain.
    #[arg(long, env = "PAYMESH_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Workload certificate lifetime (`24h`, `30s`).
    #[arg(long, env = "PAYMESH_CERT_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    cert_ttl: Duration,
    /// Local mode: a Gateway server port P listens on P + N (80 -> 8080 with 8000).
    #[arg(long, value_name = "N", env = "PAYMESH_GATEWAY_PORT_OFFSET", default_value_t = 0)]
    gateway_port_offset: u16,
    /// Where a Gateway's credentialName files live (`<dir>/<name>/tls.crt`, `tls.key`).
    #[arg(long, value_name = "DIR", env = "PAYMESH_CREDENTIALS_DIR", default_value = ".paymesh/credentials")]
    credentials_dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Colours only on a terminal: under `paymesh up` stderr is a log file.
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match paymesh_lifecycle::limits::raise_open_files() {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
    let args = Args::parse();
    let admin_token = std::fs::read_to_string(&args.admin_token_file)
        .with_context(|| format!("reading the admin token {}", args.admin_token_file.display()))?;
    anyhow::ensure!(
        !admin_token.trim().is_empty(),
        "the admin token file {} is empty",
        args.admin_token_file.display()
    );
    tracing::info!(?args, "paymesh-control starting");
    let config = Config {
        sources: Sources { config: args.config, pods: args.pods, trust_domain: args.trust_domain },
        ca_dir: args.ca_dir,
        grpc_addr: args.grpc_addr,
        monitoring_addr: args.monitoring_addr,
        admin_token,
        cert_ttl: args.cert_ttl,
        gateway_port_offset: args.gateway_port_offset,
        credentials_dir: args.credentials_dir,
    };
    let bound = app::build(config).await.context("paymesh-control did not start")?;
    let (grpc, monitoring) = (bound.grpc_addr(), bound.monitoring_addr());
    let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    };
    bound
        .run(shutdown, || {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            // A closed stdout (the supervisor went away) must not stop the control plane.
            let _ = writeln!(out, "paymesh-control ready grpc={grpc} monitoring={monitoring}");
            let _ = out.flush();
        })
        .await
        .context("paymesh-control stopped")?;
    tracing::info!("paymesh-control stopped");
    Ok(())
}
