//! Offline routing: one request through a proxy's compiled config with the proxy's own index,
//! route tables and matcher — what `paymesh x route` prints, so the simulator cannot disagree
//! with the proxies. Nothing is sent: the index is built with a throwaway trust root (pools never
//! dial), and every route of the chosen virtual host is explained in order until one takes the
//! request, with the first condition of each alternative that refused it.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, Uri};
use paymesh_api::ProxyConfig;
use paymesh_api::model::{Cluster, Endpoint, RoutePolicy};
use paymesh_tls::{Authority as Ca, CredentialStore, Identity, TrustDomain};
use serde::Serialize;

use crate::http::Authority;
use crate::index::{Action, Index, RouteTable};
use crate::route::view;
use crate::store::Store;
use crate::transport::pool::Pools;

/// A request to simulate.
#[derive(Debug)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The absolute URL (`http://account-service:8083/v1/transfers`).
    pub uri: Uri,
    /// Its headers.
    pub headers: HeaderMap,
}

/// What the proxy would do with the request.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    /// The proxy (`namespace/pod`).
    pub proxy: String,
    /// The route table consulted (`"8083"`, `http.8080`).
    pub route_table: Option<String>,
    /// The virtual host the authority selected.
    pub virtual_host: Option<String>,
    /// The routes tried, in order, up to the one that took the request.
    pub routes: Vec<Considered>,
    /// What the route does, when one took the request.
    pub outcome: Outcome,
}

/// One route tried.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Considered {
    /// The route's name.
    pub name: String,
    /// The VirtualService it came from (`namespace/name`); none for a service's default route.
    pub virtual_service: Option<String>,
    /// Per match alternative, the condition that refused the request; `None`: it took it.
    pub refused: Option<Vec<&'static str>>,
}

/// The route's decision.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Outcome {
    /// Forwarded to one of these clusters, by weight, under the route's policy.
    Forward {
        /// The route's timeout, retries and fault.
        policy: RoutePolicy,
        /// The destinations.
        destinations: Vec<Destination>,
    },
    /// Answered by the proxy itself.
    DirectResponse {
        /// The status.
        status: u16,
    },
    /// No route: the proxy answers 404 with flag `NR`.
    NoRoute {
        /// Why.
        reason: String,
    },
}

/// One weighted destination.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// Its share of the traffic (of the route's total).
    pub weight: u32,
    /// The cluster as compiled: service, port, subset, protocol, TLS, load balancer, connection
    /// pool, outlier detection.
    pub cluster: Arc<Cluster>,
    /// Its endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// The config does not index (the proxy would NACK it).
    #[error("the proxy would reject this config: {0}")]
    Index(#[from] crate::index::IndexError),
    /// The throwaway trust root could not be made.
    #[error("cannot make a trust root for the simulation: {0}")]
    Trust(String),
    /// The URL has no host.
    #[error("the URL {0} has no host")]
    NoHost(Uri),
}

/// Routes `request` through `config` as its proxy would.
pub fn route(config: ProxyConfig, request: &Request) -> Result<Trace, SimulateError> {
    let proxy = format!("{}/{}", config.node.namespace, config.node.pod);
    let (pod, ip) = (config.node.pod.clone(), config.node.ip);
    let mut store = throwaway_store(&config)?;
    let index = Index::build(config, &pod, ip, &mut store)?;
    let authority = request
        .uri
        .authority()
        .and_then(|a| Authority::parse(a.as_str(), default_port(&request.uri)))
        .ok_or_else(|| SimulateError::NoHost(request.uri.clone()))?;
    let table = table_for(&index, &authority);
    let mut trace =
        Trace { proxy, route_table: None, virtual_host: None, routes: Vec::new(), outcome: no_route("") };
    let Some(table) = table else {
        trace.outcome = no_route(&format!("no route table for port {}", authority.port()));
        return Ok(trace);
    };
    trace.route_table = Some(table.name().to_owned());
    let Some(vhost) = table.virtual_host(&authority) else {
        trace.outcome = no_route(&format!("no virtual host for \"{}\"", authority.text()));
        return Ok(trace);
    };
    trace.virtual_host = Some(vhost.name.clone());
    let req = http::Request::builder()
        .method(request.method.clone())
        .uri(request.uri.clone())
        .body(())
        .map(|mut req| {
            *req.headers_mut() = request.headers.clone();
            req
        })
        .map_err(|_| SimulateError::NoHost(request.uri.clone()))?;
    let view = view(&req, &authority);
    for route in &vhost.routes {
        let refused = route.matcher.explain(&view);
        let took = refused.is_none();
        trace.routes.push(Considered {
            name: route.name.clone(),
            virtual_service: route.virtual_service.clone(),
            refused,
        });
        if !took {
            continue;
        }
        trace.outcome = match &route.action {
            Action::Forward(clusters) => Outcome::Forward {
                policy: route.policy.clone(),
                destinations: clusters
                    .entries()
                    .map(|(cluster, weight)| Destination {
                        weight,
                        cluster: Arc::clone(&cluster.config),
                        endpoints: (0..).map_while(|i| cluster.endpoint_meta(i).cloned()).collect(),
                    })
                    .collect(),
            },
            Action::Direct { status, .. } => Outcome::DirectResponse { status: status.as_u16() },
            Action::Redirect(redirect) => Outcome::DirectResponse { status: redirect.status },
        };
        return Ok(trace);
    }
    trace.outcome = no_route(&format!("no route of {} matched", vhost.name));
    Ok(trace)
}

fn no_route(reason: &str) -> Outcome {
    Outcome::NoRoute { reason: reason.to_owned() }
}

fn default_port(uri: &Uri) -> u16 {
    if uri.scheme_str() == Some("https") { 443 } else { 80 }
}

/// The route table a request for `authority` meets: a sidecar's outbound table for its port, or
/// the table of the gateway server that accepts its host (plaintext listeners first).
fn table_for<'a>(index: &'a Index, authority: &Authority) -> Option<&'a Arc<RouteTable>> {
    if let Some(table) = index.port_routes(authority.port()) {
        return Some(table);
    }
    let mut listeners: Vec<_> = index.gateways().map(|(_, listener)| listener).collect();
    listeners.sort_by_key(|listener| listener.tls().is_some());
    listeners
        .into_iter()
        .find_map(|listener| listener.server_for(authority.host()).map(|server| &server.routes))
}

/// A store whose pools never dial: a fresh root, and no certificate of the proxy's own.
fn throwaway_store(config: &ProxyConfig) -> Result<Store, SimulateError> {
    let trust_error = |e: &dyn std::fmt::Display| SimulateError::Trust(e.to_string());
    let domain: TrustDomain = config.mesh.trust_domain.parse().map_err(|e| trust_error(&e))?;
    let (ca, _) = Ca::generate_root(&domain, Duration::from_secs(3600)).map_err(|e| trust_error(&e))?;
    let identity: Identity = config.node.identity.parse().map_err(|e| trust_error(&e))?;
    Ok(Store::new(Pools::new(config.node.ip, CredentialStore::new(identity), ca.trust().clone())))
}
