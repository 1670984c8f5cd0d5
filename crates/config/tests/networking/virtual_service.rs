//! VirtualService rules: one invalid spec per rule, with Istio's message at its path.

use super::{check, decode_error};

const VS: &str = "VirtualService";

/// A valid route to wrap around the field under test.
fn route(extra: &str) -> String {
    format!("{{hosts: [a.com], http: [{{route: [{{destination: {{host: a}}}}]{extra}}}]}}")
}

#[test]
fn valid_specs_pass() {
    check(VS, &route(""), &[]);
    check(VS, "{hosts: [10.0.0.1], http: [{route: [{destination: {host: a}}]}]}", &[]);
    check(VS, "{hosts: ['*'], gateways: [ns/gw], http: [{route: [{destination: {host: a}}]}]}", &[]);
    check(
        VS,
        &route(", retries: {attempts: 3, perTryTimeout: 2s, retryOn: '503,connect-failure,reset'}"),
        &[],
    );
    check(
        VS,
        &route(", match: [{withoutHeaders: {x-a: {regex: '*'}}, headers: {x-b: {}}, uri: {prefix: ''}}]"),
        &[],
    );
    check(VS, "{http: [{route: [{destination: {host: a}}]}]}", &[]);
}

#[test]
fn hosts() {
    check(
        VS,
        "{hosts: [a_b.com], http: [{route: [{destination: {host: a}}]}]}",
        &[("spec.hosts[0]", r#"domain name "a_b.com" invalid (label "a_b" invalid)"#)],
    );
    check(
        VS,
        "{hosts: ['*'], http: [{route: [{destination: {host: a}}]}]}",
        &[("spec.hosts[0]", "wildcard host * is not allowed for virtual services bound to the mesh gateway")],
    );
    check(
        VS,
        "{hosts: [a.com, '*.com'], http: [{route: [{destination: {host: a}}]}]}",
        &[("spec.hosts[1]", "duplicate hosts in virtual service: a.com & *.com")],
    );
    check(
        VS,
        "{hosts: [a.com], tls: [{match: [{sniHosts: [b.com]}], route: [{destination: {host: a}}]}]}",
        &[(
            "spec.tls[0].match[0].sniHosts[0]",
            r#"SNI host "b.com" is not a compatible subset of any of the virtual service hosts: [a.com]"#,
        )],
    );
}

#[test]
fn delegates_and_gateways() {
    check(
        VS,
        "{gateways: [ns/gw], http: [{route: [{destination: {host: a}}]}]}",
        &[("spec.gateways", "delegate virtual service must have no gateways specified")],
    );
    check(
        VS,
        "{tcp: [{route: [{destination: {host: a}}]}]}",
        &[("spec.tcp", "delegate virtual service must have no tcp route specified")],
    );
    check(
        VS,
        "{http: [{delegate: {name: b}}]}",
        &[
            ("spec.http[0]", "HTTP route, redirect or direct_response is required"),
            ("spec.http[0].delegate", "delegate HTTP route cannot contain delegate"),
        ],
    );
    check(
        VS,
        "{hosts: [a.com], http: [{name: r, delegate: {name: b}, route: [{destination: {host: a}}]}]}",
        &[("spec.http[0].route", "root HTTP route r must not specify route")],
    );
    check(
        VS,
        "{hosts: [a.com], gateways: [bad_ns/gw], http: [{route: [{destination: {host: a}}]}]}",
        &[("spec.gateways[0]", r#"invalid value for namespace: "bad_ns""#)],
    );
    check(
        VS,
        "{hosts: [a.com], gateways: [ns/], http: [{route: [{destination: {host: a}}]}]}",
        &[
            ("spec.gateways[0]", "config namespace and gateway name cannot be empty"),
            ("spec.gateways[0]", r#"invalid value for gateway name: """#),
        ],
    );
    check(VS, "{hosts: [a.com]}", &[("spec", "http, tcp or tls must be provided in virtual service")]);
}

#[test]
fn destinations_and_weights() {
    let two = |a: &str, b: &str| format!("{{hosts: [a.com], http: [{{route: [{a}, {b}]}}]}}");
    check(
        VS,
        &two("{destination: {host: a}, weight: -10}", "{destination: {host: b}, weight: 110}"),
        &[("spec.http[0].route[0].weight", "weight -10 < 0")],
    );
    check(
        VS,
        &two("{destination: {host: a}}", "{destination: {host: b}}"),
        &[("spec.http[0].route", "total destination weight = 0")],
    );
    check(VS, &two("{destination: {host: a}, weight: 1}", "{destination: {host: b}, weight: 3}"), &[]);
    check(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: '*'}}]}]}",
        &[("spec.http[0].route[0].destination.host", "invalid destination host *")],
    );
    check(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a, subset: V_1}}]}]}",
        &[("spec.http[0].route[0].destination.subset", "subset name is invalid: V_1")],
    );
    check(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a, port: {number: 70000}}}]}]}",
        &[(
            "spec.http[0].route[0].destination.port.number",
            "port number 70000 must be in the range 1..65535",
        )],
    );
    check(
        VS,
        "{hosts: [a.com], tcp: [{route: [{destination: {host: a}, weight: -1}]}]}",
        &[("spec.tcp[0].route[0].weight", "weight -1 < 0")],
    );
    check(
        VS,
        "{hosts: [a.com], http: [{route: [{weight: 100}]}]}",
        &[("spec.http[0].route[0]", "destination is required")],
    );
    check(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {}}]}]}",
        &[("spec.http[0].route[0].destination.host", "empty domain name not allowed")],
    );
    check(
        VS,
        &route(", mirrors: [{percentage: {value: 5}}]"),
        &[("spec.http[0].mirrors[0]", "destination is required for mirrors")],
    );
}

#[test]
fn matches() {
    let m = |condition: &str| route(&format!(", match: [{condition}]"));
    check(
        VS,
        &m("{uri: {regex: '('}}"),
        &[(
            "spec.http[0].match[0].uri.regex",
            r#""uri": error parsing regexp: unclosed group; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"#,
        )],
    );
    check(
        VS,
        &m("{headers: {x-user: {prefix: ''}}}"),
        &[(
            "spec.http[0].match[0].headers.x-user.prefix",
            r#""headers": prefix string match should not be empty"#,
        )],
    );
    check(
        VS,
        &m("{method: {regex: ''}}"),
        &[("spec.http[0].match[0].method.regex", r#""method": regex string match should not be empty"#)],
    );
    check(
        VS,
        &m("{headers: {'bad header': {exact: a}}}"),
        &[("spec.http[0].match[0].headers.bad header", "header name bad header is not a valid header name")],
    );
    check(
        VS,
        &m("{headers: {'@request.auth.claims.group': {exact: admin}}}"),
        &[(
            "spec.http[0].match[0].headers.@request.auth.claims.group",
            "JWT claim based routing (key: @request.auth.claims.group) is only supported for gateway, found no gateways: []",
        )],
    );
    check(
        VS,
        &m("{sourceNamespace: Bad_NS}"),
        &[("spec.http[0].match[0].sourceNamespace", "sourceNamespace match Bad_NS is invalid")],
    );
    check(
        VS,
        &m("{port: 70000}"),
        &[("spec.http[0].match[0].port", "port number 70000 must be in the range 1..65535")],
    );
    check(
        VS,
        &m("{sourceLabels: {'bad key': a}}"),
        &[("spec.http[0].match[0].sourceLabels", r#"invalid tag key: "bad key""#)],
    );
    assert!(decode_error(VS, &m("{uri: {exact: /a, prefix: /b}}")).ends_with(
        "spec.http[0].match[0].uri: only one of exact, prefix, regex may be set, found exact and prefix"
    ));
}

/// Every regex a route may carry is compiled as the proxy compiles it (the `regex` crate,
/// anchored, with the proxy's size limit), so the proxy never gets one it refuses.
#[test]
fn regexes_that_do_not_compile_are_rejected_where_they_are() {
    let unclosed = |context: &str| {
        format!(
            r#""{context}": error parsing regexp: unclosed group; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"#
        )
    };
    let m = |condition: &str| route(&format!(", match: [{condition}]"));
    for (field, condition) in [
        ("headers", "{headers: {x-user: {regex: '('}}}"),
        ("withoutHeaders", "{withoutHeaders: {x-user: {regex: '('}}}"),
        ("queryParams", "{queryParams: {id: {regex: '('}}}"),
        ("authority", "{authority: {regex: '('}}"),
        ("scheme", "{scheme: {regex: '('}}"),
        ("method", "{method: {regex: '('}}"),
    ] {
        let path = match field {
            "headers" | "withoutHeaders" => format!("spec.http[0].match[0].{field}.x-user.regex"),
            "queryParams" => "spec.http[0].match[0].queryParams.id.regex".to_owned(),
            _ => format!("spec.http[0].match[0].{field}.regex"),
        };
        check(VS, &m(condition), &[(&path, &unclosed(field))]);
    }
    check(
        VS,
        &route(", corsPolicy: {allowOrigins: [{regex: 'https://(.*'}]}"),
        &[("spec.http[0].corsPolicy.allowOrigins[0].regex", &unclosed("corsPolicy.allowOrigins"))],
    );
    // Wrapped as the proxy anchors it, `a)|(.*` would parse and match every path.
    let unopened = r#""uri": error parsing regexp: unopened group; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"#;
    check(VS, &m("{uri: {regex: 'a)|(.*'}}"), &[("spec.http[0].match[0].uri.regex", unopened)]);
    // `\w` is a Unicode class: a hundred of them is a short pattern but a program larger than
    // the proxy's limit, which Istio's length check (1024 characters) lets through.
    let too_large = r#""uri": regex is too large: compiled, it exceeds the proxy's limit of 1048576 bytes"#;
    check(VS, &m(r"{uri: {regex: '\w{100}'}}"), &[("spec.http[0].match[0].uri.regex", too_large)]);
    check(
        VS,
        &route(r", rewrite: {uriRegexRewrite: {match: '\w{100}', rewrite: /x}}"),
        &[(
            "spec.http[0].rewrite.uriRegexRewrite.match",
            r#""HTTPRewrite.UriRegexRewrite.Match": regex is too large: compiled, it exceeds the proxy's limit of 1048576 bytes"#,
        )],
    );
    check(VS, &m(r"{uri: {regex: '[a-z]{1000}'}}"), &[]);
}

#[test]
fn retries_and_timeouts() {
    check(
        VS,
        &route(", retries: {attempts: -1}"),
        &[("spec.http[0].retries.attempts", "attempts cannot be negative")],
    );
    check(
        VS,
        &route(", retries: {attempts: 0, perTryTimeout: 1s}"),
        &[(
            "spec.http[0].retries.attempts",
            "http retry policy configured when attempts are set to 0 (disabled)",
        )],
    );
    check(
        VS,
        &route(", retries: {attempts: 2, perTryTimeout: 500us}"),
        &[("spec.http[0].retries.perTryTimeout", "duration must be greater than 1ms")],
    );
    check(
        VS,
        &route(", retries: {attempts: 2, retryOn: '5xx,bogus'}"),
        &[("spec.http[0].retries.retryOn", r#""bogus" is not a valid retryOn policy"#)],
    );
    check(VS, &route(", timeout: 0s"), &[("spec.http[0].timeout", "duration must be greater than 1ms")]);
    check(
        VS,
        &route(", timeout: 1500500us"),
        &[("spec.http[0].timeout", "only durations to ms precision are supported")],
    );
    assert!(
        decode_error(VS, &route(", timeout: 5 seconds")).contains("spec.http[0].timeout: invalid duration")
    );
}

#[test]
fn fault_injection() {
    check(
        VS,
        &route(", fault: {}"),
        &[("spec.http[0].fault", "HTTP fault injection must have an abort and/or a delay")],
    );
    check(
        VS,
        &route(", fault: {abort: {httpStatus: 700, percentage: {value: 10}}}"),
        &[("spec.http[0].fault.abort.httpStatus", "HTTP status 700 is not in range 200-599")],
    );
    check(
        VS,
        &route(", fault: {abort: {httpStatus: 503, percentage: {value: 150}}}"),
        &[(
            "spec.http[0].fault.abort.percentage.value",
            "percentage 150 is neither 0.0, nor in range [0.0001, 100.0]",
        )],
    );
    check(
        VS,
        &route(", fault: {abort: {grpcStatus: NOPE}}"),
        &[(
            "spec.http[0].fault.abort.grpcStatus",
            r#"gRPC status "NOPE" is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"#,
        )],
    );
    check(
        VS,
        &route(", fault: {delay: {fixedDelay: 0s, percentage: {value: 50}}}"),
        &[("spec.http[0].fault.delay.fixedDelay", "duration must be greater than 1ms")],
    );
    check(
        VS,
        &route(", fault: {delay: {fixedDelay: 1s, percent: 120}}"),
        &[("spec.http[0].fault.delay.percent", "percentage 120 is not in range 0..100")],
    );
    check(
        VS,
        &route(", fault: {delay: {exponentialDelay: 1s}}"),
        &[("spec.http[0].fault.delay.exponentialDelay", "exponentialDelay not supported yet")],
    );
}

#[test]
fn mirrors() {
    check(
        VS,
        &route(", mirror: {host: b}, mirrorPercentage: {value: 150}"),
        &[(
            "spec.http[0].mirrorPercentage.value",
            "mirror_percentage must have a max value of 100 (it has 150.000000)",
        )],
    );
    check(
        VS,
        &route(", mirror: {host: b}, mirrorPercent: 150"),
        &[("spec.http[0].mirrorPercent", "mirror_percent must have a max value of 100 (it has 150)")],
    );
    check(
        VS,
        &route(", mirror: {host: b}, mirrors: [{destination: {host: c}}]"),
        &[("spec.http[0].mirrors", "HTTP route cannot contain both mirror and mirrors")],
    );
    check(
        VS,
        &route(", mirrors: [{destination: {host: c}, percentage: {value: -1}}]"),
        &[(
            "spec.http[0].mirrors[0].percentage.value",
            "mirror percentage must have a min value of 0 (it has -1.000000)",
        )],
    );
    check(VS, &route(", mirror: {host: '*'}"), &[("spec.http[0].mirror.host", "invalid destination host *")]);
}

#[test]
fn cors_policy() {
    check(
        VS,
        &route(", corsPolicy: {allowMethods: [GET, FETCH]}"),
        &[("spec.http[0].corsPolicy.allowMethods[1]", r#""FETCH" is not a supported HTTP method"#)],
    );
    check(
        VS,
        &route(", corsPolicy: {allowOrigins: [{exact: ''}]}"),
        &[("spec.http[0].corsPolicy.allowOrigins[0]", "'' is not a valid match type for CORS allow origins")],
    );
    check(
        VS,
        &route(", corsPolicy: {allowHeaders: ['x y']}"),
        &[("spec.http[0].corsPolicy.allowHeaders[0]", "header name x y is not a valid header name")],
    );
    check(
        VS,
        &route(", corsPolicy: {maxAge: 1500ms}"),
        &[("spec.http[0].corsPolicy.maxAge", "max_age duration is accurate only to seconds precision")],
    );
    check(
        VS,
        &route(", corsPolicy: {allowOrigins: [{regex: 'https://.*[.]example[.]com'}], allowHeaders: ['*']}"),
        &[],
    );
}

#[test]
fn header_operations() {
    check(
        VS,
        &route(", headers: {request: {set: {':path': /x}}}"),
        &[(
            "spec.http[0].headers.request.set.:path",
            r#"invalid header ":path": header cannot have ":" prefix"#,
        )],
    );
    check(
        VS,
        &route(", headers: {response: {remove: [Host]}}"),
        &[("spec.http[0].headers.response.remove[0]", r#"invalid header "Host": cannot set Host header"#)],
    );
    check(
        VS,
        &route(", headers: {response: {add: {x-a: 'abc%'}}}"),
        &[(
            "spec.http[0].headers.response.add.x-a",
            "header value configuration: invalid header configuration. Un-escaped %",
        )],
    );
    check(
        VS,
        &route(", rewrite: {authority: a}, headers: {request: {set: {host: b}}}"),
        &[(
            "spec.http[0].headers.request.set.host",
            r#"authority header cannot be set multiple times: have "a", attempting to set "b""#,
        )],
    );
    check(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}, headers: {request: {add: {'': x}}}}]}]}",
        &[("spec.http[0].route[0].headers.request.add.", "header name cannot be empty")],
    );
}

#[test]
fn redirects_rewrites_and_direct_responses() {
    let only = |action: &str| format!("{{hosts: [a.com], http: [{{{action}}}]}}");
    check(
        VS,
        &route(", redirect: {uri: /b}"),
        &[("spec.http[0].route", "HTTP route cannot contain both route and redirect")],
    );
    check(
        VS,
        &only("directResponse: {status: 503}, fault: {abort: {httpStatus: 500}}"),
        &[("spec.http[0].fault", "HTTP route cannot contain both fault and direct_response")],
    );
    check(
        VS,
        &only("redirect: {uri: /b}, directResponse: {status: 503}"),
        &[(
            "spec.http[0].directResponse",
            "HTTP route rule cannot contain both direct_response and redirect",
        )],
    );
    check(
        VS,
        &only("match: [{uri: {prefix: /}}]"),
        &[("spec.http[0]", "HTTP route, redirect or direct_response is required")],
    );
    check(
        VS,
        &only("redirect: {}"),
        &[("spec.http[0].redirect", "redirect must specify URI, authority, scheme, or port")],
    );
    check(
        VS,
        &only("redirect: {uri: /b, redirectCode: 200}"),
        &[("spec.http[0].redirect.redirectCode", "200 is not a valid redirect code, must be 3xx")],
    );
    check(
        VS,
        &only("redirect: {scheme: ftp}"),
        &[("spec.http[0].redirect.scheme", r#"invalid redirect scheme, must be "http" or "https""#)],
    );
    check(VS, &only("redirect: {derivePort: FROM_REQUEST_PORT}"), &[]);
    check(
        VS,
        &only("directResponse: {status: 99, body: {string: down}}"),
        &[("spec.http[0].directResponse.status", "HTTP status 99 is not in range 200-599")],
    );
    check(
        VS,
        &route(", rewrite: {uri: /b, uriRegexRewrite: {match: a, rewrite: b}}"),
        &[("spec.http[0].rewrite", "rewrite may only contain one of URI or UriRegexRewrite")],
    );
    check(
        VS,
        &route(", rewrite: {}"),
        &[(
            "spec.http[0].rewrite",
            "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified",
        )],
    );
    check(
        VS,
        &route(", rewrite: {uriRegexRewrite: {match: '(', rewrite: b}}"),
        &[(
            "spec.http[0].rewrite.uriRegexRewrite.match",
            r#""HTTPRewrite.UriRegexRewrite.Match": error parsing regexp: unclosed group; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"#,
        )],
    );
}

#[test]
fn tls_and_tcp_routes() {
    check(
        VS,
        "{hosts: [a.com], tls: [{match: [{sniHosts: [a.com]}]}]}",
        &[("spec.tls[0].route", "TLS route is required")],
    );
    check(
        VS,
        "{hosts: [a.com], tls: [{match: [{sniHosts: []}], route: [{destination: {host: a}}]}]}",
        &[("spec.tls[0].match[0].sniHosts", "TLS match must have at least one SNI host")],
    );
    check(
        VS,
        "{hosts: [a.com], tcp: [{match: [{port: 3306}]}]}",
        &[("spec.tcp[0].route", "TCP route is required")],
    );
    check(
        VS,
        "{hosts: [a.com], tcp: [{match: [{destinationSubnets: [10.0.0.0/33]}], route: [{destination: {host: a}}]}]}",
        &[("spec.tcp[0].match[0].destinationSubnets[0]", "10.0.0.0/33 is not a valid CIDR block")],
    );
    check(
        VS,
        "{hosts: [a.com], tls: [{route: [{destination: {host: a}}]}]}",
        &[("spec.tls[0].match", "TLS route must have at least one match condition")],
    );
}

#[test]
fn export_to() {
    check(
        VS,
        "{hosts: [a.com], exportTo: ['*', a], http: [{route: [{destination: {host: a}}]}]}",
        &[("spec.exportTo", "cannot have both public (*) and non-public exportTo values for a resource")],
    );
    check(
        VS,
        "{hosts: [a.com], exportTo: [ns, '.'], http: [{route: [{destination: {host: a}}]}]}",
        &[("spec.exportTo[1]", "duplicate entries in exportTo: . and current namespace ns")],
    );
}
