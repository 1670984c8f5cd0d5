//! The outbound listener (`POD_IP:15001`): the app's HTTP proxy.
//!
//! A connection is served as HTTP/1.1 or h2c (prior knowledge). Each request goes through named
//! phases: authority (absolute-form URI, `:authority`, else `Host`) → route table named after
//! the port → virtual host → first route whose conditions hold (its header edits applied) →
//! cluster → endpoint → [`Upstream`]. `CONNECT host:port` opens a TCP tunnel to a TCP route or
//! any HTTP service port. Errors become responses in one place ([`ProxyError::into_response`]).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::debug;

use crate::drain::{Acceptor, Shutdown, drain};
use crate::error::ProxyError;
use crate::http::{Authority, Body, add_forwarding_headers, empty, serve_connection};
use crate::index::{ClusterEntry, Index};
use crate::upstream::{Tunnel, Upstream};

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
    upstream: Arc<Upstream>,
}

impl Outbound {
    /// An outbound listener reading the current `index`, forwarding through `upstream`.
    pub fn new(config: Config, index: Arc<ArcSwapOption<Index>>, upstream: Arc<Upstream>) -> Arc<Self> {
        Arc::new(Outbound { config, index, upstream })
    }

    /// Accepts on `listener` until `shutdown`, then drains.
    pub async fn run(self: Arc<Self>, listener: TcpListener, shutdown: Shutdown) {
        let graceful = GracefulShutdown::new();
        let mut acceptor = Acceptor::new("outbound", listener, shutdown);
        while let Some((tcp, peer)) = acceptor.next().await {
            let _ = tcp.set_nodelay(true);
            let this = Arc::clone(&self);
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                debug!(%peer, "outbound connection");
                serve_connection("outbound", tcp, move |req| Arc::clone(&this).handle(req), watcher).await;
            });
        }
        drop(acceptor);
        drain("outbound", graceful, self.config.drain_timeout).await;
    }

    async fn handle(self: Arc<Self>, req: Request<Body>) -> Response<Body> {
        self.proxy(req).await.unwrap_or_else(ProxyError::into_response)
    }

    async fn proxy(&self, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let index = self.index.load_full().ok_or(ProxyError::NoConfig)?;
        let authority = Authority::of(&req, DEFAULT_PORT)
            .ok_or_else(|| ProxyError::BadRequest("request has no valid authority or Host".to_owned()))?;
        if req.method() == Method::CONNECT {
            let cluster = tunnel_cluster(&index, &authority)?;
            return open_tunnel(&self.upstream, cluster, req).await;
        }
        let table = index
            .port_routes(authority.port())
            .ok_or_else(|| ProxyError::NoRoute { authority: authority.text().to_owned() })?;
        let mut req = req;
        add_forwarding_headers(req.headers_mut(), "http");
        self.upstream.route(table, &authority, req).await
    }
}

/// The cluster a CONNECT goes to: the TCP route for `host:port`, else the HTTP route of that
/// service port.
fn tunnel_cluster<'a>(index: &'a Index, authority: &Authority) -> Result<&'a Arc<ClusterEntry>, ProxyError> {
    index
        .tcp_route(authority)
        .or_else(|| {
            index.port_routes(authority.port()).and_then(|table| Upstream::cluster_of(table, authority))
        })
        .ok_or_else(|| ProxyError::NoRoute { authority: authority.text().to_owned() })
}

/// Dials the tunnel first (so a failure is a 503 with its flag), answers 200, then copies bytes
/// both ways once hyper hands over the client's connection.
pub async fn open_tunnel(
    upstream: &Upstream,
    cluster: &ClusterEntry,
    mut req: Request<Body>,
) -> Result<Response<Body>, ProxyError> {
    let on_upgrade = hyper::upgrade::on(&mut req);
    let tunnel = upstream.tunnel(cluster).await?;
    let cluster_name = cluster.name.clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => copy(TokioIo::new(upgraded), tunnel, &cluster_name).await,
            Err(error) => debug!(%error, "CONNECT client went away before the tunnel opened"),
        }
    });
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

/// Copies bytes both ways until both sides are done.
pub async fn copy<A, B>(mut a: A, mut b: B, what: &str)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: Tunnel,
{
    match tokio::io::copy_bidirectional(&mut a, &mut b).await {
        Ok((up, down)) => debug!(what, up, down, "tunnel closed"),
        Err(error) => debug!(what, %error, "tunnel ended with an error"),
    }
}
