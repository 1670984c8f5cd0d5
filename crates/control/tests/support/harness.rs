//! Shared by the CA's integration tests: temporary state directories, a real CA endpoint on
//! 127.0.0.1:0, CA clients, a TLS echo server built from `paymesh-tls` configs, and `openssl`.
//! Each test binary includes this file and uses part of it, hence the `dead_code` allowance.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use paymesh_api::ca::{BootstrapToken, CaClient, CaClientConfig};
use paymesh_control::ca::{Ca, CaConfig, CaServer, CaServerConfig, PodName, RootSource};
use paymesh_tls::{Credential, CredentialStore, Identity, TrustDomain};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Every network step of a test finishes within this.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub const PAYMENT: &str = "spiffe://cluster.local/ns/payments/sa/payment-service";
pub const ACCOUNT: &str = "spiffe://cluster.local/ns/payments/sa/account-service";

pub fn id(s: &str) -> Identity {
    s.parse().expect("valid identity")
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("after 1970").subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("paymesh-ca-{name}-{}-{unique}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running CA endpoint; stops when dropped.
pub struct Harness {
    pub ca: Arc<Ca>,
    pub addr: SocketAddr,
    pub server: CaServerConfig,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    pub dir: TempDir,
}

impl Harness {
    /// A CA with a fresh self-signed root, `tune` applied to its config.
    pub async fn start(tune: impl FnOnce(&mut CaConfig)) -> Self {
        let dir = TempDir::new("state");
        let root = RootSource::SelfSigned { state_dir: dir.path().join("ca") };
        Self::start_with(dir, root, tune).await
    }

    pub async fn start_with(dir: TempDir, root: RootSource, tune: impl FnOnce(&mut CaConfig)) -> Self {
        let mut config = CaConfig::new(TrustDomain::default(), root);
        tune(&mut config);
        let ca = Arc::new(Ca::new(config).expect("CA starts"));
        let server = CaServerConfig::new("127.0.0.1:0".parse().expect("addr"), TrustDomain::default())
            .expect("server config");
        let bound = CaServer::bind(Arc::clone(&ca), server.clone()).await.expect("CA binds");
        let addr = bound.local_addr();
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            bound.serve(async { stop.await.unwrap_or_default() }).await.expect("CA serves");
        });
        Harness { ca, addr, server, shutdown: Some(shutdown), task: Some(task), dir }
    }

    pub fn client_config(&self, requested_ttl: Option<Duration>) -> CaClientConfig {
        CaClientConfig {
            addr: self.addr,
            trust: self.ca.trust_bundle().clone(),
            ca_identity: self.server.identity.clone(),
            requested_ttl,
            timeout: DEADLINE,
            source: None,
        }
    }

    /// A client presenting `credentials`' certificate (or none).
    pub fn client(&self, credentials: Option<Arc<CredentialStore>>) -> CaClient {
        CaClient::new(self.client_config(None), credentials).expect("CA client")
    }

    pub fn token(&self, identity: &str) -> BootstrapToken {
        let identity = id(identity);
        let pod = PodName::new(identity.namespace(), &format!("{}-0", identity.service_account()));
        self.ca.issue_bootstrap_token(&identity, &pod).expect("token issued")
    }

    /// A first certificate for `identity`, through the token path.
    pub async fn bootstrap(&self, identity: &str, ttl: Option<Duration>) -> Credential {
        let token = self.token(identity);
        let client = CaClient::new(self.client_config(ttl), None).expect("CA client");
        client.certify(&id(identity), Some(&token)).await.expect("bootstrap certificate")
    }

    /// Stops serving and waits for the endpoint to finish.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task).await.expect("CA stops in time").expect("CA task");
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A store holding `credential`.
pub fn store(credential: Credential) -> Arc<CredentialStore> {
    let store = CredentialStore::new(credential.identity().clone());
    store.install(credential).expect("own identity installs");
    store
}

/// Runs `openssl` with `args` in `dir`; returns (success, stdout + stderr).
pub fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs (Debian package `openssl`)");
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// What the echo server saw of one connection: the client identity, or why the handshake failed.
pub type Accepted = Result<Option<Identity>, String>;

/// A TLS echo server on 127.0.0.1:0 with `config`; reports each handshake on the channel.
pub async fn echo_server(
    config: rustls::ServerConfig,
) -> (SocketAddr, mpsc::UnboundedReceiver<Accepted>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (report, reports) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, report) = (acceptor.clone(), report.clone());
            tokio::spawn(async move {
                let mut tls = match tokio::time::timeout(DEADLINE, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return drop(report.send(Err(e.to_string()))),
                    Err(_) => return drop(report.send(Err("handshake timed out".to_owned()))),
                };
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|certs| paymesh_tls::leaf_identity(&certs[0]).expect("peer identity"));
                let _ = report.send(Ok(peer));
                let mut buf = [0u8; 256];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() || tls.flush().await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, reports, task)
}

/// Connects to `addr` with `config`.
pub async fn connect(
    config: rustls::ClientConfig,
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    tokio::time::timeout(DEADLINE, TlsConnector::from(Arc::new(config)).connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// Sends `message` and reads back the echo.
pub async fn echo(
    tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
    message: &[u8],
) -> std::io::Result<Vec<u8>> {
    tokio::time::timeout(DEADLINE, async {
        tls.write_all(message).await?;
        tls.flush().await?;
        let mut back = vec![0u8; message.len()];
        tls.read_exact(&mut back).await?;
        Ok(back)
    })
    .await
    .map_err(|_| std::io::Error::other("echo timed out"))?
}

/// The next handshake report of the echo server.
pub async fn next_accepted(reports: &mut mpsc::UnboundedReceiver<Accepted>) -> Accepted {
    tokio::time::timeout(DEADLINE, reports.recv())
        .await
        .expect("a handshake report in time")
        .expect("server running")
}
