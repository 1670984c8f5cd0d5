//! The inbound listener (`POD_IP:15006`): traffic from other proxies to this pod's app.
//!
//! Phases per connection: peek the first byte (a TLS record, `0x16`, or plaintext) → mutual TLS
//! handshake requiring a mesh client certificate, or plaintext only when some port is not
//! STRICT → HTTP (h2 from proxies, HTTP/1.1 or h2c in plaintext). Per request, one stack of
//! stages:
//!
//! ```text
//! chain (by target port or authority) ─▶ peer authentication (peer_authn.rs) ─▶ app
//!                                                         `x-forwarded-client-cert`, then
//!                                                         POD_IP:target_port (HTTP/1.1 or h2c),
//!                                                         resending what a pooled connection
//!                                                         gave back unsent
//! ```
//!
//! Request authentication, authorization and rate limits slot in between peer authentication
//! and the app. `CONNECT POD_IP:port` opens a TCP stream to the app port of a chain after the
//! same peer authentication. A bad handshake closes only its own connection.

mod peer_authn;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::uri::Authority as UriAuthority;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use paymesh_tls::{Identity, leaf_identity};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::context::{Downstream, Listener, Peer, RequestContext, Upstream};
use crate::drain::{Acceptor, Shutdown, drain};
use crate::error::{ProxyError, answer};
use crate::flags::ResponseFlag;
use crate::forward::Forward;
use crate::http::{Authority, Body, add_forwarding_headers};
use crate::index::{ChainEntry, Index};
use crate::retry::UNSENT_RESENDS;
use crate::serve::serve_connection;
use crate::transport::pool::{CONNECT_TIMEOUT, connect_tcp};
use crate::transport::{Failed, Plain, Sent, TARGET_PORT, UpstreamError, send_plain};
use crate::tunnel::splice;

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

/// The inbound listener.
pub struct Inbound {
    config: Config,
    index: Arc<ArcSwapOption<Index>>,
    forward: Arc<Forward>,
    tls: TlsAcceptor,
}

impl Inbound {
    /// An inbound listener terminating mutual TLS with `tls`.
    pub fn new(
        config: Config,
        index: Arc<ArcSwapOption<Index>>,
        forward: Arc<Forward>,
        tls: TlsAcceptor,
    ) -> Arc<Self> {
        Arc::new(Inbound { config, index, forward, tls })
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
        let (Ok(remote), Ok(local)) = (tcp.peer_addr(), tcp.local_addr()) else { return };
        let mut first = [0u8; 1];
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
            Ok(Ok(1)) => {}
            _ => return,
        }
        if first[0] == TLS_HANDSHAKE_RECORD {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.tls.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => return warn!(%remote, %error, "inbound TLS handshake refused"),
                Err(_) => return warn!(%remote, "inbound TLS handshake timed out"),
            };
            let identity =
                tls.get_ref().1.peer_certificates().and_then(|chain| chain.first()).map(leaf_identity);
            let identity = match identity {
                Some(Ok(identity)) => identity,
                _ => return warn!(%remote, "inbound TLS peer has no mesh identity"),
            };
            debug!(%remote, %identity, "inbound mutual TLS connection");
            let Ok(xfcc) = HeaderValue::from_str(&format!("By={};URI={identity}", self.config.identity))
            else {
                return warn!(%remote, %identity, "inbound TLS peer identity is not a header value");
            };
            let downstream = Arc::new(Downstream {
                listener: Listener::Inbound,
                remote,
                local,
                peer: Peer::Mtls(identity),
            });
            let handler = move |req, ctx| Arc::clone(&self).handle(req, ctx, Some(xfcc.clone()));
            serve_connection(downstream, tls, handler, watcher).await;
        } else {
            let accepts = self.index.load().as_ref().is_some_and(|index| index.inbound().accepts_plaintext());
            if !accepts {
                return debug!(%remote, "plaintext refused: every inbound port is STRICT");
            }
            let downstream =
                Arc::new(Downstream { listener: Listener::Inbound, remote, local, peer: Peer::Plaintext });
            let handler = move |req, ctx| Arc::clone(&self).handle(req, ctx, None);
            serve_connection(downstream, tcp, handler, watcher).await;
        }
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Body>,
        mut ctx: RequestContext,
        xfcc: Option<HeaderValue>,
    ) -> (Response<Body>, RequestContext) {
        let result = self.proxy(req, &mut ctx, xfcc).await;
        answer(result, ctx)
    }

    async fn proxy(
        &self,
        mut req: Request<Body>,
        ctx: &mut RequestContext,
        xfcc: Option<HeaderValue>,
    ) -> Result<Response<Body>, ProxyError> {
        let index = self.index.load_full().ok_or(ProxyError::NoConfig)?;
        let authority = Authority::of(&req, 0);
        if req.method() == Method::CONNECT {
            let authority =
                authority.ok_or_else(|| ProxyError::BadRequest("CONNECT without authority".into()))?;
            let chain = self.connect_chain(&index, &authority)?;
            ctx.upstream = Some(Upstream::App(Arc::clone(chain)));
            peer_authn::check(chain, &ctx.downstream.peer)?;
            let app = connect_tcp(self.forward.source(), chain.app, CONNECT_TIMEOUT).await?;
            ctx.answered(Instant::now());
            return Ok(splice(req, app, chain.chain.cluster.clone()));
        }
        let target = req.headers_mut().remove(TARGET_PORT).and_then(|v| v.to_str().ok()?.parse::<u16>().ok());
        let no_route = || ProxyError::NoRoute {
            authority: authority.as_ref().map_or_else(String::new, |a| a.text().to_owned()),
        };
        let chain = match (&ctx.downstream.peer, target) {
            (Peer::Mtls(_), Some(target)) => index.inbound().for_target(target).ok_or_else(no_route)?,
            _ => {
                let port = authority.as_ref().map(Authority::port).filter(|port| *port != 0);
                index.inbound().for_request(port).ok_or_else(no_route)?
            }
        };
        ctx.upstream = Some(Upstream::App(Arc::clone(chain)));
        peer_authn::check(chain, &ctx.downstream.peer)?;
        let headers = req.headers_mut();
        headers.remove(XFCC);
        if let Some(xfcc) = xfcc {
            headers.insert(XFCC, xfcc);
        }
        add_forwarding_headers(headers, "http");
        let authority = authority.as_ref().map_or(&chain.app_authority, Authority::uri);
        to_app(&chain.transport, authority, req, ctx).await
    }

    fn connect_chain<'a>(
        &self,
        index: &'a Index,
        authority: &Authority,
    ) -> Result<&'a Arc<ChainEntry>, ProxyError> {
        let no_route = || ProxyError::NoRoute { authority: authority.text().to_owned() };
        let ip: IpAddr = authority.host().trim_matches(['[', ']']).parse().map_err(|_| no_route())?;
        if ip != self.config.pod_ip {
            return Err(no_route());
        }
        index.inbound().for_target(authority.port()).ok_or_else(no_route)
    }
}

/// The last stage: the request to the app. A request a pooled keep-alive connection gave back
/// unsent (the app closed it as the request went out) is sent again on another, up to the
/// default retries; anything else the app may have seen is not.
async fn to_app(
    transport: &Plain,
    authority: &UriAuthority,
    mut req: Request<Body>,
    ctx: &mut RequestContext,
) -> Result<Response<Body>, ProxyError> {
    loop {
        ctx.attempts += 1;
        match send_plain(transport, authority, req).await {
            Ok(Sent { response, connected }) => {
                ctx.answered(connected);
                return Ok(response);
            }
            Err(Failed { error: UpstreamError::Unsent { .. }, request: Some(unsent) })
                if ctx.attempts <= UNSENT_RESENDS =>
            {
                req = unsent;
            }
            Err(Failed { error: error @ UpstreamError::Unsent { .. }, request: Some(_) }) => {
                ctx.flag(ResponseFlag::UpstreamRetryLimitExceeded);
                return Err(error.into());
            }
            Err(failed) => return Err(failed.error.into()),
        }
    }
}
