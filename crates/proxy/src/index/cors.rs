//! A route's CORS policy (Istio `corsPolicy`, as Envoy's CORS filter applies it): a preflight
//! (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an allowed origin is
//! answered by the proxy with the policy's headers; one from another origin is forwarded (or,
//! with `unmatchedPreflights: IGNORE`, answered without CORS headers). Any other request from an
//! allowed origin gets `Access-Control-Allow-Origin` (and the expose and credentials headers) on
//! its response. Requests without `Origin` are untouched.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use paymesh_api::model;

use super::matching::{MatchError, Matcher};

/// A compiled CORS policy.
#[derive(Debug)]
pub struct Cors {
    origins: Vec<Matcher>,
    methods: Option<HeaderValue>,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    credentials: bool,
    ignore_unmatched: bool,
}

/// What the policy makes of a request.
#[derive(Debug)]
pub enum Verdict {
    /// Not a CORS request, or a preflight to forward: nothing to do now.
    Pass,
    /// A request from an allowed origin: decorate its response with [`Cors::decorate`].
    Allowed(HeaderValue),
    /// A preflight the proxy answers: this status and these headers.
    Answer(StatusCode, HeaderMap),
}

impl Cors {
    /// Compiles `spec`.
    pub fn compile(spec: &model::Cors) -> Result<Self, MatchError> {
        let joined = |list: &[String]| {
            (!list.is_empty()).then(|| HeaderValue::from_str(&list.join(",")).ok()).flatten()
        };
        Ok(Cors {
            origins: spec.allow_origins.iter().map(Matcher::compile).collect::<Result<_, _>>()?,
            methods: joined(&spec.allow_methods),
            headers: joined(&spec.allow_headers),
            expose: joined(&spec.expose_headers),
            max_age: spec.max_age_secs.map(HeaderValue::from),
            credentials: spec.allow_credentials,
            ignore_unmatched: spec.ignore_unmatched_preflights,
        })
    }

    /// The policy's verdict on a request with `method` and `headers`.
    pub fn verdict(&self, method: &Method, headers: &HeaderMap) -> Verdict {
        let Some(origin) = headers.get(ORIGIN) else { return Verdict::Pass };
        let preflight = method == Method::OPTIONS && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD);
        let allowed = origin.to_str().is_ok_and(|text| {
            self.origins.iter().any(|m| m.holds(text) || matches!(m, Matcher::Exact(any) if any == "*"))
        });
        match (preflight, allowed) {
            (true, true) => {
                let mut answer = HeaderMap::new();
                answer.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                for (name, value) in [
                    (ACCESS_CONTROL_ALLOW_METHODS, &self.methods),
                    (ACCESS_CONTROL_ALLOW_HEADERS, &self.headers),
                    (ACCESS_CONTROL_MAX_AGE, &self.max_age),
                ] {
                    if let Some(value) = value {
                        answer.insert(name, value.clone());
                    }
                }
                if self.credentials {
                    answer.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
                }
                Verdict::Answer(StatusCode::OK, answer)
            }
            (true, false) if self.ignore_unmatched => Verdict::Answer(StatusCode::OK, HeaderMap::new()),
            (false, true) => Verdict::Allowed(origin.clone()),
            (true, false) | (false, false) => Verdict::Pass,
        }
    }

    /// Adds the headers an allowed `origin`'s response carries.
    pub fn decorate(&self, origin: HeaderValue, headers: &mut HeaderMap) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if let Some(expose) = &self.expose {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
        if self.credentials {
            headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::StringMatch;

    fn policy(ignore: bool) -> Cors {
        Cors::compile(&model::Cors {
            allow_origins: vec![
                StringMatch::Exact("https://shop.example.com".into()),
                StringMatch::Regex("https://.*\\.partner\\.com".into()),
            ],
            allow_methods: vec!["POST".into(), "GET".into()],
            allow_headers: vec!["x-tenant-id".into()],
            expose_headers: vec!["x-request-id".into()],
            max_age_secs: Some(600),
            allow_credentials: true,
            ignore_unmatched_preflights: ignore,
        })
        .expect("compiles")
    }

    fn headers(origin: &str, preflight: bool) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, HeaderValue::from_str(origin).expect("origin"));
        if preflight {
            headers.insert(ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_static("POST"));
        }
        headers
    }

    #[test]
    fn an_allowed_preflight_is_answered_with_the_policy() {
        let Verdict::Answer(status, answer) =
            policy(false).verdict(&Method::OPTIONS, &headers("https://a.partner.com", true))
        else {
            panic!("answered")
        };
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer[ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.partner.com");
        assert_eq!(answer[ACCESS_CONTROL_ALLOW_METHODS], "POST,GET");
        assert_eq!(answer[ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(answer[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    }

    #[test]
    fn other_origins_are_forwarded_or_ignored_and_plain_requests_pass() {
        assert!(matches!(
            policy(false).verdict(&Method::OPTIONS, &headers("https://evil.com", true)),
            Verdict::Pass
        ));
        let Verdict::Answer(_, bare) =
            policy(true).verdict(&Method::OPTIONS, &headers("https://evil.com", true))
        else {
            panic!("ignored preflights are answered")
        };
        assert!(bare.is_empty());
        assert!(matches!(policy(false).verdict(&Method::POST, &HeaderMap::new()), Verdict::Pass));
        let Verdict::Allowed(origin) =
            policy(false).verdict(&Method::POST, &headers("https://shop.example.com", false))
        else {
            panic!("allowed")
        };
        let mut response = HeaderMap::new();
        policy(false).decorate(origin, &mut response);
        assert_eq!(response[ACCESS_CONTROL_EXPOSE_HEADERS], "x-request-id");
    }
}
