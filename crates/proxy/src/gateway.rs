//! Gateway mode: one listener per compiled `Gateway` listener address, bound and unbound as
//! snapshots change. A connection is served as HTTP/1.1 or HTTP/2, after TLS termination when
//! the server has `tls` (certificate and key files read when the listener is bound). A request
//! picks the server whose hosts match its host, then goes through the same route and forward
//! stack as the outbound listener's ([`Forward::routed`]), with the gateway's own identity
//! towards the mesh.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::{Request, Response};
use hyper_util::server::graceful::GracefulShutdown;
use paymesh_api::model::ServerTls;
use paymesh_tls::{ALPN_H2, ALPN_HTTP11, certs_from_pem, crypto_provider};
use rustls::ServerConfig;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::context::{Downstream, Listener, Peer, RequestContext};
use crate::drain::{self, Acceptor, Shutdown, Trigger};
use crate::error::{ProxyError, answer};
use crate::forward::Forward;
use crate::http::{Authority, Body, add_forwarding_headers};
use crate::inbound::HANDSHAKE_TIMEOUT;
use crate::index::Index;
use crate::serve::serve_connection;

/// Why a gateway listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The address could not be bound.
    #[error("gateway listener {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS files could not be read or used.
    #[error("gateway TLS credential `{credential}`: {reason}")]
    Tls {
        /// The credential name.
        credential: String,
        /// What went wrong.
        reason: String,
    },
}

/// The gateway's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long in-flight requests may finish after a listener stops.
    pub drain_timeout: Duration,
}

/// The gateway listeners of one proxy.
pub struct Gateway {
    config: Config,
    index: Arc<ArcSwapOption<Index>>,
    forward: Arc<Forward>,
}

struct Running {
    trigger: Trigger,
    task: JoinHandle<()>,
}

impl Gateway {
    /// A gateway reading the current `index`.
    pub fn new(config: Config, index: Arc<ArcSwapOption<Index>>, forward: Arc<Forward>) -> Arc<Self> {
        Arc::new(Gateway { config, index, forward })
    }

    /// Binds and unbinds listeners as `changed` ticks, until `shutdown`; then drains them all.
    pub async fn run(self: Arc<Self>, mut changed: watch::Receiver<u64>, shutdown: Shutdown) {
        let mut running: HashMap<SocketAddr, Running> = HashMap::new();
        let stop = shutdown.signaled();
        tokio::pin!(stop);
        loop {
            if let Some(index) = self.index.load_full() {
                self.reconcile(&index, &mut running).await;
            }
            tokio::select! {
                () = &mut stop => break,
                changed = changed.changed() => if changed.is_err() { break },
            }
        }
        for listener in running.values() {
            listener.trigger.trigger();
        }
        for (_, listener) in running {
            let _ = listener.task.await;
        }
    }

    async fn reconcile(self: &Arc<Self>, index: &Index, running: &mut HashMap<SocketAddr, Running>) {
        let stale: Vec<SocketAddr> =
            running.keys().filter(|addr| index.gateway(addr).is_none()).copied().collect();
        for addr in stale {
            if let Some(listener) = running.remove(&addr) {
                info!(%addr, "gateway listener removed");
                listener.trigger.trigger();
                let _ = listener.task.await;
            }
        }
        for (addr, listener) in index.gateways() {
            if running.contains_key(addr) {
                continue;
            }
            match self.bind(*addr, listener.tls()).await {
                Ok((tcp, tls)) => {
                    info!(%addr, listener = %listener.name, tls = tls.is_some(), "gateway listener bound");
                    let (trigger, shutdown) = drain::channel();
                    let task = tokio::spawn(Arc::clone(self).serve(*addr, tcp, tls, shutdown));
                    running.insert(*addr, Running { trigger, task });
                }
                Err(error) => warn!(%error, "gateway listener not started"),
            }
        }
    }

    async fn bind(
        &self,
        addr: SocketAddr,
        tls: Option<&ServerTls>,
    ) -> Result<(TcpListener, Option<TlsAcceptor>), GatewayError> {
        let acceptor = tls.map(load_tls).transpose()?;
        let listener = TcpListener::bind(addr).await.map_err(|source| GatewayError::Bind { addr, source })?;
        Ok((listener, acceptor))
    }

    async fn serve(
        self: Arc<Self>,
        addr: SocketAddr,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        shutdown: Shutdown,
    ) {
        let graceful = GracefulShutdown::new();
        let proto = if tls.is_some() { "https" } else { "http" };
        let mut acceptor = Acceptor::new("gateway", listener, shutdown);
        while let Some((tcp, remote)) = acceptor.next().await {
            let (this, watcher, tls) = (Arc::clone(&self), graceful.watcher(), tls.clone());
            tokio::spawn(async move {
                let handler = move |req, ctx| Arc::clone(&this).handle(addr, proto, req, ctx);
                let local = tcp.local_addr().unwrap_or(addr);
                let downstream =
                    |peer| Arc::new(Downstream { listener: Listener::Gateway, remote, local, peer });
                match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                serve_connection(downstream(Peer::Tls), stream, handler, watcher).await
                            }
                            Ok(Err(error)) => warn!(%addr, %error, "gateway TLS handshake failed"),
                            Err(_) => warn!(%addr, "gateway TLS handshake timed out"),
                        }
                    }
                    None => serve_connection(downstream(Peer::Plaintext), tcp, handler, watcher).await,
                }
            });
        }
        drop(acceptor);
        drain::drain("gateway", graceful, self.config.drain_timeout).await;
    }

    async fn handle(
        self: Arc<Self>,
        addr: SocketAddr,
        proto: &'static str,
        req: Request<Body>,
        mut ctx: RequestContext,
    ) -> (Response<Body>, RequestContext) {
        let result = self.proxy(addr, proto, req, &mut ctx).await;
        answer(result, ctx)
    }

    async fn proxy(
        &self,
        addr: SocketAddr,
        proto: &'static str,
        mut req: Request<Body>,
        ctx: &mut RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        let index = self.index.load_full().ok_or(ProxyError::NoConfig)?;
        let authority = Authority::of(&req, addr.port())
            .ok_or_else(|| ProxyError::BadRequest("request has no valid authority or Host".to_owned()))?;
        let no_route = || ProxyError::NoRoute { authority: authority.text().to_owned() };
        let listener = index.gateway(&addr).ok_or_else(no_route)?;
        let server = listener.server_for(authority.host()).ok_or_else(no_route)?;
        add_forwarding_headers(req.headers_mut(), proto);
        self.forward.routed(&server.routes, &authority, req, ctx).await
    }
}

fn load_tls(tls: &ServerTls) -> Result<TlsAcceptor, GatewayError> {
    let fail = |reason: String| GatewayError::Tls { credential: tls.credential_name.clone(), reason };
    let chain =
        std::fs::read_to_string(&tls.cert_file).map_err(|e| fail(format!("{}: {e}", tls.cert_file)))?;
    let chain = certs_from_pem(&chain).map_err(|e| fail(format!("{}: {e}", tls.cert_file)))?;
    let key =
        PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|e| fail(format!("{}: {e}", tls.key_file)))?;
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| fail(e.to_string()))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
