//! Istio's annotation catalogue: every annotation Istio defines, the kinds it belongs on,
//! whether it is deprecated, and its feature status.
//!
//! Data transcribed from istio/api `annotation/annotations.yaml` (Apache-2.0), as compiled
//! into `annotation/annotations.gen.go` (`AllResourceAnnotations()`, 62 entries). Update it
//! from there when Istio adds or retires an annotation.

/// Where an annotation may be set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceType {
    Any,
    AuthorizationPolicy,
    Gateway,
    GatewayClass,
    Ingress,
    Namespace,
    Pod,
    Service,
    ServiceEntry,
    WorkloadEntry,
}

impl ResourceType {
    /// The kind name, as Istio prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Any => "Any",
            Self::AuthorizationPolicy => "AuthorizationPolicy",
            Self::Gateway => "Gateway",
            Self::GatewayClass => "GatewayClass",
            Self::Ingress => "Ingress",
            Self::Namespace => "Namespace",
            Self::Pod => "Pod",
            Self::Service => "Service",
            Self::ServiceEntry => "ServiceEntry",
            Self::WorkloadEntry => "WorkloadEntry",
        }
    }
}

/// How mature the feature behind an annotation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureStatus {
    Alpha,
    Beta,
    Stable,
}

/// One annotation of the catalogue.
#[derive(Debug)]
pub struct Annotation {
    pub name: &'static str,
    pub status: FeatureStatus,
    pub deprecated: bool,
    pub resources: &'static [ResourceType],
}

use FeatureStatus::{Alpha, Beta, Stable};
use ResourceType::{
    Any, AuthorizationPolicy, Gateway, GatewayClass, Ingress, Namespace, Pod, Service, ServiceEntry,
    WorkloadEntry,
};

const fn a(
    name: &'static str,
    status: FeatureStatus,
    deprecated: bool,
    resources: &'static [ResourceType],
) -> Annotation {
    Annotation { name, status, deprecated, resources }
}

/// Every annotation Istio knows, in upstream's order.
pub const ANNOTATIONS: &[Annotation] = &[
    a("alpha.istio.io/canonical-serviceaccounts", Alpha, true, &[Service]),
    a("alpha.istio.io/kubernetes-serviceaccounts", Alpha, true, &[Service]),
    a("ambient.istio.io/bypass-inbound-capture", Alpha, false, &[Pod]),
    a("ambient.istio.io/redirection", Beta, false, &[Pod]),
    a("ambient.istio.io/waypoint-inbound-binding", Alpha, false, &[GatewayClass, Gateway]),
    a("galley.istio.io/analyze-suppress", Alpha, false, &[Any]),
    a("gateway.istio.io/controller-version", Alpha, false, &[Any]),
    a("gateway.istio.io/name-override", Alpha, false, &[Gateway]),
    a("gateway.istio.io/service-account", Alpha, false, &[Gateway]),
    a("inject.istio.io/templates", Alpha, false, &[Pod]),
    a("istio.io/autoRegistrationGroup", Alpha, false, &[WorkloadEntry]),
    a("istio.io/connectedAt", Alpha, false, &[WorkloadEntry]),
    a("istio.io/disconnectedAt", Alpha, false, &[WorkloadEntry]),
    a("istio.io/dry-run", Alpha, false, &[AuthorizationPolicy]),
    a("istio.io/rev", Alpha, false, &[Pod]),
    a("istio.io/workloadController", Alpha, false, &[WorkloadEntry]),
    a("kubernetes.io/ingress.class", Stable, false, &[Ingress]),
    a("networking.istio.io/exportTo", Alpha, false, &[Service]),
    a("networking.istio.io/service-type", Alpha, false, &[Gateway]),
    a("networking.istio.io/traffic-distribution", Alpha, false, &[Service, ServiceEntry]),
    a("prometheus.istio.io/merge-metrics", Alpha, false, &[Pod]),
    a("proxy.istio.io/config", Beta, false, &[Pod]),
    a("proxy.istio.io/overrides", Alpha, false, &[Pod]),
    a("readiness.status.sidecar.istio.io/applicationPorts", Alpha, false, &[Pod]),
    a("readiness.status.sidecar.istio.io/failureThreshold", Alpha, false, &[Pod]),
    a("readiness.status.sidecar.istio.io/initialDelaySeconds", Alpha, false, &[Pod]),
    a("readiness.status.sidecar.istio.io/periodSeconds", Alpha, false, &[Pod]),
    a("sidecar.istio.io/agentLogLevel", Alpha, false, &[Pod]),
    a("sidecar.istio.io/bootstrapOverride", Alpha, false, &[Pod]),
    a("sidecar.istio.io/componentLogLevel", Alpha, false, &[Pod]),
    a("sidecar.istio.io/discoveryAddress", Alpha, true, &[Pod]),
    a("sidecar.istio.io/enableCoreDump", Alpha, false, &[Pod]),
    a("sidecar.istio.io/extraStatTags", Alpha, true, &[Pod]),
    a("sidecar.istio.io/inject", Beta, true, &[Pod]),
    a("sidecar.istio.io/interceptionMode", Alpha, false, &[Pod]),
    a("sidecar.istio.io/logLevel", Alpha, false, &[Pod]),
    a("sidecar.istio.io/nativeSidecar", Alpha, false, &[Pod]),
    a("sidecar.istio.io/proxyCPU", Alpha, false, &[Pod]),
    a("sidecar.istio.io/proxyCPULimit", Alpha, false, &[Pod]),
    a("sidecar.istio.io/proxyImage", Alpha, false, &[Pod]),
    a("sidecar.istio.io/proxyImageType", Alpha, false, &[Pod]),
    a("sidecar.istio.io/proxyMemory", Alpha, false, &[Pod]),
    a("sidecar.istio.io/proxyMemoryLimit", Alpha, false, &[Pod]),
    a("sidecar.istio.io/rewriteAppHTTPProbers", Alpha, false, &[Pod]),
    a("sidecar.istio.io/statsHistogramBuckets", Alpha, false, &[Pod]),
    a("sidecar.istio.io/statsInclusionPrefixes", Alpha, true, &[Pod]),
    a("sidecar.istio.io/statsInclusionRegexps", Alpha, true, &[Pod]),
    a("sidecar.istio.io/statsInclusionSuffixes", Alpha, true, &[Pod]),
    a("sidecar.istio.io/status", Alpha, false, &[Pod]),
    a("sidecar.istio.io/userVolume", Alpha, false, &[Pod]),
    a("sidecar.istio.io/userVolumeMount", Alpha, false, &[Pod]),
    a("status.sidecar.istio.io/port", Alpha, false, &[Pod]),
    a("topology.istio.io/controlPlaneClusters", Alpha, false, &[Namespace]),
    a("traffic.istio.io/nodeSelector", Stable, false, &[Service]),
    a("traffic.sidecar.istio.io/excludeInboundPorts", Alpha, false, &[Pod]),
    a("traffic.sidecar.istio.io/excludeInterfaces", Alpha, false, &[Pod]),
    a("traffic.sidecar.istio.io/excludeOutboundIPRanges", Alpha, false, &[Pod]),
    a("traffic.sidecar.istio.io/excludeOutboundPorts", Alpha, false, &[Pod]),
    a("traffic.sidecar.istio.io/includeInboundPorts", Alpha, false, &[Pod]),
    a("traffic.sidecar.istio.io/includeOutboundIPRanges", Alpha, false, &[Pod]),
    a("traffic.sidecar.istio.io/includeOutboundPorts", Alpha, false, &[Pod]),
    a("traffic.sidecar.istio.io/kubevirtInterfaces", Alpha, false, &[Pod]),
];

/// The catalogue entry for `name`.
pub fn lookup(name: &str) -> Option<&'static Annotation> {
    ANNOTATIONS.iter().find(|a| a.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_complete_and_unique() {
        assert_eq!(ANNOTATIONS.len(), 62);
        let mut names: Vec<_> = ANNOTATIONS.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ANNOTATIONS.len());
        assert_eq!(lookup("proxy.istio.io/config").map(|a| a.status), Some(Beta));
        assert!(lookup("networking.istio.io/exportThree").is_none());
    }
}
