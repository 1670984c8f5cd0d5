//! Request bodies kept for another attempt. A request that was sent cannot be sent again unless
//! its body was kept; [`Replay::wrap`] keeps a copy of each data frame as the transport sends it
//! (reference-counted `Bytes`, no copy of the data), up to [`MAX_REPLAY_BYTES`]. Once the body
//! has ended within the bound, [`Replay::request`] builds the same request again; a body that is
//! larger, or still streaming when the answer came, makes the request not replayable (Envoy's
//! rule: it retries only what it buffered). Only requests whose retry policy can resend a sent
//! request are wrapped, so other requests pay nothing.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Body as HttpBody, Frame};

use crate::http::{Body, BoxError, Watch, Watched};

/// The largest body kept for another attempt (Envoy's default buffer limit, 1 MiB).
pub const MAX_REPLAY_BYTES: usize = 1024 * 1024;

/// What is needed to send a request again.
pub struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    kept: Arc<Mutex<Kept>>,
}

/// The body seen so far.
#[derive(Default)]
struct Kept {
    frames: Vec<Frame<Bytes>>,
    bytes: usize,
    ended: bool,
    overflowed: bool,
}

impl Replay {
    /// `req` with its body recorded as it is sent, and the means to send it again.
    pub fn wrap(req: Request<Body>) -> (Request<Body>, Replay) {
        let (parts, body) = req.into_parts();
        let ended = body.is_end_stream();
        let kept = Arc::new(Mutex::new(Kept { ended, ..Kept::default() }));
        let replay = Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            kept: Arc::clone(&kept),
        };
        // A request without a body (most GETs) has nothing to record.
        let body = if ended { body } else { Body::new(Watched::new(body, Recording(Arc::downgrade(&kept)))) };
        (Request::from_parts(parts, body), replay)
    }

    /// The request again, when its whole body was seen and kept; `None` otherwise.
    pub fn request(&self) -> Option<Request<Body>> {
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if !kept.ended || kept.overflowed {
            return None;
        }
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = kept.frames.iter().map(|f| Ok(copy(f))).collect();
        let body = StreamBody::new(tokio_stream::iter(frames)).boxed_unsync();
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        Some(req)
    }
}

/// A frame again: data shares its bytes, trailers are cloned.
fn copy(frame: &Frame<Bytes>) -> Frame<Bytes> {
    match (frame.data_ref(), frame.trailers_ref()) {
        (Some(data), _) => Frame::data(data.clone()),
        (None, Some(trailers)) => Frame::trailers(trailers.clone()),
        (None, None) => Frame::data(Bytes::new()),
    }
}

/// Keeps the frames of the body it watches while the [`Replay`] exists: once the retry stage
/// has decided (and dropped it), a body still streaming keeps nothing more.
struct Recording(Weak<Mutex<Kept>>);

impl Watch for Recording {
    fn polled(&mut self, frame: Option<&Result<Frame<Bytes>, BoxError>>, ended: bool) {
        let Some(kept) = self.0.upgrade() else { return };
        let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
        match frame {
            Some(Ok(frame)) if !kept.overflowed => {
                kept.bytes += frame.data_ref().map_or(0, Bytes::len);
                if kept.bytes > MAX_REPLAY_BYTES {
                    kept.overflowed = true;
                    kept.frames = Vec::new();
                } else {
                    kept.frames.push(copy(frame));
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) => kept.overflowed = true,
            None => kept.ended = true,
        }
        kept.ended |= ended;
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::http::full;

    fn request(body: Body) -> Request<Body> {
        Request::builder().method(Method::POST).uri("/pay").header("x-a", "1").body(body).expect("request")
    }

    #[tokio::test]
    async fn a_sent_body_comes_back_whole_with_the_request_head() {
        let (req, replay) = Replay::wrap(request(full("hello world")));
        assert!(replay.request().is_none(), "not replayable before the body was sent");
        let sent = req.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(sent, "hello world");
        let again = replay.request().expect("replayable once sent");
        assert_eq!((again.method(), again.uri().path()), (&Method::POST, "/pay"));
        assert_eq!(again.headers()["x-a"], "1");
        assert_eq!(again.into_body().collect().await.expect("body").to_bytes(), "hello world");
        assert!(replay.request().is_some(), "replayable more than once");
    }

    #[tokio::test]
    async fn a_body_still_streaming_keeps_nothing_once_the_replay_is_dropped() {
        let (req, replay) = Replay::wrap(request(full("late")));
        let kept = Arc::downgrade(&replay.kept);
        drop(replay);
        let sent = req.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(sent, "late", "the request itself is untouched");
        assert!(kept.upgrade().is_none(), "nothing holds the frames");
    }

    #[tokio::test]
    async fn an_empty_body_is_replayable_at_once_and_an_oversized_one_never() {
        let (_, replay) = Replay::wrap(request(crate::http::empty()));
        assert!(replay.request().is_some());

        let (req, replay) = Replay::wrap(request(full(vec![7u8; MAX_REPLAY_BYTES + 1])));
        let sent = req.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(sent.len(), MAX_REPLAY_BYTES + 1, "the request itself is untouched");
        assert!(replay.request().is_none());
    }
}
