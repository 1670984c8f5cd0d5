//! The route step: which virtual host and route take a request, and what the route decides.
//! It records both in the request's context, applies the route's request header edits, and
//! returns a [`Decision`]; it sends nothing. Forwarding is the next step's business
//! ([`crate::forward`]), so policies attached to a route (retries, timeouts, faults) are read
//! there from the policy the decision carries.

use std::sync::Arc;

use bytes::Bytes;
use http::uri::Authority as UriAuthority;
use http::{Request, StatusCode};

use crate::context::RequestContext;
use crate::error::ProxyError;
use paymesh_api::model::RoutePolicy;

use crate::http::{Authority, Body, X_FORWARDED_PROTO};
use crate::index::cors::Cors;
use crate::index::rewrite::location;
use crate::index::{Action, ClusterEntry, RequestView, RouteTable};

/// What the route decided, borrowing from the route table.
pub enum Decision<'a> {
    /// Forward to `cluster` (picked by weight) under the route's policy.
    Forward {
        /// The cluster.
        cluster: &'a Arc<ClusterEntry>,
        /// Timeout, retries, faults.
        policy: &'a RoutePolicy,
        /// The rewritten authority, when the route rewrites it.
        authority: Option<&'a UriAuthority>,
        /// Mirror clusters and their shares.
        mirrors: &'a [(Arc<ClusterEntry>, u32)],
        /// The route's CORS policy.
        cors: Option<&'a Cors>,
    },
    /// Answer with a redirect to this location.
    Redirect {
        /// The status.
        status: StatusCode,
        /// The `Location`.
        location: String,
    },
    /// Answer directly.
    Direct {
        /// The status.
        status: StatusCode,
        /// The body.
        body: Bytes,
    },
}

/// Routes `req` with `table`: the virtual host of `authority`, then the first route whose
/// conditions hold; records them in `ctx` and applies the route's request header edits.
pub fn route<'a>(
    table: &'a RouteTable,
    authority: &Authority,
    req: &mut Request<Body>,
    ctx: &mut RequestContext,
) -> Result<Decision<'a>, ProxyError> {
    let vhost = table
        .virtual_host(authority)
        .ok_or_else(|| ProxyError::NoRoute { authority: authority.text().to_owned() })?;
    let view = view(req, authority);
    let (index, route) = vhost.route_for(&view).ok_or_else(|| ProxyError::NoRouteMatched {
        authority: authority.text().to_owned(),
        path: req.uri().path().to_owned(),
    })?;
    let taken = route.matcher.taken(&view);
    let scheme = view.scheme.to_owned();
    ctx.set_route(vhost, index);
    route.headers.request.apply(req.headers_mut());
    Ok(match &route.action {
        Action::Forward(clusters) => {
            let cluster = clusters.pick();
            ctx.set_cluster(cluster);
            let rewritten = route.rewrite.as_ref().and_then(|rewrite| rewrite.apply(req, taken));
            Decision::Forward {
                cluster,
                policy: &route.policy,
                authority: rewritten,
                mirrors: &route.mirrors,
                cors: route.cors.as_ref(),
            }
        }
        Action::Direct { status, body } => Decision::Direct { status: *status, body: body.clone() },
        Action::Redirect(redirect) => Decision::Redirect {
            status: StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::MOVED_PERMANENTLY),
            location: location(redirect, authority, req.uri(), &scheme, taken),
        },
    })
}

/// What route conditions see of `req`, sent to `authority`.
pub fn view<'a, B>(req: &'a Request<B>, authority: &'a Authority) -> RequestView<'a> {
    RequestView {
        method: req.method(),
        path: req.uri().path(),
        query: req.uri().query(),
        scheme: scheme(req),
        authority: authority.text(),
        headers: req.headers(),
    }
}

/// The scheme the client used: the one a TLS-terminating gateway recorded in
/// `x-forwarded-proto`, else the request URI's, else `http`.
fn scheme<B>(req: &Request<B>) -> &str {
    req.headers()
        .get(X_FORWARDED_PROTO)
        .and_then(|value| value.to_str().ok())
        .or_else(|| req.uri().scheme_str())
        .unwrap_or("http")
}

/// The cluster the first route of `authority`'s virtual host forwards to (CONNECT to an HTTP
/// service port), picked by weight.
pub fn cluster_of<'a>(table: &'a RouteTable, authority: &Authority) -> Option<&'a Arc<ClusterEntry>> {
    match &table.virtual_host(authority)?.routes.first()?.action {
        Action::Forward(clusters) => Some(clusters.pick()),
        Action::Direct { .. } | Action::Redirect(_) => None,
    }
}
