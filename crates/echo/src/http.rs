//! The HTTP endpoints of `paymesh-echo`.
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /health` | 200 `ok` |
//! | `/echo` | JSON `{pod, namespace, method, path, query, version, headers, body}` |
//! | `/status/N` | status N (200–599), else 400 |
//! | `POST /stream` | the request body, frame by frame as it arrives, then the trailer `grpc-status: 0` |
//! | `/call?url=URL` | GET URL (through `HTTP_PROXY` when set, from the pod IP) and answers its status and body |
//!
//! Request bodies that are buffered (`/echo`) are capped at [`MAX_BODY`]; `/stream` is not
//! buffered so it has no cap.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio_stream::wrappers::ReceiverStream;

/// Largest request body `/echo` buffers.
pub const MAX_BODY: usize = 1024 * 1024;
/// Deadline of an outbound `/call`.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Response body: a whole buffer or a stream of frames.
pub type Body = BoxBody<Bytes, Infallible>;

/// What every request handler shares.
pub struct State {
    pod: String,
    namespace: String,
    client: reqwest::Client,
}

impl State {
    /// The outbound client uses the environment's `HTTP_PROXY`/`NO_PROXY` (reqwest's default)
    /// and binds the pod IP as its source, so peers see which pod called.
    pub fn new(pod: String, namespace: String, ip: IpAddr) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder().local_address(ip).timeout(CALL_TIMEOUT).build()?;
        Ok(Self { pod, namespace, client })
    }
}

/// Routes one request.
pub async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let response = match (req.method(), path.as_str()) {
        (_, "/health") => text(StatusCode::OK, "ok\n"),
        (_, "/echo") => echo(&state, req).await,
        (&Method::POST, "/stream") => stream(req),
        (_, "/call") => call(&state, req.uri().query().unwrap_or("")).await,
        (_, p) if p.starts_with("/status/") => status(&p["/status/".len()..]),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn status(code: &str) -> Response<Body> {
    match code
        .parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
    {
        Some(status) => text(status, format!("{}\n", status.as_u16())),
        None => text(StatusCode::BAD_REQUEST, format!("status must be 200-599, got {code:?}\n")),
    }
}

async fn echo(state: &State, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, format!("body larger than {MAX_BODY} bytes\n"));
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("reading the body: {e}\n")),
    };
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let json = serde_json::json!({
        "pod": state.pod,
        "namespace": state.namespace,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut response = Response::new(Full::new(Bytes::from(json.to_string())).boxed());
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Sends each request frame back as soon as it arrives, then `grpc-status: 0` (or `2` when
/// the request body failed) as a trailer.
fn stream(req: Request<Incoming>) -> Response<Body> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let mut body = req.into_body();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        let grpc_status = loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && tx.send(Ok(Frame::data(data))).await.is_err()
                    {
                        return;
                    }
                }
                Some(Err(_)) => break "2",
                None => break "0",
            }
        };
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static(grpc_status));
        let _ = tx.send(Ok(Frame::trailers(trailers))).await;
    });
    let mut response = Response::new(StreamBody::new(ReceiverStream::new(rx)).boxed());
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}

async fn call(state: &State, query: &str) -> Response<Body> {
    let Some(url) = query_param(query, "url") else {
        return text(StatusCode::BAD_REQUEST, "missing ?url=\n");
    };
    match state.client.get(&url).send().await {
        Ok(upstream) => {
            let status = upstream.status().as_u16();
            match upstream.bytes().await {
                Ok(body) => {
                    let mut response =
                        text(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), body);
                    response.headers_mut().insert("x-echo-upstream-status", HeaderValue::from(status));
                    response
                }
                Err(e) => call_error(&url, &e),
            }
        }
        Err(e) => call_error(&url, &e),
    }
}

fn call_error(url: &str, e: &reqwest::Error) -> Response<Body> {
    let mut response = text(StatusCode::BAD_GATEWAY, format!("calling {url}: {e}\n"));
    response.headers_mut().insert("x-echo-call-error", HeaderValue::from_static("true"));
    response
}

/// The percent-decoded value of `name` in a query string.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_param_decodes_percent_escapes() {
        assert_eq!(query_param("url=http%3A%2F%2Fa%3A80%2Fx&b=1", "url").as_deref(), Some("http://a:80/x"));
        assert_eq!(query_param("a=1&url=x+y", "url").as_deref(), Some("x y"));
        assert_eq!(query_param("a=1", "url"), None);
        assert_eq!(query_param("url=%zz%4", "url").as_deref(), Some("%zz%4"));
        assert_eq!(query_param("url=%", "url").as_deref(), Some("%"));
    }
}
