//! A route's conditions and header edits, compiled once per snapshot: regexes built (anchored,
//! RE2 semantics as Istio's `StringMatch.regex`), header names and values parsed. A request
//! then only compares strings; nothing is parsed or allocated per request unless a header
//! appears more than once (its values are joined with `,`, as Envoy does).

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use paymesh_api::model::{HeaderMatch, HeaderOps, RouteMatch, StringMatch};
use regex::{Regex, RegexBuilder};

use crate::http::query;

/// The largest compiled regex accepted (bytes of program), so a hostile pattern can't make
/// the proxy build a huge automaton.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Why a route's conditions or edits could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// A regex that does not compile.
    #[error("invalid regex `{pattern}`: {reason}")]
    Regex {
        /// The pattern.
        pattern: String,
        /// What the regex compiler said.
        reason: String,
    },
    /// A header name HTTP does not allow (pseudo-headers included).
    #[error("invalid header name `{0}`")]
    HeaderName(String),
    /// A header value HTTP does not allow.
    #[error("invalid value for header `{name}`")]
    HeaderValue {
        /// The header.
        name: String,
    },
}

/// What a request offers to route conditions.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path, without the query.
    pub path: &'a str,
    /// The query string, without the `?`.
    pub query: Option<&'a str>,
    /// The scheme the client used (`http`, `https`).
    pub scheme: &'a str,
    /// The authority as the client sent it.
    pub authority: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

/// A compiled `StringMatch`.
#[derive(Debug)]
pub(super) enum Matcher {
    Exact(String),
    Prefix(String),
    /// Exact, ignoring ASCII case (the text is lower case).
    ExactFolded(String),
    /// Prefix, ignoring ASCII case (the text is lower case).
    PrefixFolded(String),
    Regex(Regex),
}

impl Matcher {
    pub(super) fn compile(spec: &StringMatch) -> Result<Self, MatchError> {
        Self::compile_with_case(spec, false)
    }

    /// `ignore_case`: Istio's `ignoreUriCase`, ASCII case folded on both sides of an exact or
    /// prefix match (a regex stays case-sensitive: Envoy ignores the flag for `safe_regex`).
    fn compile_with_case(spec: &StringMatch, ignore_case: bool) -> Result<Self, MatchError> {
        let fold = |text: &String| if ignore_case { text.to_ascii_lowercase() } else { text.clone() };
        Ok(match spec {
            StringMatch::Exact(text) if ignore_case => Matcher::ExactFolded(fold(text)),
            StringMatch::Prefix(text) if ignore_case => Matcher::PrefixFolded(fold(text)),
            StringMatch::Exact(text) => Matcher::Exact(text.clone()),
            StringMatch::Prefix(text) => Matcher::Prefix(text.clone()),
            StringMatch::Regex(pattern) => {
                // On its own first: `a)|(.*` is not a regex, though wrapped it would parse.
                regex_syntax::parse(pattern)
                    .map_err(|e| MatchError::Regex { pattern: pattern.clone(), reason: e.to_string() })?;
                let regex = RegexBuilder::new(&format!("^(?:{pattern})$"))
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| MatchError::Regex { pattern: pattern.clone(), reason: e.to_string() })?;
                Matcher::Regex(regex)
            }
        })
    }

    pub(super) fn holds(&self, text: &str) -> bool {
        match self {
            Matcher::Exact(expected) => text == expected,
            Matcher::Prefix(prefix) => text.starts_with(prefix.as_str()),
            Matcher::ExactFolded(expected) => text.eq_ignore_ascii_case(expected),
            Matcher::PrefixFolded(prefix) => {
                text.get(..prefix.len()).is_some_and(|start| start.eq_ignore_ascii_case(prefix))
            }
            Matcher::Regex(regex) => regex.is_match(text),
        }
    }
}

#[derive(Debug)]
struct HeaderCondition {
    name: HeaderName,
    value: Option<Matcher>,
    invert: bool,
}

impl HeaderCondition {
    fn compile(spec: &HeaderMatch) -> Result<Self, MatchError> {
        Ok(HeaderCondition {
            name: header_name(&spec.name)?,
            value: spec.value.as_ref().map(Matcher::compile).transpose()?,
            invert: spec.invert,
        })
    }

    fn holds(&self, headers: &HeaderMap) -> bool {
        let found = match (&self.value, joined(headers, &self.name)) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(matcher), Some(value)) => matcher.holds(&value),
        };
        found != self.invert
    }
}

/// The values of `name`, joined with `,` when there are several; `None` when absent.
pub(super) fn joined<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Cow<'a, str>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut text = String::from_utf8_lossy(first.as_bytes());
    for value in values {
        let owned = text.to_mut();
        owned.push(',');
        owned.push_str(&String::from_utf8_lossy(value.as_bytes()));
    }
    Some(text)
}

/// A condition on one query parameter.
#[derive(Debug)]
struct QueryCondition {
    name: String,
    value: Option<Matcher>,
}

impl QueryCondition {
    fn holds(&self, query: Option<&str>) -> bool {
        match (&self.value, query.and_then(|query| query::param(query, &self.name))) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(matcher), Some(value)) => matcher.holds(value),
        }
    }
}

/// One alternative: every part must hold.
#[derive(Debug)]
struct Alternative {
    uri: Option<Matcher>,
    scheme: Option<Matcher>,
    method: Option<Matcher>,
    authority: Option<Matcher>,
    headers: Vec<HeaderCondition>,
    query: Vec<QueryCondition>,
}

impl Alternative {
    /// Whether every part holds (the hot path: no reason kept). A path regex, the costliest
    /// check, runs last, so cheaper conditions rule most requests out first.
    fn holds(&self, req: &RequestView<'_>) -> bool {
        let holds = |m: &Option<Matcher>, text: &str| m.as_ref().is_none_or(|m| m.holds(text));
        let regex = matches!(self.uri, Some(Matcher::Regex(_)));
        (regex || holds(&self.uri, req.path))
            && holds(&self.scheme, req.scheme)
            && holds(&self.method, req.method.as_str())
            && holds(&self.authority, req.authority)
            && self.headers.iter().all(|h| h.holds(req.headers))
            && self.query.iter().all(|q| q.holds(req.query))
            && (!regex || holds(&self.uri, req.path))
    }

    /// The first part that does not hold, named as the VirtualService names it.
    fn refuses(&self, req: &RequestView<'_>) -> Option<&'static str> {
        let fails = |m: &Option<Matcher>, text: &str| m.as_ref().is_some_and(|m| !m.holds(text));
        if fails(&self.uri, req.path) {
            Some("uri")
        } else if fails(&self.scheme, req.scheme) {
            Some("scheme")
        } else if fails(&self.method, req.method.as_str()) {
            Some("method")
        } else if fails(&self.authority, req.authority) {
            Some("authority")
        } else if !self.headers.iter().all(|h| h.holds(req.headers)) {
            Some(if self.headers.iter().any(|h| h.invert && !h.holds(req.headers)) {
                "withoutHeaders"
            } else {
                "headers"
            })
        } else if !self.query.iter().all(|q| q.holds(req.query)) {
            Some("queryParams")
        } else {
            None
        }
    }
}

/// Literal text a match alternative pins the request to (see [`super::path_index`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathLiteral {
    /// The path is this.
    Exact(String),
    /// The path starts with this.
    Prefix(String),
    /// This header's value (its values joined with `,`) is this.
    Header(HeaderName, String),
}

/// The literal text every match of the anchored `pattern` starts with, when there is one.
fn regex_prefix(pattern: &str) -> Option<String> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let hir = regex_syntax::parse(pattern).ok()?;
    let mut extractor = Extractor::new();
    extractor.kind(ExtractKind::Prefix);
    let prefixes = extractor.extract(&hir);
    // Every match starts with one of the literals, so with what they all start with.
    let prefix = std::str::from_utf8(prefixes.longest_common_prefix()?).ok()?;
    (!prefix.is_empty()).then(|| prefix.to_owned())
}

/// A route's conditions (Istio `HTTPRoute.match`): any alternative selects; none at all selects
/// every request.
#[derive(Debug, Default)]
pub struct RouteMatcher {
    alternatives: Vec<Alternative>,
    /// The path literals of every alternative, when each has one (else any path may match).
    literals: Option<Vec<PathLiteral>>,
}

impl RouteMatcher {
    /// Compiles `matches`.
    pub fn compile(matches: &[RouteMatch]) -> Result<Self, MatchError> {
        let condition = |m: &Option<StringMatch>| m.as_ref().map(Matcher::compile).transpose();
        let alternatives = matches
            .iter()
            .map(|m| {
                Ok(Alternative {
                    uri: m
                        .uri
                        .as_ref()
                        .map(|uri| Matcher::compile_with_case(uri, m.ignore_uri_case))
                        .transpose()?,
                    scheme: condition(&m.scheme)?,
                    method: condition(&m.method)?,
                    authority: condition(&m.authority)?,
                    headers: m.headers.iter().map(HeaderCondition::compile).collect::<Result<_, _>>()?,
                    query: m
                        .query_params
                        .iter()
                        .map(|q| Ok(QueryCondition { name: q.name.clone(), value: condition(&q.value)? }))
                        .collect::<Result<_, MatchError>>()?,
                })
            })
            .collect::<Result<_, MatchError>>()?;
        let literal = |m: &RouteMatch| match &m.uri {
            Some(StringMatch::Exact(text)) if !m.ignore_uri_case => Some(PathLiteral::Exact(text.clone())),
            Some(StringMatch::Prefix(text)) if !m.ignore_uri_case => Some(PathLiteral::Prefix(text.clone())),
            Some(StringMatch::Regex(pattern)) if !m.ignore_uri_case => {
                regex_prefix(pattern).map(PathLiteral::Prefix)
            }
            _ => m.headers.iter().find_map(|h| match &h.value {
                Some(StringMatch::Exact(value)) if !h.invert => {
                    Some(PathLiteral::Header(header_name(&h.name).ok()?, value.clone()))
                }
                _ => None,
            }),
        };
        let literals = if matches.is_empty() { None } else { matches.iter().map(literal).collect() };
        Ok(RouteMatcher { alternatives, literals })
    }

    /// The literal path texts the route is limited to; `None` when it may take any path.
    pub fn path_literals(&self) -> Option<&[PathLiteral]> {
        self.literals.as_deref()
    }

    /// Whether `req` selects the route.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.alternatives.is_empty() || self.alternatives.iter().any(|alt| alt.holds(req))
    }

    /// How many bytes of the path the alternative that selects `req` took: its prefix's length
    /// for a prefix match, the whole path for an exact or regex one, 1 (`/`, Envoy's default
    /// prefix) when it does not name the path. What `rewrite.uri` and a redirect's
    /// `prefixRewrite` replace.
    pub fn taken(&self, req: &RequestView<'_>) -> usize {
        let Some(alternative) = self.alternatives.iter().find(|alt| alt.holds(req)) else {
            return req.path.len().min(1);
        };
        match &alternative.uri {
            Some(Matcher::Prefix(prefix) | Matcher::PrefixFolded(prefix)) => prefix.len(),
            Some(_) => req.path.len(),
            None => req.path.len().min(1),
        }
    }

    /// Why `req` does not select the route: for each alternative, the first condition that
    /// does not hold (`None` when the route selects it). For `paymesh x route`.
    pub fn explain(&self, req: &RequestView<'_>) -> Option<Vec<&'static str>> {
        if self.matches(req) {
            return None;
        }
        Some(self.alternatives.iter().filter_map(|alt| alt.refuses(req)).collect())
    }
}

/// Compiled edits of one header section, applied in the order remove, set, add.
#[derive(Debug, Default)]
pub struct HeaderEditor {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderEditor {
    /// Compiles `ops`.
    pub fn compile(ops: &HeaderOps) -> Result<Self, MatchError> {
        let pairs = |map: &std::collections::BTreeMap<String, String>| {
            map.iter()
                .map(|(name, value)| {
                    let value = HeaderValue::from_str(value)
                        .map_err(|_| MatchError::HeaderValue { name: name.clone() })?;
                    Ok((header_name(name)?, value))
                })
                .collect::<Result<Vec<_>, MatchError>>()
        };
        Ok(HeaderEditor {
            remove: ops.remove.iter().map(|name| header_name(name)).collect::<Result<_, _>>()?,
            set: pairs(&ops.set)?,
            add: pairs(&ops.add)?,
        })
    }

    /// Applies the edits to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// A route's request and response edits (Istio `HTTPRoute.headers`).
#[derive(Debug, Default)]
pub struct RouteHeaders {
    /// Applied to the request before forwarding.
    pub request: HeaderEditor,
    /// Applied to the response before returning it.
    pub response: HeaderEditor,
}

fn header_name(name: &str) -> Result<HeaderName, MatchError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| MatchError::HeaderName(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(method: &'a Method, path: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView { method, path, query: None, scheme: "http", authority: "svc", headers }
    }

    fn header(name: &str, value: Option<StringMatch>, invert: bool) -> HeaderMatch {
        HeaderMatch { name: name.to_owned(), value, invert }
    }

    #[test]
    fn a_regex_pins_the_path_to_its_literal_prefix_only_when_every_match_has_it() {
        assert_eq!(regex_prefix("/v1/payments/[0-9]+"), Some("/v1/payments/".to_owned()));
        assert_eq!(regex_prefix("/health|/ready"), Some("/".to_owned()), "what both alternatives share");
        assert_eq!(regex_prefix(".*/refunds"), None);
        assert_eq!(regex_prefix("(?i)/v1/x"), Some("/".to_owned()), "the case variants share only `/`");
    }

    #[test]
    fn scheme_authority_query_and_case_folded_uri_conditions_hold_and_explain_themselves() {
        let spec = RouteMatch {
            uri: Some(StringMatch::Prefix("/V1/Accounts".into())),
            ignore_uri_case: true,
            scheme: Some(StringMatch::Exact("https".into())),
            authority: Some(StringMatch::Regex("api\\.example\\.com(:443)?".into())),
            query_params: vec![
                paymesh_api::model::QueryParamMatch {
                    name: "region".into(),
                    value: Some(StringMatch::Exact("eu".into())),
                },
                paymesh_api::model::QueryParamMatch { name: "debug".into(), value: None },
            ],
            ..RouteMatch::default()
        };
        let matcher = RouteMatcher::compile(&[spec]).expect("compiles");
        let (get, headers) = (Method::GET, HeaderMap::new());
        let request = |path, query, scheme, authority| RequestView {
            method: &get,
            path,
            query,
            scheme,
            authority,
            headers: &headers,
        };
        let good = request("/v1/accounts/acc-1", Some("debug&region=eu"), "https", "api.example.com");
        assert!(matcher.matches(&good));
        let cases = [
            (request("/v2/accounts", Some("debug&region=eu"), "https", "api.example.com"), "uri"),
            (request("/v1/accounts", Some("debug&region=eu"), "http", "api.example.com"), "scheme"),
            (request("/v1/accounts", Some("debug&region=eu"), "https", "evil.example.com"), "authority"),
            (request("/v1/accounts", Some("region=us&debug"), "https", "api.example.com:443"), "queryParams"),
            (request("/v1/accounts", Some("region=eu"), "https", "api.example.com"), "queryParams"),
        ];
        for (view, refused) in cases {
            assert_eq!(matcher.explain(&view), Some(vec![refused]), "{view:?}");
        }
        assert_eq!(matcher.explain(&good), None);
    }

    #[test]
    fn empty_matches_every_request() {
        let matcher = RouteMatcher::compile(&[]).expect("compiles");
        assert!(matcher.matches(&view(&Method::DELETE, "/anything", &HeaderMap::new())));
    }

    #[test]
    fn every_part_of_an_alternative_must_hold_and_any_alternative_selects() {
        let canary = RouteMatch {
            uri: Some(StringMatch::Prefix("/v1/payments".into())),
            method: Some(StringMatch::Exact("POST".into())),
            headers: vec![
                header("x-canary", Some(StringMatch::Exact("true".into())), false),
                header("x-tenant-id", Some(StringMatch::Regex("tenant-(gold|platinum)".into())), true),
            ],
            ..RouteMatch::default()
        };
        let health = RouteMatch {
            uri: Some(StringMatch::Exact("/healthz".into())),
            method: None,
            headers: Vec::new(),
            ..RouteMatch::default()
        };
        let matcher = RouteMatcher::compile(&[canary, health]).expect("compiles");
        let mut headers = HeaderMap::new();
        headers.insert("x-canary", HeaderValue::from_static("true"));
        let post = Method::POST;
        assert!(matcher.matches(&view(&post, "/v1/payments/42", &headers)));
        assert!(!matcher.matches(&view(&Method::GET, "/v1/payments/42", &headers)));
        assert!(!matcher.matches(&view(&post, "/v2/payments", &headers)));
        headers.insert("x-tenant-id", HeaderValue::from_static("tenant-gold"));
        assert!(!matcher.matches(&view(&post, "/v1/payments", &headers)), "withoutHeaders holds");
        headers.insert("x-tenant-id", HeaderValue::from_static("tenant-gold-plus"));
        assert!(matcher.matches(&view(&post, "/v1/payments", &headers)), "regex is anchored");
        assert!(matcher.matches(&view(&Method::GET, "/healthz", &HeaderMap::new())));
        assert!(!matcher.matches(&view(&Method::GET, "/healthz/ready", &HeaderMap::new())));
    }

    #[test]
    fn presence_absence_and_repeated_headers() {
        let present = RouteMatcher::compile(&[RouteMatch {
            uri: None,
            method: None,
            headers: vec![header("x-debug", None, false)],
            ..RouteMatch::default()
        }])
        .expect("compiles");
        let absent = RouteMatcher::compile(&[RouteMatch {
            uri: None,
            method: None,
            headers: vec![header("x-debug", None, true)],
            ..RouteMatch::default()
        }])
        .expect("compiles");
        let joined = RouteMatcher::compile(&[RouteMatch {
            uri: None,
            method: None,
            headers: vec![header("x-debug", Some(StringMatch::Exact("a,b".into())), false)],
            ..RouteMatch::default()
        }])
        .expect("compiles");
        let mut headers = HeaderMap::new();
        let get = Method::GET;
        assert!(!present.matches(&view(&get, "/", &headers)));
        assert!(absent.matches(&view(&get, "/", &headers)));
        headers.append("x-debug", HeaderValue::from_static("a"));
        headers.append("x-debug", HeaderValue::from_static("b"));
        assert!(present.matches(&view(&get, "/", &headers)));
        assert!(!absent.matches(&view(&get, "/", &headers)));
        assert!(joined.matches(&view(&get, "/", &headers)));
    }

    #[test]
    fn bad_regexes_and_names_are_refused_with_the_reason() {
        let bad = RouteMatch {
            uri: Some(StringMatch::Regex("/v1/(".into())),
            method: None,
            headers: vec![],
            ..RouteMatch::default()
        };
        let error = RouteMatcher::compile(&[bad]).expect_err("unclosed group");
        assert!(error.to_string().starts_with("invalid regex `/v1/(`: "), "{error}");
        let escaped = RouteMatch { uri: Some(StringMatch::Regex("a)|(.*".into())), ..RouteMatch::default() };
        assert!(
            matches!(RouteMatcher::compile(&[escaped]), Err(MatchError::Regex { .. })),
            "not a regex on its own, though it would parse anchored"
        );
        let huge = RouteMatch {
            uri: Some(StringMatch::Regex("a{1000}{1000}".into())),
            method: None,
            headers: vec![],
            ..RouteMatch::default()
        };
        assert!(matches!(RouteMatcher::compile(&[huge]), Err(MatchError::Regex { .. })));
        let pseudo = RouteMatch {
            uri: None,
            method: None,
            headers: vec![header(":authority", None, false)],
            ..RouteMatch::default()
        };
        assert_eq!(
            RouteMatcher::compile(&[pseudo]).expect_err("pseudo").to_string(),
            "invalid header name `:authority`"
        );
        let ops =
            HeaderOps { set: [("x-a".to_owned(), "bad\nvalue".to_owned())].into(), ..HeaderOps::default() };
        assert_eq!(
            HeaderEditor::compile(&ops).expect_err("value").to_string(),
            "invalid value for header `x-a`"
        );
    }

    #[test]
    fn edits_apply_remove_then_set_then_add() {
        let ops = HeaderOps {
            set: [("x-env".to_owned(), "prod".to_owned()), ("x-gone".to_owned(), "back".to_owned())].into(),
            add: [("x-trace".to_owned(), "gw".to_owned())].into(),
            remove: vec!["x-gone".to_owned(), "x-fault-test".to_owned()],
        };
        let editor = HeaderEditor::compile(&ops).expect("compiles");
        let mut headers = HeaderMap::new();
        headers.insert("x-env", HeaderValue::from_static("dev"));
        headers.insert("x-fault-test", HeaderValue::from_static("abort"));
        headers.insert("x-gone", HeaderValue::from_static("old"));
        headers.insert("x-trace", HeaderValue::from_static("client"));
        editor.apply(&mut headers);
        assert_eq!(headers["x-env"], "prod");
        assert_eq!(headers["x-gone"], "back", "set comes after remove");
        assert!(!headers.contains_key("x-fault-test"));
        let traces: Vec<_> = headers.get_all("x-trace").iter().collect();
        assert_eq!(traces, ["client", "gw"]);
    }
}
