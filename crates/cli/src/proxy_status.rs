//! `paymesh proxy-status`: every proxy and whether it runs the config the control plane last
//! sent it, as `istioctl proxy-status` shows them, from the control plane's `/debug/syncz`.
//!
//! A pod of state.json with a proxy that never connected is listed too, as NOT SENT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::mesh_http::{self, Http, SyncStatus};
use crate::state::{DEFAULT_STATE_DIR, State};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The state directory of `paymesh up`.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let state = State::read(&args.state_dir)?;
    let control = state.control.as_ref().context("no control plane is running (no pod has a sidecar)")?;
    let http = Http::new()?;
    let mut statuses = mesh_http::block_on(http.syncz(control.monitoring_addr))??;
    for pod in state.pods.iter().filter(|p| p.has_proxy()) {
        if !statuses.iter().any(|s| s.pod == pod.name && s.namespace == pod.namespace) {
            statuses.push(SyncStatus {
                pod: pod.name.clone(),
                namespace: pod.namespace.clone(),
                kind: kind_of(pod).into(),
                connected: false,
                sent_version: None,
                acked_version: None,
                nacked_version: None,
                nack_reason: None,
                cert_serial: None,
                cert_expiry: None,
            });
        }
    }
    statuses.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
    print!("{}", render(&statuses));
    Ok(ExitCode::SUCCESS)
}

fn kind_of(pod: &crate::state::PodState) -> &'static str {
    match pod.kind {
        crate::state::PodKind::Workload => "sidecar",
        crate::state::PodKind::Gateway => "gateway",
    }
}

/// The table: NAME NAMESPACE KIND CONFIG VERSION CERT EXPIRY.
pub fn render(statuses: &[SyncStatus]) -> String {
    let rows = statuses.iter().map(|s| {
        let mut config = s.config_status().to_string();
        if !s.connected {
            config.push_str(" (disconnected)");
        }
        vec![
            s.pod.clone(),
            s.namespace.clone(),
            s.kind.clone(),
            config,
            s.acked_version.clone().or_else(|| s.sent_version.clone()).unwrap_or_else(|| "-".into()),
            s.cert_expiry.clone().unwrap_or_else(|| "-".into()),
        ]
    });
    crate::table::render(&["NAME", "NAMESPACE", "KIND", "CONFIG", "VERSION", "CERT EXPIRY"], rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_istioctl_like_rows() {
        let json = r#"[
          {"pod":"a-1","namespace":"payments","kind":"sidecar","connected":true,"sentVersion":"5","ackedVersion":"5","certExpiry":"2030-01-01T00:00:00Z"},
          {"pod":"b-1","namespace":"payments","kind":"sidecar","connected":true,"sentVersion":"6","ackedVersion":"5","nackedVersion":"6","nackReason":"unknown cluster"},
          {"pod":"gw","namespace":"istio-system","kind":"gateway","connected":false}
        ]"#;
        let statuses: Vec<SyncStatus> = serde_json::from_str(json).expect("parse");
        assert_eq!(
            render(&statuses),
            "NAME  NAMESPACE     KIND     CONFIG                    VERSION  CERT EXPIRY\n\
             a-1   payments      sidecar  SYNCED                    5        2030-01-01T00:00:00Z\n\
             b-1   payments      sidecar  NACKED (unknown cluster)  5        -\n\
             gw    istio-system  gateway  NOT SENT (disconnected)   -        -\n"
        );
    }
}
