//! Which workloads a policy applies to: a `selector` (workload labels), `targetRef`/`targetRefs`
//! (a Service, ServiceEntry or Gateway), or neither (the whole namespace, or the whole mesh in
//! the root namespace).
//!
//! The three stay separate fields, as in Istio's API, because resources that set several
//! exist (Istio rejects them at admission, and its analyzers still read them); validation
//! reports the conflict and [`WorkloadScope`] resolves it for consumers.

use serde::Deserialize;

use crate::path::FieldPath;
use crate::resource::FieldError;
use crate::types::WorkloadSelector;

/// A reference to the resource a policy is attached to (Gateway API `PolicyTargetReference`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyTargetRef {
    /// API group; empty for the core group (`Service`).
    #[serde(default)]
    pub group: String,
    pub kind: String,
    pub name: String,
    /// Must be empty: cross-namespace references are not supported.
    #[serde(default)]
    pub namespace: Option<String>,
}

impl PolicyTargetRef {
    /// The group with the core group spelled `core`, as Istio compares groups.
    pub fn canonical_group(&self) -> &str {
        if self.group.is_empty() { "core" } else { &self.group }
    }

    fn is(&self, target: &AllowedTarget) -> bool {
        self.canonical_group() == target.group && self.kind == target.kind
    }
}

/// A kind a policy may target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllowedTarget {
    pub group: &'static str,
    pub kind: &'static str,
}

/// What Istio's security and telemetry policies may target.
pub const ISTIO_POLICY_TARGETS: &[AllowedTarget] = &[
    AllowedTarget { group: "core", kind: "Service" },
    AllowedTarget { group: "networking.istio.io", kind: "ServiceEntry" },
    AllowedTarget { group: "gateway.networking.k8s.io", kind: "Gateway" },
    AllowedTarget { group: "gateway.networking.k8s.io", kind: "GatewayClass" },
];

/// The workloads a policy applies to, as Istio resolves the three fields: target references
/// first, then the selector; with none, every workload in scope of the namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadScope<'a> {
    Namespace,
    Selector(&'a WorkloadSelector),
    TargetRefs(&'a [PolicyTargetRef]),
}

impl<'a> WorkloadScope<'a> {
    pub fn resolve(
        selector: Option<&'a WorkloadSelector>,
        target_ref: Option<&'a PolicyTargetRef>,
        target_refs: &'a [PolicyTargetRef],
    ) -> Self {
        if !target_refs.is_empty() {
            WorkloadScope::TargetRefs(target_refs)
        } else if let Some(one) = target_ref {
            WorkloadScope::TargetRefs(std::slice::from_ref(one))
        } else if let Some(selector) = selector {
            WorkloadScope::Selector(selector)
        } else {
            WorkloadScope::Namespace
        }
    }
}

/// The three ways of choosing workloads, borrowed from a policy's spec for validation.
pub struct Targeting<'a> {
    pub selector: Option<&'a WorkloadSelector>,
    pub target_ref: Option<&'a PolicyTargetRef>,
    pub target_refs: &'a [PolicyTargetRef],
}

impl Targeting<'_> {
    /// The CEL rule (at most one of the three), the selector's labels and each reference.
    pub fn validate(&self, allowed: &[AllowedTarget], at: &FieldPath, errors: &mut Vec<FieldError>) {
        let set = usize::from(self.selector.is_some())
            + usize::from(self.target_ref.is_some())
            + usize::from(!self.target_refs.is_empty());
        if set > 1 {
            errors.push(FieldError::new(at.clone(), "only one of targetRefs or selector can be set"));
        }
        if let Some(selector) = self.selector {
            validate_selector(selector, &at.key("selector"), errors);
        }
        if let Some(target) = self.target_ref {
            validate_target_ref(target, allowed, &at.key("targetRef"), errors);
        }
        for (i, target) in self.target_refs.iter().enumerate() {
            validate_target_ref(target, allowed, &at.key("targetRefs").index(i), errors);
        }
    }
}

/// The selector's CEL rules: no empty keys, no wildcards, values of at most 63 characters.
pub fn validate_selector(selector: &WorkloadSelector, at: &FieldPath, errors: &mut Vec<FieldError>) {
    let labels = at.key("matchLabels");
    for (key, value) in &selector.match_labels {
        let here = labels.key(key.clone());
        if key.is_empty() {
            errors.push(FieldError::new(labels.clone(), "key must not be empty"));
        }
        if key.contains('*') {
            errors.push(FieldError::new(here.clone(), "wildcard not allowed in label key match"));
        }
        if value.contains('*') {
            errors.push(FieldError::new(here.clone(), "wildcard not allowed in label value match"));
        }
        if value.chars().count() > 63 {
            errors.push(FieldError::new(here, "label value must be no more than 63 characters"));
        }
    }
}

fn validate_target_ref(
    target: &PolicyTargetRef,
    allowed: &[AllowedTarget],
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    if target.name.is_empty() {
        errors.push(FieldError::new(at.key("name"), "targetRef name must be set"));
    }
    if target.namespace.as_deref().is_some_and(|ns| !ns.is_empty()) {
        errors.push(FieldError::new(
            at.key("namespace"),
            "cross namespace referencing is not currently supported",
        ));
    }
    if !allowed.iter().any(|a| target.is(a)) {
        let names: Vec<String> = allowed
            .iter()
            .map(|a| if a.group == "core" { a.kind.to_owned() } else { format!("{}/{}", a.group, a.kind) })
            .collect();
        errors.push(FieldError::new(
            at.clone(),
            format!(
                "targetRef must be to one of [{}] but was {}/{}",
                names.join(" "),
                target.group,
                target.kind
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn target(group: &str, kind: &str, name: &str, namespace: Option<&str>) -> PolicyTargetRef {
        PolicyTargetRef {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
            namespace: namespace.map(Into::into),
        }
    }

    fn messages(errors: &[FieldError]) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn at_most_one_way_of_targeting() {
        let selector = WorkloadSelector { match_labels: BTreeMap::from([("app".into(), "a".into())]) };
        let service = target("", "Service", "foo", None);
        let mut errors = Vec::new();
        let spec = FieldPath::root().key("spec");
        Targeting { selector: Some(&selector), target_ref: Some(&service), target_refs: &[] }.validate(
            ISTIO_POLICY_TARGETS,
            &spec,
            &mut errors,
        );
        assert_eq!(messages(&errors), ["spec: only one of targetRefs or selector can be set"]);
        assert_eq!(
            WorkloadScope::resolve(Some(&selector), Some(&service), &[]),
            WorkloadScope::TargetRefs(std::slice::from_ref(&service))
        );
        assert_eq!(WorkloadScope::resolve(None, None, &[]), WorkloadScope::Namespace);
    }

    #[test]
    fn target_refs_are_local_and_of_allowed_kinds() {
        let mut errors = Vec::new();
        let refs = [target("", "Service", "foo", Some("bar")), target("apps", "Deployment", "", None)];
        Targeting { selector: None, target_ref: None, target_refs: &refs }.validate(
            ISTIO_POLICY_TARGETS,
            &FieldPath::root().key("spec"),
            &mut errors,
        );
        assert_eq!(
            messages(&errors),
            [
                "spec.targetRefs[0].namespace: cross namespace referencing is not currently supported",
                "spec.targetRefs[1].name: targetRef name must be set",
                "spec.targetRefs[1]: targetRef must be to one of [Service networking.istio.io/ServiceEntry \
                 gateway.networking.k8s.io/Gateway gateway.networking.k8s.io/GatewayClass] but was apps/Deployment",
            ]
        );
    }

    #[test]
    fn selectors_take_no_wildcards() {
        let selector = WorkloadSelector {
            match_labels: BTreeMap::from([("a*".into(), "b".into()), ("c".into(), "d*".into())]),
        };
        let mut errors = Vec::new();
        validate_selector(&selector, &FieldPath::root().key("spec").key("selector"), &mut errors);
        assert_eq!(
            messages(&errors),
            [
                "spec.selector.matchLabels.a*: wildcard not allowed in label key match",
                "spec.selector.matchLabels.c: wildcard not allowed in label value match",
            ]
        );
    }
}
