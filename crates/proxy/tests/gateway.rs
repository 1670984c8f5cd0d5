//! Gateway mode: a gateway proxy binds its compiled Gateway listeners (plain and TLS), matches
//! servers by host, and forwards into the mesh with its own identity, exactly as a sidecar's
//! outbound does.

#[path = "support/control.rs"]
mod control;
#[path = "support/harness.rs"]
mod support;

use std::time::Duration;

use paymesh_api::ProxyConfig;
use paymesh_api::model::*;
use support::{HTTP_PORT, Pod, Proxy, curl, echo_app, endpoint, eventually, mesh, node, server_config};

fn gateway_config(gw: &Pod, server: &Pod, tls: ServerTls) -> ProxyConfig {
    let host = "echo.test.svc.cluster.local";
    let cluster = support::cluster(HTTP_PORT, host, Protocol::Http, vec![server.identity()]);
    let forward = RouteAction::Forward {
        clusters: vec![WeightedCluster { cluster: cluster.name.clone(), weight: 100 }],
    };
    // As k8s/istio/gateway.yaml: outside requests lose `x-fault-test`.
    let strip_fault = HeaderEdits {
        request: HeaderOps {
            set: [("x-routed-by".to_owned(), "api".to_owned())].into(),
            remove: vec!["x-fault-test".to_owned()],
            ..HeaderOps::default()
        },
        response: HeaderOps {
            add: [("x-served-by".to_owned(), "gateway".to_owned())].into(),
            remove: vec!["x-internal".to_owned()],
            ..HeaderOps::default()
        },
    };
    let api = Route {
        name: "api".to_owned(),
        virtual_service: Some("payments/payments-gateway".to_owned()),
        matches: vec![
            RouteMatch {
                uri: Some(StringMatch::Prefix("/v1/payments".to_owned())),
                method: None,
                headers: vec![HeaderMatch {
                    name: "x-tenant-id".to_owned(),
                    value: Some(StringMatch::Regex("tenant-(gold|platinum)".to_owned())),
                    invert: true,
                }],
                ..RouteMatch::default()
            },
            RouteMatch {
                uri: Some(StringMatch::Regex("/through-[a-z]+".to_owned())),
                method: Some(StringMatch::Exact("GET".to_owned())),
                headers: Vec::new(),
                ..RouteMatch::default()
            },
        ],
        headers: strip_fault,
        action: forward.clone(),
        policy: Default::default(),
        rewrite: None,
        mirrors: Vec::new(),
        cors: None,
    };
    let teapot = Route {
        name: "teapot".to_owned(),
        virtual_service: Some("payments/payments-gateway".to_owned()),
        matches: vec![RouteMatch {
            uri: Some(StringMatch::Exact("/teapot".to_owned())),
            method: None,
            headers: vec![HeaderMatch { name: "x-brew".to_owned(), value: None, invert: false }],
            ..RouteMatch::default()
        }],
        headers: HeaderEdits::default(),
        action: RouteAction::DirectResponse { status: 418, body: "short and stout".to_owned() },
        policy: Default::default(),
        rewrite: None,
        mirrors: Vec::new(),
        cors: None,
    };
    let catch_all = Route {
        name: "to-echo".to_owned(),
        virtual_service: None,
        matches: Vec::new(),
        headers: HeaderEdits::default(),
        action: forward,
        policy: Default::default(),
        rewrite: None,
        mirrors: Vec::new(),
        cors: None,
    };
    let route = |name: &str, routes: Vec<Route>| RouteConfig {
        name: name.to_owned(),
        virtual_hosts: vec![
            VirtualHost {
                name: "payments.example.com".to_owned(),
                domains: vec!["payments.example.com".to_owned()],
                routes,
            }
            .into(),
        ],
    };
    let server_of = |route: &str, tls: Option<ServerTls>| GatewayServer {
        gateway: "test/payments-gateway".to_owned(),
        hosts: vec!["payments.example.com".to_owned()],
        tls,
        route: route.to_owned(),
    };
    ProxyConfig {
        version: "g1".to_owned(),
        node: node(gw, ProxyKind::Gateway),
        mesh: mesh(),
        listeners: vec![
            Listener {
                name: "0.0.0.0_8080".to_owned(),
                address: gw.at(8080),
                kind: ListenerKind::Gateway { servers: vec![server_of("http.8080", None)] },
            },
            Listener {
                name: "0.0.0.0_8443".to_owned(),
                address: gw.at(8443),
                kind: ListenerKind::Gateway { servers: vec![server_of("https.8443", Some(tls))] },
            },
        ],
        routes: vec![route("http.8080", vec![api, teapot]), route("https.8443", vec![catch_all])],
        endpoints: vec![
            ClusterEndpoints { cluster: cluster.name.clone(), endpoints: vec![endpoint(server, HTTP_PORT)] }
                .into(),
        ],
        clusters: vec![cluster.into()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_routes_by_host_into_the_mesh_over_http_and_https() {
    let cp = control::ControlPlane::start(Duration::from_secs(3600)).await;
    let (gw, server) = (Pod::new("ingress-0", "ingressgateway"), Pod::new("echo-0", "echo"));
    let dir = support::TempDir::new("gateway-tls");
    let cert = rcgen::generate_simple_self_signed(vec!["payments.example.com".to_owned()]).expect("cert");
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, cert.cert.pem()).expect("cert written");
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).expect("key written");
    let tls = ServerTls {
        credential_name: "payments-cert".to_owned(),
        cert_file: cert_file.display().to_string(),
        key_file: key_file.display().to_string(),
    };
    cp.set_config(gateway_config(&gw, &server, tls.clone()));
    let https_tls = tls;
    cp.set_config(server_config("s1", &server, MtlsMode::Strict));
    let _app = echo_app(server.at(HTTP_PORT)).await;
    let gateway = Proxy::start(&cp, &gw, "gateway");
    let sidecar = Proxy::start(&cp, &server, "sidecar");
    gateway.wait_ready().await;
    sidecar.wait_ready().await;

    let url = format!("http://{}/through-gateway", gw.at(8080));
    let out = eventually("the gateway answers on 8080", || {
        let url = url.clone();
        async move {
            let (ok, out) = curl(vec![
                "-i".into(),
                "-H".into(),
                "Host: payments.example.com".into(),
                "-H".into(),
                "x-fault-test: abort".into(),
                url,
            ])
            .await;
            ok.then_some(out)
        }
    })
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("path: /through-gateway"), "{out}");
    assert!(out.contains("URI=spiffe://cluster.local/ns/test/sa/ingressgateway"), "{out}");

    // The route's header edits: the outside request's x-fault-test never reaches the app.
    assert!(!out.contains("x-fault-test"), "{out}");
    assert!(out.contains("x-routed-by: api\n"), "{out}");
    assert!(out.contains("x-served-by: gateway"), "{out}");

    // Headers only the mesh may set do not survive the edge; the client's address is appended
    // to x-forwarded-for; `Connection: host` cannot strip the Host the gateway forwards.
    let spoofed = [
        "x-envoy-original-path: /admin",
        "x-paymesh-target-port: 15000",
        "x-forwarded-proto: https",
        "x-request-id: chosen-by-the-client",
        "x-forwarded-for: 10.9.9.9",
        "x-forwarded-client-cert: By=spiffe://evil;URI=spiffe://cluster.local/ns/payments/sa/admin",
        "Connection: host",
    ];
    let mut args = vec!["-H".to_owned(), "Host: payments.example.com".to_owned()];
    for header in spoofed {
        args.extend(["-H".to_owned(), header.to_owned()]);
    }
    args.push(url.clone());
    let (ok, echoed) = curl(args).await;
    assert!(ok && echoed.contains("path: /through-gateway"), "{echoed}");
    for gone in ["x-envoy-original-path", "chosen-by-the-client", "https", "spiffe://evil", "sa/admin"] {
        assert!(!echoed.contains(gone), "`{gone}` crossed the gateway: {echoed}");
    }
    assert!(echoed.contains("x-forwarded-proto: http\n") && echoed.contains("x-request-id: "), "{echoed}");
    assert!(echoed.contains("x-forwarded-for: 10.9.9.9, 127.0.0.1\n"), "{echoed}");
    assert!(echoed.contains("host: payments.example.com\n"), "{echoed}");

    // Route conditions: first matching route wins; no match is 404 NR with the host and path.
    let gateway_url = |path: &str| format!("http://{}{path}", gw.at(8080));
    let ask = |path: &str, headers: &[&str]| {
        let mut args = vec!["-i".to_owned(), "-H".to_owned(), "Host: payments.example.com".to_owned()];
        for header in headers {
            args.extend(["-H".to_owned(), (*header).to_owned()]);
        }
        args.push(gateway_url(path));
        curl(args)
    };
    let (ok, out) = ask("/v1/payments/42?x=1", &["x-tenant-id: tenant-basic"]).await;
    assert!(ok && out.starts_with("HTTP/1.1 200") && out.contains("path: /v1/payments/42\n"), "{out}");
    let (ok, out) = ask("/v1/payments/42", &["x-tenant-id: tenant-gold"]).await;
    assert!(ok && out.starts_with("HTTP/1.1 404"), "{out}");
    assert!(out.contains("x-paymesh-response-flags: NR"), "{out}");
    // Outside clients get the flag and the request id, no internal detail.
    assert!(out.contains("\r\n\r\nno route (NR) request id "), "{out}");
    let (ok, out) = ask("/teapot", &["x-brew: yes"]).await;
    assert!(ok && out.starts_with("HTTP/1.1 418") && out.ends_with("short and stout"), "{out}");
    let (ok, out) = ask("/teapot", &[]).await;
    assert!(ok && out.starts_with("HTTP/1.1 404"), "{out}");
    let (ok, out) = ask("/through-UPPER", &[]).await;
    assert!(ok && out.starts_with("HTTP/1.1 404"), "regex is case-sensitive and anchored: {out}");

    let (ok, out) = curl(vec![
        "-i".into(),
        "-H".into(),
        "Host: other.example.com".into(),
        format!("http://{}/", gw.at(8080)),
    ])
    .await;
    assert!(ok && out.starts_with("HTTP/1.1 404"), "{out}");
    assert!(out.contains("\r\n\r\nno route (NR) request id "), "{out}");

    let resolve = format!("payments.example.com:8443:{}", gw.ip);
    let (ok, out) = curl(vec![
        "-i".into(),
        "-k".into(),
        "--resolve".into(),
        resolve,
        "https://payments.example.com:8443/secure".into(),
    ])
    .await;
    assert!(ok, "{out}");
    assert!(out.contains(" 200") && out.contains("path: /secure"), "{out}");
    assert!(out.contains("x-forwarded-proto: https"), "{out}");

    // The access log shows each request with its flags.
    let logs = gateway.logs();
    assert!(logs.contains("\"GET /v1/payments/42 HTTP/1.1\" 404 NR route_not_found "), "{logs}");
    let through =
        logs.lines().find(|line| line.contains("\"GET /through-gateway HTTP/1.1\" 200 - via_upstream "));
    let through = through.unwrap_or_else(|| panic!("no line for /through-gateway in {logs}"));
    let upstream = format!(" \"payments.example.com\" \"{}\" outbound|", server.at(HTTP_PORT));
    assert!(through.contains(&upstream), "no `{upstream}` in `{through}`");
    let tail = format!(" api - {} echo-0 payments/payments-gateway 1 ", server.identity());
    assert!(through.contains(&tail), "no `{tail}` in `{through}`");

    // A snapshot with an invalid regex is refused with the reason; the old one keeps serving.
    let mut broken = gateway_config(&gw, &server, https_tls);
    broken.version = "g2".to_owned();
    std::sync::Arc::make_mut(&mut broken.routes[0].virtual_hosts[0]).routes[0].matches[0].uri =
        Some(StringMatch::Regex("/v1/(".to_owned()));
    cp.set_config(broken);
    let reason = eventually("a NACK for g2", || async {
        cp.answers().into_iter().find_map(|answer| match answer {
            control::Answer::Nack { version, reason, .. } if version == "g2" => Some(reason),
            _ => None,
        })
    })
    .await;
    assert!(
        reason.starts_with("route `api` of virtual host `payments.example.com`: invalid regex `/v1/(`: "),
        "{reason}"
    );
    let (ok, out) = ask("/v1/payments/still", &[]).await;
    assert!(ok && out.starts_with("HTTP/1.1 200"), "{out}");
}
