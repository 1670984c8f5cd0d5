//! Rule-order checks of a VirtualService, which Istio runs inside its validation (as
//! warnings) and `schema.ValidationAnalyzer.VirtualService` reports: a rule no request can
//! reach (IST0130: an earlier rule without matches takes everything, or every match of the
//! rule repeats an earlier one) and a match that can never be the one used (IST0131: it
//! repeats an earlier match, or an earlier URI prefix match with the same other conditions
//! covers it).
//!
//! Rules are named as upstream names them (`"name"` when named, else `#index`), since the
//! messages quote them. Matches compare as upstream compares their JSON: every field except
//! an HTTP match's `name`.

use std::collections::BTreeMap;

use crate::analyze::{GoQuote, Message, messages};
use crate::networking::VirtualService;
use crate::networking::virtual_service::{HttpMatchRequest, HttpRoute};
use crate::path::FieldPath;
use crate::types::{StringCondition, StringMatch};

const ONLY_LAST_WITHOUT_MATCHES: &str = "only the last rule can have no matches";
const AFTER_RULE_WITHOUT_MATCHES: &str = "route without matches defined before";
const ALL_MATCHES_USED: &str = "all matches used by prior rules";

/// Every unreachable rule and ineffective match of `vs`, each with its rule's field.
pub fn check(vs: &VirtualService) -> Vec<(FieldPath, Message)> {
    let spec = FieldPath::root().key("spec");
    let mut found = Findings { at: spec.key("http"), messages: Vec::new() };
    check_http(&vs.http, &mut found);
    found.at = spec.key("tcp");
    check_plain(vs.tcp.iter().map(|r| r.matches.as_slice()), &mut found);
    found.at = spec.key("tls");
    check_plain(vs.tls.iter().map(|r| r.matches.as_slice()), &mut found);
    found.messages
}

/// Messages found so far, and the route list being checked.
struct Findings {
    at: FieldPath,
    messages: Vec<(FieldPath, Message)>,
}

impl Findings {
    fn unreachable(&mut self, rule: usize, name: &str, reason: &str) {
        self.messages.push((self.at.index(rule), messages::virtual_service_unreachable_rule(name, reason)));
    }

    fn ineffective(&mut self, rule: usize, name: &str, matched: &str, earlier: &str) {
        let message = messages::virtual_service_ineffective_match(name, matched, earlier);
        self.messages.push((self.at.index(rule), message));
    }
}

/// `routeName`/`requestName`: the quoted name, or `#index`.
pub(super) fn label(name: &str, index: usize) -> String {
    if name.is_empty() { format!("#{index}") } else { GoQuote(name).to_string() }
}

/// `analyzeUnreachableTCPRules` / `analyzeUnreachableTLSRules`: unnamed rules and matches.
fn check_plain<'a, M: PartialEq + 'a>(rules: impl Iterator<Item = &'a [M]>, found: &mut Findings) {
    let mut seen: Vec<(&M, usize)> = Vec::new();
    let mut without_matches = false;
    for (n, matches) in rules.enumerate() {
        let name = label("", n);
        if matches.is_empty() {
            if without_matches {
                found.unreachable(n, &name, ONLY_LAST_WITHOUT_MATCHES);
            }
            without_matches = true;
            continue;
        }
        let mut repeated = 0;
        for (m, condition) in matches.iter().enumerate() {
            if without_matches {
                found.unreachable(n, &name, AFTER_RULE_WITHOUT_MATCHES);
                continue;
            }
            match seen.iter().find(|(earlier, _)| *earlier == condition) {
                Some((_, first)) => {
                    found.ineffective(n, &name, &label("", m), &label("", *first));
                    repeated += 1;
                }
                None => seen.push((condition, n)),
            }
        }
        if repeated == matches.len() {
            found.unreachable(n, &name, ALL_MATCHES_USED);
        }
    }
}

/// `analyzeUnreachableHTTPRules`: as [`check_plain`], plus URI prefixes covering later ones.
fn check_http(routes: &[HttpRoute], found: &mut Findings) {
    let mut seen: Vec<(HttpMatchRequest, usize)> = Vec::new();
    let mut prefixes: Vec<PrefixMatch> = Vec::new();
    let mut without_matches = false;
    for (n, route) in routes.iter().enumerate() {
        let name = label(&route.name, n);
        if route.matches.is_empty() {
            if without_matches {
                found.unreachable(n, &name, ONLY_LAST_WITHOUT_MATCHES);
            }
            without_matches = true;
            continue;
        }
        let mut repeated = 0;
        for (m, condition) in route.matches.iter().enumerate() {
            if without_matches {
                found.unreachable(n, &name, AFTER_RULE_WITHOUT_MATCHES);
                continue;
            }
            let unnamed = HttpMatchRequest { name: String::new(), ..condition.clone() };
            if let Some((_, first)) = seen.iter().find(|(earlier, _)| *earlier == unnamed) {
                let earlier = label(&routes[*first].name, *first);
                found.ineffective(n, &name, &label(&condition.name, m), &earlier);
                repeated += 1;
                continue;
            }
            seen.push((unnamed, n));
            prefixes.extend(PrefixMatch::new(n, &name, m, condition));
        }
        if repeated == route.matches.len() {
            found.unreachable(n, &name, ALL_MATCHES_USED);
        }
    }
    for (i, earlier) in prefixes.iter().enumerate() {
        for later in prefixes.iter().skip(i + 1).filter(|l| l.prefix != earlier.prefix) {
            if earlier.covers(later) {
                found.ineffective(
                    later.rule,
                    &later.rule_name,
                    &format!("{} of prefix {}", later.match_name, later.prefix),
                    &format!("{} of prefix {} on {}", earlier.match_name, earlier.prefix, earlier.rule_name),
                );
            }
        }
    }
}

/// `OverlappingMatchValidationForHTTPRoute`: a URI prefix match reduced to the conditions
/// upstream compares, each an `exact:`/`prefix:` string (a regex counts as no condition).
struct PrefixMatch {
    rule: usize,
    rule_name: String,
    match_name: String,
    prefix: String,
    port: u32,
    method: String,
    authority: String,
    headers: BTreeMap<String, String>,
    query_params: BTreeMap<String, String>,
    without_headers: BTreeMap<String, String>,
}

/// `assignExactOrPrefix`.
fn condition(c: Option<&StringCondition>) -> String {
    match c.and_then(StringCondition::as_match) {
        Some(StringMatch::Exact(v)) if !v.is_empty() => format!("exact:{v}"),
        Some(StringMatch::Prefix(v)) if !v.is_empty() => format!("prefix:{v}"),
        _ => String::new(),
    }
}

fn conditions(map: &BTreeMap<String, StringCondition>) -> BTreeMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), condition(Some(v)))).collect()
}

/// Each entry of `a` is in `b`, equal or starting with it (and both have as many).
fn map_covered(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| v.starts_with(w.as_str())))
}

impl PrefixMatch {
    /// `genMatchHTTPRoutes`: only matches on a non-empty URI prefix take part.
    fn new(rule: usize, rule_name: &str, index: usize, m: &HttpMatchRequest) -> Option<Self> {
        let Some(StringMatch::Prefix(prefix)) = m.uri.as_ref().and_then(StringCondition::as_match) else {
            return None;
        };
        if prefix.is_empty() {
            return None;
        }
        let method = condition(m.method.as_ref());
        Some(Self {
            rule,
            rule_name: rule_name.to_owned(),
            match_name: label(&m.name, index),
            prefix: prefix.clone(),
            port: m.port,
            // Without a method condition, upstream assumes GET.
            method: if method.is_empty() { "exact:GET".to_owned() } else { method },
            authority: condition(m.authority.as_ref()),
            headers: conditions(&m.headers),
            query_params: conditions(&m.query_params),
            without_headers: conditions(&m.without_headers),
        })
    }

    /// `coveredValidation`: every request `later` matches, this earlier match takes first.
    fn covers(&self, later: &Self) -> bool {
        later.prefix.starts_with(self.prefix.as_str())
            && later.port == self.port
            && self.method.starts_with(later.method.as_str())
            && self.authority.starts_with(later.authority.as_str())
            && map_covered(&self.headers, &later.headers)
            && map_covered(&self.query_params, &later.query_params)
            && map_covered(&self.without_headers, &later.without_headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::kube::testing::resources;
    use crate::resource::Spec;

    /// `CODE rule-field: text` for every finding in the VirtualServices of `yaml`.
    fn findings(yaml: &str) -> Vec<String> {
        resources(yaml)
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::VirtualService(vs) => Some(check(vs)),
                _ => None,
            })
            .flatten()
            .map(|(at, m)| format!("{} {at}: {}", m.kind.code, m.text))
            .collect()
    }

    fn vs(spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: v}}\nspec:\n{spec}"
        )
    }

    #[test]
    fn rules_after_a_catch_all_are_unreachable() {
        let found = findings(&vs(
            "  hosts: [a]\n  http:\n  - route: [{destination: {host: a}}]\n  - name: late\n    match: [{uri: {prefix: /x}}]\n    route: [{destination: {host: a}}]\n  - route: [{destination: {host: a}}]\n",
        ));
        assert_eq!(
            found,
            [
                "IST0130 spec.http[1]: VirtualService rule \"late\" not used (route without matches defined before).",
                "IST0130 spec.http[2]: VirtualService rule #2 not used (only the last rule can have no matches).",
            ]
        );
    }

    #[test]
    fn repeated_and_covered_matches_are_ineffective() {
        let found = findings(&vs(
            "  hosts: [a]\n  http:\n  - name: first\n    match: [{name: m, uri: {prefix: /api}}]\n    route: [{destination: {host: a}}]\n  - match: [{uri: {prefix: /api}}, {uri: {prefix: /api/v2}, method: {exact: GET}}]\n    route: [{destination: {host: a}}]\n",
        ));
        assert_eq!(
            found,
            [
                "IST0131 spec.http[1]: VirtualService rule #1 match #0 is not used (duplicate/overlapping match in rule \"first\").",
                "IST0131 spec.http[1]: VirtualService rule #1 match #1 of prefix /api/v2 is not used (duplicate/overlapping match in rule \"m\" of prefix /api on \"first\").",
            ]
        );
    }

    #[test]
    fn different_conditions_do_not_cover() {
        let found = findings(&vs(
            "  hosts: [a]\n  http:\n  - match: [{uri: {prefix: /api}, method: {exact: POST}}]\n    route: [{destination: {host: a}}]\n  - match: [{uri: {prefix: /api/v2}}, {uri: {exact: /api}}]\n    route: [{destination: {host: a}}]\n",
        ));
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn tcp_rules_compare_whole_matches() {
        let found = findings(&vs(
            "  hosts: [a]\n  tcp:\n  - match: [{port: 1}]\n    route: [{destination: {host: a}}]\n  - match: [{port: 1}]\n    route: [{destination: {host: a}}]\n",
        ));
        assert_eq!(
            found,
            [
                "IST0131 spec.tcp[1]: VirtualService rule #1 match #0 is not used (duplicate/overlapping match in rule #0).",
                "IST0130 spec.tcp[1]: VirtualService rule #1 not used (all matches used by prior rules).",
            ]
        );
    }
}
