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
    let route = |name: &str| RouteConfig {
        name: name.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: "payments.example.com".to_owned(),
            domains: vec!["payments.example.com".to_owned()],
            routes: vec![Route {
                name: "to-echo".to_owned(),
                matches: Vec::new(),
                headers: HeaderEdits::default(),
                action: RouteAction::Forward {
                    clusters: vec![WeightedCluster { cluster: cluster.name.clone(), weight: 100 }],
                },
            }],
        }],
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
        routes: vec![route("http.8080"), route("https.8443")],
        endpoints: vec![ClusterEndpoints {
            cluster: cluster.name.clone(),
            endpoints: vec![endpoint(server, HTTP_PORT)],
        }],
        clusters: vec![cluster],
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
    cp.set_config(gateway_config(&gw, &server, tls));
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
            let (ok, out) =
                curl(vec!["-i".into(), "-H".into(), "Host: payments.example.com".into(), url]).await;
            ok.then_some(out)
        }
    })
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("path: /through-gateway"), "{out}");
    assert!(out.contains("URI=spiffe://cluster.local/ns/test/sa/ingressgateway"), "{out}");

    let (ok, out) = curl(vec![
        "-i".into(),
        "-H".into(),
        "Host: other.example.com".into(),
        format!("http://{}/", gw.at(8080)),
    ])
    .await;
    assert!(ok && out.starts_with("HTTP/1.1 404"), "{out}");
    assert!(out.ends_with("no route to host \"other.example.com\" (NR)"), "{out}");

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
}
