//! Per-feature checks of an HTTP route, with Istio's messages: header names and values,
//! CORS, fault injection, mirroring percentages, redirects, direct responses, retries and
//! rewrites.

use super::is_jwt_claim;
use crate::networking::rules::{self, push};
use crate::networking::virtual_service::{
    AbortError, BodyContent, CorsPolicy, DelayKind, HeaderOperations, Headers, HttpDirectResponse,
    HttpFaultInjection, HttpRedirect, HttpRetry, HttpRewrite, HttpRoute, RedirectPort, grpc_status_code,
};
use crate::path::FieldPath;
use crate::resource::FieldError;
use crate::types::StringCondition;

/// Largest direct-response body Istio accepts.
const MAX_DIRECT_RESPONSE_BYTES: usize = 1024 * 1024;

/// The `x-envoy-retry-on` and `x-envoy-retry-grpc-on` conditions Istio accepts in `retryOn`.
const RETRY_ON_POLICIES: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Status codes Go's `http.StatusText` knows; `retryOn` accepts these as plain numbers.
const KNOWN_STATUS_CODES: &[u16] = &[
    100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307,
    308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 421,
    422, 423, 424, 425, 426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
];

/// CORS methods Istio accepts.
const CORS_METHODS: &[&str] =
    &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*"];

/// HTTP/2 pseudo-headers a match may name.
const PSEUDO_HEADERS: &[&str] = &[":method", ":scheme", ":authority", ":path", ":status"];

/// A token character of RFC 7230, as Istio's pattern spells it (its `+-.` range also admits `,`).
fn is_header_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+,-.^_`|~".contains(c)
}

fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(is_header_name_char)
}

fn is_internal_header(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// A header a match names: a token, a pseudo-header, or a JWT claim (`ValidateHTTPHeaderNameOrJwtClaimRoute`).
pub(super) fn check_match_header_name(name: &str, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if name.is_empty() {
        push(errors, at, "header name cannot be empty");
    } else if !(is_jwt_claim(name) || PSEUDO_HEADERS.contains(&name) || is_valid_header_name(name)) {
        push(errors, at, format!("header name {name} is not a valid header name"));
    }
}

/// A header to remove, or to change in a response (`ValidateHTTPHeaderOperationName`).
fn check_operation_name(name: &str, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if name.is_empty() {
        push(errors, at, "header name cannot be empty");
    } else if name.eq_ignore_ascii_case("host") {
        push(errors, at, format!("invalid header {name:?}: cannot set Host header"));
    } else if is_internal_header(name) {
        push(errors, at, format!("invalid header {name:?}: header cannot have \":\" prefix"));
    }
}

/// A header to set or add on a request; the authority may be set
/// (`ValidateHTTPHeaderWithAuthorityOperationName`).
fn check_request_set_name(name: &str, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if name.is_empty() {
        push(errors, at, "header name cannot be empty");
    } else if is_internal_header(name) && !is_authority_header(name) {
        push(errors, at, format!("invalid header {name:?}: header cannot have \":\" prefix"));
    }
}

/// A header value: no control characters, and `%VARIABLE%` expressions that Envoy can parse
/// (`ValidateHTTPHeaderValue`).
fn check_header_value(value: &str, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if value.chars().any(|c| matches!(c, '\u{0}'..='\u{8}' | '\u{a}'..='\u{1f}' | '\u{7f}')) {
        push(errors, at, format!("header value configuration {value} is invalid"));
    } else if let Err(e) = parse_header_value(value) {
        push(errors, at, format!("header value configuration: {e}"));
    }
}

/// Envoy's header-value formatter grammar: literal text, `%%`, `%VAR%` and `%VAR(args)%`
/// (a port of Envoy's `HeaderParser`, as Istio's `validateHeaderValue`).
fn parse_header_value(value: &str) -> Result<(), String> {
    #[derive(PartialEq)]
    enum State {
        Literal,
        VariableName,
        ExpectArray,
        ExpectString,
        String,
        ExpectDelimiterOrEnd,
        ExpectArgsEnd,
        ExpectVariableEnd,
    }
    let bytes = value.as_bytes();
    let mut state = State::Literal;
    let mut pos = 0;
    while pos < bytes.len() {
        let ch = bytes[pos];
        let has_next = pos + 1 < bytes.len();
        match state {
            State::Literal if ch == b'%' => {
                if !has_next {
                    return Err("invalid header configuration. Un-escaped %".to_owned());
                }
                if bytes[pos + 1] == b'%' {
                    pos += 1;
                } else {
                    state = State::VariableName;
                }
            }
            State::Literal => {}
            State::VariableName if ch == b'%' => state = State::Literal,
            State::VariableName if ch == b'(' => state = State::ExpectArray,
            State::VariableName => {}
            State::ExpectArray if ch == b'[' => state = State::ExpectString,
            State::ExpectArray if ch != b' ' => state = State::String,
            State::ExpectArray => {}
            State::ExpectDelimiterOrEnd => match ch {
                b',' => state = State::ExpectString,
                b']' => state = State::ExpectArgsEnd,
                b' ' => {}
                _ => return Err("invalid header configuration. Expecting ',', ']', or whitespace".to_owned()),
            },
            State::ExpectString if ch == b'"' => state = State::String,
            State::ExpectString if ch != b' ' => {
                return Err("invalid header configuration. Expecting '\"'".to_owned());
            }
            State::ExpectString => {}
            State::String => match ch {
                b'\\' if !has_next => {
                    return Err(
                        "invalid header configuration. Un-terminated backslash in JSON string".to_owned()
                    );
                }
                b'\\' => pos += 1,
                b')' => state = State::ExpectVariableEnd,
                b'"' => state = State::ExpectDelimiterOrEnd,
                _ => {}
            },
            State::ExpectArgsEnd if ch == b')' => state = State::ExpectVariableEnd,
            State::ExpectArgsEnd if ch != b' ' => {
                return Err(
                    "invalid header configuration. Expecting ')' or whitespace after '{}', but found '{}'"
                        .to_owned(),
                );
            }
            State::ExpectArgsEnd => {}
            State::ExpectVariableEnd if ch == b'%' => state = State::Literal,
            State::ExpectVariableEnd if ch != b' ' => {
                return Err("invalid header configuration. Expecting '%' or whitespace after".to_owned());
            }
            State::ExpectVariableEnd => {}
        }
        pos += 1;
    }
    if state != State::Literal {
        return Err(format!("invalid header configuration. Un-terminated variable expression '{value}'"));
    }
    Ok(())
}

/// Header operations of a route or destination.
pub(super) fn check_headers(headers: &Headers, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if let Some(request) = &headers.request {
        check_operations(request, true, &at.key("request"), errors);
    }
    if let Some(response) = &headers.response {
        check_operations(response, false, &at.key("response"), errors);
    }
}

fn check_operations(ops: &HeaderOperations, request: bool, at: &FieldPath, errors: &mut Vec<FieldError>) {
    for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
        for (name, value) in map {
            let at = at.key(field).key(name.as_str());
            if request {
                check_request_set_name(name, &at, errors);
            } else {
                check_operation_name(name, &at, errors);
            }
            check_header_value(value, &at, errors);
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        check_operation_name(name, &at.key("remove").index(i), errors);
    }
}

/// The authority may be rewritten in one place only (`validateAuthorityRewrite`).
pub(super) fn check_authority_rewrite(route: &HttpRoute, at: &FieldPath, errors: &mut Vec<FieldError>) {
    let mut current = route.rewrite.as_ref().map(|r| r.authority.as_str()).unwrap_or_default();
    let Some(request) = route.headers.as_ref().and_then(|h| h.request.as_ref()) else {
        return;
    };
    for (field, map) in [("set", &request.set), ("add", &request.add)] {
        for (name, value) in map.iter().filter(|(name, _)| is_authority_header(name)) {
            if !current.is_empty() {
                push(
                    errors,
                    &at.key("headers").key("request").key(field).key(name.as_str()),
                    format!(
                        "authority header cannot be set multiple times: have {current:?}, attempting to set {value:?}"
                    ),
                );
                return;
            }
            current = value;
        }
    }
}

/// CORS policy (`validateCORSPolicy`).
pub(super) fn check_cors(cors: &CorsPolicy, at: &FieldPath, errors: &mut Vec<FieldError>) {
    for (i, origin) in cors.allow_origins.iter().enumerate() {
        let at = at.key("allowOrigins").index(i);
        match origin {
            StringCondition::Match(m) if !m.value().is_empty() => {
                rules::check_string_match_regex(m, "corsPolicy.allowOrigins", &at, errors);
            }
            _ => push(errors, &at, "'' is not a valid match type for CORS allow origins"),
        }
    }
    for (i, method) in cors.allow_methods.iter().enumerate() {
        if !CORS_METHODS.contains(&method.as_str()) {
            push(
                errors,
                &at.key("allowMethods").index(i),
                format!("{method:?} is not a supported HTTP method"),
            );
        }
    }
    for (field, names) in [("allowHeaders", &cors.allow_headers), ("exposeHeaders", &cors.expose_headers)] {
        for (i, name) in names.iter().enumerate() {
            let at = at.key(field).index(i);
            if name.is_empty() {
                push(errors, &at, "header name cannot be empty");
            } else if name != "*" && !is_valid_header_name(name) {
                push(errors, &at, format!("header name {name} is not a valid header name"));
            }
        }
    }
    if let Some(max_age) = &cors.max_age {
        let at = at.key("maxAge");
        rules::check_duration(max_age, &at, errors);
        if max_age.as_std().subsec_nanos() > 0 {
            push(errors, &at, "max_age duration is accurate only to seconds precision");
        }
    }
}

/// Fault injection (`validateHTTPFaultInjection`).
pub(super) fn check_fault(fault: &HttpFaultInjection, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if fault.abort.is_none() && fault.delay.is_none() {
        push(errors, at, "HTTP fault injection must have an abort and/or a delay");
    }
    if let Some(abort) = &fault.abort {
        let at = at.key("abort");
        rules::check_percentage(abort.percentage.as_ref(), &at.key("percentage"), errors);
        match &abort.error {
            Some(AbortError::HttpStatus(status)) => {
                check_http_status(i64::from(*status), &at.key("httpStatus"), errors)
            }
            Some(AbortError::GrpcStatus(status)) if grpc_status_code(status).is_none() => push(
                errors,
                &at.key("grpcStatus"),
                format!(
                    "gRPC status {status:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"
                ),
            ),
            Some(AbortError::GrpcStatus(_)) | None => {}
            Some(AbortError::Http2Error(_)) => {
                push(errors, &at.key("http2Error"), "HTTP/2 abort fault injection not supported yet");
            }
        }
    }
    if let Some(delay) = &fault.delay {
        let at = at.key("delay");
        rules::check_percentage(delay.percentage.as_ref(), &at.key("percentage"), errors);
        rules::check_percent(delay.percent, &at.key("percent"), errors);
        match &delay.kind {
            Some(DelayKind::Fixed(d)) => rules::check_duration(d, &at.key("fixedDelay"), errors),
            Some(DelayKind::Exponential(d)) => {
                rules::check_duration(d, &at.key("exponentialDelay"), errors);
                push(errors, &at.key("exponentialDelay"), "exponentialDelay not supported yet");
            }
            None => {}
        }
    }
}

/// A status code for an abort or a direct response (`validateHTTPStatus`).
fn check_http_status(status: i64, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if !(200..=599).contains(&status) {
        push(errors, at, format!("HTTP status {status} is not in range 200-599"));
    }
}

/// `mirrorPercentage` or a mirror's `percentage`: within 0..=100.
pub(super) fn check_mirror_percentage(what: &str, value: f64, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if value > 100.0 {
        push(errors, at, format!("{what} must have a max value of 100 (it has {value:.6})"));
    }
    if value < 0.0 {
        push(errors, at, format!("{what} must have a min value of 0 (it has {value:.6})"));
    }
}

/// Redirect (`validateHTTPRedirect`); like Istio, only the first problem is reported.
pub(super) fn check_redirect(redirect: &HttpRedirect, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if redirect.uri.is_empty()
        && redirect.authority.is_empty()
        && redirect.port.is_none()
        && redirect.scheme.is_empty()
    {
        push(errors, at, "redirect must specify URI, authority, scheme, or port");
    } else if redirect.redirect_code != 0 && !(300..=399).contains(&redirect.redirect_code) {
        push(
            errors,
            &at.key("redirectCode"),
            format!("{} is not a valid redirect code, must be 3xx", redirect.redirect_code),
        );
    } else if !matches!(redirect.scheme.as_str(), "" | "http" | "https") {
        push(errors, &at.key("scheme"), "invalid redirect scheme, must be \"http\" or \"https\"");
    } else if let Some(RedirectPort::Number(port)) = redirect.port.filter(|p| *p != RedirectPort::Number(0)) {
        rules::check_port(port, &at.key("port"), errors);
    }
}

/// Direct response (`validateHTTPDirectResponse`).
pub(super) fn check_direct_response(
    response: &HttpDirectResponse,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    let size = match response.body.as_ref().and_then(|b| b.content.as_ref()) {
        Some(BodyContent::String(text)) => text.len(),
        Some(BodyContent::Bytes(base64)) => base64.trim_end_matches('=').len() * 3 / 4,
        None => 0,
    };
    if size > MAX_DIRECT_RESPONSE_BYTES {
        push(
            errors,
            &at.key("body"),
            "large direct_responses may impact control plane performance, must be less than 1MB",
        );
    }
    check_http_status(i64::from(response.status), &at.key("status"), errors);
}

/// Retries (`validateHTTPRetry`).
pub(super) fn check_retries(retries: &HttpRetry, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if retries.attempts < 0 {
        push(errors, &at.key("attempts"), "attempts cannot be negative");
    }
    if retries.attempts == 0
        && (retries.per_try_timeout.is_some()
            || !retries.retry_on.is_empty()
            || retries.retry_remote_localities.is_some())
    {
        push(
            errors,
            &at.key("attempts"),
            "http retry policy configured when attempts are set to 0 (disabled)",
        );
    }
    rules::check_optional_duration(retries.per_try_timeout.as_ref(), &at.key("perTryTimeout"), errors);
    if !retries.retry_on.is_empty() {
        for policy in retries.retry_on.split(',') {
            let is_status = policy.parse::<u16>().is_ok_and(|code| KNOWN_STATUS_CODES.contains(&code));
            if !is_status && !RETRY_ON_POLICIES.contains(&policy) {
                push(errors, &at.key("retryOn"), format!("{policy:?} is not a valid retryOn policy"));
            }
        }
    }
    rules::check_optional_duration(retries.backoff.as_ref(), &at.key("backoff"), errors);
}

/// Rewrite (`validateHTTPRewrite`); like Istio, only the first problem is reported.
pub(super) fn check_rewrite(rewrite: &HttpRewrite, at: &FieldPath, errors: &mut Vec<FieldError>) {
    match &rewrite.uri_regex_rewrite {
        Some(_) if !rewrite.uri.is_empty() => {
            push(errors, at, "rewrite may only contain one of URI or UriRegexRewrite");
        }
        None if rewrite.uri.is_empty() && rewrite.authority.is_empty() => push(
            errors,
            at,
            "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified",
        ),
        Some(regex) if regex.pattern.is_empty() || regex.rewrite.is_empty() => push(
            errors,
            &at.key("uriRegexRewrite"),
            "UriRegexRewrite has errors: UriRegexRewrite requires both Rewrite and Match fields to be specified",
        ),
        Some(regex) => rules::check_regex(
            &regex.pattern,
            "HTTPRewrite.UriRegexRewrite.Match",
            &at.key("uriRegexRewrite").key("match"),
            errors,
        ),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_follow_envoy_grammar() {
        for good in [
            "foo",
            "%HOSTNAME%",
            "100%%",
            "prefix %HOSTNAME% suffix",
            "%REQ(x-id)%",
            "%UPSTREAM_METADATA([\"a\", \"b\"])%",
        ] {
            assert_eq!(parse_header_value(good), Ok(()), "{good}");
        }
        assert_eq!(parse_header_value("abc%"), Err("invalid header configuration. Un-escaped %".to_owned()));
        assert_eq!(
            parse_header_value("%START_TIME"),
            Err("invalid header configuration. Un-terminated variable expression '%START_TIME'".to_owned())
        );
    }
}
