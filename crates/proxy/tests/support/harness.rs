//! Shared by the proxy's end-to-end tests: random pod addresses, temp dirs, the real
//! `paymesh-proxy` binary as a child process (killed by PID on drop), echo apps (HTTP/1.1 +
//! h2c with streaming bodies and trailers, and TCP), config builders, curl, polling.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use paymesh_api::ProxyConfig;
use paymesh_api::model::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::control::ControlPlane;

/// Every wait in a test ends within this.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A fresh 127.x.y.z (x, y, z in 1..=250) for one pod.
pub fn random_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, fastrand::u8(1..=250), fastrand::u8(1..=250), fastrand::u8(2..=250)))
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("time").subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "paymesh-proxy-{name}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `check` until it returns `Some`, failing with `what` after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A pod: name, namespace, service account, IP.
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub ns: String,
    pub sa: String,
    pub ip: IpAddr,
}

impl Pod {
    pub fn new(name: &str, sa: &str) -> Self {
        Pod { name: name.to_owned(), ns: "test".to_owned(), sa: sa.to_owned(), ip: random_ip() }
    }

    pub fn identity(&self) -> String {
        format!("spiffe://cluster.local/ns/{}/sa/{}", self.ns, self.sa)
    }

    pub fn at(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip, port)
    }
}

/// A running `paymesh-proxy`; killed (by PID) when dropped.
pub struct Proxy {
    pub pod: Pod,
    child: Child,
    ready: std::sync::mpsc::Receiver<()>,
    pub log: PathBuf,
    _dir: TempDir,
}

impl Proxy {
    /// Starts the real binary for `pod` against `cp`, in `mode`: this build's, or the one
    /// `PAYMESH_PROXY_BIN` names (a release build, for footprint measurements).
    pub fn start(cp: &ControlPlane, pod: &Pod, mode: &str) -> Self {
        let binary = std::env::var_os("PAYMESH_PROXY_BIN")
            .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_paymesh-proxy")), PathBuf::from);
        let dir = TempDir::new(&pod.name);
        let token = dir.path().join("token");
        std::fs::write(&token, cp.token(&pod.ns, &pod.sa)).expect("token written");
        let log = dir.path().join("proxy.log");
        let mut child = Command::new(binary)
            .args(["--mode", mode, "--pod", &pod.name, "--namespace", &pod.ns, "--service-account", &pod.sa])
            .args(["--ip", &pod.ip.to_string(), "--control", &cp.addr.to_string()])
            .arg("--root-cert")
            .arg(cp.root_cert())
            .arg("--token-file")
            .arg(&token)
            .env("RUST_LOG", "info,paymesh_proxy=debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("proxy starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "paymesh-proxy ready" {
                    let _ = tx.send(());
                }
            }
        });
        Proxy { pod: pod.clone(), child, ready, log, _dir: dir }
    }

    /// Waits for `paymesh-proxy ready` on stdout.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + DEADLINE;
        while self.ready.try_recv().is_err() {
            assert!(Instant::now() < deadline, "proxy {} not ready; log:\n{}", self.pod.name, self.logs());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// VmRSS in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// GET on the admin port: (status, body).
    pub async fn admin(&self, path: &str) -> (u16, String) {
        http_get(self.pod.at(15000), path).await
    }

    pub async fn config_dump(&self) -> serde_json::Value {
        let (status, body) = self.admin("/config_dump").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("config_dump is JSON")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal_term();
        self.wait_exit()
    }

    /// Sends SIGTERM.
    pub fn signal_term(&self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    }

    /// Waits (up to [`DEADLINE`]) for the process to exit.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "proxy did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- log of proxy {} ---\n{}", self.pod.name, self.logs());
        }
    }
}

/// A one-shot HTTP/1.1 GET over a fresh connection: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let raw = raw_exchange(addr, request.as_bytes()).await;
    parse_response(&raw)
}

/// Writes `bytes`, reads until the server closes (or [`DEADLINE`]).
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut tcp = tokio::time::timeout(DEADLINE, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    tcp.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut out)).await.expect("response in time");
    String::from_utf8_lossy(&out).into_owned()
}

/// Status and body of a raw HTTP/1.1 response (body after the blank line).
pub fn parse_response(raw: &str) -> (u16, String) {
    let status = raw.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// curl through `proxy` (the outbound listener): (exit ok, status, headers+body).
pub async fn curl(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let output =
            Command::new("curl").args(["-sS", "--max-time", "10"]).args(&args).output().expect("curl runs");
        let text =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    })
    .await
    .expect("curl task")
}

/// Requests for `/slow` the echo apps of this test process have received.
pub static SLOW_ARRIVED: AtomicU32 = AtomicU32::new(0);

/// How long the echo app takes to answer `/slow`.
pub const SLOW_DELAY: Duration = Duration::from_secs(1);

/// The echo app: `GET` answers with the request's headers, one `name: value` per line (after
/// [`SLOW_DELAY`] for `/slow`); `POST` streams the body back chunk by chunk, then trailers
/// `grpc-status: 0`.
pub async fn echo_app(addr: SocketAddr) -> JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.expect("echo app binds");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(echo);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    })
}

type EchoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn echo(req: Request<Incoming>) -> Result<Response<EchoBody>, Infallible> {
    if req.method() == http::Method::POST {
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let mut body = req.into_body();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data()
                    && tx.send(Ok(Frame::data(data))).await.is_err()
                {
                    return;
                }
            }
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            let _ = tx.send(Ok(Frame::trailers(trailers))).await;
        });
        return Ok(Response::new(StreamBody::new(ReceiverStream::new(rx)).boxed()));
    }
    if req.uri().path() == "/slow" {
        SLOW_ARRIVED.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(SLOW_DELAY).await;
    }
    let mut text = format!("path: {}\n", req.uri().path());
    for (name, value) in req.headers() {
        text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
    }
    Ok(Response::new(Full::new(Bytes::from(text)).boxed()))
}

/// A TCP echo app.
pub async fn tcp_echo_app(addr: SocketAddr) -> JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.expect("tcp echo binds");
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    })
}

/// Ports of the server pod's apps.
pub const HTTP_PORT: u16 = 8080;
pub const H2_PORT: u16 = 9090;
pub const TCP_PORT: u16 = 7070;

pub fn node(pod: &Pod, kind: ProxyKind) -> Node {
    Node { pod: pod.name.clone(), namespace: pod.ns.clone(), ip: pod.ip, kind, identity: pod.identity() }
}

pub fn mesh() -> MeshSettings {
    MeshSettings { trust_domain: "cluster.local".to_owned(), cert_ttl_secs: 3600 }
}

pub fn cluster(port: u16, host: &str, protocol: Protocol, sans: Vec<String>) -> Cluster {
    Cluster {
        name: outbound_cluster_name(port, None, host),
        service: host.to_owned(),
        port,
        subset: None,
        protocol,
        // What the control plane compiles without a DestinationRule: Istio's mesh default.
        h2_upgrade: H2Upgrade::default(),
        tls: UpstreamTls::IstioMutual { subject_alt_names: sans },
        lb: LbPolicy::RoundRobin,
        connection_pool: Default::default(),
        outlier_detection: None,
    }
}

pub fn endpoint(pod: &Pod, port: u16) -> Endpoint {
    Endpoint {
        address: pod.at(port),
        tunnel_port: Some(15006),
        identity: pod.identity(),
        pod: pod.name.clone(),
        labels: BTreeMap::new(),
    }
}

pub fn route_config(port: u16, short: &str, cluster: &str) -> RouteConfig {
    RouteConfig {
        name: port.to_string(),
        virtual_hosts: vec![Arc::new(VirtualHost {
            name: format!("{short}.test.svc.cluster.local:{port}"),
            domains: vec![
                short.to_owned(),
                format!("{short}:{port}"),
                format!("{short}.test.svc.cluster.local"),
            ],
            routes: vec![Route {
                name: "default".to_owned(),
                virtual_service: None,
                matches: Vec::new(),
                headers: HeaderEdits::default(),
                policy: Default::default(),
                rewrite: None,
                mirrors: Vec::new(),
                cors: None,
                action: RouteAction::Forward {
                    clusters: vec![WeightedCluster { cluster: cluster.to_owned(), weight: 100 }],
                },
            }],
        })],
    }
}

/// The client pod's config: `echo:8080` (HTTP), `grpc-echo:9090` (HTTP/2), `tcp-echo:7070`
/// (TCP) on `server`, and `down:8080` on `down` (nothing listens there).
pub fn client_config(version: &str, client: &Pod, server: &Pod, down: &Pod) -> ProxyConfig {
    let sans = vec![server.identity()];
    let http = cluster(HTTP_PORT, "echo.test.svc.cluster.local", Protocol::Http, sans.clone());
    let h2 = cluster(H2_PORT, "grpc-echo.test.svc.cluster.local", Protocol::Http2, sans.clone());
    let tcp = cluster(TCP_PORT, "tcp-echo.test.svc.cluster.local", Protocol::Tcp, sans.clone());
    let mut gone = cluster(HTTP_PORT, "down.test.svc.cluster.local", Protocol::Http, vec![down.identity()]);
    gone.name = outbound_cluster_name(HTTP_PORT, Some("v1"), "down.test.svc.cluster.local");
    let mut routes = route_config(HTTP_PORT, "echo", &http.name);
    routes.virtual_hosts.extend(route_config(HTTP_PORT, "down", &gone.name).virtual_hosts);
    ProxyConfig {
        version: version.to_owned(),
        node: node(client, ProxyKind::Sidecar),
        mesh: mesh(),
        listeners: vec![Listener {
            name: "virtualOutbound".to_owned(),
            address: client.at(15001),
            kind: ListenerKind::Outbound {
                tcp: vec![TcpRoute {
                    hosts: vec!["tcp-echo".to_owned()],
                    port: TCP_PORT,
                    clusters: vec![WeightedCluster { cluster: tcp.name.clone(), weight: 100 }],
                    virtual_service: None,
                }],
            },
        }],
        routes: vec![routes, route_config(H2_PORT, "grpc-echo", &h2.name)],
        endpoints: vec![
            ClusterEndpoints { cluster: http.name.clone(), endpoints: vec![endpoint(server, HTTP_PORT)] },
            ClusterEndpoints { cluster: h2.name.clone(), endpoints: vec![endpoint(server, H2_PORT)] },
            ClusterEndpoints { cluster: tcp.name.clone(), endpoints: vec![endpoint(server, TCP_PORT)] },
            ClusterEndpoints { cluster: gone.name.clone(), endpoints: vec![endpoint(down, HTTP_PORT)] },
        ]
        .into_iter()
        .map(Arc::new)
        .collect(),
        clusters: [http, h2, tcp, gone].into_iter().map(Arc::new).collect(),
    }
}

/// The server pod's config: inbound chains for its three apps, all in `mode`.
pub fn server_config(version: &str, server: &Pod, mode: MtlsMode) -> ProxyConfig {
    let chain = |port, protocol| InboundChain {
        target_port: port,
        service_ports: vec![port],
        protocol,
        mtls: mode,
        mtls_policy: "test/default".to_owned(),
        cluster: inbound_cluster_name(port),
    };
    ProxyConfig {
        version: version.to_owned(),
        node: node(server, ProxyKind::Sidecar),
        mesh: mesh(),
        listeners: vec![Listener {
            name: "virtualInbound".to_owned(),
            address: server.at(15006),
            kind: ListenerKind::Inbound {
                chains: vec![
                    chain(HTTP_PORT, Protocol::Http),
                    chain(H2_PORT, Protocol::Http2),
                    chain(TCP_PORT, Protocol::Tcp),
                ],
            },
        }],
        routes: vec![],
        clusters: vec![],
        endpoints: vec![],
    }
}

/// A client pod and a server pod (with its echo apps) wired through one control plane.
pub struct Mesh {
    pub cp: ControlPlane,
    pub client: Proxy,
    pub server: Proxy,
    pub down: Pod,
    _apps: Vec<JoinHandle<()>>,
}

impl Mesh {
    pub async fn start(mode: MtlsMode, ttl: Duration) -> Self {
        let cp = ControlPlane::start(ttl).await;
        let (client_pod, server_pod, down) =
            (Pod::new("sleep-0", "sleep"), Pod::new("echo-0", "echo"), Pod::new("down-0", "down"));
        cp.set_config(client_config("v1", &client_pod, &server_pod, &down));
        cp.set_config(server_config("s1", &server_pod, mode));
        let apps = vec![
            echo_app(server_pod.at(HTTP_PORT)).await,
            echo_app(server_pod.at(H2_PORT)).await,
            tcp_echo_app(server_pod.at(TCP_PORT)).await,
        ];
        let client = Proxy::start(&cp, &client_pod, "sidecar");
        let server = Proxy::start(&cp, &server_pod, "sidecar");
        client.wait_ready().await;
        server.wait_ready().await;
        Mesh { cp, client, server, down, _apps: apps }
    }

    /// The client's outbound proxy URL for curl `-x`.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.client.pod.at(15001))
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for app in &self._apps {
            app.abort();
        }
    }
}
