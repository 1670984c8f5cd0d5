//! The compiler on small YAML fixtures: domains, clusters and SANs, inbound chains with
//! PeerAuthentication precedence (port-level, UNSET inheritance), gateway routes.

use paymesh_api::model::{
    ListenerKind, MtlsMode, ProxyConfig, ProxyKind, RouteAction, StringMatch, UpstreamTls, WeightedCluster,
};
use paymesh_control::compile::{self, peer_authn};
use paymesh_control::registry::{Registry, WorkloadSource};

#[path = "support/fixture.rs"]
mod fixture;

use fixture::{compile_store, load, settings};

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: account, namespace: shop}
spec:
  selector: {app: account}
  ports:
  - {name: http, port: 8083, targetPort: web, appProtocol: http}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  selector: {app: db}
  ports:
  - {name: tcp-pg, port: 5432}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata:
    name: account-0
    namespace: shop
    labels: {app: account, version: v1}
    annotations: {paymesh.io/sidecar: "true"}
  spec:
    serviceAccountName: account-sa
    containers:
    - name: app
      ports: [{name: web, containerPort: 9083}, {name: admin, containerPort: 9090}]
  status: {podIP: 127.10.0.2}
- apiVersion: v1
  kind: Pod
  metadata:
    name: account-1
    namespace: shop
    labels: {app: account, version: v2}
    annotations: {paymesh.io/sidecar: "true"}
  spec:
    serviceAccountName: account-v2
    containers:
    - name: app
      ports: [{name: web, containerPort: 9084}]
  status: {podIP: 127.10.0.3}
- apiVersion: v1
  kind: Pod
  metadata: {name: client-0, namespace: shop, labels: {app: client}, annotations: {paymesh.io/sidecar: "true"}}
  spec: {serviceAccountName: client, containers: [{name: app}]}
  status: {podIP: 127.10.0.4}
- apiVersion: v1
  kind: Pod
  metadata: {name: db-0, namespace: data, labels: {app: db}}
  spec: {containers: [{name: db, ports: [{containerPort: 5432}]}]}
  status: {podIP: 127.10.0.5}
"#;

fn compile_for(extra: &str, namespace: &str, pod: &str, kind: ProxyKind) -> ProxyConfig {
    let store = load(&format!("{BASE}\n---\n{extra}"));
    compile_store(&store, namespace, pod, kind, 7)
}

fn chains(config: &ProxyConfig) -> Vec<(u16, Vec<u16>, MtlsMode, String)> {
    let inbound = config.listeners.iter().find(|l| l.name == "virtualInbound").expect("inbound listener");
    let ListenerKind::Inbound { chains } = &inbound.kind else { panic!("inbound kind") };
    chains.iter().map(|c| (c.target_port, c.service_ports.clone(), c.mtls, c.mtls_policy.clone())).collect()
}

#[test]
fn sidecar_domains_clusters_and_sans() {
    let config = compile_for("", "shop", "client-0", ProxyKind::Sidecar);
    assert_eq!(config.version, "7");
    assert_eq!(config.node.identity, "spiffe://cluster.local/ns/shop/sa/client");
    let outbound = &config.listeners[0];
    assert_eq!(
        (outbound.name.as_str(), outbound.address.to_string()),
        ("virtualOutbound", "127.10.0.4:15001".into())
    );
    let ListenerKind::Outbound { tcp } = &outbound.kind else { panic!("outbound kind") };
    assert_eq!(tcp.len(), 1);
    assert_eq!(tcp[0].port, 5432);
    assert_eq!(tcp[0].clusters[0].cluster, "outbound|5432||db.data.svc.cluster.local");
    assert_eq!(tcp[0].hosts, ["db.data.svc.cluster.local", "db.data", "db.data.svc"]);

    let route = config.routes.iter().find(|r| r.name == "8083").expect("route 8083");
    assert_eq!(route.virtual_hosts.len(), 1);
    let vhost = &route.virtual_hosts[0];
    assert_eq!(vhost.name, "account.shop.svc.cluster.local:8083");
    assert_eq!(
        vhost.domains,
        [
            "account.shop.svc.cluster.local",
            "account.shop.svc.cluster.local:8083",
            "account",
            "account:8083",
            "account.shop",
            "account.shop:8083",
            "account.shop.svc",
            "account.shop.svc:8083"
        ]
    );
    assert_eq!(
        vhost.routes[0].action,
        RouteAction::Forward {
            clusters: vec![WeightedCluster {
                cluster: "outbound|8083||account.shop.svc.cluster.local".into(),
                weight: 100
            }]
        }
    );
    let account = config.cluster("outbound|8083||account.shop.svc.cluster.local").expect("account cluster");
    assert_eq!(
        account.tls,
        UpstreamTls::IstioMutual {
            subject_alt_names: vec![
                "spiffe://cluster.local/ns/shop/sa/account-sa".into(),
                "spiffe://cluster.local/ns/shop/sa/account-v2".into()
            ]
        }
    );
    let endpoints: Vec<_> = config
        .endpoints_of(&account.name)
        .iter()
        .map(|e| (e.address.to_string(), e.tunnel_port, e.pod.clone()))
        .collect();
    assert_eq!(
        endpoints,
        [
            ("127.10.0.2:9083".to_owned(), Some(15006), "account-0".to_owned()),
            ("127.10.0.3:9084".into(), Some(15006), "account-1".into())
        ]
    );
    // No sidecar behind db: plaintext, straight to the pod.
    let db = config.cluster("outbound|5432||db.data.svc.cluster.local").expect("db cluster");
    assert_eq!(db.tls, UpstreamTls::Disable);
    assert_eq!(config.endpoints_of(&db.name)[0].tunnel_port, None);
    // The short name is only for the same namespace: a client elsewhere does not get it.
    let from_data = compile_for(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: db-1, namespace: data, labels: {app: other}}\nspec: {containers: [{name: a}]}\nstatus: {podIP: 127.10.0.9}\n",
        "data",
        "db-1",
        ProxyKind::Sidecar,
    );
    let vhost = &from_data.routes[0].virtual_hosts[0];
    assert!(!vhost.domains.iter().any(|d| d == "account" || d == "account:8083"), "{:?}", vhost.domains);
}

#[test]
fn destination_rule_disable_and_subsets() {
    let dr = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: account, namespace: shop}
spec:
  host: account
  trafficPolicy: {tls: {mode: DISABLE}}
  subsets:
  - {name: v2, labels: {version: v2}, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: account, namespace: shop}
spec:
  hosts: [account]
  http:
  - name: canary
    match: [{headers: {x-canary: {exact: "true"}}}]
    route: [{destination: {host: account, subset: v2}}]
  - name: rest
    route: [{destination: {host: account}}]
"#;
    let config = compile_for(dr, "shop", "client-0", ProxyKind::Sidecar);
    assert_eq!(
        config.cluster("outbound|8083||account.shop.svc.cluster.local").expect("plain").tls,
        UpstreamTls::Disable
    );
    let v2 = config.cluster("outbound|8083|v2|account.shop.svc.cluster.local").expect("subset cluster");
    assert_eq!(
        v2.tls,
        UpstreamTls::IstioMutual {
            subject_alt_names: vec!["spiffe://cluster.local/ns/shop/sa/account-v2".into()]
        }
    );
    assert_eq!(config.endpoints_of(&v2.name).len(), 1);
    let routes = &config.routes[0].virtual_hosts[0].routes;
    assert_eq!(routes.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["canary", "rest"]);
    assert_eq!(routes[0].matches[0].headers[0].value, Some(StringMatch::Exact("true".into())));
    assert!(routes[1].matches.is_empty());
}

#[test]
fn peer_authentication_precedence() {
    // Mesh default, nothing written.
    let config = compile_for("", "shop", "account-0", ProxyKind::Sidecar);
    assert_eq!(chains(&config), [(9083, vec![8083], MtlsMode::Permissive, "mesh default".to_owned())]);

    let policies = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns-unset, namespace: shop}
spec: {mtls: {mode: UNSET}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: account, namespace: shop}
spec:
  selector: {matchLabels: {app: account}}
  portLevelMtls:
    9083: {mode: DISABLE}
    8083: {mode: PERMISSIVE}
"#;
    // Namespace UNSET inherits the mesh's STRICT; the port-level entry is keyed by the container
    // port (9083), so the Service port key (8083) does nothing.
    let config = compile_for(policies, "shop", "account-0", ProxyKind::Sidecar);
    assert_eq!(chains(&config), [(9083, vec![8083], MtlsMode::Disable, "shop/account".to_owned())]);
    let config = compile_for(policies, "shop", "account-1", ProxyKind::Sidecar);
    assert_eq!(chains(&config), [(9084, vec![8083], MtlsMode::Strict, "istio-system/mesh".to_owned())]);

    // A port-level UNSET inherits the workload level, which itself is PERMISSIVE here.
    let unset = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: account, namespace: shop}
spec:
  selector: {matchLabels: {app: account}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls:
    9083: {mode: UNSET}
"#;
    let store = load(&format!("{BASE}\n---\n{unset}"));
    let labels = [("app".to_owned(), "account".to_owned())].into();
    let decision = peer_authn::resolve(&store, "istio-system", "shop", &labels, 9083);
    assert_eq!((decision.mode, decision.policy.as_str()), (MtlsMode::Permissive, "shop/account"));
    let other = [("app".to_owned(), "client".to_owned())].into();
    let decision = peer_authn::resolve(&store, "istio-system", "shop", &other, 9083);
    assert_eq!((decision.mode, decision.policy.as_str()), (MtlsMode::Strict, "shop/ns"));
    // A selector policy in the root namespace applies to nobody.
    let root_selector = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: sel, namespace: istio-system}\nspec: {selector: {matchLabels: {app: account}}, mtls: {mode: DISABLE}}\n";
    let store = load(&format!("{BASE}\n---\n{root_selector}"));
    let decision = peer_authn::resolve(&store, "istio-system", "shop", &labels, 9083);
    assert_eq!((decision.mode, decision.policy.as_str()), (MtlsMode::Permissive, peer_authn::MESH_DEFAULT));
}

const GATEWAY: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: ingress-0
  namespace: istio-system
  labels: {istio: ingressgateway}
  annotations: {paymesh.io/sidecar: "true"}
spec: {serviceAccountName: istio-ingressgateway-service-account, containers: [{name: proxy}]}
status: {podIP: 127.10.0.100}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["shop/*"]
  - port: {number: 443, name: https, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: shop-tls}
    hosts: ["shop/*"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: account, namespace: shop}
spec:
  host: account.shop.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [shop/web]
  http:
  - name: debug-query
    match: [{queryParams: {debug: {exact: "1"}}}]
    route: [{destination: {host: account, port: {number: 8083}}}]
  - name: split
    match: [{uri: {prefix: /v1}, withoutHeaders: {x-tenant: {regex: "gold|platinum"}}}]
    route:
    - {destination: {host: account, subset: v1, port: {number: 8083}}, weight: 90}
    - {destination: {host: account, subset: v2, port: {number: 8083}}, weight: 10}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mesh-only, namespace: shop}
spec:
  hosts: [account]
  http:
  - route: [{destination: {host: account}}]
"#;

#[test]
fn gateway_listeners_and_routes() {
    let config = compile_for(GATEWAY, "istio-system", "ingress-0", ProxyKind::Gateway);
    assert_eq!(
        config.node.identity,
        "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
    );
    let listeners: Vec<_> =
        config.listeners.iter().map(|l| (l.name.clone(), l.address.to_string())).collect();
    assert_eq!(
        listeners,
        [
            ("0.0.0.0_8080".to_owned(), "127.10.0.100:8080".to_owned()),
            ("0.0.0.0_8443".into(), "127.10.0.100:8443".into())
        ]
    );
    let ListenerKind::Gateway { servers } = &config.listeners[1].kind else { panic!("gateway kind") };
    let tls = servers[0].tls.as_ref().expect("https server has TLS");
    assert_eq!(tls.cert_file, "/state/credentials/shop-tls/tls.crt");
    assert_eq!(tls.key_file, "/state/credentials/shop-tls/tls.key");
    assert_eq!(servers[0].gateway, "shop/web");
    assert_eq!(servers[0].hosts, ["*"]);
    let route = config.routes.iter().find(|r| r.name == "http.8080").expect("http.8080");
    assert_eq!(route.virtual_hosts.len(), 1, "only the gateway-bound VirtualService");
    let vhost = &route.virtual_hosts[0];
    assert_eq!(vhost.domains, ["*"]);
    assert_eq!(vhost.routes.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["debug-query", "split"]);
    let query = &vhost.routes[0].matches[0].query_params;
    assert_eq!((query[0].name.as_str(), &query[0].value), ("debug", &Some(StringMatch::Exact("1".into()))));
    let split = &vhost.routes[1];
    assert_eq!(split.matches[0].uri, Some(StringMatch::Prefix("/v1".into())));
    assert!(split.matches[0].headers[0].invert);
    assert_eq!(
        split.action,
        RouteAction::Forward {
            clusters: vec![
                WeightedCluster {
                    cluster: "outbound|8083|v1|account.shop.svc.cluster.local".into(),
                    weight: 90
                },
                WeightedCluster {
                    cluster: "outbound|8083|v2|account.shop.svc.cluster.local".into(),
                    weight: 10
                },
            ]
        }
    );
    let v1 = config.endpoints_of("outbound|8083|v1|account.shop.svc.cluster.local");
    assert_eq!(v1.iter().map(|e| e.pod.as_str()).collect::<Vec<_>>(), ["account-0"]);
    let v2 = config.endpoints_of("outbound|8083|v2|account.shop.svc.cluster.local");
    assert_eq!(v2.iter().map(|e| e.pod.as_str()).collect::<Vec<_>>(), ["account-1"]);
}

#[test]
fn sidecar_resource_narrows_egress() {
    let sidecar = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: shop}\nspec: {egress: [{hosts: [\"./*\"]}]}\n";
    let config = compile_for(sidecar, "shop", "client-0", ProxyKind::Sidecar);
    let services: Vec<_> = config.clusters.iter().map(|c| c.service.as_str()).collect();
    assert_eq!(services, ["account.shop.svc.cluster.local"]);
}

#[test]
fn unknown_pod_is_an_error() {
    let store = load(BASE);
    let registry = Registry::new(&store, "cluster.local", WorkloadSource::Pods);
    let err = compile::compile(&store, &registry, &settings(), "shop", "nope", ProxyKind::Sidecar, 1)
        .expect_err("unknown");
    assert_eq!(err.to_string(), "pod shop/nope is not in the registry");
}

#[test]
fn a_tcp_route_splits_the_port_between_subsets() {
    let extra = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: data}
spec:
  host: db.data.svc.cluster.local
  subsets: [{name: primary, labels: {app: db}}, {name: replica, labels: {app: db}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: data}
spec:
  hosts: [db.data.svc.cluster.local]
  tcp:
  - match: [{port: 5432}]
    route:
    - {destination: {host: db.data.svc.cluster.local, subset: primary}, weight: 80}
    - {destination: {host: db.data.svc.cluster.local, subset: replica}, weight: 20}
"#;
    let config = compile_for(extra, "shop", "client-0", ProxyKind::Sidecar);
    let ListenerKind::Outbound { tcp } = &config.listeners[0].kind else { panic!("outbound kind") };
    let split: Vec<(&str, u32)> = tcp[0].clusters.iter().map(|w| (w.cluster.as_str(), w.weight)).collect();
    assert_eq!(
        split,
        [
            ("outbound|5432|primary|db.data.svc.cluster.local", 80),
            ("outbound|5432|replica|db.data.svc.cluster.local", 20)
        ]
    );
    assert_eq!(tcp[0].virtual_service.as_deref(), Some("data/db"));
}
