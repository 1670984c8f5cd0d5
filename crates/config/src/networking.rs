//! Istio's networking kinds (`networking.istio.io` v1, v1beta1 and v1alpha3 share one schema):
//! VirtualService, DestinationRule, Gateway, ServiceEntry and Sidecar, typed field by field
//! as the CRDs define them, with the rules of Istio's validating webhook.
//!
//! [`crate::resource::Spec::decode`] turns a document's `spec` into one of these types (an
//! unknown or mistyped field is an error at its path); [`validate`] then applies the kind's
//! rules, each failure a [`FieldError`] naming the field so messages point at file:line.
//! Deprecated fields that Istio still accepts are kept, so old YAML keeps loading.

pub mod destination_rule;
pub mod gateway;
pub mod host;
mod rules;
pub mod service_entry;
pub mod sidecar;
pub mod virtual_service;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use destination_rule::DestinationRule;
pub use gateway::Gateway;
pub use host::{Host, NamespacedHost};
pub use service_entry::ServiceEntry;
pub use sidecar::Sidecar;
pub use virtual_service::VirtualService;

use crate::path::FieldPath;
use crate::resource::{FieldError, Resource, decode_value};
use crate::types::PortSelector;
use crate::validate::Validate;

/// The API group of these kinds.
pub const GROUP: &str = "networking.istio.io";

/// The served versions; all three share one schema.
pub const VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];

/// Decodes the `spec` of a networking document; a missing (or null) spec is an empty one.
///
/// Fields the CRD marks required decode when absent too (validation reports them with
/// Istio's messages): `istioctl analyze` reads such files, and its analyzers still report
/// on the resources.
pub(crate) fn decode_spec<T: DeserializeOwned>(doc: &Value) -> Result<Box<T>, FieldError> {
    let at = FieldPath::root().key("spec");
    match doc.get("spec") {
        None | Some(Value::Null) => decode_value(&Value::Object(Default::default()), &at),
        Some(spec) => decode_value(spec, &at),
    }
    .map(Box::new)
}

/// Where traffic goes: a service host, optionally a subset (named in a DestinationRule) and a
/// port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Destination {
    #[serde(default)]
    pub host: Host,
    #[serde(default)]
    pub subset: String,
    pub port: Option<PortSelector>,
}

impl Validate for Destination {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        let host = at.key("host");
        if self.host.as_str() == "*" {
            rules::push(errors, &host, format!("invalid destination host {}", self.host));
        } else if let Err(e) = host::validate_wildcard_domain(self.host.as_str()) {
            rules::push(errors, &host, e);
        }
        if !self.subset.is_empty() {
            rules::check_subset_name(&self.subset, &at.key("subset"), errors);
        }
        if let Some(port) = &self.port {
            rules::check_port(port.number, &at.key("port").key("number"), errors);
        }
    }
}

/// The workloads a ServiceEntry or Sidecar applies to (`workloadSelector: {labels: ...}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    /// Whether a workload with `labels` is selected (every listed label must match).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

impl Validate for WorkloadSelector {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        rules::check_selector_labels(&self.labels, &at.key("labels"), errors);
    }
}

/// Rules of a networking kind that depend on where the resource lives (its name and
/// namespace), besides its spec.
pub trait Placement {
    /// `at` is the path of the spec, as for [`Validate::validate`].
    fn validate_placement(&self, name: &str, namespace: &str, at: &FieldPath, errors: &mut Vec<FieldError>);
}

/// Every rule `resource`, whose typed spec is `spec`, breaks; `at` is the spec's path.
pub fn validate<T: Validate + Placement>(
    spec: &T,
    resource: &Resource,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    spec.validate(at, errors);
    spec.validate_placement(&resource.meta.name, resource.namespace(), at, errors);
}
