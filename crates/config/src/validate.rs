//! Per-kind validation: the rules Istio's validating webhook applies (weights sum to 100,
//! durations of at least 1 ms, DNS-1123 subset names, …), each failure a [`FieldError`]
//! naming the field, so messages point at file:line.

use crate::networking;
use crate::path::FieldPath;
use crate::resource::{FieldError, Resource, Spec};

/// A typed spec that checks its own rules; `at` is the path of the value being checked.
pub trait Validate {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>);
}

/// Every rule `resource` breaks.
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
        Spec::VirtualService(s) => networking::validate(s.as_ref(), resource, &spec, &mut errors),
        Spec::DestinationRule(s) => networking::validate(s.as_ref(), resource, &spec, &mut errors),
        Spec::Gateway(s) => networking::validate(s.as_ref(), resource, &spec, &mut errors),
        Spec::ServiceEntry(s) => networking::validate(s.as_ref(), resource, &spec, &mut errors),
        Spec::Sidecar(s) => networking::validate(s.as_ref(), resource, &spec, &mut errors),
    }
    errors.dedup();
    errors
}
