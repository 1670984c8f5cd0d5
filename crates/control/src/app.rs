//! Startup in one readable order: load and validate the config, start the CA and write the
//! trust bundle, bind the gRPC and monitoring ports ([`build`] returns the bound addresses),
//! then [`Bound::run`] spawns the config watcher and both servers, marks ready, and on shutdown
//! ends the discovery streams first so both servers can drain. A server that stops on its own
//! is an error: the process exits non-zero and its supervisor restarts it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use paymesh_tls::TrustDomain;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::ca::root::ROOT_CERT_FILE;
use crate::ca::{Ca, CaConfig, CaError, CaServerConfig, RootSource, ServeError};
use crate::compile::Settings;
use crate::config_store::{ConfigStore, ISTIO_NAMESPACE, InvalidConfig, Sources};
use crate::discovery::{Discovery, Metrics, SyncStatus};
use crate::grpc::GrpcServer;
use crate::monitoring::{self, AdminToken, MonitoringState};

/// Everything `paymesh-control` is started with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Config files and the pods file.
    pub sources: Sources,
    /// The CA's directory: its root, or Istio's plug-in files in `cacerts/`.
    pub ca_dir: PathBuf,
    /// The TLS gRPC address (CA + discovery).
    pub grpc_addr: SocketAddr,
    /// The monitoring HTTP address.
    pub monitoring_addr: SocketAddr,
    /// The admin secret for `POST /debug/bootstrap-token`.
    pub admin_token: String,
    /// Workload certificate lifetime.
    pub cert_ttl: Duration,
    /// Local mode: Gateway server port P listens on P + offset.
    pub gateway_port_offset: u16,
    /// Where Gateway `credentialName` files live.
    pub credentials_dir: PathBuf,
}

/// Why the control plane could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The first config is invalid.
    #[error(transparent)]
    Config(#[from] InvalidConfig),
    /// The trust domain is not a valid name.
    #[error("trust domain {0:?}: {1}")]
    TrustDomain(String, String),
    /// The CA did not start.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The trust bundle could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC port failed.
    #[error(transparent)]
    Grpc(#[from] ServeError),
    /// The monitoring port could not be bound or failed.
    #[error("monitoring on {addr}: {source}")]
    Monitoring {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No randomness for the admin secret's key.
    #[error("no randomness for the admin token")]
    Random,
    /// A startup or server task panicked.
    #[error("control plane task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A server stopped although no shutdown was asked for.
    #[error("the {0} server stopped unexpectedly")]
    Stopped(&'static str),
}

/// The control plane with its ports bound, not yet serving.
pub struct Bound {
    config: Arc<ConfigStore>,
    settings: Arc<Settings>,
    grpc: GrpcServer,
    monitoring: TcpListener,
    state: Arc<MonitoringState>,
    grpc_addr: SocketAddr,
    monitoring_addr: SocketAddr,
}

/// Loads config, starts the CA, writes `<ca-dir>/root-cert.pem` and binds both ports.
pub async fn build(config: Config) -> Result<Bound, AppError> {
    let trust_domain: TrustDomain =
        config.sources.trust_domain.parse().map_err(|e: paymesh_tls::IdentityError| {
            AppError::TrustDomain(config.sources.trust_domain.clone(), e.to_string())
        })?;
    // Istio's CRD schemas are compiled on first use (≈0.35 s); compile them now, beside the
    // first load, so the first Istio resource added later is not pushed that much slower.
    tokio::task::spawn_blocking(paymesh_config::schema::registry);
    let sources = config.sources.clone();
    let store = tokio::task::spawn_blocking(move || ConfigStore::load(sources)).await??;
    info!(version = %store.current().version, "config loaded");

    let cacerts = config.ca_dir.join("cacerts");
    let root = if cacerts.is_dir() {
        RootSource::PlugIn { cacerts_dir: cacerts }
    } else {
        RootSource::SelfSigned { state_dir: config.ca_dir.clone() }
    };
    let mut ca_config = CaConfig::new(trust_domain.clone(), root);
    ca_config.default_ttl = config.cert_ttl;
    let ca = Arc::new(tokio::task::spawn_blocking(move || Ca::new(ca_config)).await??);
    let bundle = config.ca_dir.join(ROOT_CERT_FILE);
    let pem = ca.trust_bundle().to_pem();
    tokio::task::spawn_blocking(move || write_bundle(&bundle, &pem)).await??;

    let server = CaServerConfig::new(config.grpc_addr, trust_domain)
        .map_err(|e| AppError::TrustDomain(config.sources.trust_domain.clone(), e.to_string()))?;
    let grpc = GrpcServer::bind(Arc::clone(&ca), server).await?;
    let monitoring_error = |source| AppError::Monitoring { addr: config.monitoring_addr, source };
    let monitoring = TcpListener::bind(config.monitoring_addr).await.map_err(monitoring_error)?;
    let monitoring_addr = monitoring.local_addr().map_err(monitoring_error)?;

    let settings = Arc::new(Settings {
        trust_domain: config.sources.trust_domain.clone(),
        cert_ttl_secs: config.cert_ttl.as_secs(),
        gateway_port_offset: config.gateway_port_offset,
        credentials_dir: config.credentials_dir.clone(),
        root_namespace: ISTIO_NAMESPACE.to_owned(),
    });
    let state = Arc::new(MonitoringState {
        ca,
        config: Arc::clone(&store),
        status: Arc::new(SyncStatus::default()),
        metrics: Arc::new(Metrics::default()),
        admin_token: AdminToken::new(&config.admin_token).map_err(|_| AppError::Random)?,
        ready: Default::default(),
    });
    Ok(Bound {
        config: store,
        settings,
        grpc_addr: grpc.local_addr(),
        grpc,
        monitoring,
        state,
        monitoring_addr,
    })
}

/// Writes the trust bundle when the file on disk is missing or differs, atomically (a temp
/// file renamed over it), so a reader never sees half a bundle. Blocking.
fn write_bundle(path: &std::path::Path, pem: &str) -> Result<(), AppError> {
    if std::fs::read_to_string(path).is_ok_and(|on_disk| on_disk == pem) {
        return Ok(());
    }
    let error = |source| AppError::Write { path: path.to_owned(), source };
    let temp = path.with_extension(format!("pem.tmp.{}", std::process::id()));
    std::fs::write(&temp, pem).map_err(error)?;
    std::fs::rename(&temp, path).map_err(|source| {
        let _ = std::fs::remove_file(&temp);
        error(source)
    })
}

impl Bound {
    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound monitoring address.
    pub fn monitoring_addr(&self) -> SocketAddr {
        self.monitoring_addr
    }

    /// Serves until `shutdown` completes, then ends the discovery streams and drains;
    /// `on_ready` runs once both servers are spawned.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        on_ready: impl FnOnce(),
    ) -> Result<(), AppError> {
        let (stop, stopped) = watch::channel(false);
        let watcher = self.config.watch();
        let discovery = Discovery::new(
            Arc::clone(&self.config),
            self.settings,
            Arc::clone(&self.state.status),
            Arc::clone(&self.state.metrics),
            stopped.clone(),
        );
        let until = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut grpc = tokio::spawn(self.grpc.serve(Some(discovery), until(stopped.clone())));
        let router = monitoring::router(Arc::clone(&self.state));
        let monitoring_addr = self.monitoring_addr;
        let http_error = move |source| AppError::Monitoring { addr: monitoring_addr, source };
        let mut http = tokio::spawn(monitoring::serve(self.monitoring, router, until(stopped)));
        self.state.ready.store(true, Ordering::Release);
        on_ready();
        // A server ending before shutdown is a failure, whatever it returned.
        let failed = tokio::select! {
            () = shutdown => None,
            result = &mut grpc => Some(result.map_err(AppError::from).and_then(|r| r.map_err(AppError::from)).and(Err(AppError::Stopped("gRPC")))),
            result = &mut http => Some(result.map_err(AppError::from).and_then(|r| r.map_err(http_error)).and(Err(AppError::Stopped("monitoring")))),
        };
        watcher.abort();
        let _ = stop.send(true);
        if let Some(failed) = failed {
            self.state.ready.store(false, Ordering::Release);
            grpc.abort();
            http.abort();
            return failed;
        }
        info!("shutting down: ending discovery streams and draining");
        let (grpc, http) = (grpc.await?, http.await?);
        grpc?;
        http.map_err(http_error)
    }
}
