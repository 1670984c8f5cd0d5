//! Two real sidecars (client pod and server pod) and an echo app, over real sockets: HTTP/1.1
//! through the outbound listener with curl, mutual TLS between the proxies, XFCC at the app,
//! every proxy-generated error with its status, flag and reason, and the hop between the
//! sidecars: HTTP/1.1 for an HTTP port by default (Istio's), HTTP/2 for one that upgrades and
//! for an HTTP/2 port.

#[path = "support/control.rs"]
mod control;
#[path = "support/harness.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use paymesh_api::model::{H2Upgrade, MtlsMode};
use support::{DEADLINE, Mesh, client_config, curl, parse_response, raw_exchange};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_absolute_form_reaches_the_app_with_the_callers_identity() {
    let mesh = Mesh::start(MtlsMode::Strict, Duration::from_secs(3600)).await;
    let (ok, out) =
        curl(vec!["-x".into(), mesh.proxy_url(), "-i".into(), "http://echo:8080/hello?x=1".into()]).await;
    assert!(ok, "{out}");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("path: /hello\n"), "{out}");
    assert!(out.contains("host: echo:8080\n"), "{out}");
    let xfcc = "x-forwarded-client-cert: By=spiffe://cluster.local/ns/test/sa/echo;URI=spiffe://cluster.local/ns/test/sa/sleep\n";
    assert!(out.contains(xfcc), "{out}");
    assert!(out.contains("x-request-id: "), "{out}");
    assert!(out.contains("x-forwarded-proto: http\n"), "{out}");
    // Trace headers pass unchanged; hop-by-hop ones do not.
    let (ok, out) = curl(vec![
        "-x".into(),
        mesh.proxy_url(),
        "-H".into(),
        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        "-H".into(),
        "x-b3-traceid: 80f198ee56343ba864fe8b2a57d3eff7".into(),
        "-H".into(),
        "Connection: keep-alive, x-drop-me".into(),
        "-H".into(),
        "x-drop-me: 1".into(),
        "http://echo:8080/trace".into(),
    ])
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\n"), "{out}");
    assert!(out.contains("x-b3-traceid: 80f198ee56343ba864fe8b2a57d3eff7\n"), "{out}");
    assert!(!out.contains("x-drop-me"), "{out}");

    // Origin-form with Host works too.
    let (status, body) = parse_response(
        &raw_exchange(
            mesh.client.pod.at(15001),
            b"GET /origin HTTP/1.1\r\nHost: echo:8080\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("path: /origin"), "{body}");

    let dump = mesh.client.config_dump().await;
    assert_eq!(dump["version"], "v1");
    assert_eq!(dump["certificate"]["identity"], "spiffe://cluster.local/ns/test/sa/sleep");
    assert_eq!(dump["certificate"]["rotations"], 0);
    assert_eq!(dump["clusters"].as_array().map(Vec::len), Some(4));
    assert_eq!(mesh.client.admin("/healthz").await.0, 200);
    let (status, body) = support::http_get(mesh.client.pod.at(15021), "/healthz/ready").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    eprintln!("idle sidecar RSS: client {} KiB, server {} KiB", mesh.client.rss_kib(), mesh.server.rss_kib());
}

/// The open-file limits of process `pid`: (soft, hard).
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("Max open files").to_owned();
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_raises_its_open_file_limit_to_the_hard_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // The proxies inherit this test process's limits (nextest runs each test in its own).
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard.min(1024), hard).expect("a low soft limit");
    let mesh = Mesh::start(MtlsMode::Strict, Duration::from_secs(3600)).await;
    let (soft, hard) = open_file_limits(mesh.client.pid());
    assert_eq!(soft, hard, "connections are bounded by the hard limit, not the default soft one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_errors_carry_status_flag_and_reason() {
    let mesh = Mesh::start(MtlsMode::Strict, Duration::from_secs(3600)).await;
    let outbound = mesh.client.pod.at(15001);

    let (ok, out) = curl(vec!["-x".into(), mesh.proxy_url(), "-i".into(), "http://foo/".into()]).await;
    assert!(ok, "{out}");
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    assert!(out.to_ascii_lowercase().contains("x-paymesh-response-flags: nr"), "{out}");
    assert!(out.ends_with("no route to host \"foo\" (NR)"), "{out}");

    let (ok, out) = curl(vec!["-x".into(), mesh.proxy_url(), "-i".into(), "http://down:8080/".into()]).await;
    assert!(ok, "{out}");
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    // Every attempt (the first and Istio's two default retries) failed to connect: two flags.
    assert!(out.contains("x-paymesh-response-flags: UF,URX"), "{out}");
    let refused = format!("upstream connect error to {}", mesh.down.at(15006));
    assert!(out.contains(&refused) && out.ends_with("(UF,URX)"), "{out}");

    let big = format!(
        "GET http://echo:8080/ HTTP/1.1\r\nHost: echo:8080\r\nx-big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let (status, _) = parse_response(&raw_exchange(outbound, big.as_bytes()).await);
    assert_eq!(status, 431);

    let (status, _) = parse_response(&raw_exchange(outbound, b"GARBAGE\r\n\r\n").await);
    assert_eq!(status, 400);
    let (status, _) = parse_response(
        &raw_exchange(outbound, b"GET / HTTP/1.1\r\nHost: a:b:c\r\nConnection: close\r\n\r\n").await,
    );
    assert_eq!(status, 400);

    // The proxy still serves after all of that.
    let (ok, out) = curl(vec!["-x".into(), mesh.proxy_url(), "http://echo:8080/after".into()]).await;
    assert!(ok && out.contains("path: /after"), "{out}");

    // Each of them has its access log line with the flag, including those hyper refused itself.
    let logs = support::eventually("the access log lines", || async {
        let logs = mesh.client.logs();
        logs.contains("\"GET /after HTTP/1.1\" 200 - via_upstream - \"-\" 0 ").then_some(logs)
    })
    .await;
    let down = mesh.down.at(8080);
    let expected = [
        "\"GET / HTTP/1.1\" 404 NR route_not_found - \"-\" 0 ".to_owned(),
        "\"GET / HTTP/1.1\" 503 UF,URX upstream_reset_before_response_started{connection_failure} - \
         \"Connection refused (os error 111)\" 0 "
            .to_owned(),
        "\"- - HTTP/1.1\" 431 DPE codec_error - \"-\" 0 0 0 - \"-\" \"-\" \"-\" \"-\" \"-\" - - ".to_owned(),
        "\"- - HTTP/1.1\" 400 DPE codec_error - \"-\" 0 0 0 - \"-\" \"-\" \"-\" \"-\" \"-\" - - ".to_owned(),
        "\"GET / HTTP/1.1\" 400 DPE invalid_authority - \"-\" 0 ".to_owned(),
    ];
    for line in expected {
        assert!(logs.contains(&line), "no `{line}` in\n{logs}");
    }
    // The failed request's line names the cluster, the last endpoint tried, and three attempts.
    let failed = logs.lines().find(|line| line.contains(" 503 UF,URX ")).unwrap_or_default();
    let attempts = format!(" \"{down}\" outbound|8080|v1|down.test.svc.cluster.local - ");
    let tail = format!(" default - {} down-0 - 3 ", mesh.down.identity());
    assert!(
        failed.contains(&attempts) && failed.contains(&tail),
        "no `{attempts}` or `{tail}` in `{failed}`"
    );
    // A forwarded request's line names the endpoint that answered it.
    let upstream = format!(" \"echo:8080\" \"{}\" ", mesh.server.pod.at(8080));
    let after = logs.lines().find(|line| line.contains("/after")).unwrap_or_default();
    assert!(after.contains(&upstream), "no `{upstream}` in `{after}`");
}

/// The request context's fields as both sidecars' access lines show them: the client side
/// names the route, cluster, chosen endpoint (address, pod, identity) and the app's address;
/// the server side names the caller's proven identity, its inbound cluster and the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_carry_the_request_context() {
    let mesh = Mesh::start(MtlsMode::Strict, Duration::from_secs(3600)).await;
    let (ok, out) = curl(vec![
        "-x".into(),
        mesh.proxy_url(),
        "-A".into(),
        "ctx-test".into(),
        "-H".into(),
        "x-forwarded-for: 10.1.2.3".into(),
        "http://echo:8080/ctx".into(),
    ])
    .await;
    assert!(ok && out.contains("path: /ctx"), "{out}");
    let line = |proxy: &support::Proxy| {
        let logs = proxy.logs();
        logs.lines().find(|line| line.contains("\"GET /ctx ")).map(str::to_owned)
    };
    let client = support::eventually("the client's line", || async { line(&mesh.client) }).await;
    let server = support::eventually("the server's line", || async { line(&mesh.server) }).await;
    let (client_ip, server_pod) = (mesh.client.pod.at(0).ip(), &mesh.server.pod);
    let client_expected = [
        " 200 - via_upstream - \"-\" 0 ".to_owned(),
        "\"10.1.2.3\" \"ctx-test\" ".to_owned(),
        format!(" \"echo:8080\" \"{}\" outbound|8080||echo.test.svc.cluster.local - ", server_pod.at(8080)),
        format!(" {} 127.0.0.1:", mesh.client.pod.at(15001)),
        format!(" default - {} {} - 1 ", server_pod.identity(), server_pod.name),
    ];
    for part in client_expected {
        assert!(client.contains(&part), "no `{part}` in the client's `{client}`");
    }
    // Bytes sent, duration and upstream service time (from the connection being ready to the
    // response head) follow the bytes received, on both sides.
    for line in [&client, &server] {
        let after = line.split(" via_upstream - \"-\" 0 ").nth(1).unwrap_or_default();
        let numbers: Vec<u64> = after.split(' ').take(3).filter_map(|field| field.parse().ok()).collect();
        assert_eq!(numbers.len(), 3, "bytes sent, duration, service time in `{line}`");
        assert!(numbers[2] <= numbers[1], "service time within the duration: `{line}`");
    }
    let server_expected = [
        " 200 - via_upstream - \"-\" 0 ".to_owned(),
        format!(" \"{}\" inbound|8080|| - {} {client_ip}:", server_pod.at(8080), server_pod.at(15006)),
        format!(" - - {} - - - 1 ", mesh.client.pod.identity()),
    ];
    for part in server_expected {
        assert!(server.contains(&part), "no `{part}` in the server's `{server}`");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_stays_http1_between_the_sidecars_unless_the_cluster_upgrades() {
    let mesh = Mesh::start(MtlsMode::Strict, Duration::from_secs(3600)).await;
    let get = |path: String| {
        let proxy = mesh.proxy_url();
        async move {
            let (ok, out) = curl(vec!["-x".into(), proxy, format!("http://echo:8080{path}")]).await;
            assert!(ok && out.contains(&format!("path: {path}")), "{path}: {out}");
        }
    };
    // Concurrent requests each lease a connection of their own from the HTTP/1.1 pool.
    let requests: Vec<_> = (0..8).map(|i| tokio::spawn(get(format!("/kept-{i}")))).collect();
    for request in requests {
        request.await.expect("request task");
    }
    for i in 0..8 {
        served_as(&mesh.server, &format!("/kept-{i}"), "HTTP/1.1").await;
    }
    // A client speaking h2c gets no upgrade either: an `http` port's cluster speaks HTTP/1.1 to
    // the peer whatever the client spoke, as Envoy's clusters do under Istio. An HTTP/2 port's
    // requests always cross as HTTP/2.
    let tcp = tokio::net::TcpStream::connect(mesh.client.pod.at(15001)).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2c");
    tokio::spawn(connection);
    for (uri, path, hop) in [
        ("http://echo:8080/from-h2c", "/from-h2c", "HTTP/1.1"),
        ("http://grpc-echo:9090/h2-port", "/h2-port", "HTTP/2"),
    ] {
        let request = Request::get(uri).body(Empty::<Bytes>::new()).expect("request");
        let response = tokio::time::timeout(DEADLINE, sender.send_request(request))
            .await
            .expect("in time")
            .expect("response");
        assert_eq!(response.status(), 200, "{uri}");
        served_as(&mesh.server, path, hop).await;
    }

    let mut config = client_config("v2", &mesh.client.pod, &mesh.server.pod, &mesh.down);
    let echo = config.clusters.iter_mut().find(|c| c.service.starts_with("echo.")).expect("echo cluster");
    Arc::make_mut(echo).h2_upgrade = H2Upgrade::Upgrade;
    mesh.cp.set_config(config);
    support::eventually("config v2", || async {
        (mesh.client.config_dump().await["version"] == "v2").then_some(())
    })
    .await;
    get("/upgraded".into()).await;
    served_as(&mesh.server, "/upgraded", "HTTP/2").await;
}

/// Waits for the server sidecar's access line for `path`, which names the protocol the request
/// crossed the hop between the sidecars in.
async fn served_as(server: &support::Proxy, path: &str, protocol: &str) {
    let line = format!("\"GET {path} {protocol}\" 200 ");
    support::eventually(&format!("the server's line `{line}`"), || async {
        server.logs().contains(&line).then_some(())
    })
    .await;
}
