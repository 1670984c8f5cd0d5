//! HTTP plumbing shared by every listener: the body type ([`body`]), the server with its limits
//! and timeouts ([`mod@server`]), header handling ([`headers`]) and authorities ([`authority`]).
//! A leaf: it depends on nothing else of the proxy.

pub mod authority;
pub mod body;
pub mod headers;
pub mod query;
pub mod server;

pub use authority::Authority;
pub use body::{Body, BoxError, Watch, Watched, boxed_request, boxed_response, empty, full, incoming};
pub use headers::{
    ENVOY_OVERLOADED, GRPC_MESSAGE, GRPC_STATUS, X_FORWARDED_FOR, X_FORWARDED_PROTO, X_REQUEST_ID,
    add_forwarding_headers, add_request_id, cookie, never_index_request_id, strip_hop_by_hop,
};
pub use server::{HEADER_READ_TIMEOUT, MAX_HEADER_BYTES, server};
