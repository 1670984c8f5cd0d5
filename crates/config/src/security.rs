//! Istio's security resources (`security.istio.io`): [`PeerAuthentication`] (mTLS mode per
//! workload and port), [`RequestAuthentication`] (JWT rules) and [`AuthorizationPolicy`]
//! (ALLOW/DENY/AUDIT/CUSTOM rules), plus the value types they share.
//!
//! Decoding parses every value Istio parses (principals, CIDRs, ports, durations, enums) so a
//! typo fails at its field; [`Validate`](crate::validate::Validate) then applies the rules that
//! span fields (Istio's webhook and the CRDs' CEL rules, with their messages). Telemetry and
//! RateLimitPolicy reuse the policy-target and enum helpers defined here.

use std::time::Duration as StdDuration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::path::FieldPath;
use crate::resource::{FieldError, Resource, decode_value};
use crate::types::Duration;

pub mod authorization_policy;
pub mod pattern;
pub mod peer_authentication;
pub mod request_authentication;
pub mod target;

pub use authorization_policy::AuthorizationPolicy;
pub use pattern::{IpBlock, PathPattern, Pattern, Principal, ServiceAccountRef};
pub use peer_authentication::PeerAuthentication;
pub use request_authentication::RequestAuthentication;
pub use target::{PolicyTargetRef, WorkloadScope};

/// The annotation that turns an AuthorizationPolicy into a dry run (logged, not enforced).
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// Decodes the `spec` of `doc` (an absent or null `spec` is an empty one, as Istio reads it).
pub(crate) fn decode_spec<T: DeserializeOwned>(doc: &Value) -> Result<Box<T>, FieldError> {
    let at = FieldPath::root().key("spec");
    match doc.get("spec") {
        None | Some(Value::Null) => decode_value(&Value::Object(serde_json::Map::new()), &at),
        Some(spec) => decode_value(spec, &at),
    }
    .map(Box::new)
}

/// The message of the CRDs' CEL rule on durations (`duration(self) >= duration('1ms')`).
pub const DURATION_MESSAGE: &str = "must be a valid duration greater than 1ms";

/// Reads an optional duration, wording a parse failure as the CRDs' CEL rule does.
pub(crate) fn deserialize_cel_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let Some(text) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    text.parse().map(Some).map_err(|e| serde::de::Error::custom(format!("{DURATION_MESSAGE}: {e}")))
}

/// Istio's `ValidateDuration`: at least 1 ms, in whole milliseconds.
pub fn validate_duration(duration: Duration, at: &FieldPath, errors: &mut Vec<FieldError>) {
    let d = duration.as_std();
    if d < StdDuration::from_millis(1) {
        errors.push(FieldError::new(at.clone(), format!("{DURATION_MESSAGE} (got {duration})")));
    } else if d.subsec_nanos() % 1_000_000 != 0 {
        errors.push(FieldError::new(at.clone(), "only durations to ms precision are supported"));
    }
}

/// Istio's strict header-name rule (`^[-_A-Za-z0-9]+$`), for headers paymesh writes.
pub fn validate_strict_header_name(name: &str, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if name.is_empty() {
        errors.push(FieldError::new(at.clone(), "header name cannot be empty"));
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        errors.push(FieldError::new(at.clone(), format!("header name {name} is not a valid header name")));
    }
}

/// The `istio.io/dry-run` rule of Istio's webhook: only ALLOW and DENY AuthorizationPolicies
/// may carry it, and its value must be a boolean.
pub fn check_dry_run(resource: &Resource, errors: &mut Vec<FieldError>) {
    let Some(value) = resource.meta.annotations.get(DRY_RUN_ANNOTATION) else {
        return;
    };
    let at = FieldPath::root().key("metadata").key("annotations").key(DRY_RUN_ANNOTATION);
    let full_name = format!("{}/{}", resource.namespace(), resource.meta.name);
    let Some(policy) = resource.spec.authorization_policy() else {
        errors.push(FieldError::new(
            at,
            format!(
                "{full_name} has unsupported annotation {DRY_RUN_ANNOTATION}, please remove the annotation"
            ),
        ));
        return;
    };
    use authorization_policy::Action;
    match policy.action {
        Action::Allow | Action::Deny => {
            if parse_go_bool(value).is_none() {
                errors.push(FieldError::new(
                    at,
                    format!(
                        "{full_name} has annotation {DRY_RUN_ANNOTATION} with invalid value ({value}): strconv.ParseBool: parsing {value:?}: invalid syntax"
                    ),
                ));
            }
        }
        action => errors.push(FieldError::new(
            at,
            format!(
                "the annotation {DRY_RUN_ANNOTATION} currently only supports action ALLOW/DENY, found action {action} in {full_name}"
            ),
        )),
    }
}

/// Go's `strconv.ParseBool`, which Istio uses for annotation values.
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// An enum value outside the allowed set, worded as the Kubernetes API server words it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Unsupported value: {value:?}: supported values: {}", quoted(supported))]
pub struct UnsupportedValue {
    pub value: String,
    pub supported: &'static [&'static str],
}

fn quoted(values: &[&str]) -> String {
    values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", ")
}

/// Declares an enum spelled as upper-case strings in YAML (`STRICT`, `ALLOW`), with
/// `as_str`, `Display`, `FromStr` and a `Deserialize` that reports [`UnsupportedValue`].
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// The YAML spellings, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The YAML spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::security::UnsupportedValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::security::UnsupportedValue { value: s.to_owned(), supported: Self::NAMES }),
                }
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <String as ::serde::Deserialize>::deserialize(deserializer)?;
                text.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use string_enum;

#[cfg(test)]
mod tests {
    use super::*;

    string_enum! {
        #[derive(Default)]
        enum Color {
            #[default]
            Red = "RED",
            Blue = "BLUE",
        }
    }

    #[test]
    fn string_enums_read_their_spelling_and_word_errors_like_kubernetes() {
        let blue: Color = serde_json::from_value(serde_json::json!("BLUE")).expect("BLUE");
        assert_eq!(blue, Color::Blue);
        assert_eq!(Color::default().to_string(), "RED");
        let err = serde_json::from_value::<Color>(serde_json::json!("blue")).expect_err("lower case");
        assert_eq!(err.to_string(), r#"Unsupported value: "blue": supported values: "RED", "BLUE""#);
    }

    fn dry_run_errors(kind: &str, action: &str, value: &str) -> Vec<String> {
        let text = format!(
            "apiVersion: security.istio.io/v1\nkind: {kind}\nmetadata:\n  name: p\n  namespace: ns\n  \
             annotations: {{istio.io/dry-run: \"{value}\"}}\nspec: {{{action}}}\n"
        );
        let mut loaded = crate::Loaded::default();
        crate::load::load_bytes(
            std::sync::Arc::from(std::path::Path::new("p.yaml")),
            text.as_bytes(),
            &mut loaded,
        );
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let mut errors = Vec::new();
        check_dry_run(&loaded.resources[0], &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn dry_run_is_for_allow_and_deny_policies_only() {
        assert!(dry_run_errors("AuthorizationPolicy", "action: DENY, rules: [{}]", "true").is_empty());
        assert_eq!(
            dry_run_errors("AuthorizationPolicy", "", "yes"),
            [
                "metadata.annotations.istio.io/dry-run: ns/p has annotation istio.io/dry-run with invalid value (yes): \
              strconv.ParseBool: parsing \"yes\": invalid syntax"
            ]
        );
        assert_eq!(
            dry_run_errors("AuthorizationPolicy", "action: AUDIT", "true"),
            [
                "metadata.annotations.istio.io/dry-run: the annotation istio.io/dry-run currently only supports \
              action ALLOW/DENY, found action AUDIT in ns/p"
            ]
        );
        assert_eq!(
            dry_run_errors("PeerAuthentication", "", "true"),
            [
                "metadata.annotations.istio.io/dry-run: ns/p has unsupported annotation istio.io/dry-run, please remove the annotation"
            ]
        );
    }

    #[test]
    fn go_booleans() {
        assert_eq!(parse_go_bool("True"), Some(true));
        assert_eq!(parse_go_bool("0"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
    }
}
