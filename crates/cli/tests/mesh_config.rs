//! Config changes end to end through `paymesh up`: an edit of the watched `-f` file reaches the
//! sidecars (measured: write → visible in `paymesh proxy-config clusters -o json`), and an edit
//! that analyze rejects leaves every proxy SYNCED at the old version while the control plane's
//! `/debug/configz` names the rejection.

#![cfg(unix)]

use std::path::Path;
use std::time::{Duration, Instant};

#[path = "support/up.rs"]
mod support;

#[path = "support/mesh.rs"]
mod mesh;

use mesh::*;
use support::*;

/// A Service `name` in `mesh` selecting pod `b` on `port`.
fn service(name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: mesh\nspec:\n  selector: {{app: b}}\n  ports:\n  - name: http\n    port: {port}\n    targetPort: 9091\n---\n"
    )
}

const DESTINATION_RULE: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: b
  namespace: mesh
spec:
  host: b.mesh.svc.cluster.local
  subsets:
  - name: v1
    labels: {app: b}
---
";

/// A VirtualService sending all of `b` to subset `v1`.
const VIRTUAL_SERVICE_V1: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: b
  namespace: mesh
spec:
  hosts: [b.mesh.svc.cluster.local]
  http:
  - route:
    - destination: {host: b.mesh.svc.cluster.local, subset: v1}
---
";

/// A VirtualService with a field the schema does not know: analyze rejects it.
const BAD_VIRTUAL_SERVICE: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: b
  namespace: mesh
spec:
  hosts: [b.mesh.svc.cluster.local]
  http:
  - bogusField: 1
    route:
    - destination: {host: b.mesh.svc.cluster.local}
---
";

/// The cluster names `deploy/a`'s sidecar has, per `paymesh proxy-config clusters -o json`.
fn cluster_names(state_dir: &Path) -> Vec<String> {
    let (code, out, err) =
        run_paymesh(&["proxy-config", "clusters", "-n", "mesh", "deploy/a", "-o", "json"], state_dir);
    assert_eq!(code, Some(0), "proxy-config failed: {err}");
    let clusters: serde_json::Value = serde_json::from_str(&out).expect("clusters JSON");
    clusters
        .as_array()
        .expect("an array of clusters")
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// Writes `contents` to `file` and returns how long until `cluster` shows in the proxy's config,
/// printing too when the control plane's accepted version moved.
fn time_until_visible(file: &Path, contents: &str, state_dir: &Path, cluster: &str) -> Duration {
    let monitoring = {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(state_dir.join("run/state.json")).expect("state.json"))
                .expect("state.json is JSON");
        state["control"]["monitoringAddr"].as_str().expect("monitoringAddr").to_owned()
    };
    let version = || get_json(&format!("http://{monitoring}/debug/configz")).map(|c| c["version"].clone());
    let before = version();
    let mut accepted_after = None;
    assert!(!cluster_names(state_dir).iter().any(|c| c == cluster), "{cluster} is there before the change");
    let start = Instant::now();
    write_atomically(file, contents);
    loop {
        if accepted_after.is_none() && version() != before {
            accepted_after = Some(start.elapsed());
        }
        if cluster_names(state_dir).iter().any(|c| c == cluster) {
            let took = start.elapsed();
            println!(
                "{cluster}: accepted by the control plane after {accepted_after:?}, in the proxy after {took:?}"
            );
            return took;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{cluster} not visible within 10 s: {:?}",
            cluster_names(state_dir)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Temp file + rename, as editors save: the watcher never sees half a file.
fn write_atomically(file: &Path, contents: &str) {
    let temp = file.with_extension("tmp");
    std::fs::write(&temp, contents).expect("write");
    std::fs::rename(&temp, file).expect("rename");
}

#[test]
fn watched_file_changes_reach_proxies_fast_and_invalid_ones_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    let apps = format!("{INJECTED}{}{}", echo_app("a", 9090, &[], &[]), echo_app("b", 9091, &[], &[]));
    std::fs::write(&file, &apps).expect("write");
    let state_dir = dir.path().join("state");
    let up = start_mesh(&file, &state_dir, random_base(), &["--cert-ttl", "1h"]);

    // A new Service.
    let with_service = format!("{apps}{}", service("extra", 9191));
    let new_service =
        time_until_visible(&file, &with_service, &state_dir, "outbound|9191||extra.mesh.svc.cluster.local");
    // A DestinationRule adding a subset, and a VirtualService routing to it.
    let with_subset = format!("{with_service}{DESTINATION_RULE}{VIRTUAL_SERVICE_V1}");
    let new_subset =
        time_until_visible(&file, &with_subset, &state_dir, "outbound|9091|v1|b.mesh.svc.cluster.local");
    // The same kinds again: the first DestinationRule/VirtualService also paid for compiling their
    // schemas in the control plane (once per process); this is the steady state.
    let with_v2 = format!(
        "{with_service}{}{}",
        DESTINATION_RULE.replace(
            "  - name: v1\n    labels: {app: b}\n",
            "  - name: v1\n    labels: {app: b}\n  - name: v2\n    labels: {app: b}\n"
        ),
        VIRTUAL_SERVICE_V1.replace("subset: v1", "subset: v2")
    );
    let second_subset =
        time_until_visible(&file, &with_v2, &state_dir, "outbound|9091|v2|b.mesh.svc.cluster.local");
    println!(
        "config change → proxy-config: new Service {new_service:?}, first subset {new_subset:?}, second subset {second_subset:?}"
    );
    for (what, took) in [("Service", new_service), ("subset", new_subset), ("second subset", second_subset)] {
        assert!(took < Duration::from_secs(2), "the new {what} took {took:?}");
    }

    // Every proxy acknowledges the good version.
    let monitoring = monitoring_addr(&up);
    let good = eventually("configz version", Duration::from_secs(5), || {
        get_json(&format!("http://{monitoring}/debug/configz"))
    });
    let good_version = good["version"].clone();
    assert!(good["rejected"].is_null(), "{good}");
    let good_text = good_version.as_str().map(str::to_owned).unwrap_or_else(|| good_version.to_string());
    // Sidecars get every version; the gateway only the versions that change its config.
    let synced_at_good = |rows: &[Vec<String>]| {
        rows.len() == 3
            && rows.iter().all(|r| {
                r.get(3).map(String::as_str) == Some("SYNCED") && (r[2] != "sidecar" || r[4] == good_text)
            })
    };
    let mut last = Vec::new();
    let until = Instant::now() + Duration::from_secs(5);
    while !synced_at_good(&last) {
        assert!(Instant::now() < until, "not every proxy SYNCED at version {good_text}: {last:?}");
        std::thread::sleep(Duration::from_millis(100));
        last = proxy_status(&state_dir);
    }

    // An invalid change: rejected, the last good config stays.
    let bad = format!("{with_v2}{}", BAD_VIRTUAL_SERVICE.replace("name: b\n", "name: b-bad\n"));
    write_atomically(&file, &bad);
    let configz = eventually("configz shows the rejection", Duration::from_secs(5), || {
        get_json(&format!("http://{monitoring}/debug/configz")).filter(|c| !c["rejected"].is_null())
    });
    assert_eq!(configz["version"], good_version, "{configz}");
    let messages = configz["rejected"]["messages"].to_string();
    assert!(messages.contains("unknown field") && messages.contains("bogusField"), "{configz}");
    assert!(messages.contains("mesh.yaml"), "the message names the file: {configz}");
    assert_eq!(proxy_status(&state_dir), last, "the rejection changed what the proxies run");
    assert!(cluster_names(&state_dir).contains(&"outbound|9091|v2|b.mesh.svc.cluster.local".to_owned()));
}

/// Istio's CDS has a cluster for every subset of a DestinationRule, routed to or not.
#[test]
fn a_destination_rule_subset_alone_gets_a_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    let apps = format!("{INJECTED}{}{}", echo_app("a", 9090, &[], &[]), echo_app("b", 9091, &[], &[]));
    std::fs::write(&file, &apps).expect("write");
    let state_dir = dir.path().join("state");
    let _up = start_mesh(&file, &state_dir, random_base(), &["--cert-ttl", "1h"]);
    let took = time_until_visible(
        &file,
        &format!("{apps}{DESTINATION_RULE}"),
        &state_dir,
        "outbound|9091|v1|b.mesh.svc.cluster.local",
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
}
