//! A real proxy applying delta snapshots: it says it accepts them, applies one to the config it
//! runs (the result in /config_dump is the new config, in its order) and ACKs it; a delta for a
//! version it does not run, a garbage one, one removing an unknown cluster, and an oversized one
//! are each NACKed with the exact reason while the proxy keeps its config and serves on.

#[path = "support/control.rs"]
mod control;
#[path = "support/harness.rs"]
mod support;

use control::Answer;
use std::sync::Arc;

use paymesh_api::model::{Cluster, MtlsMode};
use paymesh_api::pb::Snapshot;
use paymesh_api::{ConfigDelta, MAX_CONFIG_BYTES, ProxyConfig};
use support::{Mesh, client_config, curl, eventually};

/// The proxy's answer to the snapshot of `version`.
async fn answer(mesh: &Mesh, version: &str) -> Result<(), String> {
    eventually(&format!("an answer for {version}"), || async {
        mesh.cp.answers().into_iter().find_map(|answer| match answer {
            Answer::Ack { pod, version: v } if pod == "sleep-0" && v == version => Some(Ok(())),
            Answer::Nack { pod, version: v, reason } if pod == "sleep-0" && v == version => Some(Err(reason)),
            _ => None,
        })
    })
    .await
}

fn delta(version: &str, base_version: &str, delta_json: Vec<u8>) -> Snapshot {
    Snapshot { version: version.into(), base_version: base_version.into(), delta_json, ..Snapshot::default() }
}

/// The proxy runs `config`: /config_dump shows it, lists in the same order.
async fn runs(mesh: &Mesh, config: &ProxyConfig) {
    let dump = mesh.client.config_dump().await;
    assert_eq!(dump["version"], config.version.as_str());
    assert_eq!(dump["listeners"], serde_json::to_value(&config.listeners).expect("json"));
    assert_eq!(dump["routes"], serde_json::to_value(&config.routes).expect("json"));
    assert_eq!(dump["clusters"], serde_json::to_value(&config.clusters).expect("json"));
    assert_eq!(dump["endpoints"], serde_json::to_value(&config.endpoints).expect("json"));
}

async fn serves(mesh: &Mesh, path: &str) {
    let (ok, out) = curl(vec!["-x".into(), mesh.proxy_url(), format!("http://echo:8080/{path}")]).await;
    assert!(ok && out.contains(&format!("path: /{path}")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_are_applied_and_acked_and_bad_ones_nacked_with_the_reason() {
    let mesh = Mesh::start(MtlsMode::Strict, std::time::Duration::from_secs(3600)).await;
    let (client, server) = (&mesh.client.pod, &mesh.server.pod);
    let v1 = client_config("v1", client, server, &mesh.down);
    answer(&mesh, "v1").await.expect("v1 ACKed");
    runs(&mesh, &v1).await;

    // v2: the `down` service is gone (its cluster, endpoints and virtual host), and a new
    // cluster sorts first.
    let mut v2 = client_config("v2", client, server, &mesh.down);
    let gone = v2.clusters.pop().expect("down's cluster").name.clone();
    v2.endpoints.retain(|e| e.cluster != gone);
    v2.routes[0].virtual_hosts.retain(|vh| !vh.name.starts_with("down."));
    let mut first = Cluster::clone(&v2.clusters[0]);
    first.name = "outbound|1||aaa.test.svc.cluster.local".into();
    v2.clusters.insert(0, Arc::new(first));
    let change = ConfigDelta::between(&v1, &v2).expect("delta");
    assert_eq!(change.clusters.remove, std::slice::from_ref(&gone));
    mesh.cp.push_raw("sleep-0", delta("v2", "v1", change.encode().expect("encodes")));
    answer(&mesh, "v2").await.expect("the delta is ACKed");
    runs(&mesh, &v2).await;
    serves(&mesh, "after-delta").await;

    // Hostile and stale deltas: NACKed, v2 kept.
    let unknown = format!(r#"{{"version":"v5","clusters":{{"remove":["{gone}"]}}}}"#);
    let cases = [
        (
            delta("v3", "v1", change.encode().expect("encodes")),
            "delta snapshot v3 applies to version v1, but this proxy runs v2".to_owned(),
        ),
        (
            delta("v4", "v2", b"\0garbage{".to_vec()),
            "delta snapshot v4: config snapshot is not valid JSON for the model: expected value at line 1 column 1"
                .to_owned(),
        ),
        (delta("v5", "v2", unknown.into_bytes()), format!("delta snapshot v5: delta removes unknown cluster {gone:?}")),
        (
            delta("v6", "v2", vec![b' '; MAX_CONFIG_BYTES + 1]),
            format!("delta_json is {} bytes, over the limit of {MAX_CONFIG_BYTES}", MAX_CONFIG_BYTES + 1),
        ),
        (
            delta("v7", "v2", br#"{"version":"v8"}"#.to_vec()),
            "snapshot version v7 does not match its config's version v8".to_owned(),
        ),
    ];
    for (snapshot, reason) in cases {
        let version = snapshot.version.clone();
        mesh.cp.push_raw("sleep-0", snapshot);
        assert_eq!(answer(&mesh, &version).await, Err(reason), "{version}");
        runs(&mesh, &v2).await;
    }
    serves(&mesh, "still").await;

    // A full snapshot after the NACKs, then a delta on top of it again.
    let v9 = client_config("v9", client, server, &mesh.down);
    mesh.cp.set_config(v9.clone());
    answer(&mesh, "v9").await.expect("full v9 ACKed");
    runs(&mesh, &v9).await;
    let mut v10 = v9.clone();
    v10.version = "v10".into();
    v10.endpoints.reverse();
    let change = ConfigDelta::between(&v9, &v10).expect("delta");
    assert_eq!(change.endpoints.upsert.len(), 3, "a reversal moves all but one");
    mesh.cp.push_raw("sleep-0", delta("v10", "v9", change.encode().expect("encodes")));
    answer(&mesh, "v10").await.expect("the reordering delta is ACKed");
    runs(&mesh, &v10).await;
    serves(&mesh, "reordered").await;
}
