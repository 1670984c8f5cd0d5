//! Sidecar snapshots spliced from a scope's shared outbound part: byte for byte what compiling
//! and encoding the whole config gives, one outbound part per scope (namespace, and the labels
//! a Sidecar selector or a `sourceLabels` match reads), and a digest that changes only for the
//! proxies whose config changed.

use paymesh_api::model::{ProxyConfig, ProxyKind};
use paymesh_config::Store;
use paymesh_control::compile::scope::{self, Encoded, Outbound, ScopeKey, label_keys};
use paymesh_control::compile::{self, Inputs};
use paymesh_control::registry::{Registry, WorkloadSource};

#[path = "support/fixture.rs"]
mod fixture;

use fixture::{compile_store, load, settings};

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: account, namespace: shop}
spec:
  selector: {app: account}
  ports:
  - {name: http, port: 8083, targetPort: 9083}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  selector: {app: db}
  ports:
  - {name: tcp-pg, port: 5432}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: account, namespace: shop}
spec:
  hosts: [account]
  http:
  - match: [{sourceLabels: {track: canary}}]
    route: [{destination: {host: account}, weight: 100}]
    headers: {request: {set: {x-canary: "1"}}}
  - route: [{destination: {host: account}}]
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: account-0, namespace: shop, labels: {app: account}, annotations: {paymesh.io/sidecar: "true"}}
  spec: {serviceAccountName: account, containers: [{name: app, ports: [{containerPort: 9083}]}]}
  status: {podIP: 127.10.0.2}
- apiVersion: v1
  kind: Pod
  metadata: {name: client-0, namespace: shop, labels: {app: client, version: v1}, annotations: {paymesh.io/sidecar: "true"}}
  spec: {serviceAccountName: client, containers: [{name: app}]}
  status: {podIP: 127.10.0.3}
- apiVersion: v1
  kind: Pod
  metadata: {name: client-1, namespace: shop, labels: {app: client, version: v2}, annotations: {paymesh.io/sidecar: "true"}}
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

/// A Sidecar in `data` that shows its proxies only their own namespace.
const DATA_SIDECAR: &str = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: data}
spec:
  egress: [{hosts: ["./*"]}]
"#;

const PODS: [(&str, &str); 5] = [
    ("shop", "account-0"),
    ("shop", "client-0"),
    ("shop", "client-1"),
    ("shop", "canary-0"),
    ("data", "db-0"),
];

/// Pod `namespace/pod`'s snapshot spliced from an outbound part compiled for `scope_of`.
fn spliced(store: &Store, registry: &Registry, scope_of: (&str, &str), pod: (&str, &str)) -> Encoded {
    let settings = settings();
    let proxy = registry.workload(scope_of.0, scope_of.1).expect("scope pod");
    let outbound = Outbound::compile(&Inputs { store, registry, settings: &settings, proxy })
        .expect("outbound compiles");
    scope::encode_sidecar(store, registry, &settings, pod.0, pod.1, 7, &outbound).expect("encodes")
}

#[test]
fn spliced_snapshots_are_the_bytes_of_the_whole_config() {
    let store = load(MESH);
    let registry = Registry::new(&store, "cluster.local", WorkloadSource::Pods);
    for (namespace, pod) in PODS {
        let whole = compile_store(&store, namespace, pod, ProxyKind::Sidecar, 7);
        let encoded = spliced(&store, &registry, (namespace, pod), (namespace, pod));
        assert_eq!(
            String::from_utf8(encoded.json.clone()).expect("utf-8"),
            String::from_utf8(whole.encode().expect("encodes")).expect("utf-8"),
            "{namespace}/{pod}"
        );
        assert_eq!(ProxyConfig::decode(&encoded.json).expect("decodes"), whole);
        assert_eq!(encoded.version, "7");
    }
}

#[test]
fn proxies_share_a_scope_only_when_nothing_they_see_can_differ() {
    let store = load(&format!("{MESH}\n---\n{DATA_SIDECAR}"));
    let registry = Registry::new(&store, "cluster.local", WorkloadSource::Pods);
    let keys = label_keys(&store);
    assert_eq!(
        keys.into_iter().collect::<Vec<_>>(),
        ["track"],
        "only sourceLabels' keys (the Sidecar has no selector)"
    );
    let keys = label_keys(&store);
    let key = |ns: &str, pod: &str| ScopeKey::of(registry.workload(ns, pod).expect("pod"), &keys);
    // `version` is read by nothing: client-0 and client-1 share; account-0 too (no `track`).
    assert_eq!(key("shop", "client-0"), key("shop", "client-1"));
    assert_eq!(key("shop", "client-0"), key("shop", "account-0"));
    assert_ne!(key("shop", "client-0"), key("shop", "canary-0"), "sourceLabels track=canary");
    assert_ne!(key("shop", "client-0"), key("data", "db-0"), "another namespace");
    // What sharing relies on: a scope's outbound part gives each member its own whole config.
    let shared = spliced(&store, &registry, ("shop", "client-0"), ("shop", "client-1"));
    let whole = compile::compile(&store, &registry, &settings(), "shop", "client-1", ProxyKind::Sidecar, 7)
        .expect("compiles");
    assert_eq!(ProxyConfig::decode(&shared.json).expect("decodes"), whole);
    let canary =
        ProxyConfig::decode(&spliced(&store, &registry, ("shop", "canary-0"), ("shop", "canary-0")).json)
            .expect("decodes");
    let route = |c: &ProxyConfig| {
        c.routes.iter().find(|r| r.name == "8083").expect("8083").virtual_hosts[0].routes.len()
    };
    assert_eq!((route(&whole), route(&canary)), (1, 2), "the canary match applies to canary-0 only");
}

#[test]
fn the_digest_changes_only_for_proxies_whose_config_changed() {
    let before = load(MESH);
    let after = load(&format!("{MESH}\n---\n{DATA_SIDECAR}"));
    let digests = |store: &Store| -> Vec<u64> {
        let registry = Registry::new(store, "cluster.local", WorkloadSource::Pods);
        PODS.iter().map(|&pod| spliced(store, &registry, pod, pod).digest).collect()
    };
    let (before, after) = (digests(&before), digests(&after));
    // The Sidecar in `data` narrows db-0's view; the `shop` proxies see what they saw.
    assert_eq!(before[..4], after[..4], "shop's proxies are not pushed");
    assert_ne!(before[4], after[4], "db-0 is pushed");
    // The version alone is no change.
    let store = load(MESH);
    let registry = Registry::new(&store, "cluster.local", WorkloadSource::Pods);
    let settings = settings();
    let proxy = registry.workload("shop", "client-0").expect("pod");
    let outbound =
        Outbound::compile(&Inputs { store: &store, registry: &registry, settings: &settings, proxy })
            .expect("outbound");
    let at = |version: &str| {
        scope::encode_sidecar(&store, &registry, &settings, "shop", "client-0", version, &outbound)
            .expect("encodes")
    };
    assert_eq!(at("1-7").digest, at("1-8").digest);
    assert_eq!(at("1-7").digest, before[1]);
}

#[test]
fn unknown_pods_and_pods_without_ip_are_errors() {
    let store = load(&format!(
        "{MESH}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: pending, namespace: shop, labels: {{app: client}}}}\nspec: {{serviceAccountName: client, containers: [{{name: app}}]}}\n"
    ));
    let registry = Registry::new(&store, "cluster.local", WorkloadSource::Pods);
    let settings = settings();
    let proxy = registry.workload("shop", "client-0").expect("pod");
    let outbound =
        Outbound::compile(&Inputs { store: &store, registry: &registry, settings: &settings, proxy })
            .expect("outbound");
    let error = |pod: &str| {
        scope::encode_sidecar(&store, &registry, &settings, "shop", pod, "1-1", &outbound)
            .expect_err("no config")
            .to_string()
    };
    assert_eq!(error("nobody"), "pod shop/nobody is not in the registry");
    assert_eq!(error("pending"), "pod shop/pending has no status.podIP");
}
