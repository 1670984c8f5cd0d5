//! A route's rewrites and redirects, compiled once per snapshot and applied to a request after
//! routing (Istio `HTTPRoute.rewrite` and `redirect`, as Envoy's `prefix_rewrite`,
//! `regex_rewrite`, `host_rewrite_literal` and redirect action carry them out).
//!
//! `rewrite.uri` replaces what the route's match took ([`RouteMatcher::taken`]): the prefix of a
//! prefix match, the whole path of an exact or regex match, and `/` (Envoy's default prefix) when
//! the match does not name the path.
//!
//! [`RouteMatcher::taken`]: crate::index::RouteMatcher::taken A redirect builds the location from the request's own scheme, host, port and path,
//! replacing what the rule sets. The query string is kept by both.

use http::uri::{Authority as UriAuthority, PathAndQuery};
use http::{HeaderValue, Request, Uri};
use paymesh_api::model::{self, Redirect, RedirectPath, RedirectPort};
use regex::Regex;

use super::matching::MatchError;
use crate::http::Authority;

/// A compiled `rewrite`.
#[derive(Debug)]
pub struct Rewrite {
    uri: Option<String>,
    regex: Option<(Regex, String)>,
    authority: Option<UriAuthority>,
}

impl Rewrite {
    /// Compiles `spec`.
    pub fn compile(spec: &model::Rewrite) -> Result<Self, MatchError> {
        let regex = match &spec.uri_regex {
            Some(rewrite) => {
                let regex = Regex::new(&rewrite.pattern).map_err(|e| MatchError::Regex {
                    pattern: rewrite.pattern.clone(),
                    reason: e.to_string(),
                })?;
                Some((regex, rewrite.substitution.clone()))
            }
            None => None,
        };
        let authority = match &spec.authority {
            Some(authority) => Some(
                authority
                    .parse()
                    .map_err(|_| MatchError::HeaderValue { name: format!("authority {authority}") })?,
            ),
            None => None,
        };
        Ok(Rewrite { uri: spec.uri.clone(), regex, authority })
    }

    /// Rewrites `req`'s path (`taken`: how many of its bytes the route's match took) and returns
    /// the authority to send upstream instead of the request's, if the rule sets one.
    pub fn apply<B>(&self, req: &mut Request<B>, taken: usize) -> Option<&UriAuthority> {
        let path = req.uri().path();
        let rewritten = match (&self.uri, &self.regex) {
            (Some(uri), _) => Some(format!("{uri}{}", path.get(taken..).unwrap_or(""))),
            (None, Some((regex, substitution))) => {
                Some(regex.replace_all(path, substitution.as_str()).into_owned())
            }
            (None, None) => None,
        };
        if let Some(path) = rewritten {
            let with_query = match req.uri().query() {
                Some(query) => format!("{path}?{query}"),
                None => path,
            };
            if let Ok(path) = PathAndQuery::try_from(with_query) {
                let mut parts = req.uri().clone().into_parts();
                parts.path_and_query = Some(path);
                if let Ok(uri) = Uri::from_parts(parts) {
                    *req.uri_mut() = uri;
                }
            }
        }
        if let Some(authority) = &self.authority
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            req.headers_mut().insert(http::header::HOST, host);
        }
        self.authority.as_ref()
    }
}

/// The `Location` of `redirect` for a request to `authority` with `uri` (`taken`: how many bytes
/// of the path the route's match took).
pub fn location(redirect: &Redirect, authority: &Authority, uri: &Uri, scheme: &str, taken: usize) -> String {
    let scheme = redirect.scheme.as_deref().unwrap_or(scheme);
    let host = redirect.authority.as_deref().unwrap_or(authority.host());
    let port = match redirect.port {
        RedirectPort::Number(port) => format!(":{port}"),
        RedirectPort::RequestPort => format!(":{}", authority.port()),
        // A rule that keeps the host keeps the request's authority as it was written.
        RedirectPort::ProtocolDefault if redirect.authority.is_none() && redirect.scheme.is_none() => {
            authority.text().strip_prefix(authority.host()).unwrap_or("").to_owned()
        }
        RedirectPort::ProtocolDefault => String::new(),
    };
    let path = uri.path();
    let path = match &redirect.path {
        Some(RedirectPath::Replace(new)) => new.clone(),
        Some(RedirectPath::Prefix(prefix)) => format!("{prefix}{}", path.get(taken..).unwrap_or("")),
        None => path.to_owned(),
    };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    format!("{scheme}://{host}{port}{path}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str) -> Request<()> {
        Request::builder().uri(uri).body(()).expect("request")
    }

    #[test]
    fn uri_rewrites_replace_what_the_match_took_and_keep_the_query() {
        let rewrite =
            Rewrite::compile(&model::Rewrite { uri: Some("/api/v2/".into()), ..Default::default() })
                .expect("compiles");
        let mut req = request("http://svc/v1/payments/p-1?expand=true");
        rewrite.apply(&mut req, "/v1/".len());
        assert_eq!(req.uri().path_and_query().map(|p| p.as_str()), Some("/api/v2/payments/p-1?expand=true"));
        let mut exact = request("http://svc/health");
        rewrite.apply(&mut exact, "/health".len());
        assert_eq!(exact.uri().path(), "/api/v2/");
    }

    #[test]
    fn regex_rewrites_substitute_groups_and_authority_rewrites_set_host() {
        let spec = model::Rewrite {
            uri_regex: Some(model::RegexRewrite {
                pattern: "^/service/([^/]+)(/.*)$".into(),
                substitution: "$2/instance/$1".into(),
            }),
            authority: Some("internal.payments:8080".into()),
            ..Default::default()
        };
        let rewrite = Rewrite::compile(&spec).expect("compiles");
        let mut req = request("http://svc/service/foo/v1/api");
        let authority = rewrite.apply(&mut req, 0).map(|a| a.as_str().to_owned());
        assert_eq!(req.uri().path(), "/v1/api/instance/foo");
        assert_eq!(authority.as_deref(), Some("internal.payments:8080"));
        assert_eq!(req.headers()["host"], "internal.payments:8080");
    }

    #[test]
    fn redirects_replace_only_what_the_rule_sets() {
        let authority = Authority::parse("payments.example.com:8080", 80).expect("authority");
        let uri: Uri = "/v1/old/p-1?x=1".parse().expect("uri");
        let to = |redirect: Redirect| location(&redirect, &authority, &uri, "http", "/v1/old".len());
        let base = Redirect {
            status: 301,
            scheme: None,
            authority: None,
            port: RedirectPort::ProtocolDefault,
            path: None,
        };
        assert_eq!(to(base.clone()), "http://payments.example.com:8080/v1/old/p-1?x=1");
        let https = Redirect { scheme: Some("https".into()), ..base.clone() };
        assert_eq!(to(https), "https://payments.example.com/v1/old/p-1?x=1");
        let moved = Redirect {
            path: Some(RedirectPath::Prefix("/v2/new".into())),
            port: RedirectPort::Number(9443),
            ..base.clone()
        };
        assert_eq!(to(moved), "http://payments.example.com:9443/v2/new/p-1?x=1");
        let elsewhere = Redirect {
            authority: Some("api.example.com".into()),
            path: Some(RedirectPath::Replace("/".into())),
            ..base
        };
        assert_eq!(to(elsewhere), "http://api.example.com/?x=1");
    }
}
