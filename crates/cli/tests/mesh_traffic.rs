//! The guide's traffic scenarios on `paymesh up -f k8s` (the repository's real resources,
//! `fault-injection.yaml` included):
//!
//! - the canary split through the ingress gateway, 2,000 requests within ±3 points of 90/10
//!   (the gateway's access log names the subset cluster of each);
//! - `x-canary: true` always reaches v2;
//! - `x-fault-test: true` from inside the mesh (payment-service's sidecar, as `paymesh exec`
//!   sends it) gets the delegates' faults at their percentages — account-service delayed 5 s on
//!   10 %, validation-service aborted 503 `FI` on 5 % — while the same header from outside is
//!   stripped by the gateway and never hurts anything.
//!
//! - `paymesh x route` names the route, cluster and pod the sidecar used, for 50 requests.
//!
//! Tolerances come from the binomial distribution, stated where used.

#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

#[path = "support/up.rs"]
mod support;

#[path = "support/mesh.rs"]
mod mesh;

use mesh::*;
use support::*;

/// One answer: status, the proxy's response flags, and how long it took.
#[derive(Debug)]
struct Answer {
    status: u16,
    flags: Option<String>,
    elapsed: Duration,
}

/// A keep-alive HTTP/1.1 connection: sends `request` (a full head, `Connection` unset) and
/// reads the answer (Content-Length bodies, as the gateway and the services send).
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connects");
        tcp.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        Conn { reader: BufReader::new(tcp) }
    }

    fn send(&mut self, request: &str) -> Answer {
        let started = Instant::now();
        self.reader.get_mut().write_all(request.as_bytes()).expect("writes the request");
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).expect("status line");
        let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status");
        let (mut length, mut flags) = (0usize, None);
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("header");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header");
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().expect("length"),
                "x-paymesh-response-flags" => flags = Some(value.trim().to_owned()),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).expect("body");
        Answer { status, flags, elapsed: started.elapsed() }
    }
}

/// The proxy log of the first pod of `deployment`.
fn pod_log(up: &Up, state_dir: &Path, deployment: &str) -> std::path::PathBuf {
    let state = up.state();
    let pod = state["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["deployment"] == deployment)
        .and_then(|p| p["name"].as_str())
        .unwrap_or_else(|| panic!("no pod of {deployment}"))
        .to_owned();
    state_dir.join("logs").join(pod).join("proxy.log")
}

/// The gateway's access lines for paths starting with `path`.
fn gateway_lines(up: &Up, state_dir: &Path, path: &str) -> Vec<String> {
    let log = std::fs::read_to_string(pod_log(up, state_dir, "istio-ingressgateway")).unwrap_or_default();
    log.lines().filter(|line| line.contains(&format!("GET {path}"))).map(str::to_owned).collect()
}

#[test]
fn canary_split_opt_in_and_fault_injection_follow_the_repositorys_resources() {
    let (_dir, state_dir, base, up) = start_k8s_mesh();
    let k8s = paymesh_test_util::workspace_root().join("k8s");
    let ingress: SocketAddr = format!("{}:8080", host(base, 1)).parse().expect("ingress");

    // The canary split, through the gateway: 2,000 reads of a payment that does not exist
    // (answered 404 by whichever version the split chose).
    let mut gateway = Conn::open(ingress);
    for i in 0..2000 {
        let answer = gateway.send(&format!(
            "GET /v1/payments/canary-{i} HTTP/1.1\r\nHost: payments.example.com\r\nx-tenant-id: acme\r\n\r\n"
        ));
        assert_eq!(answer.status, 404, "request {i}: {answer:?}");
    }
    let lines = eventually("2,000 gateway access lines", Duration::from_secs(10), || {
        let lines = gateway_lines(&up, &state_dir, "/v1/payments/canary-");
        (lines.len() == 2000).then_some(lines)
    });
    let v2 = lines.iter().filter(|l| l.contains("outbound|8081|v2|payment-service")).count();
    let v1 = lines.iter().filter(|l| l.contains("outbound|8081|v1|payment-service")).count();
    assert_eq!(v1 + v2, 2000, "every request went to v1 or v2");
    // Binomial(2000, 0.1): standard deviation 13.4 requests (0.67 points); ±3 points is 4.5 of them.
    let share = v2 as f64 / 20.0;
    assert!((7.0..=13.0).contains(&share), "v2 got {share:.1} % of 2,000");
    println!("canary split through the gateway: v1 {v1}, v2 {v2} ({share:.1} %)");

    for i in 0..50 {
        gateway.send(&format!(
            "GET /v1/payments/opt-in-{i} HTTP/1.1\r\nHost: payments.example.com\r\nx-tenant-id: acme\r\nx-canary: true\r\n\r\n"
        ));
    }
    let opted = eventually("50 opt-in lines", Duration::from_secs(10), || {
        let lines = gateway_lines(&up, &state_dir, "/v1/payments/opt-in-");
        (lines.len() == 50).then_some(lines)
    });
    assert!(opted.iter().all(|l| l.contains("outbound|8081|v2|payment-service")), "x-canary: true → v2");

    // `paymesh x route` agrees with the sidecar for 50 requests: the route it names took each
    // one, and the cluster and pod that served it are among the destinations it lists.
    let outbound: SocketAddr =
        format!("{}:15001", pod_ip(&up, "payments", "payment-service")).parse().expect("addr");
    let sidecar_log = pod_log(&up, &state_dir, "payment-service");
    for i in 0..50 {
        let (method, url, extra) = match i % 5 {
            0 => ("GET", format!("http://account-service:8083/v1/accounts/acc-{i}"), ""),
            1 => ("POST", "http://account-service:8083/v1/accounts".to_owned(), ""),
            2 => ("GET", "http://validation-service:8082/health".to_owned(), ""),
            3 => ("GET", format!("http://payment-service:8081/v1/payments/x-{i}"), "x-canary: true"),
            _ => ("GET", format!("http://payment-service:8081/v1/payments/x-{i}"), ""),
        };
        let id = format!("x-route-{i}");
        let host = url.trim_start_matches("http://").split('/').next().expect("host");
        let mut head = format!(
            "{method} {url} HTTP/1.1\r\nHost: {host}\r\nx-tenant-id: acme\r\nx-request-id: {id}\r\ncontent-length: 0\r\n"
        );
        if !extra.is_empty() {
            head.push_str(&format!("{extra}\r\n"));
        }
        head.push_str("\r\n");
        Conn::open(outbound).send(&head);
        let line = eventually("the sidecar's access line", Duration::from_secs(10), || {
            // The app's own calls carry the same request id on to other services, and a call to
            // payment-service may land on this very pod's inbound side: find ours by its
            // authority and listener too.
            let log = std::fs::read_to_string(&sidecar_log).ok()?;
            let ours = |l: &&str| {
                l.contains(&format!("\"{id}\" \"{host}\"")) && l.ends_with("listener=\"outbound\"")
            };
            log.lines().find(ours).map(str::to_owned)
        });
        let fields: Vec<&str> =
            line.split(" listener=").next().unwrap_or_default().split_whitespace().collect();
        let (route, pod) = (fields[fields.len() - 6], fields[fields.len() - 3]);
        let cluster = fields.iter().find(|f| f.starts_with("outbound|")).expect("an upstream cluster");
        let mut args = vec!["x", "route", "-o", "json", "-f"];
        let k8s_dir = k8s.display().to_string();
        args.extend([k8s_dir.as_str(), "-n", "payments", "--from", "deploy/payment-service", "-X", method]);
        if !extra.is_empty() {
            args.extend(["-H", extra]);
        }
        args.push(&url);
        let out = paymesh().args(&args).output().expect("paymesh x route");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let trace: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let matched = trace["routes"].as_array().and_then(|r| r.last()).expect("a route");
        assert_eq!(matched["name"], route, "request {i} ({method} {url} {extra}): {line}");
        let destinations = trace["outcome"]["destinations"].as_array().expect("destinations");
        let chosen = destinations.iter().find(|d| d["cluster"]["name"] == *cluster);
        let chosen = chosen.unwrap_or_else(|| panic!("request {i}: {cluster} not in {destinations:?}"));
        assert!(
            chosen["endpoints"].as_array().expect("endpoints").iter().any(|e| e["pod"] == pod),
            "request {i}: {pod}"
        );
    }

    // Fault injection from inside the mesh: what payment-service's app sends through its sidecar
    // (the outbound listener, as `paymesh exec ... curl` does), 200 calls of each, 50 at a time.
    let outbound: SocketAddr =
        format!("{}:15001", pod_ip(&up, "payments", "payment-service")).parse().expect("addr");
    let account = "GET http://account-service:8083/v1/accounts/acc-1 HTTP/1.1\r\nHost: account-service:8083\r\nx-tenant-id: acme\r\nx-fault-test: true\r\n\r\n";
    let delayed =
        in_parallel(outbound, account, 200).iter().filter(|a| a.elapsed >= Duration::from_secs(5)).count();
    // Binomial(200, 0.1): mean 20, standard deviation 4.2; five of them either side.
    assert!((1..=41).contains(&delayed), "{delayed} of 200 delayed 5 s");
    println!("account-service fault test: {delayed} of 200 delayed 5 s (10 % configured)");

    let validate = "POST http://validation-service:8082/v1/validate HTTP/1.1\r\nHost: validation-service:8082\r\nx-tenant-id: acme\r\nx-fault-test: true\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
    let answers = in_parallel(outbound, validate, 400);
    let aborted = answers.iter().filter(|a| a.status == 503 && a.flags.as_deref() == Some("FI")).count();
    // Binomial(400, 0.05): mean 20, standard deviation 4.4; five of them either side.
    assert!((1..=42).contains(&aborted), "{aborted} of 400 aborted");
    assert!(
        answers.iter().all(|a| a.status != 503 || a.flags.as_deref() == Some("FI")),
        "only injected 503s"
    );
    println!("validation-service fault test: {aborted} of 400 aborted 503 FI (5 % configured)");

    // From outside, the gateway strips x-fault-test: payments that call validation-service are
    // never aborted (with the header through, 5 % of 100 would be: 0.6 % chance of none). A
    // fresh connection: the first one has idled through the fault tests.
    let mut gateway = Conn::open(ingress);
    for i in 0..100 {
        let body = r#"{"from_account": "nobody", "to_account": "nobody-else", "amount_minor": 100, "currency": "EUR"}"#;
        let answer = gateway.send(&format!(
            "POST /v1/payments HTTP/1.1\r\nHost: payments.example.com\r\nx-tenant-id: acme\r\nx-fault-test: true\r\nIdempotency-Key: outside-{i}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ));
        assert!(answer.status < 500 && answer.flags.is_none(), "outside request {i}: {answer:?}");
    }
}

/// Sends `request` `count` times to `addr`, 50 connections at a time.
fn in_parallel(addr: SocketAddr, request: &'static str, count: usize) -> Vec<Answer> {
    let mut answers = Vec::with_capacity(count);
    for _ in 0..count / 50 {
        let batch: Vec<_> =
            (0..50).map(|_| std::thread::spawn(move || Conn::open(addr).send(request))).collect();
        answers.extend(batch.into_iter().map(|t| t.join().expect("joins")));
    }
    answers
}
