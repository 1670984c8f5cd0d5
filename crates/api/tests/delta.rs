//! Deltas between configs: base + delta gives the new config exactly (same bytes, same order,
//! moves included; a route config's virtual hosts by name), an unchanged config gives an empty delta, and a delta that does not fit
//! the base (unknown names, duplicates, bad indexes, garbage) is an error with its reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use paymesh_api::delta::{CollectionDelta, ConfigDelta, DeltaError, Placed};
use paymesh_api::model::{
    Cluster, ClusterEndpoints, Endpoint, HeaderEdits, LbPolicy, Listener, ListenerKind, MeshSettings, Node,
    Protocol, ProxyConfig, ProxyKind, Route, RouteAction, RouteConfig, UpstreamTls, VirtualHost,
    WeightedCluster,
};

fn cluster(name: &str, port: u16) -> Cluster {
    Cluster {
        name: name.to_owned(),
        service: format!("{name}.shop.svc.cluster.local"),
        port,
        subset: None,
        protocol: Protocol::Http,
        h2_upgrade: Default::default(),
        tls: UpstreamTls::Disable,
        lb: LbPolicy::RoundRobin,
        connection_pool: Default::default(),
        outlier_detection: None,
    }
}

fn endpoints(name: &str, pods: &[&str]) -> ClusterEndpoints {
    ClusterEndpoints {
        cluster: name.to_owned(),
        endpoints: pods
            .iter()
            .enumerate()
            .map(|(i, pod)| Endpoint {
                address: format!("127.0.0.{}:8080", i + 2).parse().expect("addr"),
                tunnel_port: Some(15006),
                identity: "spiffe://cluster.local/ns/shop/sa/a".into(),
                pod: (*pod).to_owned(),
                labels: BTreeMap::from([("app".to_owned(), name.to_owned())]),
            })
            .collect(),
    }
}

fn config(version: &str, clusters: &[(&str, u16)], eps: &[(&str, &[&str])]) -> ProxyConfig {
    ProxyConfig {
        version: version.to_owned(),
        node: Node {
            pod: "client-0".into(),
            namespace: "shop".into(),
            ip: "127.0.0.9".parse().expect("ip"),
            kind: ProxyKind::Sidecar,
            identity: "spiffe://cluster.local/ns/shop/sa/client".into(),
        },
        mesh: MeshSettings { trust_domain: "cluster.local".into(), cert_ttl_secs: 3600 },
        listeners: vec![Listener {
            name: "virtualOutbound".into(),
            address: "127.0.0.9:15001".parse().expect("addr"),
            kind: ListenerKind::Outbound { tcp: Vec::new() },
        }],
        routes: Vec::new(),
        clusters: clusters.iter().map(|(n, p)| Arc::new(cluster(n, *p))).collect(),
        endpoints: eps.iter().map(|(n, pods)| Arc::new(endpoints(n, pods))).collect(),
    }
}

/// base + delta(base → new), checked byte for byte against `new`; the delta is returned.
fn round_trip(base: &ProxyConfig, new: &ProxyConfig) -> ConfigDelta {
    let delta = ConfigDelta::between(base, new).expect("a delta");
    let wire = delta.encode().expect("encodes");
    let applied = ConfigDelta::decode(&wire).expect("decodes").apply(base).expect("applies");
    assert_eq!(
        String::from_utf8(applied.encode().expect("encodes")).expect("utf-8"),
        String::from_utf8(new.encode().expect("encodes")).expect("utf-8")
    );
    delta
}

fn names<T>(delta: &CollectionDelta<T>, name: impl Fn(&T) -> &str) -> (Vec<(u32, String)>, Vec<String>) {
    (delta.upsert.iter().map(|p| (p.at, name(&p.item).to_owned())).collect(), delta.remove.clone())
}

#[test]
fn base_plus_delta_is_the_new_config_in_its_order() {
    let base = config(
        "1-1",
        &[("a", 80), ("c", 80), ("d", 80)],
        &[("a", &["a-0"]), ("c", &["c-0"]), ("d", &["d-0"])],
    );
    // Insert b in the middle, change d, remove c, and an endpoint more for a.
    let new = config(
        "1-2",
        &[("a", 80), ("b", 80), ("d", 81)],
        &[("a", &["a-0", "a-1"]), ("b", &["b-0"]), ("d", &["d-0"])],
    );
    let delta = round_trip(&base, &new);
    assert_eq!(
        names(&delta.clusters, |c| &c.name),
        (vec![(1, "b".into()), (2, "d".into())], vec!["c".into()])
    );
    assert_eq!(
        names(&delta.endpoints, |e| &e.cluster),
        (vec![(0, "a".into()), (1, "b".into())], vec!["c".into()])
    );
    assert!(delta.listeners.is_empty() && delta.node.is_none() && delta.mesh.is_none());
    let wire = String::from_utf8(delta.encode().expect("encodes")).expect("utf-8");
    assert!(
        wire.starts_with(r#"{"version":"1-2","clusters":{"upsert":[{"at":1,"item":{"name":"b","#),
        "{wire}"
    );
}

#[test]
fn a_moved_item_is_sent_again_so_the_order_holds() {
    let base = config("1-1", &[("a", 80), ("b", 80), ("c", 80), ("d", 80)], &[]);
    let new = config("1-2", &[("b", 80), ("c", 80), ("a", 80), ("d", 80)], &[]);
    let delta = round_trip(&base, &new);
    assert_eq!(names(&delta.clusters, |c| &c.name), (vec![(2, "a".into())], vec![]));
    // A full reversal, the node and the mesh changed too.
    let mut reversed = config("1-3", &[("d", 80), ("c", 80), ("b", 80), ("a", 80)], &[]);
    reversed.node.ip = "127.0.0.10".parse().expect("ip");
    reversed.mesh.cert_ttl_secs = 60;
    let delta = round_trip(&base, &reversed);
    assert_eq!(delta.clusters.upsert.len(), 3, "one item stays, three move");
    assert!(delta.node.is_some() && delta.mesh.is_some());
    // Everything removed, then everything back.
    let empty = config("1-4", &[], &[]);
    assert_eq!(round_trip(&base, &empty).clusters.remove, ["a", "b", "c", "d"]);
    assert_eq!(round_trip(&empty, &base).clusters.upsert.len(), 4);
}

#[test]
fn an_unchanged_config_gives_an_empty_delta() {
    let base = config("1-1", &[("a", 80)], &[("a", &["a-0"])]);
    let mut same = base.clone();
    same.version = "1-2".into();
    let delta = round_trip(&base, &same);
    assert!(delta.is_empty());
    assert_eq!(delta.encode().expect("encodes"), br#"{"version":"1-2"}"#);
}

#[test]
fn duplicate_names_in_a_config_have_no_delta() {
    let base = config("1-1", &[("a", 80)], &[]);
    let twice = config("1-2", &[("a", 80), ("a", 81)], &[]);
    assert_eq!(
        ConfigDelta::between(&base, &twice).expect_err("ambiguous").to_string(),
        r#"two clusters are named "a""#
    );
}

/// `delta_json` applied to a base of clusters a, b; the error text.
fn refused(delta_json: &str) -> String {
    let base = config("1-1", &[("a", 80), ("b", 80)], &[]);
    match ConfigDelta::decode(delta_json.as_bytes()) {
        Err(error) => error.to_string(),
        Ok(delta) => delta.apply(&base).expect_err("does not apply").to_string(),
    }
}

#[test]
fn deltas_that_do_not_fit_the_base_are_refused_with_the_reason() {
    let c = serde_json::to_string(&cluster("c", 80)).expect("json");
    let a = serde_json::to_string(&cluster("a", 80)).expect("json");
    assert_eq!(
        refused(r#"{"version":"1-2","clusters":{"remove":["zz"]}}"#),
        r#"delta removes unknown cluster "zz""#
    );
    assert_eq!(
        refused(r#"{"version":"1-2","clusters":{"remove":["a","a"]}}"#),
        r#"delta names cluster "a" twice"#
    );
    assert_eq!(
        refused(&format!(
            r#"{{"version":"1-2","clusters":{{"remove":["a"],"upsert":[{{"at":0,"item":{a}}}]}}}}"#
        )),
        r#"delta names cluster "a" twice"#
    );
    assert_eq!(
        refused(&format!(r#"{{"version":"1-2","clusters":{{"upsert":[{{"at":4294967295,"item":{c}}}]}}}}"#)),
        r#"delta places cluster "c" at index 4294967295, out of order or past the end of 3 items"#
    );
    assert_eq!(
        refused(&format!(
            r#"{{"version":"1-2","clusters":{{"upsert":[{{"at":1,"item":{c}}},{{"at":0,"item":{a}}}]}}}}"#
        )),
        r#"delta places cluster "a" at index 0, out of order or past the end of 3 items"#
    );
    assert_eq!(
        refused(r#"{"version":"1-2","listeners":{"remove":["nope"]}}"#),
        r#"delta removes unknown listener "nope""#
    );
    assert!(refused("\u{0}garbage{").starts_with("config snapshot is not valid JSON for the model: "));
    assert!(
        refused(r#"{"clusters":{}}"#).contains("missing field `version`"),
        "{}",
        refused(r#"{"clusters":{}}"#)
    );
    assert!(
        refused(r#"{"version":"1-2","clusters":{"upsert":[{"at":-1,"item":{}}]}}"#)
            .starts_with("config snapshot")
    );
    // Deep nesting is no stack overflow: refused in a typed field, skipped in an unknown one.
    let deep = |field: &str| {
        format!(r#"{{"version":"1-2","{field}":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000))
    };
    assert!(refused(&deep("node")).contains("expected a string"), "{}", refused(&deep("node")));
    let skipped = ConfigDelta::decode(deep("x").as_bytes()).expect("unknown fields are skipped");
    assert!(skipped.is_empty());
}

#[test]
fn a_placed_item_lands_exactly_at_its_index() {
    let base = vec![cluster("a", 80), cluster("b", 80)];
    let delta = CollectionDelta {
        upsert: vec![Placed { at: 0, item: cluster("x", 80) }, Placed { at: 3, item: cluster("y", 80) }],
        remove: Vec::new(),
    };
    let applied: Vec<String> = delta.apply(&base).expect("applies").into_iter().map(|c| c.name).collect();
    assert_eq!(applied, ["x", "a", "b", "y"]);
    let error =
        CollectionDelta { upsert: vec![Placed { at: 2, item: cluster("x", 80) }], remove: vec!["a".into()] }
            .apply(&base)
            .expect_err("past the end");
    assert_eq!(error, DeltaError::Placement { kind: "cluster", name: "x".into(), at: 2, len: 2 });
}

fn virtual_host(service: &str) -> VirtualHost {
    VirtualHost {
        name: format!("{service}.shop.svc.cluster.local:8080"),
        domains: vec![service.to_owned(), format!("{service}:8080")],
        routes: vec![Route {
            name: "default".into(),
            virtual_service: None,
            matches: Vec::new(),
            headers: HeaderEdits::default(),
            policy: Default::default(),
            rewrite: None,
            mirrors: Vec::new(),
            cors: None,
            action: RouteAction::Forward {
                clusters: vec![WeightedCluster { cluster: format!("outbound|8080||{service}"), weight: 100 }],
            },
        }],
    }
}

fn with_routes(version: &str, routes: &[(&str, &[&str])]) -> ProxyConfig {
    let mut config = config(version, &[], &[]);
    config.routes = routes
        .iter()
        .map(|(name, services)| RouteConfig {
            name: (*name).to_owned(),
            virtual_hosts: services.iter().map(|s| Arc::new(virtual_host(s))).collect(),
        })
        .collect();
    config
}

#[test]
fn a_route_config_that_stays_sends_only_its_changed_virtual_hosts() {
    let base = with_routes("1-1", &[("8080", &["a", "c", "d"]), ("9090", &["g"])]);
    // b added in the middle of 8080, d gone; 9090 moves before 8080 (sent whole); 7070 new.
    let new = with_routes("1-2", &[("8080", &["a", "b", "c"]), ("7070", &["x"])]);
    let delta = round_trip(&base, &new);
    assert_eq!(names(&delta.routes, |r| &r.name), (vec![(1, "7070".into())], vec!["9090".into()]));
    assert_eq!(delta.virtual_hosts.len(), 1);
    assert_eq!(delta.virtual_hosts[0].route, "8080");
    assert_eq!(
        names(&delta.virtual_hosts[0].virtual_hosts, |v| &v.name),
        (vec![(1, "b.shop.svc.cluster.local:8080".into())], vec!["d.shop.svc.cluster.local:8080".into()])
    );
    let moved = with_routes("1-3", &[("9090", &["g"]), ("8080", &["a", "c", "d", "e"])]);
    let delta = round_trip(&base, &moved);
    // 9090 stays (first in the new order), so 8080 moved against it and goes whole.
    assert_eq!(names(&delta.routes, |r| &r.name).0, [(1, "8080".to_owned())], "moved: whole");
    assert!(delta.virtual_hosts.is_empty());
    // Repeated virtual host names: the route config goes whole.
    let twice = with_routes("1-4", &[("8080", &["a", "a"]), ("9090", &["g"])]);
    let delta = round_trip(&base, &twice);
    assert_eq!(names(&delta.routes, |r| &r.name).0, [(0, "8080".to_owned())]);
    assert!(delta.virtual_hosts.is_empty());
}

#[test]
fn virtual_host_changes_of_unknown_or_upserted_route_configs_are_refused() {
    let base = with_routes("1-1", &[("8080", &["a"])]);
    let vh = serde_json::to_string(&virtual_host("b")).expect("json");
    let route = serde_json::to_string(&base.routes[0]).expect("json");
    let refused = |json: String| {
        ConfigDelta::decode(json.as_bytes()).expect("decodes").apply(&base).expect_err("refused").to_string()
    };
    assert_eq!(
        refused(format!(
            r#"{{"version":"2","virtualHosts":[{{"route":"9090","virtualHosts":{{"upsert":[{{"at":0,"item":{vh}}}]}}}}]}}"#
        )),
        r#"delta changes virtual hosts of unknown route config "9090""#
    );
    assert_eq!(
        refused(format!(
            r#"{{"version":"2","routes":{{"upsert":[{{"at":0,"item":{route}}}]}},"virtualHosts":[{{"route":"8080","virtualHosts":{{}}}}]}}"#
        )),
        r#"delta changes virtual hosts of unknown route config "8080""#
    );
    assert_eq!(
        refused(r#"{"version":"2","virtualHosts":[{"route":"8080","virtualHosts":{}},{"route":"8080","virtualHosts":{}}]}"#.to_owned()),
        r#"delta names route config "8080" twice"#
    );
    assert_eq!(
        refused(
            r#"{"version":"2","virtualHosts":[{"route":"8080","virtualHosts":{"remove":["zz"]}}]}"#
                .to_owned()
        ),
        r#"delta removes unknown virtual host "zz""#
    );
}
