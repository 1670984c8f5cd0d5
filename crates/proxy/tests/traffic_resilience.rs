//! A DestinationRule's connection pool and a VirtualService's retries and timeouts, enforced by
//! a real sidecar in front of scripted upstreams: the circuit breaker answers the excess 503 `UO`
//! at once and recovers; retries turn a flaky upstream into full success without ever exceeding
//! `attempts` (counted at the upstream), run out with `URX`, leave alone a body too large to
//! keep, follow Istio's default when the route sets none, and stop with `attempts: 0`; the route
//! timeout and the per-try timeout answer 504 `UT`. Rewrites change what the upstream receives;
//! a redirect answers without forwarding; a mirror gets a copy with the `-shadow` host, and its
//! failures never reach the client; a CORS preflight from an allowed origin is answered by the
//! sidecar, and the actual request's answer carries the allowed origin.

#[path = "support/control.rs"]
mod control;
#[path = "support/harness.rs"]
mod support;
#[path = "support/upstreams.rs"]
mod upstreams;

use std::time::Duration;

use bytes::Bytes;
use paymesh_api::model::{
    ConnectionPool, Cors, Redirect, RedirectPath, RedirectPort, RegexRewrite, RetryOn, RetryPolicy, Rewrite,
    RoutePolicy, StringMatch,
};
use support::{Proxy, eventually};
use upstreams::{Answer, Policies, Script, Upstream, call, client_config, get, sidecar};

fn no_retries() -> RoutePolicy {
    RoutePolicy { retries: RetryPolicy::none(), ..RoutePolicy::default() }
}

fn retrying(attempts: u32, retry_on: &[RetryOn]) -> RoutePolicy {
    RoutePolicy {
        retries: RetryPolicy { attempts, retry_on: retry_on.to_vec(), ..RetryPolicy::none() },
        ..RoutePolicy::default()
    }
}

/// The client's access lines so far for `/work`.
fn access_lines(proxy: &Proxy) -> Vec<String> {
    proxy
        .logs()
        .lines()
        .filter(|line| line.contains("GET /work") || line.contains("POST /work"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_pool_limits_requests_fail_fast_with_uo_and_the_breaker_recovers() {
    let slow = Upstream::start("slow-0", Script::Slow(Duration::from_millis(800))).await;
    let policies = Policies {
        pool: ConnectionPool {
            max_connections: Some(1),
            max_pending_requests: Some(1),
            ..ConnectionPool::default()
        },
        route: no_retries(),
        ..Policies::default()
    };
    let (_cp, client, _proxy) = sidecar(&[&slow], &policies).await;
    let outbound = client.at(15001);
    let calls: Vec<_> = (0..20).map(|_| tokio::spawn(get(outbound))).collect();
    let mut answers: Vec<Answer> = Vec::new();
    for call in calls {
        answers.push(call.await.expect("joins"));
    }
    let (served, overflowed): (Vec<_>, Vec<_>) = answers.iter().partition(|a| a.status == 200);
    assert_eq!(served.len(), 2, "one on the connection, one pending: {answers:?}");
    assert_eq!(overflowed.len(), 18);
    for answer in &overflowed {
        assert_eq!(
            (answer.status, answer.flags.as_deref(), answer.overloaded),
            (503, Some("UO"), true),
            "{answer:?}"
        );
    }
    // Fail fast: every overflow came back before the upstream's first answer could.
    let first_served = served.iter().map(|a| a.elapsed).min().expect("served");
    assert!(overflowed.iter().all(|a| a.elapsed < first_served), "{answers:?}");
    assert_eq!(slow.hits(), 2, "the excess never reached the upstream");
    assert_eq!(get(outbound).await.status, 200, "the breaker closes once load drops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_hide_a_flaky_upstream_and_never_exceed_attempts() {
    let flaky = Upstream::start("flaky-0", Script::FailEvery(3)).await;
    let always = Upstream::start("down-0", Script::Status(503)).await;
    let five_xx = Policies { route: retrying(2, &[RetryOn::FiveXx]), ..Policies::default() };
    let (cp, client, proxy) = sidecar(&[&flaky], &five_xx).await;
    let outbound = client.at(15001);

    for _ in 0..30 {
        assert_eq!(get(outbound).await.status, 200, "a retry hides every third request's 503");
    }
    // Every third arrival fails and is tried once more: after the first two requests, each two
    // requests take three arrivals (2 + 14 × 3).
    assert_eq!(flaky.hits(), 44);

    cp.set_config(client_config("v2", &client, &[&always], &five_xx));
    let exhausted = eventually("the push to the failing upstream", || async {
        let answer = get(outbound).await;
        (always.hits() > 0).then_some(answer)
    })
    .await;
    assert_eq!(exhausted.status, 503);
    assert_eq!(always.hits(), 3, "the first attempt and `attempts: 2` retries");
    let last = access_lines(&proxy).pop().expect("an access line");
    assert!(last.contains(" 503 URX via_upstream "), "{last}");

    let big = Bytes::from(vec![7u8; 1024 * 1024 + 1]);
    assert_eq!(call(outbound, "POST", &[], big).await.status, 503);
    assert_eq!(always.hits(), 4, "a body over 1 MiB is not kept, so it is not sent again");

    cp.set_config(client_config(
        "v3",
        &client,
        &[&always],
        &Policies { route: no_retries(), ..Policies::default() },
    ));
    eventually("the push without retries", || async {
        let before = always.hits();
        get(outbound).await;
        (always.hits() == before + 1).then_some(())
    })
    .await;

    let istio_default = Policies::default();
    cp.set_config(client_config("v4", &client, &[&always], &istio_default));
    eventually("the push of Istio's default policy", || async {
        let before = always.hits();
        get(outbound).await;
        (always.hits() == before + 3).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_timeout_and_the_per_try_timeout_answer_504_ut() {
    let slow = Upstream::start("slow-0", Script::Slow(Duration::from_secs(2))).await;
    let timeout =
        Policies { route: RoutePolicy { timeout_ms: Some(100), ..no_retries() }, ..Policies::default() };
    let (cp, client, proxy) = sidecar(&[&slow], &timeout).await;
    let outbound = client.at(15001);
    let answer = get(outbound).await;
    assert_eq!((answer.status, answer.flags.as_deref()), (504, Some("UT")), "{answer:?}");
    assert!(answer.elapsed < Duration::from_secs(2), "answered before the upstream: {answer:?}");

    let mut per_try = retrying(2, &[RetryOn::Reset]);
    per_try.retries.per_try_timeout_ms = Some(100);
    cp.set_config(client_config(
        "v2",
        &client,
        &[&slow],
        &Policies { route: per_try, ..Policies::default() },
    ));
    let answer = eventually("the push with a per-try timeout", || async {
        let before = slow.hits();
        let answer = get(outbound).await;
        (slow.hits() == before + 3).then_some(answer)
    })
    .await;
    assert_eq!((answer.status, answer.flags.as_deref()), (504, Some("UT,URX")), "{answer:?}");
    assert!(answer.elapsed < Duration::from_secs(2), "three tries of 100 ms and backoffs: {answer:?}");
    let last = access_lines(&proxy).pop().expect("an access line");
    assert!(last.contains("upstream_per_try_timeout"), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_change_what_the_upstream_receives_and_redirects_answer_at_once() {
    let app = Upstream::start("app-0", Script::Ok).await;
    let prefix = Policies {
        rewrite: Some(Rewrite {
            uri: Some("/internal/".into()),
            authority: Some("backend.internal:9000".into()),
            ..Rewrite::default()
        }),
        ..Policies::default()
    };
    let (cp, client, _proxy) = sidecar(&[&app], &prefix).await;
    let outbound = client.at(15001);
    let answer = get(outbound).await;
    // The route matches every path: its prefix is `/`, which the rewrite replaces.
    assert_eq!(answer.path.as_deref(), Some("/internal/work"), "{answer:?}");
    assert_eq!(answer.host.as_deref(), Some("backend.internal:9000"));

    let regex = Policies {
        rewrite: Some(Rewrite {
            uri_regex: Some(RegexRewrite { pattern: "^/(w)ork$".into(), substitution: "/jobs/${1}".into() }),
            ..Rewrite::default()
        }),
        ..Policies::default()
    };
    cp.set_config(client_config("v2", &client, &[&app], &regex));
    let answer = eventually("the regex rewrite", || async {
        let answer = get(outbound).await;
        (answer.path.as_deref() == Some("/jobs/w")).then_some(answer)
    })
    .await;
    assert_eq!(answer.host.as_deref(), Some("svc:8080"), "the authority is kept");

    let redirect = Policies {
        redirect: Some(Redirect {
            status: 308,
            scheme: Some("https".into()),
            authority: Some("payments.example.com".into()),
            port: RedirectPort::ProtocolDefault,
            path: Some(RedirectPath::Prefix("/v2/".into())),
        }),
        ..Policies::default()
    };
    let hits = app.hits();
    cp.set_config(client_config("v3", &client, &[&app], &redirect));
    let answer = eventually("the redirect", || async {
        let answer = get(outbound).await;
        (answer.status == 308).then_some(answer)
    })
    .await;
    assert_eq!(answer.location.as_deref(), Some("https://payments.example.com/v2/work"), "{answer:?}");
    let before = app.hits();
    get(outbound).await;
    assert_eq!(app.hits(), before, "a redirect is not forwarded (hits before the push: {hits})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_gets_a_shadow_copy_and_its_failures_never_reach_the_client() {
    let app = Upstream::start("app-0", Script::Ok).await;
    let shadow = Upstream::start("shadow-0", Script::Status(500)).await;
    let mirrored = Policies { mirrors: vec![shadow.endpoint()], ..Policies::default() };
    let (_cp, client, _proxy) = sidecar(&[&app], &mirrored).await;
    let outbound = client.at(15001);
    for _ in 0..10 {
        let answer = call(outbound, "POST", &[], Bytes::from_static(b"{\"amount\": 1}")).await;
        assert_eq!((answer.status, answer.pod.as_deref()), (200, Some("app-0")), "{answer:?}");
    }
    eventually("ten copies at the mirror", || async { (shadow.hits() == 10).then_some(()) }).await;
    let hosts = shadow.hosts.lock().expect("hosts").clone();
    assert!(hosts.iter().all(|h| h == "svc-shadow:8080"), "{hosts:?}");
    assert_eq!(app.hits(), 10, "the mirror's 500s were not retried against the original");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_and_allowed_origins_get_their_headers() {
    let app = Upstream::start("app-0", Script::Ok).await;
    let cors = Policies {
        cors: Some(Cors {
            allow_origins: vec![StringMatch::Exact("https://shop.example.com".into())],
            allow_methods: vec!["POST".into()],
            max_age_secs: Some(60),
            ..Cors::default()
        }),
        ..Policies::default()
    };
    let (_cp, client, _proxy) = sidecar(&[&app], &cors).await;
    let outbound = client.at(15001);
    let origin = ("origin", "https://shop.example.com");
    let preflight =
        call(outbound, "OPTIONS", &[origin, ("access-control-request-method", "POST")], Bytes::new()).await;
    assert_eq!(
        (preflight.status, preflight.pod.as_deref()),
        (200, None),
        "answered by the sidecar: {preflight:?}"
    );
    assert_eq!(app.hits(), 0);
    let actual = call(outbound, "POST", &[origin], Bytes::new()).await;
    assert_eq!((actual.status, actual.pod.as_deref()), (200, Some("app-0")));
    assert_eq!(actual.allow_origin.as_deref(), Some("https://shop.example.com"));
    let stranger = call(
        outbound,
        "OPTIONS",
        &[("origin", "https://evil.example"), ("access-control-request-method", "POST")],
        Bytes::new(),
    )
    .await;
    assert_eq!(stranger.pod.as_deref(), Some("app-0"), "a preflight from another origin is forwarded");
    assert_eq!(stranger.allow_origin, None);
}
