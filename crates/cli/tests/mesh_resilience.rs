//! The data plane outlives its control plane: SIGKILL `paymesh-control` (PID from state.json)
//! while requests flow between two sidecars; none fails, the supervisor restarts the control
//! plane, and every proxy reconnects and is SYNCED again.

#![cfg(unix)]

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[path = "support/up.rs"]
mod support;

#[path = "support/mesh.rs"]
mod mesh;

use mesh::*;
use support::*;

#[test]
fn traffic_survives_a_killed_control_plane_and_proxies_resync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    let apps = format!("{INJECTED}{}{}", echo_app("a", 9090, &[], &[]), echo_app("b", 9091, &[], &[]));
    std::fs::write(&file, apps).expect("write");
    let state_dir = dir.path().join("state");
    let up = start_mesh(&file, &state_dir, random_base(), &["--cert-ttl", "1h"]);
    let ip_a = pod_ip(&up, "mesh", "a");

    let old = control_pid(&up).expect("control plane pid");
    kill(Pid::from_raw(old), Signal::SIGKILL).expect("SIGKILL the control plane");
    let killed_at = Instant::now();

    // Requests a → b through the sidecars for 3 s while the control plane is down/restarting:
    // curl from the test to a's outbound listener, the way the app's HTTP_PROXY sends them.
    let proxy = format!("http://{ip_a}:15001");
    let mut sent = 0;
    while killed_at.elapsed() < Duration::from_secs(3) {
        let (code, out, err) = curl(&["-f", "-x", &proxy, "http://b.mesh:9091/echo"]);
        sent += 1;
        assert_eq!(code, Some(0), "request {sent} after the kill failed: {err}{out}");
        assert!(out.contains("\"pod\":\"b-"), "request {sent}: {out}");
    }
    println!("{sent} requests through the sidecars succeeded in the 3 s after SIGKILL");
    assert!(sent >= 5, "only {sent} requests in 3 s");

    // Restarted by the supervisor under a new PID …
    let new = eventually("the control plane restarted", Duration::from_secs(15), || {
        control_pid(&up).filter(|pid| *pid != old && alive(*pid))
    });
    assert!(!alive(old), "the killed control plane {old} is still there");
    assert_eq!(up.state()["control"]["process"]["restarts"], 1);
    // … and every proxy reconnects to it.
    let monitoring = monitoring_addr(&up);
    eventually("every proxy SYNCED with the new control plane", Duration::from_secs(20), || {
        let rows = proxy_status(&state_dir);
        let synced = rows.len() == 3 && rows.iter().all(|r| r.get(3).map(String::as_str) == Some("SYNCED"));
        let syncz = get_json(&format!("http://{monitoring}/debug/syncz"))?;
        let connected = syncz.as_array()?.iter().filter(|p| p["connected"] == true).count();
        (synced && connected == 3).then_some(())
    });
    println!("control plane {old} → {new}: proxies SYNCED again {:?} after the kill", killed_at.elapsed());
    let (code, out, err) = exec_curl(&state_dir, "a", &["-f", "http://b.mesh:9091/echo"]);
    assert_eq!(code, Some(0), "{err}{out}");
}
