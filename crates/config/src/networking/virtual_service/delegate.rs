//! Delegation: how a root rule (`http[].delegate: {name, namespace}`) and the HTTP rules of the
//! delegate VirtualService it names become the rules a proxy gets, as istiod merges them
//! (`pilot/pkg/model/virtualservice.go`: `MergeHTTPRoutes`, `mergeHTTPRoute`,
//! `mergeHTTPMatchRequests`, `mergeHTTPMatchRequest`, `hasConflict`, `stringMatchConflict`).
//!
//! [`merge_routes`] gives the rules that replace a root rule, for the control plane to compile;
//! `paymesh analyze` reports what [`merge_route`] refuses. One implementation for both, so
//! what analyze calls dropped is exactly what proxies never get.
//!
//! The root rule is replaced by its delegate's rules, in order, each merged with it:
//! - **Matches** ([`merge_matches`]): every match of the delegate rule must fall within at
//!   least one match of the root rule ([`conflict`]); it is then merged with each root match it
//!   falls within ([`merge_match`]). If one delegate match falls within none, the whole
//!   delegate rule is dropped (istiod logs a warning). A side without matches takes the other's
//!   as they are, so a delegate rule without matches inherits the root's and widens nothing.
//! - **Everything else**: the delegate's own value, or the root's when the delegate leaves it
//!   unset — `rewrite`, `directResponse`, `timeout`, `retries`, `fault`, `mirror`,
//!   `mirrorPercent`, `mirrorPercentage`, `corsPolicy`, `mirrors`, `headers`. The delegate's
//!   `route` and `redirect` are its own; the name is `root-delegate` (or whichever is set).

use std::collections::BTreeMap;
use std::fmt;

use super::{HttpMatchRequest, HttpRoute};
use crate::path::FieldPath;
use crate::types::{StringCondition, StringMatch};

/// The root rule merged with each delegate rule, in order, leaving out the delegate rules
/// whose matches conflict with the root's (`MergeHTTPRoutes`): what replaces the root rule.
pub fn merge_routes(root: &HttpRoute, delegate: &[HttpRoute]) -> Vec<HttpRoute> {
    delegate.iter().filter_map(|rule| merge_route(root, rule).ok()).collect()
}

/// One delegate rule merged with its root rule (`mergeHTTPRoute`), or why Istio drops it.
pub fn merge_route(root: &HttpRoute, delegate: &HttpRoute) -> Result<HttpRoute, MatchConflict> {
    let matches = merge_matches(&root.matches, &delegate.matches)?;
    let mut merged = delegate.clone();
    merged.matches = matches;
    merged.delegate = None;
    merged.name = joined_name(&root.name, &delegate.name);
    inherit(&mut merged.rewrite, &root.rewrite);
    inherit(&mut merged.direct_response, &root.direct_response);
    inherit(&mut merged.timeout, &root.timeout);
    inherit(&mut merged.retries, &root.retries);
    inherit(&mut merged.fault, &root.fault);
    inherit(&mut merged.mirror, &root.mirror);
    // One protobuf field, two spellings: the delegate sets it with either.
    if merged.mirror_percent.is_none() && merged.mirror_percent_snake.is_none() {
        merged.mirror_percent = root.mirror_percent;
        merged.mirror_percent_snake = root.mirror_percent_snake;
    }
    inherit(&mut merged.mirror_percentage, &root.mirror_percentage);
    inherit(&mut merged.cors_policy, &root.cors_policy);
    // An empty list is unset, as a nil Go slice is.
    if merged.mirrors.is_empty() {
        merged.mirrors.clone_from(&root.mirrors);
    }
    inherit(&mut merged.headers, &root.headers);
    Ok(merged)
}

/// The root's value where the delegate has none.
fn inherit<T: Clone>(delegate: &mut Option<T>, root: &Option<T>) {
    if delegate.is_none() {
        delegate.clone_from(root);
    }
}

/// `root-delegate`, or whichever of the two is set.
fn joined_name(root: &str, delegate: &str) -> String {
    match (root.is_empty(), delegate.is_empty()) {
        (_, true) => root.to_owned(),
        (true, false) => delegate.to_owned(),
        (false, false) => format!("{root}-{delegate}"),
    }
}

/// The matches of a merged rule (`mergeHTTPMatchRequests`): without root matches, the
/// delegate's; without delegate matches, the root's; otherwise, for each delegate match in
/// order, its merge with every root match it does not conflict with. A delegate match that
/// conflicts with every root match makes the whole rule a conflict.
pub fn merge_matches(
    root: &[HttpMatchRequest],
    delegate: &[HttpMatchRequest],
) -> Result<Vec<HttpMatchRequest>, MatchConflict> {
    if root.is_empty() {
        return Ok(delegate.to_vec());
    }
    if delegate.is_empty() {
        return Ok(root.to_vec());
    }
    let mut merged = Vec::new();
    for (index, leaf) in delegate.iter().enumerate() {
        let mut conflicts = Vec::new();
        let before = merged.len();
        for parent in root {
            match conflict(parent, leaf) {
                Some(found) => conflicts.push(found),
                None => merged.push(merge_match(parent, leaf)),
            }
        }
        if merged.len() == before {
            return Err(MatchConflict { delegate_match: index, conflicts });
        }
    }
    Ok(merged)
}

/// A delegate match merged with a root match it does not conflict with
/// (`mergeHTTPMatchRequest`): the delegate's conditions, plus the root's where the delegate
/// sets none; in the maps (headers, withoutHeaders, queryParams, sourceLabels) the delegate's
/// entry wins over the root's for the same key. Names join as `root-delegate`.
pub fn merge_match(root: &HttpMatchRequest, delegate: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = delegate.clone();
    out.name = joined_name(&root.name, &delegate.name);
    inherit(&mut out.uri, &root.uri);
    inherit(&mut out.scheme, &root.scheme);
    inherit(&mut out.method, &root.method);
    inherit(&mut out.authority, &root.authority);
    out.headers = overlay(&root.headers, &delegate.headers);
    out.without_headers = overlay(&root.without_headers, &delegate.without_headers);
    out.query_params = overlay(&root.query_params, &delegate.query_params);
    if out.port == 0 {
        out.port = root.port;
    }
    out.source_labels = overlay(&root.source_labels, &delegate.source_labels);
    if out.source_namespace.is_empty() {
        out.source_namespace.clone_from(&root.source_namespace);
    }
    if out.gateways.is_empty() {
        out.gateways.clone_from(&root.gateways);
    }
    if out.stat_prefix.is_empty() {
        out.stat_prefix.clone_from(&root.stat_prefix);
    }
    out
}

/// `base` with `top`'s entries written over it (`maps.MergeCopy`).
fn overlay<V: Clone>(base: &BTreeMap<String, V>, top: &BTreeMap<String, V>) -> BTreeMap<String, V> {
    let mut out = base.clone();
    out.extend(top.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// A delegate rule Istio drops: one of its matches falls within none of the root rule's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("match #{delegate_match} of the delegate rule falls within no match of the root rule ({})", Reasons(.conflicts))]
pub struct MatchConflict {
    /// The delegate match that fits nowhere (index in the delegate rule's `match`).
    pub delegate_match: usize,
    /// Why it does not fit each root match, in the root rule's order.
    pub conflicts: Vec<Conflict>,
}

/// `root match #0: headers.x-a: …; root match #1: …`.
struct Reasons<'a>(&'a [Conflict]);

impl fmt::Display for Reasons<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, conflict) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "root match #{i}: {conflict}")?;
        }
        Ok(())
    }
}

/// The first condition, in `hasConflict`'s order, on which a delegate match is not within a
/// root match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The condition, as a path inside a match (`uri`, `headers.x-user`, `port`).
    pub field: FieldPath,
    /// The root's condition, as written (`exact "true"`, `8080`, `unset`).
    pub root: String,
    /// The delegate's condition, as written.
    pub delegate: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} is not within {}", self.field, self.delegate, self.root)
    }
}

/// Whether `leaf` (a delegate match) leaves `root` on some condition (`hasConflict`), and the
/// first such condition: any of `uri`, `scheme`, `method`, `authority`, and each header,
/// header to be absent and query parameter the delegate names, that conflict as strings
/// ([`string_conflict`]); a different `ignoreUriCase`; two different non-zero ports; a root
/// `sourceNamespace` the delegate does not repeat; a source label both give different
/// values; delegate `gateways` that are not among the root's (when both list some).
pub fn conflict(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> Option<Conflict> {
    let here = &FieldPath::root();
    let strings = [
        ("uri", &root.uri, &leaf.uri),
        ("scheme", &root.scheme, &leaf.scheme),
        ("method", &root.method, &leaf.method),
        ("authority", &root.authority, &leaf.authority),
    ]
    .map(|(field, r, l)| (here.key(field), r.as_ref(), l.as_ref()));
    let maps = [
        ("headers", &root.headers, &leaf.headers),
        ("withoutHeaders", &root.without_headers, &leaf.without_headers),
        ("queryParams", &root.query_params, &leaf.query_params),
    ];
    let entries = maps.into_iter().flat_map(|(field, r, l)| {
        l.iter().map(move |(key, value)| (here.key(field).key(key.as_str()), r.get(key), Some(value)))
    });
    for (field, r, l) in strings.into_iter().chain(entries) {
        if string_conflict(r, l) {
            return Some(Conflict { field, root: condition(r), delegate: condition(l) });
        }
    }
    let found = |field: &str, root: String, delegate: String| {
        Some(Conflict { field: here.key(field), root, delegate })
    };
    if root.ignore_uri_case != leaf.ignore_uri_case {
        let (r, l) = (root.ignore_uri_case.to_string(), leaf.ignore_uri_case.to_string());
        return found("ignoreUriCase", r, l);
    }
    if root.port > 0 && leaf.port > 0 && root.port != leaf.port {
        return found("port", root.port.to_string(), leaf.port.to_string());
    }
    if !root.source_namespace.is_empty() && leaf.source_namespace != root.source_namespace {
        return found("sourceNamespace", quoted(&root.source_namespace), quoted(&leaf.source_namespace));
    }
    for (key, value) in &leaf.source_labels {
        if let Some(parent) = root.source_labels.get(key).filter(|p| *p != value) {
            return Some(Conflict {
                field: here.key("sourceLabels").key(key.as_str()),
                root: format!("{parent:?}"),
                delegate: format!("{value:?}"),
            });
        }
    }
    if !root.gateways.is_empty()
        && !leaf.gateways.is_empty()
        && (root.gateways.len() < leaf.gateways.len()
            || leaf.gateways.iter().any(|g| !root.gateways.contains(g)))
    {
        return found("gateways", format!("{:?}", root.gateways), format!("{:?}", leaf.gateways));
    }
    None
}

/// Whether two string conditions conflict (`stringMatchConflict`); with either unset, never.
/// Otherwise the delegate's must be within the root's: the same non-empty `exact`, or an
/// `exact` or `prefix` starting with the root's non-empty `prefix`. So a regex on either side
/// conflicts with whatever the other side sets (`{}` included), and so does a root condition
/// of `{}` or an empty string (Go's getters read an empty string as unset).
pub fn string_conflict(root: Option<&StringCondition>, leaf: Option<&StringCondition>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    let (root, leaf) = (Parts::of(root), Parts::of(leaf));
    if (!root.regex.is_empty() && leaf.is_set()) || (!leaf.regex.is_empty() && root.is_set()) {
        return true;
    }
    if !root.exact.is_empty() {
        return !leaf.prefix.is_empty() || leaf.exact != root.exact;
    }
    if !root.prefix.is_empty() {
        if !leaf.prefix.is_empty() {
            return !leaf.prefix.starts_with(root.prefix);
        }
        if !leaf.exact.is_empty() {
            return !leaf.exact.starts_with(root.prefix);
        }
    }
    true
}

/// A string condition as Go's getters see it: each form's value, `""` when it is another form.
#[derive(Clone, Copy)]
struct Parts<'a> {
    exact: &'a str,
    prefix: &'a str,
    regex: &'a str,
}

impl<'a> Parts<'a> {
    fn is_set(self) -> bool {
        !self.exact.is_empty() || !self.prefix.is_empty() || !self.regex.is_empty()
    }

    fn of(condition: &'a StringCondition) -> Self {
        let mut parts = Self { exact: "", prefix: "", regex: "" };
        match condition {
            StringCondition::Any => {}
            StringCondition::Match(StringMatch::Exact(v)) => parts.exact = v,
            StringCondition::Match(StringMatch::Prefix(v)) => parts.prefix = v,
            StringCondition::Match(StringMatch::Regex(v)) => parts.regex = v,
        }
        parts
    }
}

/// A string condition as written: `exact "v"`, `{}`, or `unset`.
fn condition(c: Option<&StringCondition>) -> String {
    match c {
        None => "unset".to_owned(),
        Some(StringCondition::Any) => "{}".to_owned(),
        Some(StringCondition::Match(StringMatch::Exact(v))) => format!("exact {v:?}"),
        Some(StringCondition::Match(StringMatch::Prefix(v))) => format!("prefix {v:?}"),
        Some(StringCondition::Match(StringMatch::Regex(v))) => format!("regex {v:?}"),
    }
}

/// A string field's value, `unset` when empty.
fn quoted(value: &str) -> String {
    if value.is_empty() { "unset".to_owned() } else { format!("{value:?}") }
}

#[cfg(test)]
mod tests;
