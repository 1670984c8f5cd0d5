//! Istio's Gateway analyzers: `gateway.IngressGatewayPortAnalyzer` (the selector matches a
//! workload whose Service exposes every server port), `gateway.ConflictingGatewayAnalyzer`
//! (two Gateways claim the same host on the same port of the same workload),
//! `gateway.SecretAnalyzer` (the TLS credential exists in the workload's namespace and holds
//! a usable certificate) and `gateway.CertificateAnalyzer` (one certificate served by several
//! Gateways on one workload).
//!
//! A Gateway's `selector` picks workloads by their Pod labels, so every analyzer here starts
//! from the Pods in the store; [`builtin`] supplies the ingress gateway Pod and Service that
//! istioctl (and paymesh) assume exist when only files are analyzed. Each analyzer follows
//! its upstream file (`pkg/config/analysis/analyzers/gateway/*.go`) rule for rule.

pub mod builtin;
mod certificate;
mod conflict;
mod ports;
mod secret;

use std::collections::BTreeMap;

pub use certificate::CertificateAnalyzer;
pub use conflict::ConflictingGatewayAnalyzer;
pub use ports::IngressGatewayPortAnalyzer;
pub use secret::SecretAnalyzer;

use super::kube;
use crate::networking::Gateway;
use crate::path::FieldPath;
use crate::resource::{Resource, Spec};
use crate::store::Store;

/// The Istio Gateways istioctl analyzes (not the Kubernetes Gateway API kind of the same name).
fn gateways(store: &Store) -> impl Iterator<Item = (&Resource, &Gateway)> {
    store.typed("Gateway", Spec::gateway).filter(|(r, _)| !kube::ignored(r))
}

/// The Pods istioctl analyzes, in load order (the built-in ingress gateway Pod last).
fn pods(store: &Store) -> impl Iterator<Item = &Resource> {
    kube::analyzed(store, "Pod")
}

/// `labels.SelectorFromSet(selector).Matches(labels)`: every pair present; empty selects all.
pub(crate) fn set_matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `labels.SelectorFromSet(selector).String()`: `k=v` pairs sorted by key, comma-separated.
pub(crate) fn selector_string(selector: &BTreeMap<String, String>) -> String {
    selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// `namespace/name` as Istio's `resource.FullName` prints it (just `name` when the file gives
/// no namespace).
pub(crate) fn full_name(resource: &Resource) -> String {
    match &resource.meta.namespace {
        Some(ns) => format!("{ns}/{}", resource.meta.name),
        None => resource.meta.name.clone(),
    }
}

/// Where upstream points selector messages: the selector's first label.
fn selector_field(gateway: &Gateway) -> FieldPath {
    let selector = FieldPath::root().key("spec").key("selector");
    match gateway.selector.keys().next() {
        Some(label) => selector.key(label.clone()),
        None => selector,
    }
}

/// Running an analyzer the way Istio's analyzer tests do: with the built-in ingress gateway.
#[cfg(test)]
pub(crate) mod testing {
    use super::builtin;
    use crate::analyze::Analyzer;
    use crate::analyze::kube::testing;

    /// Runs `analyzer` over `yaml` plus the built-in resources; `CODE origin` per message.
    pub fn analyze(analyzer: &dyn Analyzer, yaml: &str) -> Vec<String> {
        let builtin = builtin::manifest(builtin::DEFAULT_INGRESS_SERVICE, "istio-system");
        testing::analyze(analyzer, &format!("{yaml}\n---\n{builtin}"))
    }

    /// [`analyze`] over files of Istio's analyzer test data.
    pub fn analyze_testdata(analyzer: &dyn Analyzer, files: &[&str]) -> Vec<String> {
        let dir = paymesh_test_util::istio_conformance().join("analyze/testdata");
        let yaml: Vec<String> = files
            .iter()
            .map(|f| std::fs::read_to_string(dir.join(f)).expect("test data is readable"))
            .collect();
        analyze(analyzer, &yaml.join("\n---\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn selectors_print_and_match_like_label_sets() {
        let selector = labels(&[("istio", "ingressgateway"), ("app", "gw")]);
        assert_eq!(selector_string(&selector), "app=gw,istio=ingressgateway");
        assert!(set_matches(&selector, &labels(&[("app", "gw"), ("istio", "ingressgateway"), ("x", "y")])));
        assert!(!set_matches(&selector, &labels(&[("app", "gw")])));
        assert!(set_matches(&BTreeMap::new(), &labels(&[])), "an empty selector selects everything");
    }
}
