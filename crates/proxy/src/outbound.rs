//! The outbound listener (`POD_IP:15001`): the app's HTTP proxy.
//!
//! A connection is served as HTTP/1.1 or h2c (prior knowledge). Each request: authority
//! (absolute-form URI, `:authority`, else `Host`) → the route table named after the port →
//! [`Forward::routed`] (route, then the forward stack). `CONNECT host:port` opens a TCP tunnel
//! to a TCP route or any HTTP service port. Errors become responses in one place
//! ([`ProxyError::into_response`]).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::{Method, Request, Response};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::debug;

use crate::context::{Downstream, Listener, Peer, RequestContext};
use crate::drain::{Acceptor, Shutdown, drain};
use crate::error::{ProxyError, answer};
use crate::forward::Forward;
use crate::http::{Authority, Body, add_forwarding_headers};
use crate::index::{ClusterEntry, Index};
use crate::route::cluster_of;
use crate::serve::serve_connection;
use crate::tunnel::splice;

/// The port an authority without one means.
const DEFAULT_PORT: u16 = 80;

/// The outbound listener's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long in-flight requests may finish after shutdown starts.
    pub drain_timeout: Duration,
}

/// The outbound listener.
pub struct Outbound {
    config: Config,
    index: Arc<ArcSwapOption<Index>>,
    forward: Arc<Forward>,
}

impl Outbound {
    /// An outbound listener reading the current `index`, forwarding through `forward`.
    pub fn new(config: Config, index: Arc<ArcSwapOption<Index>>, forward: Arc<Forward>) -> Arc<Self> {
        Arc::new(Outbound { config, index, forward })
    }

    /// Accepts on `listener` until `shutdown`, then drains.
    pub async fn run(self: Arc<Self>, listener: TcpListener, shutdown: Shutdown) {
        let graceful = GracefulShutdown::new();
        let mut acceptor = Acceptor::new("outbound", listener, shutdown);
        while let Some((tcp, remote)) = acceptor.next().await {
            let _ = tcp.set_nodelay(true);
            let Ok(local) = tcp.local_addr() else { continue };
            let downstream =
                Arc::new(Downstream { listener: Listener::Outbound, remote, local, peer: Peer::Plaintext });
            let this = Arc::clone(&self);
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                debug!(%remote, "outbound connection");
                serve_connection(
                    downstream,
                    tcp,
                    move |req, ctx| Arc::clone(&this).handle(req, ctx),
                    watcher,
                )
                .await;
            });
        }
        drop(acceptor);
        drain("outbound", graceful, self.config.drain_timeout).await;
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Body>,
        mut ctx: RequestContext,
    ) -> (Response<Body>, RequestContext) {
        let result = self.proxy(req, &mut ctx).await;
        answer(result, ctx)
    }

    async fn proxy(
        &self,
        mut req: Request<Body>,
        ctx: &mut RequestContext,
    ) -> Result<Response<Body>, ProxyError> {
        let index = self.index.load_full().ok_or(ProxyError::NoConfig)?;
        let authority = Authority::of(&req, DEFAULT_PORT)
            .ok_or_else(|| ProxyError::BadRequest("request has no valid authority or Host".to_owned()))?;
        if req.method() == Method::CONNECT {
            let cluster = tunnel_cluster(&index, &authority)?;
            let upstream = self.forward.tunnel(cluster, req.headers(), ctx).await?;
            return Ok(splice(req, upstream, cluster.name.clone()));
        }
        let table = index
            .port_routes(authority.port())
            .ok_or_else(|| ProxyError::NoRoute { authority: authority.text().to_owned() })?;
        add_forwarding_headers(req.headers_mut(), "http");
        self.forward.routed(table, &authority, req, ctx).await
    }
}

/// The cluster a CONNECT goes to: the TCP route for `host:port`, else the HTTP route of that
/// service port.
fn tunnel_cluster<'a>(index: &'a Index, authority: &Authority) -> Result<&'a Arc<ClusterEntry>, ProxyError> {
    index
        .tcp_route(authority)
        .map(|clusters| clusters.pick())
        .or_else(|| index.port_routes(authority.port()).and_then(|table| cluster_of(table, authority)))
        .ok_or_else(|| ProxyError::NoRoute { authority: authority.text().to_owned() })
}
