//! The body type every request and response the proxy handles carries, its constructors, and
//! [`Watched`], the one wrapper for code that needs to see a body's frames go by (byte counts,
//! the access line at the end, replay copies, a pooled connection's lease).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

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

/// What a [`Watched`] body reports as its frames pass; the watcher lives as long as the body,
/// so its `Drop` runs when the body is done with.
pub trait Watch {
    /// A poll returned `frame` (`None`: the end); `ended`: the body says it has ended.
    fn polled(&mut self, _frame: Option<&Result<Frame<Bytes>, BoxError>>, _ended: bool) {}
}

/// A body passing `inner`'s frames on unchanged while `watcher` sees them.
pub struct Watched<B, W> {
    inner: B,
    watcher: W,
}

impl<B, W> Watched<B, W> {
    /// `inner`, watched by `watcher`.
    pub fn new(inner: B, watcher: W) -> Self {
        Watched { inner, watcher }
    }
}

impl<B, W> HttpBody for Watched<B, W>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    W: Watch + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx).map_err(Into::into);
        if let Poll::Ready(frame) = &polled {
            this.watcher.polled(frame.as_ref(), this.inner.is_end_stream());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
