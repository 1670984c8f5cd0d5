//! Startup in one readable function, [`build`]: read the inputs, bind every socket, then spawn
//! the control runtime (identity, discovery, admin, readiness on one thread of its own) and the
//! data listeners (on the caller's runtime). Binding first means a port conflict fails startup
//! before anything runs, and callers learn the real addresses ([`Bound`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use paymesh_api::ca::{BootstrapToken, CaClientConfig, DEFAULT_CA_TIMEOUT, control_plane_identity};
use paymesh_api::model::ProxyKind;
use paymesh_api::ports;
use paymesh_tls::{ClientAuth, Identity, TrustBundle, TrustDomain, server_config};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::admin::{self, AdminState};
use crate::discovery::{self, Discovery, Node};
use crate::drain::{self, Trigger};
use crate::forward::Forward;
use crate::gateway::{self, Gateway};
use crate::identity::IdentityManager;
use crate::inbound::{self, Inbound};
use crate::index::Index;
use crate::outbound::{self, Outbound};
use crate::readiness::Readiness;

/// Sidecar or gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Beside one app: outbound and inbound listeners.
    Sidecar,
    /// Ingress gateway: the listeners of its compiled `Gateway` servers.
    Gateway,
}

impl Mode {
    fn kind(self) -> ProxyKind {
        match self {
            Mode::Sidecar => ProxyKind::Sidecar,
            Mode::Gateway => ProxyKind::Gateway,
        }
    }
}

/// The ports the proxy listens on (on the pod IP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// The app's HTTP proxy (15001).
    pub outbound: u16,
    /// Mutual TLS from other proxies (15006).
    pub inbound: u16,
    /// `/config_dump`, `/healthz` (15000).
    pub admin: u16,
    /// `/healthz/ready` (15021).
    pub readiness: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            outbound: ports::PROXY_OUTBOUND,
            inbound: ports::PROXY_INBOUND,
            admin: ports::PROXY_ADMIN,
            readiness: ports::PROXY_READINESS,
        }
    }
}

/// Everything the proxy starts with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Sidecar or gateway.
    pub mode: Mode,
    /// Pod name.
    pub pod: String,
    /// Pod namespace.
    pub namespace: String,
    /// The pod's service account (its identity).
    pub service_account: String,
    /// The pod IP: every listener binds it and every outgoing connection comes from it.
    pub ip: IpAddr,
    /// The control plane (CA and discovery).
    pub control: SocketAddr,
    /// The mesh trust bundle (PEM).
    pub root_cert: PathBuf,
    /// The bootstrap token file; read once and deleted.
    pub token_file: PathBuf,
    /// The SPIFFE trust domain.
    pub trust_domain: TrustDomain,
    /// How long in-flight requests may finish after SIGTERM.
    pub drain_timeout: Duration,
    /// Listener ports.
    pub ports: Ports,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The trust bundle is unusable.
    #[error("trust bundle {path}: {source}")]
    Trust {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: paymesh_tls::CertError,
    },
    /// Namespace or service account do not form an identity.
    #[error("proxy identity: {0}")]
    Identity(#[from] paymesh_tls::IdentityError),
    /// The bootstrap token file is empty.
    #[error("bootstrap token file {0} is empty")]
    EmptyToken(PathBuf),
    /// A port could not be bound.
    #[error("{what} cannot listen on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The inbound TLS configuration could not be built.
    #[error("inbound TLS: {0}")]
    Tls(#[from] paymesh_tls::ConfigError),
    /// The control runtime could not start.
    #[error("control runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// The addresses the proxy listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// Outbound (sidecar only).
    pub outbound: Option<SocketAddr>,
    /// Inbound (sidecar only).
    pub inbound: Option<SocketAddr>,
    /// Admin.
    pub admin: SocketAddr,
    /// Readiness.
    pub readiness: SocketAddr,
}

/// A running proxy.
pub struct App {
    bound: Bound,
    readiness: Readiness,
    trigger: Trigger,
    data: Vec<JoinHandle<()>>,
    control: std::thread::JoinHandle<()>,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr).await.map_err(|source| AppError::Bind { what, addr, source })
}

fn local(what: &'static str, listener: &TcpListener) -> Result<SocketAddr, AppError> {
    listener.local_addr().map_err(|source| AppError::Bind {
        what,
        addr: SocketAddr::new([0, 0, 0, 0].into(), 0),
        source,
    })
}

/// Reads the inputs, binds every socket and spawns everything; the data listeners run on the
/// calling runtime.
pub async fn build(config: Config) -> Result<App, AppError> {
    // Inputs: the trust bundle, our identity, the single-use token (deleted once read).
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|source| AppError::Read { path: path.clone(), source })
    };
    let trust = TrustBundle::from_pem(&read(&config.root_cert)?)
        .map_err(|source| AppError::Trust { path: config.root_cert.clone(), source })?;
    let identity = Identity::new(config.trust_domain.clone(), &config.namespace, &config.service_account)?;
    let control_identity = control_plane_identity(config.trust_domain.clone())?;
    let token = read(&config.token_file)?.trim().to_owned();
    if token.is_empty() {
        return Err(AppError::EmptyToken(config.token_file.clone()));
    }
    if let Err(error) = std::fs::remove_file(&config.token_file) {
        warn!(file = %config.token_file.display(), %error, "bootstrap token file not deleted");
    }

    // Sockets: all bound before anything runs.
    let at = |port| SocketAddr::new(config.ip, port);
    let admin_listener = bind("admin", at(config.ports.admin)).await?;
    let readiness_listener = bind("readiness", at(config.ports.readiness)).await?;
    let (outbound_listener, inbound_listener) = match config.mode {
        Mode::Sidecar => (
            Some(bind("outbound", at(config.ports.outbound)).await?),
            Some(bind("inbound", at(config.ports.inbound)).await?),
        ),
        Mode::Gateway => (None, None),
    };
    let bound = Bound {
        outbound: outbound_listener.as_ref().map(|l| local("outbound", l)).transpose()?,
        inbound: inbound_listener.as_ref().map(|l| local("inbound", l)).transpose()?,
        admin: local("admin", &admin_listener)?,
        readiness: local("readiness", &readiness_listener)?,
    };

    // Shared state: the credential store, the current index, readiness.
    let readiness = Readiness::default();
    let cert_ready = readiness.register("certificate");
    let config_ready = readiness.register("config");
    let ca = CaClientConfig {
        addr: config.control,
        trust: trust.clone(),
        ca_identity: control_identity.clone(),
        requested_ttl: None,
        timeout: DEFAULT_CA_TIMEOUT,
        source: Some(config.ip),
    };
    let identity_manager = IdentityManager::new(ca, identity.clone());
    let store = Arc::clone(identity_manager.store());
    let cert = identity_manager.status();
    let index: Arc<ArcSwapOption<Index>> = Arc::new(ArcSwapOption::empty());
    let (changed_tx, changed_rx) = discovery::changes();
    let (trigger, shutdown) = drain::channel();

    // The control runtime: identity, discovery, admin, readiness.
    let discovery_config = discovery::Config {
        addr: config.control,
        control_identity,
        trust: trust.clone(),
        node: Node {
            pod: config.pod.clone(),
            namespace: config.namespace.clone(),
            ip: config.ip,
            kind: config.mode.kind(),
        },
    };
    let discovery =
        Discovery::new(discovery_config, Arc::clone(&store), cert.clone(), Arc::clone(&index), changed_tx);
    let admin_state = AdminState { index: Arc::clone(&index), cert, readiness: readiness.clone() };
    let admin_std = admin_listener.into_std().map_err(AppError::Runtime)?;
    let readiness_std = readiness_listener.into_std().map_err(AppError::Runtime)?;
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(AppError::Runtime)?;
    let control_shutdown = shutdown.clone();
    let control = std::thread::Builder::new()
        .name("paymesh-control".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(identity_manager.run(BootstrapToken::new(token), cert_ready));
                tokio::spawn(discovery.run(config_ready));
                for (listener, port) in
                    [(admin_std, admin::Port::Admin), (readiness_std, admin::Port::Readiness)]
                {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            tokio::spawn(admin::serve(
                                listener,
                                port,
                                admin_state.clone(),
                                control_shutdown.clone(),
                            ));
                        }
                        Err(error) => warn!(%error, ?port, "admin listener lost"),
                    }
                }
                control_shutdown.signaled().await;
            });
        })
        .map_err(AppError::Runtime)?;

    // The data listeners.
    let forward = Arc::new(Forward::new(config.ip));
    let mut data = Vec::new();
    if let (Some(outbound_listener), Some(inbound_listener)) = (outbound_listener, inbound_listener) {
        let outbound = Outbound::new(
            outbound::Config { drain_timeout: config.drain_timeout },
            Arc::clone(&index),
            Arc::clone(&forward),
        );
        data.push(tokio::spawn(outbound.run(outbound_listener, shutdown.clone())));
        let tls = TlsAcceptor::from(Arc::new(server_config(store, &trust, ClientAuth::Required)?));
        let inbound_config = inbound::Config {
            pod_ip: config.ip,
            identity: identity.clone(),
            drain_timeout: config.drain_timeout,
        };
        let inbound = Inbound::new(inbound_config, Arc::clone(&index), Arc::clone(&forward), tls);
        data.push(tokio::spawn(inbound.run(inbound_listener, shutdown.clone())));
    }
    if config.mode == Mode::Gateway {
        let gateway = Gateway::new(gateway::Config { drain_timeout: config.drain_timeout }, index, forward);
        data.push(tokio::spawn(gateway.run(changed_rx, shutdown)));
    }
    info!(?bound, %identity, "proxy started");
    Ok(App { bound, readiness, trigger, data, control })
}

impl App {
    /// Where the proxy listens.
    pub fn bound(&self) -> &Bound {
        &self.bound
    }

    /// Completes once the first certificate and the first config are in.
    pub async fn ready(&self) {
        self.readiness.wait().await;
    }

    /// Stops accepting, drains in-flight requests (each listener up to the drain timeout),
    /// stops the control runtime.
    pub async fn shutdown(self) {
        self.trigger.trigger();
        for task in self.data {
            let _ = task.await;
        }
        let control = self.control;
        let _ = tokio::task::spawn_blocking(move || control.join()).await;
        info!("proxy stopped");
    }
}
