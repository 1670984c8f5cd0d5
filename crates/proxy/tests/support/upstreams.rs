//! Scripted plaintext upstreams for the traffic-management tests, and a client config that
//! routes `svc:8080` to them under a given route and cluster policy.
//!
//! An upstream answers every request with its pod name in `x-pod`, counting what it received;
//! its [`Script`] decides the status and how long it waits before answering. Upstreams run
//! without a sidecar, so the client's sidecar speaks plaintext HTTP/1.1 to them directly and
//! everything the test observes was decided by that one proxy.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use paymesh_api::ProxyConfig;
use paymesh_api::model::*;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::control::ControlPlane;
use crate::support::{Pod, Proxy, mesh, node};

/// The Service port the client calls.
pub const SVC_PORT: u16 = 8080;

/// The cluster's name.
pub const SVC_CLUSTER: &str = "outbound|8080||svc.test.svc.cluster.local";

/// The mirror cluster's name.
pub const MIRROR_CLUSTER: &str = "outbound|8080||mirror.test.svc.cluster.local";

/// How an upstream answers.
#[derive(Debug, Clone, Copy)]
pub enum Script {
    /// 200 at once.
    Ok,
    /// This status, always.
    Status(u16),
    /// 503 for every `n`-th request it receives, 200 otherwise.
    FailEvery(u32),
    /// 200 after this long.
    Slow(Duration),
}

/// One running upstream.
pub struct Upstream {
    pub pod: Pod,
    /// Requests received.
    pub hits: Arc<AtomicU32>,
    /// The `Host` of each request received, in order.
    pub hosts: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Upstream {
    pub async fn start(name: &str, script: Script) -> Self {
        let pod = Pod::new(name, name);
        let listener = TcpListener::bind(pod.at(SVC_PORT)).await.expect("upstream binds");
        let (hits, hosts) = (Arc::new(AtomicU32::new(0)), Arc::new(Mutex::new(Vec::new())));
        let (seen, done, pod_name) = (Arc::clone(&hits), Arc::clone(&hosts), pod.name.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (seen, done, pod_name) = (Arc::clone(&seen), Arc::clone(&done), pod_name.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (seen, done, pod_name) = (Arc::clone(&seen), Arc::clone(&done), pod_name.clone());
                        async move {
                            let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                            let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                            let host = req
                                .headers()
                                .get("host")
                                .and_then(|h| h.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            done.lock().expect("hosts").push(host.clone());
                            let _ = req.into_body().collect().await;
                            let status = match script {
                                Script::Ok => 200,
                                Script::Status(status) => status,
                                Script::FailEvery(every) if n % every == 0 => 503,
                                Script::FailEvery(_) => 200,
                                Script::Slow(delay) => {
                                    tokio::time::sleep(delay).await;
                                    200
                                }
                            };
                            let response = Response::builder()
                                .status(status)
                                .header("x-pod", pod_name)
                                .header("x-path", path)
                                .header("x-host", host)
                                .body(Full::new(Bytes::from_static(b"ok")))
                                .expect("response");
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Upstream { pod, hits, hosts, task }
    }

    pub fn hits(&self) -> u32 {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            address: self.pod.at(SVC_PORT),
            tunnel_port: None,
            identity: self.pod.identity(),
            pod: self.pod.name.clone(),
            labels: Default::default(),
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The policies of the one route and cluster of [`client_config`].
#[derive(Debug, Clone)]
pub struct Policies {
    pub route: RoutePolicy,
    pub lb: LbPolicy,
    pub pool: ConnectionPool,
    pub outlier: Option<OutlierDetection>,
    pub rewrite: Option<Rewrite>,
    /// Answer with this redirect instead of forwarding.
    pub redirect: Option<Redirect>,
    /// The endpoints of a mirror cluster every request is copied to (none: no mirror).
    pub mirrors: Vec<Endpoint>,
    pub cors: Option<Cors>,
}

impl Default for Policies {
    fn default() -> Self {
        Policies {
            route: RoutePolicy::default(),
            lb: LbPolicy::RoundRobin,
            pool: ConnectionPool::default(),
            outlier: None,
            rewrite: None,
            mirrors: Vec::new(),
            cors: None,
            redirect: None,
        }
    }
}

/// The client's config: `svc:8080` → `upstreams` (plaintext) under `policies`.
pub fn client_config(
    version: &str,
    client: &Pod,
    upstreams: &[&Upstream],
    policies: &Policies,
) -> ProxyConfig {
    let cluster = Cluster {
        name: SVC_CLUSTER.to_owned(),
        service: "svc.test.svc.cluster.local".to_owned(),
        port: SVC_PORT,
        subset: None,
        protocol: Protocol::Http,
        h2_upgrade: H2Upgrade::default(),
        tls: UpstreamTls::Disable,
        lb: policies.lb.clone(),
        connection_pool: policies.pool.clone(),
        outlier_detection: policies.outlier.clone(),
    };
    let routes = RouteConfig {
        name: SVC_PORT.to_string(),
        virtual_hosts: vec![Arc::new(VirtualHost {
            name: format!("svc.test.svc.cluster.local:{SVC_PORT}"),
            domains: vec!["svc".to_owned(), format!("svc:{SVC_PORT}")],
            routes: vec![Route {
                name: "svc".to_owned(),
                virtual_service: Some("test/svc".to_owned()),
                matches: Vec::new(),
                headers: HeaderEdits::default(),
                action: match &policies.redirect {
                    Some(redirect) => RouteAction::Redirect { redirect: redirect.clone() },
                    None => RouteAction::Forward {
                        clusters: vec![WeightedCluster { cluster: SVC_CLUSTER.to_owned(), weight: 100 }],
                    },
                },
                policy: policies.route.clone(),
                rewrite: policies.rewrite.clone(),
                mirrors: if policies.mirrors.is_empty() {
                    Vec::new()
                } else {
                    vec![Mirror { cluster: MIRROR_CLUSTER.to_owned(), per_million: PER_MILLION }]
                },
                cors: policies.cors.clone(),
            }],
        })],
    };
    ProxyConfig {
        version: version.to_owned(),
        node: node(client, ProxyKind::Sidecar),
        mesh: mesh(),
        listeners: vec![Listener {
            name: "virtualOutbound".to_owned(),
            address: client.at(15001),
            kind: ListenerKind::Outbound { tcp: Vec::new() },
        }],
        routes: vec![routes],
        clusters: vec![
            Arc::new(Cluster { name: MIRROR_CLUSTER.to_owned(), ..cluster.clone() }),
            Arc::new(cluster),
        ],
        endpoints: vec![
            Arc::new(ClusterEndpoints {
                cluster: SVC_CLUSTER.to_owned(),
                endpoints: upstreams.iter().map(|u| u.endpoint()).collect(),
            }),
            Arc::new(ClusterEndpoints {
                cluster: MIRROR_CLUSTER.to_owned(),
                endpoints: policies.mirrors.clone(),
            }),
        ],
    }
}

/// A control plane and a client sidecar routing `svc` to `upstreams` under `policies`.
pub async fn sidecar(upstreams: &[&Upstream], policies: &Policies) -> (ControlPlane, Pod, Proxy) {
    let cp = ControlPlane::start(Duration::from_secs(3600)).await;
    let client = Pod::new("client-0", "client");
    cp.set_config(client_config("v1", &client, upstreams, policies));
    let proxy = Proxy::start(&cp, &client, "sidecar");
    proxy.wait_ready().await;
    (cp, client, proxy)
}

/// One answer as the client saw it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// `x-pod`: which upstream answered.
    pub pod: Option<String>,
    /// `x-paymesh-response-flags`.
    pub flags: Option<String>,
    pub overloaded: bool,
    /// `x-path` and `x-host`: what the upstream received.
    pub path: Option<String>,
    pub host: Option<String>,
    /// `location`.
    pub location: Option<String>,
    /// `access-control-allow-origin`.
    pub allow_origin: Option<String>,
    pub elapsed: Duration,
}

/// A client of one sidecar's outbound listener (HTTP/1.1, a fresh connection per request so
/// concurrent requests are independent).
pub async fn call(proxy: SocketAddr, method: &str, headers: &[(&str, &str)], body: Bytes) -> Answer {
    let started = Instant::now();
    let tcp = tokio::net::TcpStream::connect(proxy).await.expect("connects to the sidecar");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.expect("handshake");
    tokio::spawn(connection);
    let mut request = Request::builder().method(method).uri(format!("http://svc:{SVC_PORT}/work"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body)).expect("request");
    let response = tokio::time::timeout(crate::support::DEADLINE, sender.send_request(request))
        .await
        .expect("answered in time")
        .expect("a response");
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let answer = Answer {
        status: response.status().as_u16(),
        pod: header("x-pod"),
        flags: header("x-paymesh-response-flags"),
        overloaded: header("x-envoy-overloaded").as_deref() == Some("true"),
        path: header("x-path"),
        host: header("x-host"),
        location: header("location"),
        allow_origin: header("access-control-allow-origin"),
        elapsed: Duration::ZERO,
    };
    let _ = response.into_body().collect().await;
    Answer { elapsed: started.elapsed(), ..answer }
}

/// A GET without headers.
pub async fn get(proxy: SocketAddr) -> Answer {
    call(proxy, "GET", &[], Bytes::new()).await
}

/// `StatusCode` for readable assertions.
pub fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).expect("status")
}
