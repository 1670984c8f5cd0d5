//! The inbound listener (`POD_IP:15006`): traffic from other proxies to this pod's app.
//!
//! Phases per connection: peek the first byte (a TLS record, `0x16`, or plaintext) → mutual TLS
//! handshake requiring a mesh client certificate, or plaintext only when some port is not
//! STRICT → HTTP (h2 from proxies, HTTP/1.1 or h2c in plaintext). Per request: the chain by the
//! authority's port → peer authentication of that chain → `x-forwarded-client-cert` → the app at
//! `POD_IP:target_port` (HTTP/1.1, or h2c for HTTP/2 and gRPC). `CONNECT POD_IP:port` opens a
//! TCP stream to the app port of a chain. A bad handshake closes only its own connection.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use paymesh_api::model::MtlsMode;
use paymesh_tls::{Identity, leaf_identity};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::access;
use crate::drain::{Acceptor, Shutdown, drain};
use crate::error::ProxyError;
use crate::http::{Authority, Body, add_forwarding_headers, serve_connection};
use crate::index::{ChainEntry, Index};
use crate::outbound::copy;
use crate::upstream::pool::connect_tcp;
use crate::upstream::{TARGET_PORT, Upstream, send_plain};

/// Istio's header naming the calling workload to the app.
pub const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// How long a client may take to send its first byte and finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The inbound listener's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The pod IP (the app listens there; CONNECT must name it).
    pub pod_ip: IpAddr,
    /// This proxy's identity (`By=` in XFCC).
    pub identity: Identity,
    /// How long in-flight requests may finish after shutdown starts.
    pub drain_timeout: Duration,
}

/// How a connection reached the proxy.
#[derive(Debug, Clone)]
enum Peer {
    /// Mutual TLS; the client proved an identity, which `xfcc` (its
    /// `x-forwarded-client-cert`, made once per connection) names to the app.
    Mtls { xfcc: HeaderValue },
    /// Plaintext.
    Plaintext,
}

/// The inbound listener.
pub struct Inbound {
    config: Config,
    index: Arc<ArcSwapOption<Index>>,
    upstream: Arc<Upstream>,
    tls: TlsAcceptor,
}

impl Inbound {
    /// An inbound listener terminating mutual TLS with `tls`.
    pub fn new(
        config: Config,
        index: Arc<ArcSwapOption<Index>>,
        upstream: Arc<Upstream>,
        tls: TlsAcceptor,
    ) -> Arc<Self> {
        Arc::new(Inbound { config, index, upstream, tls })
    }

    /// Accepts on `listener` until `shutdown`, then drains.
    pub async fn run(self: Arc<Self>, listener: TcpListener, shutdown: Shutdown) {
        let graceful = GracefulShutdown::new();
        let mut acceptor = Acceptor::new("inbound", listener, shutdown);
        while let Some((tcp, _)) = acceptor.next().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(Arc::clone(&self).connection(tcp, graceful.watcher()));
        }
        drop(acceptor);
        drain("inbound", graceful, self.config.drain_timeout).await;
    }

    async fn connection(self: Arc<Self>, tcp: TcpStream, watcher: Watcher) {
        let peer_addr = tcp.peer_addr().ok();
        let mut first = [0u8; 1];
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
            Ok(Ok(1)) => {}
            _ => return,
        }
        if first[0] == TLS_HANDSHAKE_RECORD {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.tls.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => return warn!(peer = ?peer_addr, %error, "inbound TLS handshake refused"),
                Err(_) => return warn!(peer = ?peer_addr, "inbound TLS handshake timed out"),
            };
            let identity =
                tls.get_ref().1.peer_certificates().and_then(|chain| chain.first()).map(leaf_identity);
            let identity = match identity {
                Some(Ok(identity)) => identity,
                _ => return warn!(peer = ?peer_addr, "inbound TLS peer has no mesh identity"),
            };
            debug!(peer = ?peer_addr, %identity, "inbound mutual TLS connection");
            let Ok(xfcc) = HeaderValue::from_str(&format!("By={};URI={identity}", self.config.identity))
            else {
                return warn!(peer = ?peer_addr, %identity, "inbound TLS peer identity is not a header value");
            };
            let peer = Peer::Mtls { xfcc };
            serve_connection("inbound", tls, move |req| Arc::clone(&self).handle(req, peer.clone()), watcher)
                .await;
        } else {
            let accepts = self.index.load().as_ref().is_some_and(|index| index.inbound().accepts_plaintext());
            if !accepts {
                return debug!(peer = ?peer_addr, "plaintext refused: every inbound port is STRICT");
            }
            serve_connection(
                "inbound",
                tcp,
                move |req| Arc::clone(&self).handle(req, Peer::Plaintext),
                watcher,
            )
            .await;
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Body>, peer: Peer) -> Response<Body> {
        self.proxy(req, &peer).await.unwrap_or_else(ProxyError::into_response)
    }

    async fn proxy(&self, req: Request<Body>, peer: &Peer) -> Result<Response<Body>, ProxyError> {
        let index = self.index.load_full().ok_or(ProxyError::NoConfig)?;
        let authority = Authority::of(&req, 0);
        if req.method() == Method::CONNECT {
            let authority =
                authority.ok_or_else(|| ProxyError::BadRequest("CONNECT without authority".into()))?;
            let chain = self.connect_chain(&index, &authority)?;
            authorize(chain, peer)?;
            return self.tunnel_to_app(chain, req).await;
        }
        let mut req = req;
        let target = req.headers_mut().remove(TARGET_PORT).and_then(|v| v.to_str().ok()?.parse::<u16>().ok());
        let no_route = || ProxyError::NoRoute {
            authority: authority.as_ref().map_or_else(String::new, |a| a.text().to_owned()),
        };
        let chain = match (peer, target) {
            (Peer::Mtls { .. }, Some(target)) => index.inbound().for_target(target).ok_or_else(no_route)?,
            _ => {
                let port = authority.as_ref().map(Authority::port).filter(|port| *port != 0);
                index.inbound().for_request(port).ok_or_else(no_route)?
            }
        };
        authorize(chain, peer)?;
        let headers = req.headers_mut();
        headers.remove(XFCC);
        if let Peer::Mtls { xfcc } = peer {
            headers.insert(XFCC, xfcc.clone());
        }
        add_forwarding_headers(headers, "http");
        let authority = authority.as_ref().map_or(&chain.app_authority, Authority::uri);
        let mut response = send_plain(&chain.transport, authority, req).await?;
        access::note_upstream(&mut response, chain.app);
        Ok(response)
    }

    fn connect_chain<'a>(
        &self,
        index: &'a Index,
        authority: &Authority,
    ) -> Result<&'a ChainEntry, ProxyError> {
        let no_route = || ProxyError::NoRoute { authority: authority.text().to_owned() };
        let ip: IpAddr = authority.host().trim_matches(['[', ']']).parse().map_err(|_| no_route())?;
        if ip != self.config.pod_ip {
            return Err(no_route());
        }
        index.inbound().for_target(authority.port()).ok_or_else(no_route)
    }

    async fn tunnel_to_app(
        &self,
        chain: &ChainEntry,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        let on_upgrade = hyper::upgrade::on(&mut req);
        let app = connect_tcp(self.upstream.source(), chain.app).await?;
        let name = chain.chain.cluster.clone();
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => copy(hyper_util::rt::TokioIo::new(upgraded), app, &name).await,
                Err(error) => debug!(%error, "CONNECT peer went away before the tunnel opened"),
            }
        });
        Ok(Response::new(crate::http::empty()))
    }
}

/// Peer authentication: STRICT needs mutual TLS, DISABLE needs plaintext.
fn authorize(chain: &ChainEntry, peer: &Peer) -> Result<(), ProxyError> {
    let required = match (chain.chain.mtls, peer) {
        (MtlsMode::Strict, Peer::Plaintext) => "mutual TLS",
        (MtlsMode::Disable, Peer::Mtls { .. }) => "plaintext",
        _ => return Ok(()),
    };
    Err(ProxyError::PeerAuthentication {
        port: chain.chain.target_port,
        required,
        mode: chain.chain.mtls,
        policy: chain.chain.mtls_policy.clone(),
    })
}
