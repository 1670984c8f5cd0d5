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
