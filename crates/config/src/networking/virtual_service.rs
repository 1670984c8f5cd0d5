//! `VirtualService`: how requests to a set of hosts are routed — HTTP routes with matches,
//! weighted destinations, redirects, rewrites, retries, timeouts, fault injection, mirroring
//! and CORS, plus TLS (by SNI) and TCP routes.
//!
//! The types mirror `networking.istio.io/v1` `VirtualService` field by field; the rules of
//! Istio's webhook live in [`validation`], and how a delegate's rules merge into their root
//! rule in [`delegate`].

pub mod delegate;
mod validation;

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Destination, Host};
use crate::types::{Duration, OneOfError, Percent, StringCondition, one_of};

/// The spec of a VirtualService.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VirtualService {
    /// The hosts the routes apply to; empty for a delegate VirtualService.
    #[serde(default)]
    pub hosts: Vec<Host>,
    /// Gateways (`namespace/name`, or `mesh` for sidecars) the routes apply to; none means
    /// `mesh`.
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    #[serde(default)]
    pub tls: Vec<TlsRoute>,
    #[serde(default)]
    pub tcp: Vec<TcpRoute>,
    #[serde(default)]
    pub export_to: Vec<String>,
}

/// gRPC status names, by code (what an abort's `grpcStatus` may name).
const GRPC_STATUSES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The code of gRPC status `name` (`UNAVAILABLE` → 14).
pub fn grpc_status_code(name: &str) -> Option<u32> {
    GRPC_STATUSES.iter().position(|s| *s == name).and_then(|code| u32::try_from(code).ok())
}

/// The reserved gateway name for the sidecars of the mesh.
pub const MESH_GATEWAY: &str = "mesh";

impl VirtualService {
    /// Whether the routes apply to sidecars (no gateways, or `mesh` among them).
    pub fn applies_to_mesh(&self) -> bool {
        self.gateways.is_empty() || self.gateways.iter().any(|g| g == MESH_GATEWAY)
    }

    /// A delegate VirtualService (no hosts) is only reachable from another one's `delegate`.
    pub fn is_delegate(&self) -> bool {
        self.hosts.is_empty()
    }
}

/// One HTTP rule: conditions, then what to do with a matching request.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(default)]
    pub name: String,
    /// Any one of these matches selects the rule; none means every request.
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    #[serde(default)]
    pub route: Vec<HttpRouteDestination>,
    pub redirect: Option<HttpRedirect>,
    pub direct_response: Option<HttpDirectResponse>,
    pub delegate: Option<Delegate>,
    pub rewrite: Option<HttpRewrite>,
    pub timeout: Option<Duration>,
    pub retries: Option<HttpRetry>,
    pub fault: Option<HttpFaultInjection>,
    /// Deprecated single mirror (use `mirrors`).
    pub mirror: Option<Destination>,
    /// Deprecated integer mirror percentage (use `mirrorPercentage`).
    pub mirror_percent: Option<u32>,
    /// The same deprecated field under its protobuf name.
    #[serde(rename = "mirror_percent")]
    pub mirror_percent_snake: Option<u32>,
    pub mirror_percentage: Option<Percent>,
    #[serde(default)]
    pub mirrors: Vec<HttpMirrorPolicy>,
    pub cors_policy: Option<CorsPolicy>,
    pub headers: Option<Headers>,
}

/// Conditions on a request; all given conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpMatchRequest {
    #[serde(default)]
    pub name: String,
    pub uri: Option<StringCondition>,
    pub scheme: Option<StringCondition>,
    pub method: Option<StringCondition>,
    pub authority: Option<StringCondition>,
    /// Header name (lower case) to condition; `{}` means "present".
    #[serde(default)]
    pub headers: BTreeMap<String, StringCondition>,
    /// Port the request arrived on; 0 means any.
    #[serde(default)]
    pub port: u32,
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub query_params: BTreeMap<String, StringCondition>,
    #[serde(default)]
    pub ignore_uri_case: bool,
    #[serde(default)]
    pub without_headers: BTreeMap<String, StringCondition>,
    #[serde(default)]
    pub source_namespace: String,
    #[serde(default)]
    pub stat_prefix: String,
}

/// A weighted destination of an HTTP route, with header changes for its traffic.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteDestination {
    /// Required; `None` only in an invalid document.
    pub destination: Option<Destination>,
    /// Relative share of the traffic; 0 with a single destination means all of it.
    #[serde(default)]
    pub weight: i32,
    pub headers: Option<Headers>,
}

/// Header changes for requests and responses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Headers {
    pub request: Option<HeaderOperations>,
    pub response: Option<HeaderOperations>,
}

/// Headers to set (overwrite), add (append) and remove.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOperations {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// A redirect response instead of forwarding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "HttpRedirectFields")]
pub struct HttpRedirect {
    pub uri: String,
    pub authority: String,
    pub port: Option<RedirectPort>,
    pub scheme: String,
    /// 0 means the default, 301.
    pub redirect_code: u32,
    pub prefix_rewrite: String,
}

/// The port of a redirect: a number, or derived from the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectPort {
    Number(u32),
    Derive(DerivePort),
}

/// Which port a redirect keeps when none is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DerivePort {
    FromProtocolDefault,
    FromRequestPort,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HttpRedirectFields {
    #[serde(default)]
    uri: String,
    #[serde(default)]
    authority: String,
    port: Option<u32>,
    derive_port: Option<DerivePort>,
    #[serde(default)]
    scheme: String,
    #[serde(default)]
    redirect_code: u32,
    #[serde(default)]
    prefix_rewrite: String,
}

impl TryFrom<HttpRedirectFields> for HttpRedirect {
    type Error = OneOfError;

    fn try_from(f: HttpRedirectFields) -> Result<Self, Self::Error> {
        let port = one_of([
            ("port", f.port.map(RedirectPort::Number)),
            ("derivePort", f.derive_port.map(RedirectPort::Derive)),
        ])?;
        Ok(Self {
            uri: f.uri,
            authority: f.authority,
            port,
            scheme: f.scheme,
            redirect_code: f.redirect_code,
            prefix_rewrite: f.prefix_rewrite,
        })
    }
}

/// A fixed response instead of forwarding.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpDirectResponse {
    #[serde(default)]
    pub status: u32,
    pub body: Option<HttpBody>,
}

/// The body of a direct response: text or base64 bytes (or nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "HttpBodyFields")]
pub struct HttpBody {
    pub content: Option<BodyContent>,
}

/// Direct-response body content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyContent {
    String(String),
    /// Base64, as written.
    Bytes(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpBodyFields {
    string: Option<String>,
    bytes: Option<String>,
}

impl TryFrom<HttpBodyFields> for HttpBody {
    type Error = OneOfError;

    fn try_from(f: HttpBodyFields) -> Result<Self, Self::Error> {
        let content = one_of([
            ("string", f.string.map(BodyContent::String)),
            ("bytes", f.bytes.map(BodyContent::Bytes)),
        ])?;
        Ok(Self { content })
    }
}

/// Hands the route over to another (delegate) VirtualService.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delegate {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
}

/// Rewrites applied before forwarding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRewrite {
    #[serde(default)]
    pub uri: String,
    #[serde(default)]
    pub authority: String,
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// Rewrite of the path by regular expression.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexRewrite {
    #[serde(default, rename = "match")]
    pub pattern: String,
    #[serde(default)]
    pub rewrite: String,
}

/// Retry policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRetry {
    #[serde(default)]
    pub attempts: i32,
    pub per_try_timeout: Option<Duration>,
    /// Comma-separated Envoy retry conditions and status codes.
    #[serde(default)]
    pub retry_on: String,
    pub retry_remote_localities: Option<bool>,
    pub retry_ignore_previous_hosts: Option<bool>,
    pub backoff: Option<Duration>,
}

/// Cross-origin resource sharing policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CorsPolicy {
    /// Deprecated exact origins (use `allowOrigins`).
    #[serde(default)]
    pub allow_origin: Vec<String>,
    #[serde(default)]
    pub allow_origins: Vec<StringCondition>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    pub max_age: Option<Duration>,
    pub allow_credentials: Option<bool>,
    pub unmatched_preflights: Option<UnmatchedPreflights>,
}

/// What happens to a CORS preflight request that matches no allowed origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UnmatchedPreflights {
    Unspecified,
    Forward,
    Ignore,
}

/// Faults injected into matching requests.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFaultInjection {
    pub delay: Option<Delay>,
    pub abort: Option<Abort>,
}

/// Delay before forwarding.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(try_from = "DelayFields")]
pub struct Delay {
    pub kind: Option<DelayKind>,
    /// Deprecated integer percentage (use `percentage`).
    pub percent: i32,
    pub percentage: Option<Percent>,
}

/// How long a fault delay lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DelayKind {
    Fixed(Duration),
    Exponential(Duration),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DelayFields {
    fixed_delay: Option<Duration>,
    exponential_delay: Option<Duration>,
    #[serde(default)]
    percent: i32,
    percentage: Option<Percent>,
}

impl TryFrom<DelayFields> for Delay {
    type Error = OneOfError;

    fn try_from(f: DelayFields) -> Result<Self, Self::Error> {
        let kind = one_of([
            ("fixedDelay", f.fixed_delay.map(DelayKind::Fixed)),
            ("exponentialDelay", f.exponential_delay.map(DelayKind::Exponential)),
        ])?;
        Ok(Self { kind, percent: f.percent, percentage: f.percentage })
    }
}

/// Abort the request with an error instead of forwarding.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(try_from = "AbortFields")]
pub struct Abort {
    pub error: Option<AbortError>,
    pub percentage: Option<Percent>,
}

/// The error an abort fault returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortError {
    HttpStatus(i32),
    /// A gRPC status name such as `UNAVAILABLE`.
    GrpcStatus(String),
    Http2Error(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AbortFields {
    http_status: Option<i32>,
    grpc_status: Option<String>,
    http2_error: Option<String>,
    percentage: Option<Percent>,
}

impl TryFrom<AbortFields> for Abort {
    type Error = OneOfError;

    fn try_from(f: AbortFields) -> Result<Self, Self::Error> {
        let error = one_of([
            ("httpStatus", f.http_status.map(AbortError::HttpStatus)),
            ("grpcStatus", f.grpc_status.map(AbortError::GrpcStatus)),
            ("http2Error", f.http2_error.map(AbortError::Http2Error)),
        ])?;
        Ok(Self { error, percentage: f.percentage })
    }
}

/// A copy of the traffic sent to another destination.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    /// Required; `None` only in an invalid document.
    pub destination: Option<Destination>,
    pub percentage: Option<Percent>,
}

/// A route for TLS traffic, by SNI.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsRoute {
    #[serde(default, rename = "match")]
    pub matches: Vec<TlsMatchAttributes>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// Conditions on a TLS connection.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsMatchAttributes {
    #[serde(default)]
    pub sni_hosts: Vec<Host>,
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    #[serde(default)]
    pub port: u32,
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub source_namespace: String,
}

/// A route for opaque TCP traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpRoute {
    #[serde(default, rename = "match")]
    pub matches: Vec<L4MatchAttributes>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// Conditions on a TCP connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct L4MatchAttributes {
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    #[serde(default)]
    pub port: u32,
    #[serde(default)]
    pub source_subnet: String,
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub source_namespace: String,
}

/// A weighted destination of a TLS or TCP route.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDestination {
    /// Required; `None` only in an invalid document.
    pub destination: Option<Destination>,
    #[serde(default)]
    pub weight: i32,
}
