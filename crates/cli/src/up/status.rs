//! The table `paymesh up` prints once everything is ready: each pod, its address, whether its
//! sidecar runs the latest config (the control plane's `/debug/syncz`) and the mTLS mode its
//! inbound listener enforces (the proxy's own `/config_dump`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use paymesh_api::ports;

use crate::mesh_http::{ConfigStatus, Http, SyncStatus};
use crate::state::State;

/// How long to wait for every proxy to acknowledge its config before printing anyway.
const SYNC_DEADLINE: Duration = Duration::from_secs(10);

pub async fn print(state: &State, http: &Http) {
    let sync = match &state.control {
        Some(control) => synced(http, control.monitoring_addr, state).await,
        None => {
            println!("control plane: not started (no pod has a sidecar)");
            BTreeMap::new()
        }
    };
    let mut rows = Vec::new();
    for pod in &state.pods {
        let (sidecar, mtls) = if pod.has_proxy() {
            let sidecar = sync
                .get(&(pod.namespace.clone(), pod.name.clone()))
                .map_or(ConfigStatus::NotSent, SyncStatus::config_status)
                .to_string();
            let mtls = match http.config_dump(pod.ip.into()).await {
                Ok(dump) => crate::proxy_config::mtls_summary(&dump),
                Err(_) => "?".to_owned(),
            };
            (sidecar, mtls)
        } else {
            ("-".to_owned(), "-".to_owned())
        };
        rows.push(vec![pod.name.clone(), pod.namespace.clone(), pod.ip.to_string(), sidecar, mtls]);
    }
    crate::table::print(&["POD", "NAMESPACE", "IP", "SIDECAR", "MTLS"], rows);
    println!();
    match &state.ingress_url {
        Some(url) => println!("ingress: {url}"),
        None => println!("ingress: none (the gateway runs only with sidecars)"),
    }
    println!("dashboard: http://127.0.0.1:{} (not yet)", ports::DASHBOARD);
}

/// `/debug/syncz` by (namespace, pod), polled until every proxy of `state` is SYNCED or the
/// deadline passes.
async fn synced(
    http: &Http,
    monitoring: std::net::SocketAddr,
    state: &State,
) -> BTreeMap<(String, String), SyncStatus> {
    let until = Instant::now() + SYNC_DEADLINE;
    loop {
        let by_pod: BTreeMap<_, _> = http
            .syncz(monitoring)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|s| ((s.namespace.clone(), s.pod.clone()), s))
            .collect();
        let all_synced = state.pods.iter().filter(|p| p.has_proxy()).all(|p| {
            by_pod
                .get(&(p.namespace.clone(), p.name.clone()))
                .is_some_and(|s| s.config_status() == ConfigStatus::Synced)
        });
        if all_synced || Instant::now() >= until {
            return by_pod;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
