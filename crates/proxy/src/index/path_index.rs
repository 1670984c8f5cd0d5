//! Which routes of a large virtual host a request can select, found without trying them all.
//!
//! First match wins, so a request is matched against routes in order; with hundreds of routes
//! that is hundreds of matchers walked (and their memory touched) per request. A match
//! alternative that pins the request to literal text — the path (`exact`, or a case-sensitive
//! `prefix`), else a header's exact value — can only take a request carrying that text: the index
//! maps each literal to its routes, so a lookup per distinct prefix length and per indexed header
//! finds the candidates, and only they (with the routes that pin nothing) are matched, in order.
//! Small virtual hosts skip the index: walking a few routes is cheaper than hashing.

use std::collections::HashMap;

use http::{HeaderMap, HeaderName};

use super::matching::{PathLiteral, joined};

/// Below this many routes, the routes are simply walked.
pub const MIN_ROUTES: usize = 32;

/// The literal-path index of one virtual host's routes.
#[derive(Debug, Default)]
pub struct PathIndex {
    exact: HashMap<String, Vec<u32>>,
    prefix: HashMap<String, Vec<u32>>,
    /// The distinct prefix lengths, ascending: one lookup each.
    prefix_lengths: Vec<usize>,
    /// Exact header values, by header.
    headers: HashMap<HeaderName, HashMap<String, Vec<u32>>>,
    /// Routes that may take any path.
    always: Vec<u32>,
}

impl PathIndex {
    /// The index of routes whose path literals are `literals[i]` (`None`: any path).
    pub fn new(literals: &[Option<Vec<PathLiteral>>]) -> Self {
        let mut index = PathIndex::default();
        for (route, literals) in literals.iter().enumerate() {
            let route = u32::try_from(route).unwrap_or(u32::MAX);
            let Some(literals) = literals else {
                index.always.push(route);
                continue;
            };
            for literal in literals {
                match literal {
                    PathLiteral::Exact(text) => index.exact.entry(text.clone()).or_default().push(route),
                    PathLiteral::Prefix(text) => {
                        index.prefix.entry(text.clone()).or_default().push(route);
                        index.prefix_lengths.push(text.len());
                    }
                    PathLiteral::Header(name, value) => index
                        .headers
                        .entry(name.clone())
                        .or_default()
                        .entry(value.clone())
                        .or_default()
                        .push(route),
                }
            }
        }
        index.prefix_lengths.sort_unstable();
        index.prefix_lengths.dedup();
        index
    }

    /// The routes a request for `path` with `headers` may select, in route order.
    pub fn candidates(&self, path: &str, headers: &HeaderMap) -> Vec<u32> {
        let mut found = self.always.clone();
        if let Some(routes) = self.exact.get(path) {
            found.extend_from_slice(routes);
        }
        for &length in self.prefix_lengths.iter().take_while(|&&length| length <= path.len()) {
            if let Some(routes) = path.get(..length).and_then(|start| self.prefix.get(start)) {
                found.extend_from_slice(routes);
            }
        }
        for (name, values) in &self.headers {
            if let Some(routes) = joined(headers, name).and_then(|value| values.get(value.as_ref())) {
                found.extend_from_slice(routes);
            }
        }
        found.sort_unstable();
        found.dedup();
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_the_routes_a_path_can_meet_in_order() {
        let literals = vec![
            Some(vec![PathLiteral::Prefix("/v1/payments".into())]),
            None,
            Some(vec![PathLiteral::Exact("/health".into()), PathLiteral::Prefix("/v1/accounts/".into())]),
            Some(vec![PathLiteral::Prefix("/".into())]),
        ];
        let tenant = HeaderName::from_static("x-tenant-id");
        let mut literals = literals;
        literals.push(Some(vec![PathLiteral::Header(tenant.clone(), "gold".into())]));
        let index = PathIndex::new(&literals);
        let none = HeaderMap::new();
        assert_eq!(index.candidates("/v1/payments/p-1", &none), [0, 1, 3]);
        assert_eq!(index.candidates("/health", &none), [1, 2, 3]);
        assert_eq!(index.candidates("/v1/accounts/a", &none), [1, 2, 3]);
        assert_eq!(index.candidates("/v1/accounts", &none), [1, 3]);
        assert_eq!(index.candidates("", &none), [1]);
        let mut gold = HeaderMap::new();
        gold.insert(tenant, http::HeaderValue::from_static("gold"));
        assert_eq!(index.candidates("/v1/payments/p-1", &gold), [0, 1, 3, 4]);
    }
}
