//! The request context: one record per request, in every mode (outbound, inbound, gateway),
//! made when the request arrives and filled by each stage as it decides: the downstream
//! connection (listener, addresses, typed peer identity), the route, the cluster and the endpoint
//! chosen, the response flags, the details of a proxy-made answer, the attempts and the timings
//! (arrival, upstream connection ready, response head; the end is when the response body is
//! dropped, where the readers run).
//!
//! Stages hold `&mut RequestContext`; the listener hands it back with the response, and
//! whatever reads it when the response body ends (today the access log, next metrics and trace
//! spans) takes it from there. Handles into the index are `Arc`s, so the record outlives a config
//! push that happens mid-request. Building it costs one clock read and one reference count:
//! byte counting and text formatting happen only in the readers that need them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use paymesh_api::model::Endpoint;
use paymesh_tls::Identity;

use crate::breaker::Admission;
use crate::flags::{ResponseFlag, ResponseFlags};
use crate::index::{ChainEntry, ClusterEntry, EndpointEntry, RouteEntry, VirtualHostEntry};
use crate::outlier::ActiveRequest;

/// The listener a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The app's HTTP proxy (sidecar, 15001).
    Outbound,
    /// Traffic from other proxies (sidecar, 15006).
    Inbound,
    /// An ingress gateway server port.
    Gateway,
}

impl Listener {
    /// The name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Outbound => "outbound",
            Listener::Inbound => "inbound",
            Listener::Gateway => "gateway",
        }
    }
}

/// Who is on the other end of a downstream connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Plaintext: the local app, a sidecar-less client, or a gateway's HTTP client.
    Plaintext,
    /// TLS without a client certificate (a gateway's HTTPS client).
    Tls,
    /// Mutual TLS: the client proved this mesh identity.
    Mtls(Identity),
}

impl Peer {
    /// The identity the peer proved, if any.
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Peer::Mtls(identity) => Some(identity),
            Peer::Plaintext | Peer::Tls => None,
        }
    }
}

/// One downstream connection, shared by its requests.
#[derive(Debug)]
pub struct Downstream {
    /// The listener that accepted it.
    pub listener: Listener,
    /// The client's address.
    pub remote: SocketAddr,
    /// The address it connected to.
    pub local: SocketAddr,
    /// Who the client is.
    pub peer: Peer,
}

/// Where the request went (or was going when it failed).
pub enum Upstream {
    /// A cluster, and the endpoint of the last attempt once one was chosen.
    Cluster {
        /// The cluster.
        cluster: Arc<ClusterEntry>,
        /// The index of the endpoint in `cluster`.
        endpoint: Option<usize>,
    },
    /// The local app behind an inbound chain.
    App(Arc<ChainEntry>),
}

/// The record of one request.
pub struct RequestContext {
    /// The connection it arrived on.
    pub downstream: Arc<Downstream>,
    /// When it arrived.
    pub started: Instant,
    /// The virtual host and the index of the route that took it.
    route: Option<(Arc<VirtualHostEntry>, usize)>,
    /// Where it went.
    pub upstream: Option<Upstream>,
    /// Why it did not get an ordinary answer from its upstream.
    pub flags: ResponseFlags,
    /// Envoy's `%RESPONSE_CODE_DETAILS%`: `via_upstream`, or why the proxy answered itself.
    pub details: &'static str,
    /// Why the last upstream attempt failed (`%UPSTREAM_TRANSPORT_FAILURE_REASON%`).
    pub failure: Option<Box<str>>,
    /// Attempts made upstream (1 + retries).
    pub attempts: u32,
    /// When the last attempt had a connection ready to take the request.
    pub connected: Option<Instant>,
    /// When the response head arrived from upstream.
    pub first_byte: Option<Instant>,
    /// What the request holds upstream until its response ends.
    pub held: Held,
    /// Its `x-request-id`, kept only at the gateway (its outside clients' error answers carry it).
    pub request_id: Option<http::HeaderValue>,
}

/// What a request holds upstream until its response body ends (or is dropped): the circuit
/// breaker's admission and its place among the endpoint's requests in flight.
#[derive(Debug, Default)]
pub struct Held {
    /// The cluster's circuit breaker slots.
    pub admission: Option<Admission>,
    /// The count of the endpoint of the last attempt.
    pub active: Option<ActiveRequest>,
}

impl Held {
    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.admission.is_none() && self.active.is_none()
    }
}

impl crate::http::Watch for Held {}

impl RequestContext {
    /// The record of a request arriving now on `downstream`.
    pub fn new(downstream: Arc<Downstream>) -> Self {
        RequestContext {
            downstream,
            started: Instant::now(),
            route: None,
            upstream: None,
            flags: ResponseFlags::default(),
            details: "-",
            failure: None,
            attempts: 0,
            connected: None,
            first_byte: None,
            held: Held::default(),
            request_id: None,
        }
    }

    /// When it arrived, by the wall clock (read once, by the log that needs it).
    pub fn start_time(&self) -> SystemTime {
        SystemTime::now() - self.started.elapsed()
    }

    /// Records the route that took the request.
    pub fn set_route(&mut self, vhost: &Arc<VirtualHostEntry>, route: usize) {
        self.route = Some((Arc::clone(vhost), route));
    }

    /// The route that took the request.
    pub fn route(&self) -> Option<&RouteEntry> {
        self.route.as_ref().and_then(|(vhost, i)| vhost.routes.get(*i))
    }

    /// Records the cluster the request goes to.
    pub fn set_cluster(&mut self, cluster: &Arc<ClusterEntry>) {
        self.upstream = Some(Upstream::Cluster { cluster: Arc::clone(cluster), endpoint: None });
    }

    /// Records the endpoint (by index in the recorded cluster) of the current attempt.
    pub fn set_endpoint(&mut self, index: usize) {
        if let Some(Upstream::Cluster { endpoint, .. }) = &mut self.upstream {
            *endpoint = Some(index);
        }
    }

    /// The index (in the recorded cluster) of the endpoint of the last attempt.
    pub fn endpoint_index(&self) -> Option<usize> {
        match &self.upstream {
            Some(Upstream::Cluster { endpoint, .. }) => *endpoint,
            _ => None,
        }
    }

    /// The endpoint of the last attempt.
    pub fn endpoint(&self) -> Option<&EndpointEntry> {
        match &self.upstream {
            Some(Upstream::Cluster { cluster, endpoint: Some(i) }) => cluster.endpoint(*i),
            _ => None,
        }
    }

    /// What the control plane said of the endpoint of the last attempt (pod, identity, labels).
    pub fn endpoint_meta(&self) -> Option<&Endpoint> {
        match &self.upstream {
            Some(Upstream::Cluster { cluster, endpoint: Some(i) }) => cluster.endpoint_meta(*i),
            _ => None,
        }
    }

    /// The upstream cluster's name (Istio's `inbound|PORT||` for the app).
    pub fn cluster_name(&self) -> Option<&str> {
        match &self.upstream {
            Some(Upstream::Cluster { cluster, .. }) => Some(&cluster.name),
            Some(Upstream::App(chain)) => Some(&chain.chain.cluster),
            None => None,
        }
    }

    /// The address of the upstream host of the last attempt.
    pub fn upstream_host(&self) -> Option<SocketAddr> {
        match &self.upstream {
            Some(Upstream::App(chain)) => Some(chain.app),
            _ => self.endpoint().map(|endpoint| endpoint.address),
        }
    }

    /// Records an upstream answer: its connection was ready at `connected`, its head is here.
    pub fn answered(&mut self, connected: Instant) {
        self.connected = Some(connected);
        self.first_byte = Some(Instant::now());
        self.details = "via_upstream";
    }

    /// Adds a response flag.
    pub fn flag(&mut self, flag: ResponseFlag) {
        self.flags.insert(flag);
    }
}
