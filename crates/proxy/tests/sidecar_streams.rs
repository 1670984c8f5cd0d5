//! h2c through the outbound listener with a gRPC-like exchange (a streaming request body echoed
//! back chunk by chunk while the request is still open, then trailers), and CONNECT tunnels to a
//! TCP app through both sidecars.

#[path = "support/control.rs"]
mod control;
#[path = "support/harness.rs"]
mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use paymesh_api::model::MtlsMode;
use support::{DEADLINE, Mesh};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

type Chunks = mpsc::Sender<Result<Frame<Bytes>, std::convert::Infallible>>;

/// With no policy on the route, cluster or workload, the stages forward what the client sent:
/// a binary body byte for byte, and the header section in order, with only the mesh's own
/// headers added (`x-request-id`, `x-forwarded-proto`, `x-forwarded-client-cert`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_without_policies_forwards_requests_unchanged() {
    let mesh = Mesh::start(MtlsMode::Strict, Duration::from_secs(3600)).await;
    let tcp = tokio::net::TcpStream::connect(mesh.client.pod.at(15001)).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.expect("h1");
    tokio::spawn(connection);

    let body: Vec<u8> = (0..256 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let request = Request::builder()
        .method(Method::POST)
        .uri("http://echo:8080/upload")
        .header("content-type", "application/octet-stream")
        .body(http_body_util::Full::new(Bytes::from(body.clone())))
        .expect("request");
    let response =
        tokio::time::timeout(DEADLINE, sender.send_request(request)).await.expect("in time").expect("ok");
    assert_eq!(response.status(), 200);
    let echoed = tokio::time::timeout(DEADLINE, response.into_body().collect()).await.expect("in time");
    assert!(echoed.expect("body").to_bytes() == body, "the body came back changed");

    let sent = [
        ("x-tenant-id", "acme"),
        ("accept", "text/plain"),
        ("x-multi", "one"),
        ("x-multi", "two, three"),
        ("cookie", "a=1; b=\"q\""),
        ("x-opaque", "caf\u{e9} \t ~!@#$%^&*()"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ];
    let mut request = Request::builder().uri("http://echo:8080/headers?a=1&b=%20");
    for (name, value) in sent {
        request = request.header(name, http::HeaderValue::from_bytes(value.as_bytes()).expect("value"));
    }
    let request = request.body(http_body_util::Full::new(Bytes::new())).expect("request");
    // The same connection, once the first exchange is over.
    tokio::time::timeout(DEADLINE, sender.ready()).await.expect("in time").expect("connection still open");
    let response =
        tokio::time::timeout(DEADLINE, sender.send_request(request)).await.expect("in time").expect("ok");
    let text = response.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&text);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("path: /headers"));
    let added = ["host", "x-request-id", "x-forwarded-proto", "x-forwarded-client-cert", "te"];
    let received: Vec<(&str, &str)> =
        lines.filter_map(|line| line.split_once(": ")).filter(|(name, _)| !added.contains(name)).collect();
    let expected: Vec<(&str, &str)> =
        sent.iter().map(|(name, value)| (*name, if value.is_ascii() { *value } else { "?" })).collect();
    assert_eq!(received, expected, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_bidirectional_stream_with_trailers() {
    let mesh = Mesh::start(MtlsMode::Strict, Duration::from_secs(3600)).await;
    let tcp = tokio::net::TcpStream::connect(mesh.client.pod.at(15001)).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2c");
    tokio::spawn(connection);

    let (chunks, rx): (Chunks, _) = mpsc::channel(4);
    let request = Request::builder()
        .method(Method::POST)
        .uri("http://grpc-echo:9090/echo.Echo/Stream")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(StreamBody::new(ReceiverStream::new(rx)))
        .expect("request");
    let response = tokio::time::timeout(DEADLINE, sender.send_request(request))
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // Each chunk comes back before the next one is sent: the stream is bidirectional end to end.
    for i in 0..5 {
        let chunk = Bytes::from(format!("message-{i}"));
        chunks.send(Ok(Frame::data(chunk.clone()))).await.expect("send chunk");
        let frame = tokio::time::timeout(DEADLINE, body.frame())
            .await
            .expect("echo in time")
            .expect("frame")
            .expect("ok");
        assert_eq!(frame.into_data().expect("data"), chunk);
    }
    drop(chunks);
    let trailers = loop {
        let frame =
            tokio::time::timeout(DEADLINE, body.frame()).await.expect("in time").expect("frame").expect("ok");
        if let Ok(trailers) = frame.into_trailers() {
            break trailers;
        }
    };
    assert_eq!(trailers["grpc-status"], "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnels_to_a_tcp_app_and_an_http_port() {
    let mesh = Mesh::start(MtlsMode::Strict, Duration::from_secs(3600)).await;
    for (target, expect_echo) in [("tcp-echo:7070", true), ("echo:8080", false)] {
        let mut tcp = tokio::net::TcpStream::connect(mesh.client.pod.at(15001)).await.expect("connect");
        tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let n =
                tokio::time::timeout(DEADLINE, tcp.read(&mut byte)).await.expect("in time").expect("read");
            assert_eq!(n, 1, "connection closed after {:?}", String::from_utf8_lossy(&head));
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        if expect_echo {
            for round in 0..3 {
                let message = format!("ping {round}\n");
                tcp.write_all(message.as_bytes()).await.expect("write");
                let mut buf = vec![0u8; message.len()];
                tokio::time::timeout(DEADLINE, tcp.read_exact(&mut buf))
                    .await
                    .expect("in time")
                    .expect("read");
                assert_eq!(String::from_utf8_lossy(&buf), message);
            }
        } else {
            // Raw bytes to the HTTP app's port: speak HTTP ourselves inside the tunnel.
            tcp.write_all(b"GET /tunneled HTTP/1.1\r\nHost: echo:8080\r\nConnection: close\r\n\r\n")
                .await
                .expect("write");
            let mut out = Vec::new();
            tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut out)).await.expect("in time").expect("read");
            let out = String::from_utf8_lossy(&out);
            assert!(out.starts_with("HTTP/1.1 200") && out.contains("path: /tunneled"), "{out}");
            assert!(!out.contains("x-forwarded-client-cert"), "{out}");
        }
    }
    let mut tcp = tokio::net::TcpStream::connect(mesh.client.pod.at(15001)).await.expect("connect");
    tcp.write_all(b"CONNECT nowhere:1234 HTTP/1.1\r\nHost: nowhere:1234\r\n\r\n").await.expect("write");
    let mut out = vec![0u8; 512];
    let n = tokio::time::timeout(DEADLINE, tcp.read(&mut out)).await.expect("in time").expect("read");
    let out = String::from_utf8_lossy(&out[..n]);
    assert!(out.starts_with("HTTP/1.1 404") && out.contains("x-paymesh-response-flags: NR"), "{out}");

    // Each tunnel's context as the access lines show it: the client side names the cluster and
    // the endpoint it dialed through the peer; the server side the caller and the app port.
    let server = &mesh.server.pod;
    let tunnels = [
        (&mesh.client, "\"CONNECT tcp-echo:7070 HTTP/1.1\" 200 - via_upstream - \"-\" 0 0 ".to_owned()),
        (&mesh.client, format!(" \"{}\" outbound|7070||tcp-echo.test.svc.cluster.local ", server.at(7070))),
        (&mesh.client, format!(" - {} {} - 1 ", server.identity(), server.name)),
        (&mesh.server, format!(" \"{}\" inbound|7070|| ", server.at(7070))),
        (&mesh.server, format!(" - - {} - - - 0 ", mesh.client.pod.identity())),
        (&mesh.client, "\"CONNECT nowhere:1234 HTTP/1.1\" 404 NR route_not_found ".to_owned()),
    ];
    for (proxy, part) in tunnels {
        support::eventually(&format!("an access line with `{part}`"), || async {
            proxy.logs().contains(&part).then_some(())
        })
        .await;
    }
}
