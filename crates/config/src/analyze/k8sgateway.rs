//! Gateway API analyzers: `k8sgateway.SelectorAnalyzer` (a policy `selector` that picks a
//! Gateway API gateway's pods has no effect there: such gateways are addressed with
//! `targetRef`) and `k8sgateway.CRDVersionAnalyzer` (Gateway API CRDs older than this Istio
//! needs are ignored by istiod).
//!
//! The policies (AuthorizationPolicy, RequestAuthentication, Telemetry, WasmPlugin) and the
//! CRDs are read from their raw documents.

use std::collections::BTreeMap;
use std::fmt;

use super::kube::{self, Unique};
use super::{Analyzer, Context, Report, messages};

/// The pod label naming the Gateway API gateway a pod runs.
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// Policies with a workload `selector`: (group, kind).
const POLICIES: &[(&str, &str)] = &[
    ("security.istio.io", "AuthorizationPolicy"),
    ("security.istio.io", "RequestAuthentication"),
    ("telemetry.istio.io", "Telemetry"),
    ("extensions.istio.io", "WasmPlugin"),
];

/// `k8sgateway.SelectorAnalyzer`.
pub struct SelectorAnalyzer;

impl Analyzer for SelectorAnalyzer {
    fn name(&self) -> &'static str {
        "k8sgateway.SelectorAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let mut report = Unique::new(report);
        let mut gateway_pods: BTreeMap<&str, Vec<&BTreeMap<String, String>>> = BTreeMap::new();
        for pod in kube::analyzed(ctx.store, "Pod").filter(|p| p.meta.labels.contains_key(GATEWAY_NAME_LABEL))
        {
            gateway_pods.entry(pod.namespace()).or_default().push(&pod.meta.labels);
        }
        for (group, kind) in POLICIES {
            for policy in kube::analyzed_in(ctx.store, group, kind) {
                let spec = policy.raw_spec();
                let present = |key: &str| spec.get(key).is_some_and(|v| !v.is_null());
                if present("targetRef") || !present("selector") {
                    continue;
                }
                let selector = kube::string_map(spec.pointer("/selector/matchLabels"));
                for labels in gateway_pods.get(policy.namespace()).into_iter().flatten() {
                    if selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                        let gateway = labels.get(GATEWAY_NAME_LABEL).map(String::as_str).unwrap_or_default();
                        report.add(policy, None, messages::ineffective_selector(gateway));
                    }
                }
            }
        }
    }
}

/// The Gateway API bundle version a CRD was installed from.
const BUNDLE_VERSION: &str = "gateway.networking.k8s.io/bundle-version";
/// The oldest bundle of each Gateway API CRD this Istio processes (`gatewayapi.MinimumCRDVersions`).
const MINIMUM_VERSIONS: &[(&str, Version)] = &[
    ("grpcroutes.gateway.networking.k8s.io", Version::new(1, 1, 0)),
    ("backendtlspolicies.gateway.networking.k8s.io", Version::new(1, 4, 0)),
    ("tlsroutes.gateway.networking.k8s.io", Version::new(1, 5, 0)),
];

/// `k8sgateway.CRDVersionAnalyzer`.
pub struct CrdVersionAnalyzer;

impl Analyzer for CrdVersionAnalyzer {
    fn name(&self) -> &'static str {
        "k8sgateway.CRDVersionAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        for crd in kube::analyzed(ctx.store, "CustomResourceDefinition") {
            let Some((_, minimum)) = MINIMUM_VERSIONS.iter().find(|(name, _)| *name == crd.meta.name) else {
                continue;
            };
            let Some(installed) = crd.meta.annotations.get(BUNDLE_VERSION).and_then(|v| Version::parse(v))
            else {
                continue;
            };
            if installed.release() < *minimum {
                let message =
                    messages::gateway_apicrd_version_below_minimum(&crd.meta.name, &installed, minimum);
                report.add(crd, None, message);
            }
        }
    }
}

/// A semantic version as Masterminds' `semver.NewVersion` reads it (a `v` prefix and
/// missing minor or patch numbers allowed).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Version {
    numbers: [u64; 3],
    pre_release: String,
    metadata: String,
}

impl Version {
    const fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self { numbers: [major, minor, patch], pre_release: String::new(), metadata: String::new() }
    }

    fn parse(text: &str) -> Option<Self> {
        let text = text.strip_prefix('v').unwrap_or(text);
        let (text, metadata) = text.split_once('+').unwrap_or((text, ""));
        let (core, pre_release) = text.split_once('-').unwrap_or((text, ""));
        let mut numbers = [0; 3];
        let parts: Vec<&str> = core.split('.').collect();
        if parts.is_empty() || parts.len() > 3 {
            return None;
        }
        for (slot, part) in numbers.iter_mut().zip(&parts) {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *slot = part.parse().ok()?;
        }
        Some(Self { numbers, pre_release: pre_release.to_owned(), metadata: metadata.to_owned() })
    }

    /// The version without pre-release and metadata, for comparing releases.
    fn release(&self) -> Self {
        Self::new(self.numbers[0], self.numbers[1], self.numbers[2])
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [major, minor, patch] = self.numbers;
        write!(f, "{major}.{minor}.{patch}")?;
        if !self.pre_release.is_empty() {
            write!(f, "-{}", self.pre_release)?;
        }
        if !self.metadata.is_empty() {
            write!(f, "+{}", self.metadata)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::kube::testing::analyze;
    use super::*;

    #[test]
    fn versions_parse_like_masterminds_semver() {
        assert_eq!(Version::parse("v1.4.1").map(|v| v.to_string()), Some("1.4.1".to_owned()));
        assert_eq!(Version::parse("1.5").map(|v| v.to_string()), Some("1.5.0".to_owned()));
        assert_eq!(Version::parse("v1.5.0-rc.1").map(|v| v.release()), Some(Version::new(1, 5, 0)));
        assert!(Version::parse("one").is_none());
    }

    fn crd(name: &str, version: &str) -> String {
        format!(
            "---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: {name}, annotations: {{gateway.networking.k8s.io/bundle-version: {version}}}}}\n"
        )
    }

    #[test]
    fn old_gateway_api_crds_are_reported() {
        let yaml = crd("tlsroutes.gateway.networking.k8s.io", "v1.4.1")
            + &crd("grpcroutes.gateway.networking.k8s.io", "v1.4.1");
        assert_eq!(
            analyze(&CrdVersionAnalyzer, &yaml),
            ["IST0176 CustomResourceDefinition tlsroutes.gateway.networking.k8s.io"]
        );
        let current =
            crd("tlsroutes.gateway.networking.k8s.io", "v1.5.0-rc.1") + &crd("foos.example.com", "v0.1.0");
        assert!(analyze(&CrdVersionAnalyzer, &current).is_empty());
    }

    const GATEWAY_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: gw, namespace: d, labels: {gateway.networking.k8s.io/gateway-name: web}}\nspec: {containers: [{name: istio-proxy}]}\n";

    #[test]
    fn selectors_on_gateway_pods_are_reported() {
        let yaml = format!(
            "{GATEWAY_POD}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: ap, namespace: d}}\nspec: {{selector: {{matchLabels: {{gateway.networking.k8s.io/gateway-name: web}}}}}}\n"
        );
        assert_eq!(analyze(&SelectorAnalyzer, &yaml), ["IST0166 AuthorizationPolicy d/ap"]);
    }

    #[test]
    fn target_refs_and_other_namespaces_are_clean() {
        let yaml = format!(
            "{GATEWAY_POD}---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: t, namespace: d}}\nspec: {{selector: {{matchLabels: {{app: x}}}}, targetRef: {{kind: Gateway, name: web}}}}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: ap, namespace: other}}\nspec: {{selector: {{matchLabels: {{gateway.networking.k8s.io/gateway-name: web}}}}}}\n"
        );
        assert!(analyze(&SelectorAnalyzer, &yaml).is_empty());
    }
}

#[cfg(test)]
mod conformance {
    use super::super::MeshConfig;
    use super::super::kube::testing::analyze_testdata;
    use super::SelectorAnalyzer;

    /// Istio's "KubernetesGatewaySelector" case, run in-crate so it does not depend on the
    /// policy kinds loading typed.
    #[test]
    fn upstream_case_matches() {
        let found =
            analyze_testdata(&SelectorAnalyzer, &MeshConfig::default(), &["k8sgateway-selector.yaml"]);
        assert_eq!(
            found,
            [
                "IST0166 AuthorizationPolicy default/ap-ineffective",
                "IST0166 RequestAuthentication default/ra-ineffective",
                "IST0166 Telemetry default/telemetry-ineffective",
                "IST0166 WasmPlugin default/wasmplugin-ineffective",
            ]
        );
    }
}
