//! Where a real sidecar sends requests among scripted upstreams: outlier detection ejects the
//! endpoint answering 500 after `consecutive5xxErrors`, moves its traffic to the others and takes
//! it back after `baseEjectionTime`, never ejects past `maxEjectionPercent` (so a one-pod subset
//! keeps its pod), and answers 503 `UH` when every endpoint is out; a consistent hash on
//! `x-tenant-id` keeps each tenant on one endpoint and moves only the tenants of an endpoint that
//! leaves; fault injection delays and aborts its share of requests before they are sent; a TCP
//! route splits connections by weight.

#[path = "support/control.rs"]
mod control;
#[path = "support/harness.rs"]
mod support;
#[path = "support/upstreams.rs"]
mod upstreams;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use control::ControlPlane;
use paymesh_api::model::{
    AbortError, ConsistentHash, Fault, FaultAbort, FaultDelay, HashKey, HashTable, LbPolicy,
    OutlierDetection, RetryPolicy, RoutePolicy,
};
use support::{Pod, Proxy, eventually};
use upstreams::{Policies, Script, Upstream, call, client_config, get, sidecar};

fn ejecting(max_ejection_percent: u32) -> Policies {
    Policies {
        route: RoutePolicy { retries: RetryPolicy::none(), ..RoutePolicy::default() },
        outlier: Some(OutlierDetection {
            consecutive_5xx: Some(3),
            consecutive_gateway_errors: None,
            consecutive_local_origin_failures: None,
            split_external_local_origin_errors: false,
            interval_ms: 1000,
            base_ejection_ms: 1000,
            max_ejection_percent,
            min_health_percent: 0,
        }),
        ..Policies::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_ejected_after_consecutive_5xx_and_returns_after_the_ejection_time() {
    let good = [Upstream::start("good-0", Script::Ok).await, Upstream::start("good-1", Script::Ok).await];
    let bad = Upstream::start("bad-0", Script::Status(500)).await;
    let (_cp, client, _proxy) = sidecar(&[&good[0], &bad, &good[1]], &ejecting(50)).await;
    let outbound = client.at(15001);
    let mut failures = 0;
    for _ in 0..30 {
        if get(outbound).await.status == 500 {
            failures += 1;
        }
    }
    let ejected_at = Instant::now();
    assert_eq!((bad.hits(), failures), (3, 3), "ejected after its third consecutive 500");
    assert_eq!(good[0].hits() + good[1].hits(), 27, "its share went to the others");
    eventually("the ejected endpoint's return", || async {
        (get(outbound).await.status == 500).then_some(())
    })
    .await;
    assert!(ejected_at.elapsed() >= Duration::from_millis(900), "back only after baseEjectionTime");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejection_stops_at_max_ejection_percent_and_a_lone_endpoint_is_kept() {
    let good = Upstream::start("good-0", Script::Ok).await;
    let bad = [
        Upstream::start("bad-0", Script::Status(500)).await,
        Upstream::start("bad-1", Script::Status(500)).await,
    ];
    let (cp, client, _proxy) = sidecar(&[&bad[0], &good, &bad[1]], &ejecting(50)).await;
    let outbound = client.at(15001);
    for _ in 0..60 {
        get(outbound).await;
    }
    // One of three is 33 %: a second ejection would make 67 %, past 50 %.
    let (first, second) = (bad[0].hits(), bad[1].hits());
    assert!(first.min(second) == 3 && first.max(second) > 10, "only one of them is out: {first}, {second}");

    // A one-pod subset: ejecting its pod would be 100 %.
    let lone = Upstream::start("lone-0", Script::Status(500)).await;
    cp.set_config(client_config("v2", &client, &[&lone], &ejecting(50)));
    eventually("the push to the lone pod", || async {
        get(outbound).await;
        (lone.hits() > 0).then_some(())
    })
    .await;
    for _ in 0..10 {
        assert_eq!(get(outbound).await.status, 500, "still served by its only pod");
    }

    // Allowed to eject all: 503 UH once it is out.
    cp.set_config(client_config("v3", &client, &[&lone], &ejecting(100)));
    let answer = eventually("every endpoint ejected", || async {
        let answer = get(outbound).await;
        (answer.status == 503).then_some(answer)
    })
    .await;
    assert_eq!(answer.flags.as_deref(), Some("UH"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sticks_to_one_endpoint_and_only_the_leavers_tenants_move() {
    let pods = [
        Upstream::start("pod-0", Script::Ok).await,
        Upstream::start("pod-1", Script::Ok).await,
        Upstream::start("pod-2", Script::Ok).await,
    ];
    let policies = Policies {
        lb: LbPolicy::ConsistentHash(ConsistentHash {
            key: HashKey::Header("x-tenant-id".to_owned()),
            table: HashTable::RingHash { minimum_ring_size: 1024 },
        }),
        ..Policies::default()
    };
    let (cp, client, _proxy) = sidecar(&[&pods[0], &pods[1], &pods[2]], &policies).await;
    let outbound = client.at(15001);
    let placement = async |tenants: u32| {
        let mut placed = BTreeMap::new();
        for tenant in 0..tenants {
            let id = format!("tenant-{tenant}");
            for _ in 0..3 {
                let pod =
                    call(outbound, "GET", &[("x-tenant-id", &id)], Bytes::new()).await.pod.expect("x-pod");
                let first = placed.entry(id.clone()).or_insert_with(|| pod.clone());
                assert_eq!(*first, pod, "{id} moved between requests");
            }
        }
        placed
    };
    let before = placement(30).await;
    let on = |pod: &str| before.values().filter(|p| *p == pod).count();
    assert!(on("pod-0") > 0 && on("pod-1") > 0 && on("pod-2") > 0, "{before:?}");

    cp.set_config(client_config("v2", &client, &[&pods[0], &pods[1]], &policies));
    eventually("the push without pod-2", || async {
        let hits = pods[2].hits();
        for tenant in 0..30 {
            call(outbound, "GET", &[("x-tenant-id", &format!("tenant-{tenant}"))], Bytes::new()).await;
        }
        (pods[2].hits() == hits).then_some(())
    })
    .await;
    let after = placement(30).await;
    for (tenant, pod) in &before {
        if pod != "pod-2" {
            assert_eq!(&after[tenant], pod, "{tenant} moved though its endpoint stayed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_delay_and_abort_their_share_before_anything_is_sent() {
    let app = Upstream::start("app-0", Script::Ok).await;
    let abort_half = Policies {
        route: RoutePolicy {
            fault: Some(Fault {
                delay: None,
                abort: Some(FaultAbort { error: AbortError::HttpStatus(503), per_million: 500_000 }),
            }),
            ..RoutePolicy::default()
        },
        ..Policies::default()
    };
    let (cp, client, proxy) = sidecar(&[&app], &abort_half).await;
    let outbound = client.at(15001);
    let mut aborted = 0;
    for _ in 0..400 {
        let answer = get(outbound).await;
        if answer.status == 503 {
            assert_eq!(answer.flags.as_deref(), Some("FI"), "{answer:?}");
            aborted += 1;
        }
    }
    // Binomial(400, 0.5): mean 200, standard deviation 10; five of them either side.
    assert!((150..=250).contains(&aborted), "{aborted} of 400 aborted");
    assert_eq!(app.hits(), 400 - aborted, "aborted requests never reach the upstream, nor are retried");

    let delay_all = Policies {
        route: RoutePolicy {
            fault: Some(Fault {
                delay: Some(FaultDelay { fixed_ms: 300, per_million: 1_000_000 }),
                abort: None,
            }),
            ..RoutePolicy::default()
        },
        ..Policies::default()
    };
    cp.set_config(client_config("v2", &client, &[&app], &delay_all));
    let delayed = eventually("the push of the delay", || async {
        let answer = get(outbound).await;
        (answer.status == 200 && answer.elapsed >= Duration::from_millis(300)).then_some(answer)
    })
    .await;
    assert_eq!(delayed.flags, None, "a delayed request is answered by its upstream");
    let logged = eventually("the access line of a delayed request", || async {
        proxy
            .logs()
            .lines()
            .rev()
            .find(|line| line.contains("GET /work") && line.contains(" 200 DI "))
            .map(str::to_owned)
    })
    .await;
    assert!(logged.contains("via_upstream"), "{logged}");
}

/// A TCP app that writes its name to every connection, then closes it.
async fn tcp_namer(pod: &Pod, port: u16) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(pod.at(port)).await.expect("binds");
    let name = pod.name.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = tokio::io::AsyncWriteExt::write_all(&mut tcp, name.as_bytes()).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_route_splits_connections_by_weight() {
    use paymesh_api::ProxyConfig;
    use paymesh_api::model::{
        Cluster, ClusterEndpoints, Endpoint, H2Upgrade, Listener, ListenerKind, Protocol, ProxyKind,
        TcpRoute, UpstreamTls, WeightedCluster,
    };
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const PORT: u16 = 5432;
    let (primary, replica) = (Pod::new("db-primary", "db"), Pod::new("db-replica", "db"));
    let _apps = [tcp_namer(&primary, PORT).await, tcp_namer(&replica, PORT).await];
    let cluster = |subset: &str, pod: &Pod| {
        let name = format!("outbound|{PORT}|{subset}|db.test.svc.cluster.local");
        let endpoint = Endpoint {
            address: pod.at(PORT),
            tunnel_port: None,
            identity: pod.identity(),
            pod: pod.name.clone(),
            labels: Default::default(),
        };
        let cluster = Cluster {
            name: name.clone(),
            service: "db.test.svc.cluster.local".to_owned(),
            port: PORT,
            subset: Some(subset.to_owned()),
            protocol: Protocol::Tcp,
            h2_upgrade: H2Upgrade::default(),
            tls: UpstreamTls::Disable,
            lb: LbPolicy::RoundRobin,
            connection_pool: Default::default(),
            outlier_detection: None,
        };
        (Arc::new(cluster), Arc::new(ClusterEndpoints { cluster: name, endpoints: vec![endpoint] }))
    };
    let (a, a_endpoints) = cluster("primary", &primary);
    let (b, b_endpoints) = cluster("replica", &replica);
    let cp = ControlPlane::start(Duration::from_secs(3600)).await;
    let client = Pod::new("client-0", "client");
    cp.set_config(ProxyConfig {
        version: "v1".to_owned(),
        node: support::node(&client, ProxyKind::Sidecar),
        mesh: support::mesh(),
        listeners: vec![Listener {
            name: "virtualOutbound".to_owned(),
            address: client.at(15001),
            kind: ListenerKind::Outbound {
                tcp: vec![TcpRoute {
                    hosts: vec!["db".to_owned()],
                    port: PORT,
                    clusters: vec![
                        WeightedCluster { cluster: a.name.clone(), weight: 75 },
                        WeightedCluster { cluster: b.name.clone(), weight: 25 },
                    ],
                    virtual_service: Some("test/db".to_owned()),
                }],
            },
        }],
        routes: Vec::new(),
        clusters: vec![a, b],
        endpoints: vec![a_endpoints, b_endpoints],
    });
    let proxy = Proxy::start(&cp, &client, "sidecar");
    proxy.wait_ready().await;
    let mut to_primary = 0;
    for _ in 0..400 {
        let mut tcp = tokio::net::TcpStream::connect(client.at(15001)).await.expect("connects");
        tcp.write_all(format!("CONNECT db:{PORT} HTTP/1.1\r\nHost: db:{PORT}\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut bytes = Vec::new();
        tokio::time::timeout(support::DEADLINE, tcp.read_to_end(&mut bytes))
            .await
            .expect("in time")
            .expect("read");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        if text.ends_with("db-primary") {
            to_primary += 1;
        } else {
            assert!(text.ends_with("db-replica"), "{text}");
        }
    }
    // Binomial(400, 0.75): mean 300, standard deviation 8.7; five of them either side.
    assert!((256..=344).contains(&to_primary), "{to_primary} of 400 connections to the primary");
}
