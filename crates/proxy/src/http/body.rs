//! The body type every request and response the proxy handles carries, and its constructors.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;

/// Any error a body can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every request and response the proxy handles.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body of `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// A received body, streamed on.
pub fn incoming(body: Incoming) -> Body {
    body.map_err(BoxError::from).boxed_unsync()
}

/// Maps a received request's body to [`Body`].
pub fn boxed_request(req: Request<Incoming>) -> Request<Body> {
    req.map(incoming)
}

/// Maps a received response's body to [`Body`].
pub fn boxed_response(res: Response<Incoming>) -> Response<Body> {
    res.map(incoming)
}
