//! Per-kind validation: the rules Istio's validating webhook applies (non-negative weights,
//! durations of at least 1 ms, DNS-1123 subset names, …), each failure a [`FieldError`]
//! naming the field, so messages point at file:line.

use crate::networking;
use crate::path::FieldPath;
use crate::resource::{FieldError, Resource, Spec};
use crate::security::check_dry_run;

/// A typed spec that checks its own rules; `at` is the path of the value being checked.
pub trait Validate {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>);
}

/// Every rule `resource` breaks. The typed (webhook) rules speak first, in Istio's words;
/// only when they find nothing does the CRD schema (OpenAPI + CEL) get its say, so one
/// mistake gives one message, and untyped kinds are still checked.
pub fn validate(resource: &Resource) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let spec = FieldPath::root().key("spec");
    match &resource.spec {
        Spec::Namespace(_)
        | Spec::ServiceAccount(_)
        | Spec::Service(_)
        | Spec::Deployment(_)
        | Spec::Pod(_)
        | Spec::Other => {}
        Spec::PeerAuthentication(s) => {
            s.validate(&spec, &mut errors);
            check_dry_run(resource, &mut errors);
        }
        Spec::AuthorizationPolicy(s) => {
            s.validate(&spec, &mut errors);
            check_dry_run(resource, &mut errors);
        }
        Spec::RequestAuthentication(s) => {
            s.validate(&spec, &mut errors);
            check_dry_run(resource, &mut errors);
        }
        Spec::Telemetry(s) => {
            s.validate(&spec, &mut errors);
            check_dry_run(resource, &mut errors);
        }
        Spec::RateLimitPolicy(s) => {
            s.validate(&spec, &mut errors);
            check_dry_run(resource, &mut errors);
        }
        Spec::VirtualService(s) => networking::validate(s.as_ref(), resource, &spec, &mut errors),
        Spec::DestinationRule(s) => networking::validate(s.as_ref(), resource, &spec, &mut errors),
        Spec::Gateway(s) => networking::validate(s.as_ref(), resource, &spec, &mut errors),
        Spec::ServiceEntry(s) => networking::validate(s.as_ref(), resource, &spec, &mut errors),
        Spec::Sidecar(s) => networking::validate(s.as_ref(), resource, &spec, &mut errors),
    }
    errors.dedup();
    if errors.is_empty() {
        errors = crate::schema::validate(resource);
    }
    errors
}

/// Decoding and validating a bare `spec` in unit tests, as the loader would.
#[cfg(test)]
pub(crate) mod testing {
    use serde::de::DeserializeOwned;

    use super::Validate;
    use crate::path::FieldPath;
    use crate::resource::decode_value;

    /// Decodes `spec` as the `spec` of a resource, errors printed with their path.
    pub fn decode<T: DeserializeOwned>(spec: serde_json::Value) -> Result<T, String> {
        decode_value(&spec, &FieldPath::root().key("spec")).map_err(|e| e.to_string())
    }

    /// The validation errors of a `spec` that decodes, printed with their paths.
    pub fn errors<T: DeserializeOwned + Validate>(spec: serde_json::Value) -> Vec<String> {
        let mut errors = Vec::new();
        decode::<T>(spec).expect("decodes").validate(&FieldPath::root().key("spec"), &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }
}
