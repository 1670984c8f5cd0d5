//! A scripted control plane for the proxy's tests: a real signing CA (paymesh-tls's
//! [`Authority`], the code `paymesh-control`'s CA signs with) behind Istio's CA API, and a
//! `MeshDiscovery` server that sends the `ProxyConfig` a test sets for a pod (or any raw
//! Snapshot, a delta say) and records every ACK and NACK. Both on one TLS port, as
//! `paymesh-control` serves them. Each test binary uses part of it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use paymesh_api::ProxyConfig;
use paymesh_api::ca::pb::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use paymesh_api::ca::pb::{IstioCertificateRequest, IstioCertificateResponse};
use paymesh_api::ca::{AUTHORIZATION, control_plane_identity};
use paymesh_api::pb::mesh_discovery_server::{MeshDiscovery, MeshDiscoveryServer};
use paymesh_api::pb::subscribe_request::Kind;
use paymesh_api::pb::{Snapshot, SubscribeRequest};
use paymesh_tls::{
    ALPN_H2, Authority, ClientAuth, Credential, CredentialStore, Identity, IssuedChain, PrivateKey,
    SignError, TrustBundle, TrustDomain, Validity, server_config,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status, Streaming};

use crate::support::{TempDir, random_ip};

/// One answer a proxy sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Ack { pod: String, version: String },
    Nack { pod: String, version: String, reason: String },
}

/// What the scripted control plane sends a pod next.
#[derive(Debug, Clone)]
pub enum Push {
    /// A full snapshot of this config.
    Full(ProxyConfig),
    /// This snapshot as it is (its nonce replaced).
    Raw(Snapshot),
}

#[derive(Default)]
struct Shared {
    configs: Mutex<HashMap<String, watch::Sender<Option<Push>>>>,
    answers: Mutex<Vec<Answer>>,
    hellos: Mutex<Vec<(String, String)>>,
    /// The source address of every connection accepted.
    peers: Mutex<Vec<std::net::IpAddr>>,
    /// Bumped by `stop`: every open subscription ends, as when the process dies.
    generation: watch::Sender<u64>,
}

impl Shared {
    fn config_channel(&self, pod: &str) -> watch::Sender<Option<Push>> {
        self.configs
            .lock()
            .expect("lock")
            .entry(pod.to_owned())
            .or_insert_with(|| watch::channel(None).0)
            .clone()
    }
}

/// A CA over a root made in memory, for the trust domain `cluster.local`.
pub struct Ca {
    authority: Authority,
    ttl: Duration,
}

impl Ca {
    /// A fresh root; leaves are valid `ttl` unless a request asks for another lifetime.
    pub fn new(ttl: Duration) -> Self {
        let root_lifetime = Duration::from_secs(24 * 3600);
        let (authority, _key) =
            Authority::generate_root(&TrustDomain::default(), root_lifetime).expect("root");
        Ca { authority, ttl }
    }

    pub fn trust_bundle(&self) -> &TrustBundle {
        self.authority.trust()
    }

    /// Signs `csr` for `caller`, valid `ttl` (the CA's when `None`).
    pub fn sign(
        &self,
        caller: &Identity,
        csr: &str,
        ttl: Option<Duration>,
    ) -> Result<IssuedChain, SignError> {
        self.authority.sign_csr(csr, caller, &validity(ttl.unwrap_or(self.ttl)))
    }

    /// A credential for `identity` over `key`, made here (the control plane's own, a foreign client).
    pub fn issue_local(
        &self,
        identity: &Identity,
        dns_names: &[String],
        key: PrivateKey,
        ttl: Duration,
    ) -> Result<Credential, SignError> {
        self.authority.issue(identity, dns_names, key, &validity(ttl))
    }
}

/// Valid from a second ago (clock skew between test and proxy) for `ttl`.
fn validity(ttl: Duration) -> Validity {
    Validity::from_now(ttl, Duration::from_secs(1))
}

/// Outstanding bootstrap tokens: each vouches for one identity, once.
#[derive(Default)]
struct Tokens(Mutex<HashMap<String, Identity>>);

impl Tokens {
    fn issue(&self, identity: Identity) -> String {
        let token = format!("test-token-{:016x}", fastrand::u64(..));
        self.0.lock().expect("lock").insert(token.clone(), identity);
        token
    }

    fn redeem(&self, token: &str) -> Option<Identity> {
        self.0.lock().expect("lock").remove(token)
    }
}

/// The scripted control plane.
pub struct ControlPlane {
    pub ca: Arc<Ca>,
    pub addr: SocketAddr,
    pub dir: TempDir,
    tokens: Arc<Tokens>,
    shared: Arc<Shared>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>, JoinHandle<()>)>,
}

impl ControlPlane {
    /// A control plane on a fresh 127.x.y.z, issuing certificates valid `ttl`.
    pub async fn start(ttl: Duration) -> Self {
        let dir = TempDir::new("control");
        let ca = Arc::new(Ca::new(ttl));
        std::fs::write(dir.path().join("root-cert.pem"), ca.trust_bundle().to_pem()).expect("root written");
        let tokens = Arc::new(Tokens::default());
        let addr = SocketAddr::new(random_ip(), 15012);
        let mut cp = ControlPlane { ca, addr, dir, tokens, shared: Arc::default(), running: None };
        cp.serve().await;
        cp
    }

    pub fn root_cert(&self) -> PathBuf {
        self.dir.path().join("root-cert.pem")
    }

    /// A single-use bootstrap token for a pod running as `ns/sa`.
    pub fn token(&self, ns: &str, sa: &str) -> String {
        self.tokens.issue(Identity::new(TrustDomain::default(), ns, sa).expect("identity"))
    }

    /// Sets (or replaces, pushing it) the config of `pod`.
    pub fn set_config(&self, config: ProxyConfig) {
        let pod = config.node.pod.clone();
        self.shared.config_channel(&pod).send_replace(Some(Push::Full(config)));
    }

    /// Sends `snapshot` as it is to `pod` (a delta, or something hostile).
    pub fn push_raw(&self, pod: &str, snapshot: Snapshot) {
        self.shared.config_channel(pod).send_replace(Some(Push::Raw(snapshot)));
    }

    pub fn answers(&self) -> Vec<Answer> {
        self.shared.answers.lock().expect("lock").clone()
    }

    /// Hellos received: (pod, running_version).
    pub fn hellos(&self) -> Vec<(String, String)> {
        self.shared.hellos.lock().expect("lock").clone()
    }

    /// The source IPs of every connection accepted (CA and discovery alike).
    pub fn peers(&self) -> Vec<std::net::IpAddr> {
        self.shared.peers.lock().expect("lock").clone()
    }

    /// Stops serving (open streams end).
    pub async fn stop(&mut self) {
        if let Some((stop, task, accept)) = self.running.take() {
            let _ = stop.send(());
            self.shared.generation.send_modify(|g| *g += 1);
            accept.abort();
            task.abort();
            let _ = accept.await;
            let _ = task.await;
        }
    }

    /// Serves again on the same address.
    pub async fn serve(&mut self) {
        let identity = control_plane_identity(TrustDomain::default()).expect("identity");
        let store = CredentialStore::new(identity.clone());
        let key = PrivateKey::generate().expect("key");
        let credential =
            self.ca.issue_local(&identity, &[], key, Duration::from_secs(3600)).expect("serving cert");
        store.install(credential).expect("install");
        let mut tls = server_config(store, self.ca.trust_bundle(), ClientAuth::Optional).expect("tls");
        tls.alpn_protocols = vec![ALPN_H2.to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = bind_retrying(self.addr).await;
        let (streams, incoming) = mpsc::channel(16);
        let shared = Arc::clone(&self.shared);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else { continue };
                shared.peers.lock().expect("lock").push(peer.ip());
                let (acceptor, streams) = (acceptor.clone(), streams.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = streams.send(Ok::<_, std::io::Error>(tls)).await;
                    }
                });
            }
        });
        let ca_service = CaService { ca: Arc::clone(&self.ca), tokens: Arc::clone(&self.tokens) };
        let discovery = DiscoveryService { shared: Arc::clone(&self.shared) };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = Server::builder()
                .add_service(IstioCertificateServiceServer::new(ca_service))
                .add_service(MeshDiscoveryServer::new(discovery))
                .serve_with_incoming_shutdown(ReceiverStream::new(incoming), async {
                    let _ = stopped.await;
                })
                .await;
        });
        self.running = Some((stop, task, accept));
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some((_, task, accept)) = self.running.take() {
            accept.abort();
            task.abort();
        }
    }
}

async fn bind_retrying(addr: SocketAddr) -> TcpListener {
    let deadline = tokio::time::Instant::now() + crate::support::DEADLINE;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(error) if tokio::time::Instant::now() < deadline => {
                eprintln!("control plane bind {addr}: {error}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("control plane cannot bind {addr}: {error}"),
        }
    }
}

struct CaService {
    ca: Arc<Ca>,
    tokens: Arc<Tokens>,
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let certs = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|c| c.peer_certs());
        let caller = match certs {
            Some(certs) => self
                .ca
                .trust_bundle()
                .verify(&certs, SystemTime::now())
                .map_err(|e| Status::unauthenticated(e.to_string()))?,
            None => {
                let header = request
                    .metadata()
                    .get(AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| Status::unauthenticated("no token"))?;
                let token = header.strip_prefix("Bearer ").unwrap_or(header);
                self.tokens.redeem(token).ok_or_else(|| Status::unauthenticated("unknown or spent token"))?
            }
        };
        let body = request.into_inner();
        let ttl = u64::try_from(body.validity_duration).ok().filter(|s| *s > 0).map(Duration::from_secs);
        let issued =
            self.ca.sign(&caller, &body.csr, ttl).map_err(|e| Status::permission_denied(e.to_string()))?;
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: issued.to_cert_chain_pems(),
            root_cert: None,
        }))
    }
}

struct DiscoveryService {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl MeshDiscovery for DiscoveryService {
    type SubscribeStream = ReceiverStream<Result<Snapshot, Status>>;

    async fn subscribe(
        &self,
        request: Request<Streaming<SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        if request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|c| c.peer_certs()).is_none()
        {
            return Err(Status::unauthenticated("client certificate required"));
        }
        let mut requests = request.into_inner();
        let hello = match requests.message().await? {
            Some(SubscribeRequest { kind: Some(Kind::Hello(hello)) }) => hello,
            _ => return Err(Status::invalid_argument("Hello first")),
        };
        self.shared.hellos.lock().expect("lock").push((hello.pod.clone(), hello.running_version.clone()));
        let mut configs = self.shared.config_channel(&hello.pod).subscribe();
        let (tx, rx) = mpsc::channel(4);
        let shared = Arc::clone(&self.shared);
        let pod = hello.pod.clone();
        let mut generation = self.shared.generation.subscribe();
        tokio::spawn(async move {
            let mut nonce = 0u64;
            let mut current = configs.borrow_and_update().clone();
            loop {
                if let Some(push) = current.take() {
                    nonce += 1;
                    let snapshot = match push {
                        Push::Full(config) => Snapshot {
                            version: config.version.clone(),
                            nonce: nonce.to_string(),
                            config_json: config.encode().expect("encodes"),
                            ..Snapshot::default()
                        },
                        Push::Raw(snapshot) => Snapshot { nonce: nonce.to_string(), ..snapshot },
                    };
                    if tx.send(Ok(snapshot)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    _ = generation.changed() => return,
                    changed = configs.changed() => {
                        if changed.is_err() { return; }
                        current = configs.borrow_and_update().clone();
                    }
                    message = requests.message() => {
                        let answer = match message {
                            Ok(Some(SubscribeRequest { kind: Some(Kind::Ack(ack)) })) => {
                                Answer::Ack { pod: pod.clone(), version: ack.version }
                            }
                            Ok(Some(SubscribeRequest { kind: Some(Kind::Nack(nack)) })) => {
                                Answer::Nack { pod: pod.clone(), version: nack.version, reason: nack.reason }
                            }
                            Ok(Some(_)) => continue,
                            Ok(None) | Err(_) => return,
                        };
                        shared.answers.lock().expect("lock").push(answer);
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
