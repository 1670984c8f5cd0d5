//! The compiler against Istio's rules for traffic policy: per-endpoint auto mTLS, proxy-side
//! match conditions, no default route under a VirtualService, route headers, wildcard hosts,
//! Sidecar egress ports, gateway host binding and TLS, `h2UpgradePolicy`, and the `unsupported`
//! list.

use std::path::Path;

use paymesh_api::model::{
    H2Upgrade, ListenerKind, ProxyConfig, ProxyKind, Route, RouteAction, UpstreamTls, VirtualHost,
};
use paymesh_config::{Loaded, Store};
use paymesh_control::compile::unsupported::{Unsupported, scan};

#[path = "support/fixture.rs"]
mod fixture;

use fixture::{compile_store, load};

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
  ports: [{name: http, port: 8083, targetPort: 9083}]
---
apiVersion: v1
kind: Service
metadata: {name: multi, namespace: shop}
spec:
  selector: {app: account}
  ports: [{name: http, port: 80, targetPort: 9083}, {name: http-alt, port: 8083, targetPort: 9083}]
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: account-0, namespace: shop, labels: {app: account, version: v1}, annotations: {paymesh.io/sidecar: "true"}}
  spec: {serviceAccountName: account-sa, containers: [{name: app, ports: [{containerPort: 9083}]}]}
  status: {podIP: 127.11.0.2}
- apiVersion: v1
  kind: Pod
  metadata: {name: account-1, namespace: shop, labels: {app: account, version: v2}, annotations: {paymesh.io/sidecar: "true"}}
  spec: {serviceAccountName: account-v2, containers: [{name: app, ports: [{containerPort: 9083}]}]}
  status: {podIP: 127.11.0.3}
- apiVersion: v1
  kind: Pod
  metadata: {name: account-2, namespace: shop, labels: {app: account, version: v3}}
  spec: {serviceAccountName: legacy, containers: [{name: app, ports: [{containerPort: 9083}]}]}
  status: {podIP: 127.11.0.4}
- apiVersion: v1
  kind: Pod
  metadata: {name: client-0, namespace: shop, labels: {app: client}, annotations: {paymesh.io/sidecar: "true"}}
  spec: {serviceAccountName: client, containers: [{name: app}]}
  status: {podIP: 127.11.0.5}
- apiVersion: v1
  kind: Pod
  metadata: {name: ingress-0, namespace: istio-system, labels: {istio: ingressgateway}, annotations: {paymesh.io/sidecar: "true"}}
  spec: {serviceAccountName: ingress, containers: [{name: proxy}]}
  status: {podIP: 127.11.0.100}
"#;

fn sidecar(extra: &str) -> ProxyConfig {
    compile_store(&load(&format!("{BASE}\n---\n{extra}")), "shop", "client-0", ProxyKind::Sidecar, 1)
}

fn vhost<'a>(config: &'a ProxyConfig, route: &str, name: &str) -> &'a VirtualHost {
    let route = config.routes.iter().find(|r| r.name == route).expect("route config");
    route.virtual_hosts.iter().find(|v| v.name == name).expect("virtual host")
}

fn route_names(routes: &[Route]) -> Vec<&str> {
    routes.iter().map(|r| r.name.as_str()).collect()
}

const ACCOUNT: &str = "outbound|8083||account.shop.svc.cluster.local";

fn tunnels(config: &ProxyConfig, cluster: &str) -> Vec<(String, Option<u16>)> {
    config.endpoints_of(cluster).iter().map(|e| (e.pod.clone(), e.tunnel_port)).collect()
}

#[test]
fn auto_mtls_is_decided_per_endpoint() {
    // account-1's PeerAuthentication disables mTLS; account-2 has no sidecar.
    let disable_v2 = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: v2, namespace: shop}\nspec: {selector: {matchLabels: {version: v2}}, mtls: {mode: DISABLE}}\n";
    let config = sidecar(disable_v2);
    assert_eq!(
        tunnels(&config, ACCOUNT),
        [("account-0".to_owned(), Some(15006)), ("account-1".into(), None), ("account-2".into(), None)]
    );
    assert_eq!(
        config.cluster(ACCOUNT).expect("cluster").tls,
        UpstreamTls::IstioMutual {
            subject_alt_names: vec!["spiffe://cluster.local/ns/shop/sa/account-sa".into()]
        }
    );

    let dr = |mode: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: account, namespace: shop}}\nspec: {{host: account, trafficPolicy: {{tls: {{mode: {mode}}}}}}}\n---\n{disable_v2}"
        )
    };
    let disabled = sidecar(&dr("DISABLE"));
    assert!(tunnels(&disabled, ACCOUNT).iter().all(|(_, t)| t.is_none()));
    assert_eq!(disabled.cluster(ACCOUNT).expect("cluster").tls, UpstreamTls::Disable);
    let mutual = sidecar(&dr("ISTIO_MUTUAL"));
    assert!(tunnels(&mutual, ACCOUNT).iter().all(|(_, t)| *t == Some(15006)));
}

#[test]
fn h2_upgrade_policy_follows_the_most_specific_connection_pool() {
    let upgrade = |config: &ProxyConfig, cluster: &str| config.cluster(cluster).expect(cluster).h2_upgrade;
    // Without a rule, Istio's mesh-wide default: HTTP/1.1 stays HTTP/1.1.
    assert_eq!(upgrade(&sidecar(""), ACCOUNT), H2Upgrade::DoNotUpgrade);
    // The rule upgrades; subset v2 keeps HTTP/1.1 again; port 8083 of `multi` upgrades by its
    // port-level pool while port 80 takes the rule's DEFAULT (the mesh default).
    let rules = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: account, namespace: shop}
spec:
  host: account
  trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}, trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: DO_NOT_UPGRADE}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: multi, namespace: shop}
spec:
  host: multi
  trafficPolicy:
    connectionPool: {http: {h2UpgradePolicy: DEFAULT}}
    portLevelSettings: [{port: {number: 8083}, connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}]
"#;
    let config = sidecar(rules);
    assert_eq!(upgrade(&config, ACCOUNT), H2Upgrade::Upgrade);
    assert_eq!(upgrade(&config, "outbound|8083|v1|account.shop.svc.cluster.local"), H2Upgrade::Upgrade);
    assert_eq!(upgrade(&config, "outbound|8083|v2|account.shop.svc.cluster.local"), H2Upgrade::DoNotUpgrade);
    assert_eq!(upgrade(&config, "outbound|8083||multi.shop.svc.cluster.local"), H2Upgrade::Upgrade);
    assert_eq!(upgrade(&config, "outbound|80||multi.shop.svc.cluster.local"), H2Upgrade::DoNotUpgrade);
    // Applied, so not listed as unsupported; a limit beside it still is.
    let listed = |extra: &str| -> Vec<String> {
        scan(&load(&format!("{BASE}\n---\n{extra}"))).into_iter().map(|u| u.field).collect()
    };
    assert!(!listed(rules).iter().any(|f| f.contains("connectionPool")), "{:?}", listed(rules));
    let with_gap =
        rules.replace("h2UpgradePolicy: DEFAULT}", "h2UpgradePolicy: DEFAULT, maxConcurrentStreams: 2}");
    assert_eq!(
        listed(&with_gap).iter().filter(|f| f.contains("connectionPool")).collect::<Vec<_>>(),
        ["spec.trafficPolicy.connectionPool.http.maxConcurrentStreams"]
    );
}

#[test]
fn wildcard_destination_rules_apply_and_exact_hosts_win() {
    let wildcard = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: all, namespace: shop}\nspec: {host: \"*.shop.svc.cluster.local\", trafficPolicy: {tls: {mode: DISABLE}}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: local, namespace: shop}\nspec: {host: \"*.local\", trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n";
    let config = sidecar(wildcard);
    assert_eq!(config.cluster(ACCOUNT).expect("cluster").tls, UpstreamTls::Disable);
    let exact = format!(
        "{wildcard}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: account, namespace: shop}}\nspec: {{host: account, trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}}}\n"
    );
    let config = sidecar(&exact);
    assert!(matches!(config.cluster(ACCOUNT).expect("cluster").tls, UpstreamTls::IstioMutual { .. }));
}

const RULES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: account, namespace: shop}
spec:
  hosts: ["*.shop.svc.cluster.local"]
  http:
  - name: from-other
    match: [{sourceLabels: {app: other}}]
    route: [{destination: {host: account}}]
  - name: other-namespace
    match: [{sourceNamespace: elsewhere}]
    route: [{destination: {host: account}}]
  - name: other-port
    match: [{port: 9999}]
    route: [{destination: {host: account}}]
  - name: from-client
    match: [{sourceLabels: {app: client}, sourceNamespace: shop, port: 8083, uri: {prefix: /v1}}]
    headers:
      request: {remove: [X-Fault-Test], set: {x-route: client}}
    route:
    - destination: {host: account}
      headers: {response: {add: {x-served-by: account}}}
    timeout: 5s
    retries: {attempts: 2}
"#;

#[test]
fn proxy_side_conditions_are_evaluated_and_no_default_route_is_added() {
    let config = sidecar(RULES);
    let account = vhost(&config, "8083", "account.shop.svc.cluster.local:8083");
    assert_eq!(route_names(&account.routes), ["from-client"], "only the rule for this proxy and port");
    let route = &account.routes[0];
    assert_eq!(route.matches.len(), 1);
    assert!(route.matches[0].uri.is_some());
    assert_eq!(route.headers.request.remove, ["x-fault-test"]);
    assert_eq!(route.headers.request.set.get("x-route").map(String::as_str), Some("client"));
    assert_eq!(route.headers.response.add.get("x-served-by").map(String::as_str), Some("account"));
    // The wildcard VirtualService applies to multi too: on port 80 no rule matches, and
    // there is no default route either (Istio answers 404 NR).
    let multi = vhost(&config, "80", "multi.shop.svc.cluster.local:80");
    assert!(multi.routes.is_empty(), "{:?}", multi.routes);
    // Without a VirtualService the default route stays.
    let plain = sidecar("");
    assert_eq!(route_names(&vhost(&plain, "80", "multi.shop.svc.cluster.local:80").routes), ["default"]);
}

#[test]
fn destination_port_is_explicit_else_the_only_port_else_the_listener_port() {
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: multi, namespace: shop}\nspec:\n  hosts: [multi]\n  http:\n  - name: to-account\n    match: [{uri: {prefix: /a}}]\n    route: [{destination: {host: account}}]\n  - name: same-port\n    route: [{destination: {host: multi}}]\n";
    let config = sidecar(vs);
    let on_80 = vhost(&config, "80", "multi.shop.svc.cluster.local:80");
    let clusters: Vec<String> = on_80
        .routes
        .iter()
        .map(|r| match &r.action {
            RouteAction::Forward { clusters } => clusters[0].cluster.clone(),
            other => panic!("forward expected: {other:?}"),
        })
        .collect();
    assert_eq!(clusters, [ACCOUNT, "outbound|80||multi.shop.svc.cluster.local"]);
}

#[test]
fn sidecar_egress_listener_ports_narrow_services() {
    let sidecar_resource = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: shop}\nspec: {egress: [{port: {number: 80, protocol: HTTP, name: http}, hosts: [\"./*\"]}]}\n";
    let config = sidecar(sidecar_resource);
    let clusters: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(clusters, ["outbound|80||multi.shop.svc.cluster.local"]);
}

const GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [api.example.com]
  - port: {number: 80, name: http-2, protocol: HTTP}
    hosts: ["shop/api.example.com"]
  - port: {number: 443, name: https, protocol: HTTPS}
    tls: {mode: MUTUAL, credentialName: shop-tls}
    hosts: ["*"]
  - port: {number: 444, name: https-bad, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: ../../etc}
    hosts: ["*"]
  - port: {number: 445, name: https-ok, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: shop-tls}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [web]
  http:
  - name: all
    route: [{destination: {host: account}}]
"#;

#[test]
fn gateway_binds_hosts_dedupes_and_serves_only_valid_simple_tls() {
    let store = load(&format!("{BASE}\n---\n{GATEWAY}"));
    let config = compile_store(&store, "istio-system", "ingress-0", ProxyKind::Gateway, 1);
    let listeners: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(listeners, ["0.0.0.0_8080", "0.0.0.0_8445"], "MUTUAL and a bad credentialName are skipped");
    let ListenerKind::Gateway { servers } = &config.listeners[1].kind else { panic!("gateway kind") };
    let tls = servers[0].tls.as_ref().expect("SIMPLE is served");
    assert_eq!(tls.cert_file, "/state/credentials/shop-tls/tls.crt");
    let http = config.routes.iter().find(|r| r.name == "http.8080").expect("http.8080");
    assert_eq!(http.virtual_hosts.len(), 1, "{:?}", http.virtual_hosts);
    let vhost = &http.virtual_hosts[0];
    assert_eq!(vhost.domains, ["api.example.com", "api.example.com:8080"]);
    assert_eq!(route_names(&vhost.routes), ["all"], "added once though two servers admit it");

    let unsupported = scan(&store);
    let fields: Vec<&str> = unsupported.iter().map(|u| u.field.as_str()).collect();
    assert_eq!(fields, ["spec.servers[2].tls", "spec.servers[3].tls"]);
    assert_eq!(unsupported[0].resource, "Gateway shop/web");
}

#[test]
fn unsupported_fields_are_listed_with_their_path() {
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ext, namespace: shop}\nspec: {host: account, trafficPolicy: {portLevelSettings: [{port: {number: 8083}, tls: {mode: SIMPLE}}]}}\n";
    let store = load(&format!("{BASE}\n---\n{RULES}\n---\n{dr}"));
    assert_eq!(
        scan(&store),
        // The rules' timeouts and retries are applied, so only TLS origination is listed.
        [Unsupported {
            resource: "DestinationRule shop/ext".into(),
            field: "spec.trafficPolicy.portLevelSettings[0].tls.mode".into(),
            reason: "not implemented: TLS origination".into(),
        },]
    );
}

#[test]
fn the_repository_gateway_removes_x_fault_test() {
    let k8s = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../k8s");
    let Loaded { mut resources, errors } = paymesh_config::load::load_paths(&[k8s]);
    assert!(errors.is_empty(), "{errors:?}");
    let ingress = "apiVersion: v1\nkind: Pod\nmetadata: {name: ingress-0, namespace: istio-system, labels: {istio: ingressgateway}, annotations: {paymesh.io/sidecar: \"true\"}}\nspec: {serviceAccountName: ingress, containers: [{name: proxy}]}\nstatus: {podIP: 127.11.0.100}\n";
    resources.extend(load(ingress).iter().cloned());
    let store = Store::new(resources).0;
    let config = compile_store(&store, "istio-system", "ingress-0", ProxyKind::Gateway, 1);
    let http = config.routes.iter().find(|r| r.name == "http.8080").expect("http.8080");
    let routes: Vec<&Route> = http.virtual_hosts.iter().flat_map(|v| &v.routes).collect();
    let opt_in = routes.iter().find(|r| r.name == "canary-opt-in").expect("canary-opt-in compiled");
    assert_eq!(opt_in.headers.request.remove, ["x-fault-test"]);
    // Every traffic field of the repository's VirtualServices and DestinationRules is applied.
    let fields: Vec<String> = scan(&store).iter().map(|u| format!("{} {}", u.resource, u.field)).collect();
    assert!(
        !fields.iter().any(|f| f.starts_with("VirtualService") || f.starts_with("DestinationRule")),
        "{fields:?}"
    );
}

#[test]
fn policies_the_proxies_do_not_enforce_yet_are_listed() {
    let extra = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all, namespace: shop}\nspec: {}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: pool, namespace: shop}\nspec: {host: account, trafficPolicy: {connectionPool: {tcp: {maxConnections: 1, tcpKeepalive: {probes: 3}}}, loadBalancer: {localityLbSetting: {enabled: true}}}}\n";
    let store = load(&format!("{BASE}\n---\n{extra}"));
    let listed: Vec<(String, String)> = scan(&store).into_iter().map(|u| (u.resource, u.field)).collect();
    for expected in [
        ("AuthorizationPolicy shop/deny-all", "spec"),
        ("DestinationRule shop/pool", "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive"),
        ("DestinationRule shop/pool", "spec.trafficPolicy.loadBalancer.localityLbSetting"),
    ] {
        assert!(
            listed.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} in {listed:?}"
        );
    }
}

#[test]
fn the_content_digest_ignores_the_version_and_sees_any_other_change() {
    let store = load(BASE);
    let at = |version| compile_store(&store, "shop", "client-0", ProxyKind::Sidecar, version);
    let (one, two) = (at(1), at(2));
    assert_ne!(one.version, two.version);
    assert_eq!(
        paymesh_control::compile::content_digest(&one),
        paymesh_control::compile::content_digest(&two)
    );
    let mut moved = two.clone();
    std::sync::Arc::make_mut(&mut moved.endpoints[0]).endpoints.pop();
    assert_ne!(
        paymesh_control::compile::content_digest(&one),
        paymesh_control::compile::content_digest(&moved)
    );
}
