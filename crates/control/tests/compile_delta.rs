//! Deltas as the push server builds them (a scope's outbound part diffed once, the proxy's head
//! spliced in), checked as a property over a set of config changes: for every pair of configs
//! (base, new) and every proxy, the base config + the delta applied is byte for byte the full
//! compile of the new config (same order too), the spliced delta is the bytes
//! `ConfigDelta::encode` writes for it, and a change a proxy cannot see gives no delta at all.

use paymesh_api::ConfigDelta;
use paymesh_api::model::{ProxyConfig, ProxyKind};
use paymesh_config::Store;
use paymesh_control::compile::Inputs;
use paymesh_control::compile::scope::{Outbound, OutboundDelta, SidecarHead};
use paymesh_control::registry::{Registry, WorkloadSource};

#[path = "support/fixture.rs"]
mod fixture;

use fixture::{compile_store, load, settings};

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: account, namespace: shop}
spec:
  selector: {app: account}
  ports: [{name: http, port: 8083, targetPort: 9083}]
---
apiVersion: v1
kind: Service
metadata: {name: ledger, namespace: shop}
spec:
  selector: {app: ledger}
  ports: [{name: http, port: 8090, targetPort: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  selector: {app: db}
  ports: [{name: tcp-pg, port: 5432}]
"#;

const PODS: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: account-0, namespace: shop, labels: {app: account, version: v1}, annotations: {paymesh.io/sidecar: "true"}}
  spec: {serviceAccountName: account, containers: [{name: app, ports: [{containerPort: 9083}]}]}
  status: {podIP: 127.10.0.2}
- apiVersion: v1
  kind: Pod
  metadata: {name: ledger-0, namespace: shop, labels: {app: ledger}, annotations: {paymesh.io/sidecar: "true"}}
  spec: {serviceAccountName: ledger, containers: [{name: app, ports: [{containerPort: 9090}]}]}
  status: {podIP: 127.10.0.3}
- apiVersion: v1
  kind: Pod
  metadata: {name: client-0, namespace: shop, labels: {app: client}, annotations: {paymesh.io/sidecar: "true"}}
  spec: {serviceAccountName: client, containers: [{name: app}]}
  status: {podIP: 127.10.0.4}
- apiVersion: v1
  kind: Pod
  metadata: {name: canary-0, namespace: shop, labels: {app: client, track: canary}, annotations: {paymesh.io/sidecar: "true"}}
  spec: {serviceAccountName: client, containers: [{name: app}]}
  status: {podIP: 127.10.0.5}
- apiVersion: v1
  kind: Pod
  metadata: {name: db-0, namespace: data, labels: {app: db}, annotations: {paymesh.io/sidecar: "true"}}
  spec: {serviceAccountName: db, containers: [{name: db, ports: [{containerPort: 5432}]}]}
  status: {podIP: 127.10.0.6}
"#;

/// A Service whose name sorts between the others, so its clusters land in the middle.
const BILLING: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: billing, namespace: shop}
spec:
  selector: {app: account}
  ports: [{name: http, port: 8085, targetPort: 9083}]
"#;

/// A Service on account's port: one more virtual host in route config 8083.
const AUDIT: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: audit, namespace: shop}
spec:
  selector: {app: ledger}
  ports: [{name: http, port: 8083, targetPort: 9090}]
"#;

/// One more account endpoint.
const ACCOUNT_1: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: account-1, namespace: shop, labels: {app: account, version: v2}, annotations: {paymesh.io/sidecar: "true"}}
spec: {serviceAccountName: account, containers: [{name: app, ports: [{containerPort: 9083}]}]}
status: {podIP: 127.10.0.7}
"#;

const SUBSETS: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: account, namespace: shop}
spec:
  host: account
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

const SUBSETS_DISABLED: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: account, namespace: shop}
spec:
  host: account
  trafficPolicy: {tls: {mode: DISABLE}}
  subsets:
  - {name: v2, labels: {version: v2}}
"#;

const CANARY_SPLIT: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: account, namespace: shop}
spec:
  hosts: [account]
  http:
  - match: [{sourceLabels: {track: canary}}]
    route: [{destination: {host: account, subset: v2}}]
  - route:
    - {destination: {host: account, subset: v1}, weight: 90}
    - {destination: {host: account, subset: v2}, weight: 10}
"#;

const ALL_V2: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: account, namespace: shop}
spec:
  hosts: [account]
  http:
  - route: [{destination: {host: account, subset: v2}}]
"#;

/// Shop's proxies see only their own namespace.
const SHOP_SIDECAR: &str = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress: [{hosts: ["./*"]}]
"#;

const PROXIES: [(&str, &str); 5] = [
    ("shop", "account-0"),
    ("shop", "ledger-0"),
    ("shop", "client-0"),
    ("shop", "canary-0"),
    ("data", "db-0"),
];

/// The configs of the property: each a named change of the one before or of the base.
fn configs() -> Vec<(&'static str, String)> {
    let base = format!("{SERVICES}\n---\n{PODS}");
    let without_ledger = base.replace("name: ledger, namespace: shop}\nspec:\n  selector: {app: ledger}\n  ports: [{name: http, port: 8090, targetPort: 9090}]", "name: ledger, namespace: other}\nspec:\n  selector: {app: nothing}\n  ports: [{name: http, port: 8090, targetPort: 9090}]");
    let relabelled = base.replace("labels: {app: ledger}", "labels: {app: account, version: v2}");
    let moved_port = base.replace(
        "containerPort: 9083}]}]}\n  status: {podIP: 127.10.0.2}",
        "containerPort: 9084}]}]}\n  status: {podIP: 127.10.0.2}",
    );
    vec![
        ("base", base.clone()),
        ("+Service billing", format!("{base}\n---\n{BILLING}")),
        ("-Service ledger", without_ledger),
        ("+Service audit on account's port", format!("{base}\n---\n{AUDIT}")),
        ("+endpoint account-1", format!("{base}\n---\n{ACCOUNT_1}")),
        ("ledger-0 relabelled into account", relabelled),
        ("account-0's container port", moved_port),
        ("+DestinationRule subsets", format!("{base}\n---\n{ACCOUNT_1}\n---\n{SUBSETS}")),
        (
            "+VirtualService canary split",
            format!("{base}\n---\n{ACCOUNT_1}\n---\n{SUBSETS}\n---\n{CANARY_SPLIT}"),
        ),
        ("VirtualService all to v2", format!("{base}\n---\n{ACCOUNT_1}\n---\n{SUBSETS}\n---\n{ALL_V2}")),
        (
            "DestinationRule: TLS off, v1 gone",
            format!("{base}\n---\n{ACCOUNT_1}\n---\n{SUBSETS_DISABLED}\n---\n{ALL_V2}"),
        ),
        (
            "+Sidecar in shop",
            format!("{base}\n---\n{ACCOUNT_1}\n---\n{SUBSETS}\n---\n{CANARY_SPLIT}\n---\n{SHOP_SIDECAR}"),
        ),
    ]
}

/// One proxy at one config: the full compile, and the push server's parts.
struct Compiled {
    whole: ProxyConfig,
    head: SidecarHead,
    outbound: Outbound,
}

fn compiled(store: &Store, (namespace, pod): (&str, &str), version: u64) -> Compiled {
    let registry = Registry::new(store, "cluster.local", WorkloadSource::Pods);
    let settings = settings();
    let whole = compile_store(store, namespace, pod, ProxyKind::Sidecar, version);
    let proxy = registry.workload(namespace, pod).expect("pod");
    let outbound = Outbound::compile(&Inputs { store, registry: &registry, settings: &settings, proxy })
        .expect("outbound");
    let head = SidecarHead::compile(store, &registry, &settings, namespace, pod, &outbound).expect("head");
    Compiled { whole, head, outbound }
}

#[test]
fn base_plus_delta_is_the_full_compile_for_every_change_and_proxy() {
    let configs: Vec<(&str, Store)> = configs().into_iter().map(|(name, yaml)| (name, load(&yaml))).collect();
    let (mut deltas, mut empty) = (0, 0);
    for (i, (base_name, base_store)) in configs.iter().enumerate() {
        for (j, (new_name, new_store)) in configs.iter().enumerate().filter(|(j, _)| *j != i) {
            for proxy in PROXIES {
                let context = format!("{}/{}: {base_name} -> {new_name}", proxy.0, proxy.1);
                let base = compiled(base_store, proxy, i as u64 + 1);
                let new = compiled(new_store, proxy, j as u64 + 1);
                let shared = OutboundDelta::between(&base.outbound, &new.outbound).expect("a delta");
                let spliced = new.head.delta(&new.whole.version, &base.head, &shared).expect("splices");
                let typed = ConfigDelta::between(&base.whole, &new.whole).expect("typed delta");
                let Some(spliced) = spliced else {
                    assert!(typed.is_empty(), "{context}: no delta spliced, but the configs differ");
                    assert_eq!(
                        ProxyConfig { version: base.whole.version.clone(), ..new.whole.clone() },
                        base.whole,
                        "{context}"
                    );
                    empty += 1;
                    continue;
                };
                deltas += 1;
                assert_eq!(
                    String::from_utf8(spliced.clone()).expect("utf-8"),
                    String::from_utf8(typed.encode().expect("encodes")).expect("utf-8"),
                    "{context}: the spliced delta is ConfigDelta's encoding"
                );
                let applied =
                    ConfigDelta::decode(&spliced).expect("decodes").apply(&base.whole).expect("applies");
                assert_eq!(
                    String::from_utf8(applied.encode().expect("encodes")).expect("utf-8"),
                    String::from_utf8(new.whole.encode().expect("encodes")).expect("utf-8"),
                    "{context}: base + delta is the full compile"
                );
            }
        }
    }
    let pairs = configs.len() * (configs.len() - 1) * PROXIES.len();
    assert_eq!(deltas + empty, pairs);
    assert!(deltas > pairs / 2 && empty > 0, "{deltas} deltas, {empty} unchanged");
}

#[test]
fn a_new_service_is_a_delta_of_its_own_items_placed_in_order() {
    let base = compiled(&load(&format!("{SERVICES}\n---\n{PODS}")), ("shop", "client-0"), 1);
    let new = compiled(&load(&format!("{SERVICES}\n---\n{PODS}\n---\n{BILLING}")), ("shop", "client-0"), 2);
    let shared = OutboundDelta::between(&base.outbound, &new.outbound).expect("a delta");
    let json = new.head.delta("2", &base.head, &shared).expect("splices").expect("a change");
    let delta = ConfigDelta::decode(&json).expect("decodes");
    assert_eq!(
        delta.clusters.upsert.iter().map(|p| (p.at, p.item.name.clone())).collect::<Vec<_>>(),
        [(2, "outbound|8085||billing.shop.svc.cluster.local".to_owned())],
        "by name: db's 5432, account's 8083, then billing's 8085"
    );
    assert_eq!(delta.endpoints.upsert.len(), 1);
    assert_eq!(delta.routes.upsert.iter().map(|p| p.item.name.as_str()).collect::<Vec<_>>(), ["8085"]);
    assert!(delta.clusters.remove.is_empty() && delta.node.is_none() && delta.mesh.is_none());
    assert!(delta.listeners.is_empty(), "client-0's listeners did not change");
    assert!(json.len() * 2 < new.whole.encode().expect("encodes").len(), "{} bytes", json.len());
}

#[test]
fn a_service_on_a_shared_port_sends_one_virtual_host_not_the_route_config() {
    let base = compiled(&load(&format!("{SERVICES}\n---\n{PODS}")), ("shop", "client-0"), 1);
    let new = compiled(&load(&format!("{SERVICES}\n---\n{PODS}\n---\n{AUDIT}")), ("shop", "client-0"), 2);
    let shared = OutboundDelta::between(&base.outbound, &new.outbound).expect("a delta");
    let json = new.head.delta("2", &base.head, &shared).expect("splices").expect("a change");
    let delta = ConfigDelta::decode(&json).expect("decodes");
    assert!(delta.routes.is_empty(), "route config 8083 stays: {:?}", delta.routes);
    assert_eq!(delta.virtual_hosts.len(), 1);
    assert_eq!(delta.virtual_hosts[0].route, "8083");
    let hosts: Vec<(u32, &str)> =
        delta.virtual_hosts[0].virtual_hosts.upsert.iter().map(|p| (p.at, p.item.name.as_str())).collect();
    assert_eq!(hosts, [(1, "audit.shop.svc.cluster.local:8083")], "after account's");
    let applied = delta.apply(&base.whole).expect("applies");
    assert_eq!(applied.encode().expect("encodes"), new.whole.encode().expect("encodes"));
}
