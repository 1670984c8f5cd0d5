//! Mutual TLS end to end through `paymesh up`: three echo pods in a STRICT namespace talk through
//! their sidecars (the app sees the caller's SPIFFE identity), the inbound port refuses plaintext,
//! a TLS client without a mesh certificate and one with a certificate from another root; turning
//! the PeerAuthentication PERMISSIVE in the watched file lets plaintext in.

#![cfg(unix)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

#[path = "support/up.rs"]
mod support;

#[path = "support/mesh.rs"]
mod mesh;

use mesh::*;
use support::*;

fn manifest(mode: &str) -> String {
    format!(
        "{INJECTED}{}{}{}{}",
        peer_authentication(mode),
        echo_app("a", 9090, &[], &[]),
        echo_app("b", 9091, &[], &[]),
        echo_app("c", 9092, &[], &[])
    )
}

/// `exec curl FROM → http://TO.mesh:PORT/echo` through the sidecars: the echoed JSON.
fn call(state_dir: &Path, from: &str, to: &str, port: u16) -> serde_json::Value {
    let url = format!("http://{to}.mesh:{port}/echo");
    let (code, out, err) = exec_curl(state_dir, from, &["-f", &url]);
    assert_eq!(code, Some(0), "{from} → {url}: {err}{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{from} → {url}: not JSON ({e}): {out}"))
}

/// `openssl s_client` to `addr` with `extra` args, an HTTP request on stdin: (exit code, output).
fn s_client(addr: &str, host_header: &str, extra: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-ign_eof"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn openssl");
    let request = format!("GET /echo HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n");
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write as _;
        let _ = stdin.write_all(request.as_bytes());
    }
    let until = std::time::Instant::now() + Duration::from_secs(15);
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() > until {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("openssl output");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// A self-signed CA outside the mesh and a client certificate it issued that claims the identity
/// of pod `a`: (cert path, key path).
fn foreign_client_cert(dir: &Path) -> (String, String) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "evil-ca.key",
        "-out",
        "evil-ca.pem",
        "-days",
        "1",
        "-subj",
        "/O=evil/CN=evil root",
    ]);
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "evil.key",
        "-out",
        "evil.csr",
        "-subj",
        "/O=evil",
    ]);
    std::fs::write(
        dir.join("evil.ext"),
        "subjectAltName=URI:spiffe://cluster.local/ns/mesh/sa/a\nextendedKeyUsage=clientAuth,serverAuth\n",
    )
    .expect("write ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "evil.csr",
        "-CA",
        "evil-ca.pem",
        "-CAkey",
        "evil-ca.key",
        "-CAcreateserial",
        "-out",
        "evil.pem",
        "-days",
        "1",
        "-extfile",
        "evil.ext",
    ]);
    (dir.join("evil.pem").display().to_string(), dir.join("evil.key").display().to_string())
}

/// openssl failed (exit 1) with the TLS alert `alert`, and no HTTP answer came back.
fn assert_refused(what: &str, alert: &str, (code, out): (Option<i32>, String)) {
    let why = out.lines().find(|l| l.contains("alert")).unwrap_or("");
    println!("{what}: openssl exited {code:?}: {why}");
    assert!(!out.contains("HTTP/1.1 200") && !out.contains("\"pod\""), "{what}: the app answered\n{out}");
    assert_eq!(code, Some(1), "{what}: openssl exit status\n{out}");
    assert!(why.contains(alert), "{what}: expected the alert {alert:?}\n{out}");
}

#[test]
fn strict_mtls_between_sidecars_refuses_outsiders_and_permissive_opens_plaintext() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, manifest("STRICT")).expect("write");
    let base = random_base();
    let state_dir = dir.path().join("state");
    let up = start_mesh(&file, &state_dir, base, &["--cert-ttl", "1h"]);
    let rows: Vec<&String> = up.seen.iter().filter(|l| l.starts_with(['a', 'b', 'c'])).collect();
    assert_eq!(rows.len(), 3, "{:?}", up.seen);
    for row in rows {
        assert!(row.contains(" SYNCED ") && row.contains(" STRICT"), "{row}");
    }

    // a → b and b → c through both sidecars: the callee's app sees the caller's identity.
    let seen_by_b = call(&state_dir, "a", "b", 9091);
    assert_eq!(seen_by_b["pod"].as_str().map(|p| p.starts_with("b-")), Some(true), "{seen_by_b}");
    let xfcc = seen_by_b["headers"]["x-forwarded-client-cert"].to_string();
    assert!(xfcc.contains("URI=spiffe://cluster.local/ns/mesh/sa/a"), "b saw {xfcc}");
    let seen_by_c = call(&state_dir, "b", "c", 9092);
    let xfcc = seen_by_c["headers"]["x-forwarded-client-cert"].to_string();
    assert!(xfcc.contains("URI=spiffe://cluster.local/ns/mesh/sa/b"), "c saw {xfcc}");
    assert!(xfcc.contains("By=spiffe://cluster.local/ns/mesh/sa/c"), "c saw {xfcc}");

    let ip_b: Ipv4Addr = pod_ip(&up, "mesh", "b");
    let inbound = format!("{ip_b}:15006");
    let service_host = "b.mesh.svc.cluster.local:9091";

    // Plaintext straight to the inbound port: the connection is closed without an answer.
    let (code, out, _) = curl(&["-H", &format!("Host: {service_host}"), &format!("http://{inbound}/echo")]);
    assert!(code != Some(0), "plaintext to STRICT inbound answered: {out}");
    assert!(out.is_empty(), "plaintext to STRICT inbound answered: {out}");

    // TLS without a client certificate: the handshake fails.
    let root = state_dir.join("ca/root-cert.pem").display().to_string();
    assert_refused(
        "no client certificate",
        "alert certificate required",
        s_client(&inbound, service_host, &["-CAfile", &root]),
    );

    // A client certificate from another root (claiming a's identity): refused too.
    let (cert, key) = foreign_client_cert(dir.path());
    assert_refused(
        "foreign client certificate",
        "alert unknown ca",
        s_client(&inbound, service_host, &["-CAfile", &root, "-cert", &cert, "-key", &key]),
    );
    let (code, out, _) = curl(&[
        "-k",
        "--cert",
        &cert,
        "--key",
        &key,
        "-H",
        &format!("Host: {service_host}"),
        &format!("https://{inbound}/echo"),
    ]);
    assert!(code != Some(0) && out.is_empty(), "curl with a foreign cert got {code:?}: {out}");

    // PERMISSIVE in the watched file: plaintext with the service's Host is served.
    std::fs::write(&file, manifest("PERMISSIVE")).expect("rewrite");
    let echoed = eventually("plaintext accepted after PERMISSIVE", Duration::from_secs(15), || {
        let (code, out, _) =
            curl(&["-f", "-H", &format!("Host: {service_host}"), &format!("http://{inbound}/echo")]);
        (code == Some(0)).then_some(out)
    });
    let echoed: serde_json::Value = serde_json::from_str(&echoed).expect("echo JSON");
    assert_eq!(echoed["pod"].as_str().map(|p| p.starts_with("b-")), Some(true), "{echoed}");
    assert!(echoed["headers"].get("x-forwarded-client-cert").is_none(), "plaintext has no XFCC: {echoed}");
    // Mesh traffic still works.
    call(&state_dir, "a", "b", 9091);
}
