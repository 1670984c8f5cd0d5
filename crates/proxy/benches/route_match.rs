//! Route matching over 1,000 routes (issue #13's bound: under 5 µs per request): one virtual
//! host whose routes each match a path prefix and a tenant header, the request taken by the
//! last one — the worst case of first-match-wins, which the path index answers without trying
//! the others; the same routes matching on the header alone (indexed by exact header value);
//! routes whose path regex has a literal prefix (indexed by it); and routes whose path regex has
//! none (`.*/N/capture`), which no index helps: every route is tried.
//!
//! `cargo bench -p paymesh-proxy --bench route_match`

use bytes::Bytes;
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use paymesh_api::model::{HeaderMatch, RouteMatch, StringMatch};
use paymesh_proxy::index::{Action, RequestView, RouteEntry, RouteHeaders, RouteMatcher, VirtualHostEntry};

const ROUTES: usize = 1000;

/// How the routes of the benchmark match the path.
#[derive(Clone, Copy)]
enum Path {
    Prefix,
    Any,
    Regex,
    /// A regex with no literal prefix: no index helps.
    Suffix,
}

fn virtual_host(path: Path) -> VirtualHostEntry {
    let routes = (0..ROUTES)
        .map(|i| {
            let uri = match path {
                Path::Prefix => Some(StringMatch::Prefix(format!("/v1/payments/{i}/"))),
                Path::Any => None,
                Path::Regex => Some(StringMatch::Regex(format!("/v1/payments/{i}/[a-z]+"))),
                Path::Suffix => Some(StringMatch::Regex(format!(".*/{i}/capture"))),
            };
            let header = match path {
                Path::Regex | Path::Suffix => StringMatch::Prefix(format!("tenant-{i}")),
                _ => StringMatch::Exact(format!("tenant-{i}")),
            };
            let spec = RouteMatch {
                uri,
                headers: vec![HeaderMatch {
                    name: "x-tenant-id".to_owned(),
                    value: Some(header),
                    invert: false,
                }],
                ..RouteMatch::default()
            };
            RouteEntry {
                name: format!("route-{i}"),
                virtual_service: None,
                matcher: RouteMatcher::compile(&[spec]).expect("compiles"),
                headers: RouteHeaders::default(),
                action: Action::Direct { status: StatusCode::OK, body: Bytes::new() },
                policy: Default::default(),
                rewrite: None,
                mirrors: Vec::new(),
                cors: None,
            }
        })
        .collect();
    VirtualHostEntry::new("payments".to_owned(), routes)
}

fn route_match(c: &mut Criterion) {
    let (vhost, headers_only, regex) =
        (virtual_host(Path::Prefix), virtual_host(Path::Any), virtual_host(Path::Regex));
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant-id", HeaderValue::from_str(&format!("tenant-{}", ROUTES - 1)).expect("value"));
    let path = format!("/v1/payments/{}/capture", ROUTES - 1);
    let view = RequestView {
        method: &Method::POST,
        path: &path,
        query: None,
        scheme: "http",
        authority: "payment-service:8081",
        headers: &headers,
    };
    assert_eq!(vhost.route_for(&view).map(|(i, _)| i), Some(ROUTES - 1));
    assert_eq!(headers_only.route_for(&view).map(|(i, _)| i), Some(ROUTES - 1));
    c.bench_function("route_for: the last of 1,000 path routes", |b| {
        b.iter(|| vhost.route_for(black_box(&view)))
    });
    c.bench_function("route_for: the last of 1,000 header-only routes", |b| {
        b.iter(|| headers_only.route_for(black_box(&view)))
    });
    assert_eq!(regex.route_for(&view).map(|(i, _)| i), Some(ROUTES - 1));
    c.bench_function("route_for: the last of 1,000 regex routes", |b| {
        b.iter(|| regex.route_for(black_box(&view)))
    });
    let suffix = virtual_host(Path::Suffix);
    assert_eq!(suffix.route_for(&view).map(|(i, _)| i), Some(ROUTES - 1));
    c.bench_function("route_for: the last of 1,000 unindexable routes", |b| {
        b.iter(|| suffix.route_for(black_box(&view)))
    });
}

criterion_group!(benches, route_match);
criterion_main!(benches);
