//! `RequestAuthentication`: which JWTs a workload accepts (issuer, audiences, keys from a
//! JWKS URI or inline), where tokens are read from (headers, query parameters, cookies) and
//! which claims are copied into request headers.
//!
//! A request with an invalid token is rejected; one without a token passes unauthenticated
//! unless `presence: REQUIRED` (AuthorizationPolicy decides the rest).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::path::FieldPath;
use crate::resource::FieldError;
use crate::security::string_enum;
use crate::security::target::{ISTIO_POLICY_TARGETS, PolicyTargetRef, Targeting, WorkloadScope};
use crate::security::{deserialize_cel_duration, validate_duration, validate_strict_header_name};
use crate::types::{Duration, WorkloadSelector};
use crate::validate::Validate;

/// The `spec` of a RequestAuthentication.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestAuthentication {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<PolicyTargetRef>,
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetRef>,
    #[serde(default)]
    pub jwt_rules: Vec<JwtRule>,
}

impl RequestAuthentication {
    /// The workloads the policy applies to.
    pub fn scope(&self) -> WorkloadScope<'_> {
        WorkloadScope::resolve(self.selector.as_ref(), self.target_ref.as_ref(), &self.target_refs)
    }
}

/// How one issuer's tokens are checked and used.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawJwtRule")]
pub struct JwtRule {
    /// The `iss` claim tokens must carry.
    pub issuer: String,
    /// Accepted `aud` values; empty accepts any.
    pub audiences: Vec<String>,
    /// Where the signing keys come from; `None` means OpenID discovery from the issuer.
    pub jwks: Option<Jwks>,
    /// Headers carrying the token (default `Authorization: Bearer`).
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters carrying the token (default `access_token`).
    pub from_params: Vec<String>,
    /// Cookies carrying the token.
    pub from_cookies: Vec<String>,
    /// A header receiving the verified payload, base64url-encoded.
    pub output_payload_to_header: Option<String>,
    /// Keep the token in the request forwarded to the app.
    pub forward_original_token: bool,
    /// Claims copied into request headers.
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// How long fetching the JWKS may take.
    pub timeout: Option<Duration>,
    /// Claims holding space-separated lists (like `scope`), matched element by element.
    pub space_delimited_claims: Vec<String>,
    pub presence: Presence,
}

/// The JWKS of a rule: fetched from a URI or given inline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Jwks {
    Uri(JwksUri),
    /// The JWKS JSON document itself.
    Inline(String),
}

string_enum! {
    /// Whether a request must carry a token.
    #[derive(Default)]
    pub enum Presence {
        #[default]
        Optional = "OPTIONAL",
        Required = "REQUIRED",
    }
}

/// A header to read a token from, with the prefix before the token (`Bearer `).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtHeader {
    pub name: String,
    #[serde(default)]
    pub prefix: String,
}

/// A claim to copy into a request header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}

/// A JWKS location: an `http` or `https` URL, with the host and port to fetch from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksUri {
    pub uri: String,
    pub https: bool,
    pub host: String,
    /// The explicit port, else 80 or 443 by scheme.
    pub port: u16,
}

/// Why a JWKS URI did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwksUriError {
    #[error("url must have scheme http:// or https://")]
    Scheme,
    #[error("url must not contain spaces or control characters")]
    Characters,
    #[error("url must name a host")]
    Host,
    #[error("invalid port {0:?} in url")]
    Port(String),
}

impl FromStr for JwksUri {
    type Err = JwksUriError;

    fn from_str(uri: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = uri.split_once("://").ok_or(JwksUriError::Scheme)?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err(JwksUriError::Scheme),
        };
        if uri.chars().any(|c| c.is_control() || c == ' ') {
            return Err(JwksUriError::Characters);
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        let (host, port) = match host_port.strip_prefix('[') {
            Some(bracketed) => {
                let (host, tail) = bracketed.split_once(']').ok_or(JwksUriError::Host)?;
                (host, tail.strip_prefix(':'))
            }
            None => match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        if host.is_empty() {
            return Err(JwksUriError::Host);
        }
        let port = match port {
            None | Some("") => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some(p) => p.parse().map_err(|_| JwksUriError::Port(p.to_owned()))?,
        };
        Ok(Self { uri: uri.to_owned(), https, host: host.to_owned(), port })
    }
}

impl fmt::Display for JwksUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl<'de> Deserialize<'de> for JwksUri {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A JWT rule as written: `jwksUri`, its older spelling `jwks_uri`, and `jwks` are one choice.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawJwtRule {
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    jwks_uri: Option<JwksUri>,
    #[serde(default, rename = "jwks_uri")]
    jwks_uri_legacy: Option<JwksUri>,
    #[serde(default)]
    jwks: Option<String>,
    #[serde(default)]
    from_headers: Vec<JwtHeader>,
    #[serde(default)]
    from_params: Vec<String>,
    #[serde(default)]
    from_cookies: Vec<String>,
    #[serde(default)]
    output_payload_to_header: Option<String>,
    #[serde(default)]
    forward_original_token: bool,
    #[serde(default)]
    output_claim_to_headers: Vec<ClaimToHeader>,
    #[serde(default, deserialize_with = "deserialize_cel_duration")]
    timeout: Option<Duration>,
    #[serde(default)]
    space_delimited_claims: Vec<String>,
    #[serde(default)]
    presence: Presence,
}

impl TryFrom<RawJwtRule> for JwtRule {
    type Error = String;

    fn try_from(raw: RawJwtRule) -> Result<Self, String> {
        let jwks = match (raw.jwks_uri, raw.jwks_uri_legacy, raw.jwks) {
            (None, None, None) => None,
            (Some(uri), None, None) | (None, Some(uri), None) => Some(Jwks::Uri(uri)),
            (None, None, Some(inline)) => {
                parse_jwks(&inline).map_err(|e| format!("jwks parse error: {e}"))?;
                Some(Jwks::Inline(inline))
            }
            _ => return Err("only one of jwks or jwksUri can be set".to_owned()),
        };
        Ok(Self {
            issuer: raw.issuer,
            audiences: raw.audiences,
            jwks,
            from_headers: raw.from_headers,
            from_params: raw.from_params,
            from_cookies: raw.from_cookies,
            output_payload_to_header: raw.output_payload_to_header,
            forward_original_token: raw.forward_original_token,
            output_claim_to_headers: raw.output_claim_to_headers,
            timeout: raw.timeout,
            space_delimited_claims: raw.space_delimited_claims,
            presence: raw.presence,
        })
    }
}

/// Checks that an inline JWKS is a JSON object with a `keys` array of objects.
fn parse_jwks(text: &str) -> Result<(), String> {
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    match doc.get("keys").and_then(serde_json::Value::as_array) {
        Some(keys) if keys.iter().all(serde_json::Value::is_object) => Ok(()),
        Some(_) => Err("every entry of \"keys\" must be an object".to_owned()),
        None => Err("a JWKS must be an object with a \"keys\" array".to_owned()),
    }
}

impl Validate for RequestAuthentication {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        Targeting {
            selector: self.selector.as_ref(),
            target_ref: self.target_ref.as_ref(),
            target_refs: &self.target_refs,
        }
        .validate(ISTIO_POLICY_TARGETS, at, errors);
        for (i, rule) in self.jwt_rules.iter().enumerate() {
            rule.validate(&at.key("jwtRules").index(i), errors);
        }
    }
}

impl Validate for JwtRule {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        let mut non_empty = |values: &[String], field: &str, message: &str| {
            for (i, value) in values.iter().enumerate() {
                if value.is_empty() {
                    errors.push(FieldError::new(at.key(field).index(i), message));
                }
            }
        };
        non_empty(&self.audiences, "audiences", "audience must be non-empty string");
        non_empty(&self.from_params, "fromParams", "location query must be non-empty string");
        non_empty(&self.from_cookies, "fromCookies", "cookie name must be non-empty string");
        non_empty(
            &self.space_delimited_claims,
            "spaceDelimitedClaims",
            "claim name must be non-empty string",
        );
        if self.issuer.is_empty() && !matches!(self.jwks, Some(Jwks::Uri(_))) {
            errors.push(FieldError::new(at.clone(), "issuer or jwksUri must be non-empty string"));
        }
        for (i, header) in self.from_headers.iter().enumerate() {
            if header.name.is_empty() {
                errors.push(FieldError::new(
                    at.key("fromHeaders").index(i).key("name"),
                    "location header name must be non-empty string",
                ));
            }
        }
        for (i, output) in self.output_claim_to_headers.iter().enumerate() {
            let here = at.key("outputClaimToHeaders").index(i);
            if output.claim.is_empty() || output.header.is_empty() {
                errors.push(FieldError::new(
                    here,
                    "outputClaimToHeaders header and claim value must be non-empty string",
                ));
            } else {
                validate_strict_header_name(&output.header, &here.key("header"), errors);
            }
        }
        if let Some(timeout) = self.timeout {
            validate_duration(timeout, &at.key("timeout"), errors);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn decode(spec: serde_json::Value) -> Result<RequestAuthentication, String> {
        crate::validate::testing::decode(spec)
    }

    fn errors(spec: serde_json::Value) -> Vec<String> {
        crate::validate::testing::errors::<RequestAuthentication>(spec)
    }

    #[test]
    fn jwks_uris_name_scheme_host_and_port() {
        let uri: JwksUri = "https://example.com/.well-known/jwks.json".parse().expect("uri");
        assert_eq!((uri.https, uri.host.as_str(), uri.port), (true, "example.com", 443));
        let uri: JwksUri = "HTTP://user@[::1]:8080/keys".parse().expect("v6");
        assert_eq!((uri.https, uri.host.as_str(), uri.port), (false, "::1", 8080));
        assert_eq!("hTPp\\\u{8}lah".parse::<JwksUri>(), Err(JwksUriError::Scheme));
        assert_eq!("ftp://x/keys".parse::<JwksUri>(), Err(JwksUriError::Scheme));
        assert_eq!("https:///keys".parse::<JwksUri>(), Err(JwksUriError::Host));
        assert_eq!("https://h:99999/".parse::<JwksUri>(), Err(JwksUriError::Port("99999".into())));
    }

    #[test]
    fn decodes_every_field() {
        let ra = decode(json!({
            "targetRefs": [{"group": "", "kind": "Service", "name": "payment-service"}],
            "jwtRules": [{
                "issuer": "https://issuer.payments.example",
                "jwks_uri": "https://issuer.payments.example/jwks",
                "audiences": ["payments"],
                "fromHeaders": [{"name": "x-jwt", "prefix": "Bearer "}],
                "outputClaimToHeaders": [{"claim": "tenant", "header": "x-tenant-id"}],
                "timeout": "5s",
                "presence": "REQUIRED",
            }],
        }))
        .expect("decodes");
        let rule = &ra.jwt_rules[0];
        assert!(matches!(&rule.jwks, Some(Jwks::Uri(u)) if u.host == "issuer.payments.example"));
        assert_eq!(rule.presence, Presence::Required);
        assert_eq!(rule.timeout.map(|t| t.to_string()), Some("5s".into()));
        assert!(matches!(ra.scope(), WorkloadScope::TargetRefs([t]) if t.name == "payment-service"));
    }

    #[test]
    fn decoding_errors_name_the_field() {
        let cases = [
            (
                json!({"jwtRules": [{"issuer": "x", "jwksUri": "hTPp\\blah"}]}),
                "spec.jwtRules[0].jwksUri: url must have scheme http:// or https://",
            ),
            (
                json!({"jwtRules": [{"issuer": "x", "timeout": "apple"}]}),
                "spec.jwtRules[0].timeout: must be a valid duration greater than 1ms: invalid duration \"apple\": expected a number (expected e.g. \"500ms\", \"1s\", \"1m30s\", \"1h\")",
            ),
            (
                json!({"jwtRules": [{"issuer": "x", "jwksUri": "https://a/k", "jwks": "{}"}]}),
                "spec.jwtRules[0]: only one of jwks or jwksUri can be set",
            ),
            (
                json!({"jwtRules": [{"issuer": "x", "jwks": "{\"keys\": 1}"}]}),
                "spec.jwtRules[0]: jwks parse error: a JWKS must be an object with a \"keys\" array",
            ),
            (
                json!({"jwtRules": [{"issuer": "x", "presence": "MANDATORY"}]}),
                "spec.jwtRules[0].presence: Unsupported value: \"MANDATORY\": supported values: \"OPTIONAL\", \"REQUIRED\"",
            ),
            (
                json!({"jwtRules": [{"issuer": "x", "fromHeaders": [{"prefix": "baz"}]}]}),
                "spec.jwtRules[0].fromHeaders[0]: missing field `name`",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(decode(spec), Err(want.to_owned()));
        }
    }

    #[test]
    fn webhook_rules() {
        assert_eq!(
            errors(json!({
                "selector": {"matchLabels": {"a": "b"}},
                "targetRef": {"kind": "Service", "name": "foo", "namespace": "bar"},
                "jwtRules": [{
                    "audiences": [""],
                    "fromHeaders": [{"name": ""}],
                    "fromCookies": [""],
                    "outputClaimToHeaders": [{"claim": "x", "header": ":authority"}, {"claim": "", "header": "h"}],
                    "timeout": "0s",
                }],
            })),
            [
                "spec: only one of targetRefs or selector can be set",
                "spec.targetRef.namespace: cross namespace referencing is not currently supported",
                "spec.jwtRules[0].audiences[0]: audience must be non-empty string",
                "spec.jwtRules[0].fromCookies[0]: cookie name must be non-empty string",
                "spec.jwtRules[0]: issuer or jwksUri must be non-empty string",
                "spec.jwtRules[0].fromHeaders[0].name: location header name must be non-empty string",
                "spec.jwtRules[0].outputClaimToHeaders[0].header: header name :authority is not a valid header name",
                "spec.jwtRules[0].outputClaimToHeaders[1]: outputClaimToHeaders header and claim value must be non-empty string",
                "spec.jwtRules[0].timeout: must be a valid duration greater than 1ms (got 0s)",
            ]
        );
        assert!(errors(json!({"jwtRules": [{"jwksUri": "https://a/keys"}]})).is_empty());
    }
}
