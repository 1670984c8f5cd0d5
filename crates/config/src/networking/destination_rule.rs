//! `DestinationRule`: what happens to traffic for a host after routing — subsets (named
//! groups of endpoints by label) and traffic policies (load balancing, connection pools,
//! outlier detection, TLS), per host, per subset and per port.
//!
//! The policy types live in [`traffic_policy`], shared with the Sidecar's connection pools.

pub mod traffic_policy;

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

pub use traffic_policy::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection,
    TrafficPolicy,
};

use super::rules::{self, push};
use super::{Host, Placement, host};
use crate::path::FieldPath;
use crate::resource::FieldError;
use crate::types::WorkloadSelector;
use crate::validate::Validate;

/// The spec of a DestinationRule.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DestinationRule {
    /// The service the rule applies to (a registry name, possibly wildcarded).
    #[serde(default)]
    pub host: Host,
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default)]
    pub subsets: Vec<Subset>,
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Limits the rule to the workloads it selects in its namespace.
    pub workload_selector: Option<WorkloadSelector>,
}

impl DestinationRule {
    /// The subset called `name`.
    pub fn subset(&self, name: &str) -> Option<&Subset> {
        self.subsets.iter().find(|s| s.name == name)
    }
}

/// A named group of the host's endpoints, by label, with its own policy.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Subset {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub traffic_policy: Option<TrafficPolicy>,
}

impl Validate for DestinationRule {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        if let Err(e) = host::validate_wildcard_domain(self.host.as_str()) {
            push(errors, &at.key("host"), e);
        }
        if let Some(policy) = &self.traffic_policy {
            policy.validate(&at.key("trafficPolicy"), errors);
        }
        let mut names = HashSet::new();
        for (i, subset) in self.subsets.iter().enumerate() {
            let at = at.key("subsets").index(i);
            if !names.insert(subset.name.as_str()) {
                push(errors, &at.key("name"), format!("duplicate subset names: {}", subset.name));
            }
            subset.validate(&at, errors);
        }
        if let Some(selector) = &self.workload_selector {
            rules::check_selector_labels(
                &selector.match_labels,
                &at.key("workloadSelector").key("matchLabels"),
                errors,
            );
        }
    }
}

impl Validate for Subset {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        rules::check_subset_name(&self.name, &at.key("name"), errors);
        rules::check_labels(&self.labels, &at.key("labels"), errors);
        if let Some(policy) = &self.traffic_policy {
            policy.validate(&at.key("trafficPolicy"), errors);
        }
    }
}

impl Placement for DestinationRule {
    fn validate_placement(&self, _name: &str, namespace: &str, at: &FieldPath, errors: &mut Vec<FieldError>) {
        let selector_scoped = self.workload_selector.is_some();
        rules::check_export_to(
            namespace,
            &self.export_to,
            false,
            selector_scoped,
            &at.key("exportTo"),
            errors,
        );
    }
}
