//! Per-kind validation: the rules Istio's validating webhook applies (weights sum to 100,
//! durations of at least 1 ms, DNS-1123 subset names, …), each failure a [`FieldError`]
//! naming the field, so messages point at file:line.

use crate::path::FieldPath;
use crate::resource::{FieldError, Resource, Spec};
use crate::security::check_dry_run;

/// A typed spec that checks its own rules; `at` is the path of the value being checked.
pub trait Validate {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>);
}

/// Every rule `resource` breaks: the typed (webhook) rules, then the CRD schema's findings
/// that the typed rules did not already report (same field or same text), so one mistake gives one message.
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
    }
    errors.dedup();
    let schema_errors = crate::schema::validate(resource);
    let typed = errors.len();
    for error in schema_errors {
        let already =
            errors[..typed].iter().any(|t| t.path == error.path || error.message.contains(&t.message));
        if !already {
            errors.push(error);
        }
    }
    errors
}
