//! Delegation merges as istiod merges: the cases of upstream's `TestMergeHTTPMatchRequests`
//! and `TestHasConflict` (`pilot/pkg/model/virtualservice_test.go`), then the route fields.

use serde_json::{Value, json};

use super::*;

fn matches(value: Value) -> Vec<HttpMatchRequest> {
    serde_json::from_value(value).expect("matches decode")
}

fn one(value: Value) -> HttpMatchRequest {
    serde_json::from_value(value).expect("match decodes")
}

fn route(value: Value) -> HttpRoute {
    serde_json::from_value(value).expect("route decodes")
}

/// `merge_matches` over JSON lists; `None` for a conflict.
fn merged(root: Value, delegate: Value) -> Option<Vec<HttpMatchRequest>> {
    merge_matches(&matches(root), &matches(delegate)).ok()
}

#[test]
fn uri_matches_merge_within_the_root_prefix() {
    let root = json!([{"uri": {"prefix": "/productpage"}}]);
    assert_eq!(
        merged(root.clone(), json!([{"uri": {"exact": "/productpage/v1"}}])),
        Some(matches(json!([{"uri": {"exact": "/productpage/v1"}}])))
    );
    assert_eq!(merged(root.clone(), json!([{"uri": {"exact": "/reviews"}}])), None, "outside the prefix");
    assert_eq!(
        merged(root, json!([{"uri": {"exact": "/productpage/v1"}}, {"uri": {"exact": "/reviews"}}])),
        None,
        "one delegate match fitting nowhere drops the whole rule"
    );
}

#[test]
fn a_root_regex_takes_only_delegate_matches_without_a_uri() {
    let root = json!([{"uri": {"regex": "^/productpage"}}]);
    assert_eq!(merged(root.clone(), json!([{}])), Some(matches(root.clone())));
    assert_eq!(merged(root, json!([{"uri": {"prefix": "/productpage"}}])), None);
}

#[test]
fn each_delegate_match_merges_with_the_root_matches_it_fits() {
    let root = json!([{"uri": {"prefix": "/productpage"}}, {"uri": {"prefix": "/reviews"}}]);
    let delegate = json!([{"uri": {"exact": "/productpage/v1"}}, {"uri": {"exact": "/reviews/v1"}}]);
    assert_eq!(merged(root, delegate.clone()), Some(matches(delegate)));
}

#[test]
fn a_side_without_matches_takes_the_other_side_as_it_is() {
    let root = json!([{"headers": {"x-fault-test": {"exact": "true"}}}]);
    assert_eq!(merged(root.clone(), json!([])), Some(matches(root.clone())));
    assert_eq!(merged(json!([]), root.clone()), Some(matches(root)));
}

#[test]
fn headers_merge_by_name_and_conflict_by_value() {
    let root = json!([{"headers": {"header": {"exact": "h1"}}}]);
    assert_eq!(merged(root.clone(), json!([{"headers": {"header": {"exact": "h2"}}}])), None);
    assert_eq!(
        merged(root, json!([{"headers": {"header-2": {"exact": "h2"}}}])),
        Some(matches(json!([{"headers": {"header": {"exact": "h1"}, "header-2": {"exact": "h2"}}}])))
    );
}

#[test]
fn root_conditions_fill_what_the_delegate_leaves_unset() {
    let root = json!([{
        "uri": {"prefix": "/productpage"},
        "headers": {"header": {"exact": "h1"}},
        "port": 8080,
        "authority": {"exact": "productpage.com"},
    }]);
    let delegate = json!([{"uri": {"exact": "/productpage/v1"}}, {"uri": {"exact": "/productpage/v2"}}]);
    let expected = |uri: &str| {
        json!({
            "uri": {"exact": uri},
            "headers": {"header": {"exact": "h1"}},
            "port": 8080,
            "authority": {"exact": "productpage.com"},
        })
    };
    assert_eq!(
        merged(root.clone(), delegate),
        Some(matches(json!([expected("/productpage/v1"), expected("/productpage/v2")])))
    );
    let other_port =
        json!([{"uri": {"exact": "/productpage/v1"}}, {"uri": {"exact": "/productpage/v2"}, "port": 9090}]);
    assert_eq!(merged(root, other_port), None);
}

#[test]
fn gateways_and_source_labels() {
    let root = json!([{"uri": {"prefix": "/productpage"}, "gateways": ["ingress-gateway", "mesh"]}]);
    let delegate = json!([
        {"uri": {"exact": "/productpage/v1"}, "gateways": ["ingress-gateway"]},
        {"uri": {"exact": "/productpage/v2"}, "gateways": ["mesh"]},
    ]);
    assert_eq!(merged(root, delegate.clone()), Some(matches(delegate.clone())));
    assert_eq!(
        merged(json!([{"uri": {"prefix": "/productpage"}, "gateways": ["ingress-gateway"]}]), delegate),
        None
    );
    assert_eq!(
        merged(json!([{"sourceLabels": {"app": "test"}}]), json!([{"sourceLabels": {"version": "v1"}}])),
        Some(matches(json!([{"sourceLabels": {"app": "test", "version": "v1"}}])))
    );
}

#[test]
fn has_conflict_as_upstream() {
    let cases = [
        (
            "regex root, prefix delegate",
            json!({"uri": {"regex": "^/p"}}),
            json!({"uri": {"prefix": "/p/v2"}}),
            true,
        ),
        ("regex root, no uri", json!({"uri": {"regex": "^/p"}}), json!({}), false),
        ("no uri, regex delegate", json!({}), json!({"uri": {"regex": "^/p"}}), false),
        (
            "prefix root, regex delegate",
            json!({"uri": {"prefix": "/p"}}),
            json!({"uri": {"regex": "^/p"}}),
            true,
        ),
        ("longer prefix", json!({"uri": {"prefix": "/p"}}), json!({"uri": {"prefix": "/p/v2"}}), false),
        ("shorter prefix", json!({"uri": {"prefix": "/p/v2"}}), json!({"uri": {"prefix": "/p"}}), true),
        (
            "exact within prefix",
            json!({"uri": {"prefix": "/p/v2"}}),
            json!({"uri": {"exact": "/p/v2"}}),
            false,
        ),
        (
            "exact root, prefix delegate",
            json!({"uri": {"exact": "/p"}}),
            json!({"uri": {"prefix": "/p"}}),
            true,
        ),
        (
            "headers equal",
            json!({"headers": {"h": {"exact": "h1"}}}),
            json!({"headers": {"h": {"exact": "h1"}}}),
            false,
        ),
        (
            "headers differ",
            json!({"headers": {"h": {"exact": "h1"}}}),
            json!({"headers": {"h": {"exact": "h2"}}}),
            true,
        ),
        (
            "header within prefix",
            json!({"headers": {"h": {"prefix": "h1"}}}),
            json!({"headers": {"h": {"exact": "h1-v1"}}}),
            false,
        ),
        (
            "header outside prefix",
            json!({"headers": {"h": {"prefix": "h1"}}}),
            json!({"headers": {"h": {"prefix": "h2"}}}),
            true,
        ),
        (
            "other header",
            json!({"headers": {"h": {"exact": "h1"}}}),
            json!({"headers": {"h2": {"exact": "h2"}}}),
            false,
        ),
        (
            "withoutHeaders",
            json!({"withoutHeaders": {"h": {"prefix": "h1"}}}),
            json!({"withoutHeaders": {"h": {"exact": "h2"}}}),
            true,
        ),
        ("root any port", json!({}), json!({"port": 8080}), false),
        ("delegate any port", json!({"port": 8080}), json!({}), false),
        ("ports differ", json!({"port": 8080}), json!({"port": 8090}), true),
        (
            "source labels differ",
            json!({"sourceLabels": {"a": "b"}}),
            json!({"sourceLabels": {"a": "c"}}),
            true,
        ),
        (
            "source namespaces differ",
            json!({"sourceNamespace": "test1"}),
            json!({"sourceNamespace": "test2"}),
            true,
        ),
        (
            "more gateways",
            json!({"gateways": ["ingress-gateway"]}),
            json!({"gateways": ["ingress-gateway", "mesh"]}),
            true,
        ),
        // Go's quirks, kept: a root `{}` or one without the delegate's sourceNamespace conflicts.
        (
            "root present, delegate exact",
            json!({"headers": {"h": {}}}),
            json!({"headers": {"h": {"exact": "v"}}}),
            true,
        ),
        ("root source namespace only", json!({"sourceNamespace": "a"}), json!({}), true),
        ("ignoreUriCase differs", json!({"ignoreUriCase": true}), json!({}), true),
    ];
    for (name, root, leaf, expected) in cases {
        assert_eq!(conflict(&one(root), &one(leaf)).is_some(), expected, "{name}");
    }
}

/// The paymesh fault-test hook: the root takes requests with `x-fault-test: "true"`.
#[test]
fn a_conflict_names_the_condition_and_both_values() {
    let root =
        matches(json!([{"headers": {"x-fault-test": {"exact": "true"}}, "uri": {"prefix": "/v1/accounts"}}]));
    let found = |delegate: Value| merge_matches(&root, &matches(delegate)).map_err(|e| e.to_string());
    assert!(found(json!([{"method": {"exact": "GET"}}])).is_ok(), "narrower: another condition");
    assert_eq!(
        found(json!([{"headers": {"x-fault-test": {"exact": "yes"}}}])),
        Err(r#"match #0 of the delegate rule falls within no match of the root rule (root match #0: headers.x-fault-test: exact "yes" is not within exact "true")"#.to_owned())
    );
    assert_eq!(
        found(json!([{"method": {"exact": "GET"}}, {"uri": {"prefix": "/v1"}}])),
        Err(r#"match #1 of the delegate rule falls within no match of the root rule (root match #0: uri: prefix "/v1" is not within prefix "/v1/accounts")"#.to_owned())
    );
    let conflict = merge_matches(&root, &matches(json!([{"uri": {"prefix": "/v1"}}]))).expect_err("wider");
    assert_eq!(conflict.delegate_match, 0);
    assert_eq!(conflict.conflicts[0].field, FieldPath::parse("uri"));
}

#[test]
fn merged_matches_join_names_and_keep_the_delegate_values() {
    let root = one(json!({"name": "test", "headers": {"h": {"prefix": "a"}}, "statPrefix": "root"}));
    let merged = merge_match(&root, &one(json!({"name": "v2", "headers": {"h": {"exact": "ab"}}})));
    assert_eq!(
        merged,
        one(json!({"name": "test-v2", "headers": {"h": {"exact": "ab"}}, "statPrefix": "root"}))
    );
}

#[test]
fn a_merged_route_inherits_what_the_delegate_leaves_unset() {
    let root = route(json!({
        "name": "fault-test",
        "match": [{"headers": {"x-fault-test": {"exact": "true"}}}],
        "delegate": {"name": "account-service-fault-test"},
        "timeout": "5s",
        "retries": {"attempts": 2, "perTryTimeout": "2s"},
        "headers": {"request": {"set": {"x-root": "1"}}},
    }));
    let delegate = route(json!({
        "name": "delay",
        "fault": {"delay": {"fixedDelay": "5s", "percentage": {"value": 10}}},
        "route": [{"destination": {"host": "account-service"}}],
        "timeout": "3s",
    }));
    let merged = merge_route(&root, &delegate).expect("no conflict");
    assert_eq!(
        merged,
        route(json!({
            "name": "fault-test-delay",
            "match": [{"headers": {"x-fault-test": {"exact": "true"}}}],
            "fault": {"delay": {"fixedDelay": "5s", "percentage": {"value": 10}}},
            "route": [{"destination": {"host": "account-service"}}],
            "timeout": "3s",
            "retries": {"attempts": 2, "perTryTimeout": "2s"},
            "headers": {"request": {"set": {"x-root": "1"}}},
        }))
    );
}

#[test]
fn merged_routes_leave_out_the_conflicting_rules() {
    let root = route(
        json!({"match": [{"headers": {"x-fault-test": {"exact": "true"}}}], "delegate": {"name": "d"}}),
    );
    let delegate: Vec<HttpRoute> = serde_json::from_value(json!([
        {"name": "wider", "match": [{"headers": {"x-fault-test": {"prefix": "t"}}}], "route": [{"destination": {"host": "a"}}]},
        {"name": "inherits", "route": [{"destination": {"host": "a"}}]},
    ]))
    .expect("routes decode");
    let names: Vec<String> = merge_routes(&root, &delegate).into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["inherits"]);
}
