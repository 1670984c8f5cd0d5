//! CONNECT tunnels: the upstream side is dialed first (so a failure is an ordinary error
//! response with its flags), then the client gets 200 and bytes are copied both ways once hyper
//! hands over its connection.

use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::http::{Body, empty};

/// Answers the CONNECT `req` with 200 and, once the client's connection is handed over, copies
/// bytes between it and `upstream` (already open) until both sides are done.
pub fn splice<U>(mut req: Request<Body>, upstream: U, what: String) -> Response<Body>
where
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => copy(TokioIo::new(upgraded), upstream, &what).await,
            Err(error) => debug!(%error, what, "CONNECT client went away before the tunnel opened"),
        }
    });
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::OK;
    response
}

/// Copies bytes both ways until both sides are done.
async fn copy<A, B>(mut a: A, mut b: B, what: &str)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::io::copy_bidirectional(&mut a, &mut b).await {
        Ok((up, down)) => debug!(what, up, down, "tunnel closed"),
        Err(error) => debug!(what, %error, "tunnel ended with an error"),
    }
}
