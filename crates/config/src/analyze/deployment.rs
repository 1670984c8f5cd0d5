//! Istio's `deployment` analyzers: `deployment.MultiServiceAnalyzer` (a meshed Deployment
//! selected by Services that disagree on a port's protocol or map one target port twice)
//! and `applicationUID.Analyzer` (UID 1337 is the sidecar's).
//!
//! Both read the typed Kubernetes objects: the Deployment's pod template, the Services'
//! selectors and ports.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::kube::{self, Unique};
use super::{Analyzer, Context, Report, messages};
use crate::path::FieldPath;
use crate::resource::{Resource, Spec};

/// The label value marking a waypoint's Deployment (`gateway.istio.io/managed`).
const WAYPOINT_MANAGED: (&str, &str) = ("gateway.istio.io/managed", "istio.io-mesh-controller");
/// The UID Istio reserves for the sidecar proxy.
const PROXY_UID: i64 = 1337;

/// `deployment.MultiServiceAnalyzer`: Services selecting one meshed Deployment must agree.
pub struct MultiServiceAnalyzer;

impl Analyzer for MultiServiceAnalyzer {
    fn name(&self) -> &'static str {
        "deployment.MultiServiceAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let name = FieldPath::root().key("metadata").key("name");
        for deployment in kube::analyzed(ctx.store, "Deployment") {
            let waypoint =
                deployment.meta.labels.get(WAYPOINT_MANAGED.0).is_some_and(|v| v == WAYPOINT_MANAGED.1);
            if waypoint || !kube::in_mesh(ctx.store, deployment) {
                continue;
            }
            let services = matching_services(ctx, deployment);
            for (port, services) in conflicting_protocols(&services) {
                let message = messages::deployment_associated_to_multiple_services(
                    &deployment.meta.name,
                    port,
                    &services,
                );
                report.add(deployment, Some(&name), message);
            }
            for (target, (services, ports)) in conflicting_target_ports(&services) {
                let message =
                    messages::deployment_conflicting_ports(&deployment.meta.name, &services, target, &ports);
                report.add(deployment, Some(&name), message);
            }
        }
    }
}

/// The Services (with their `namespace/name`) whose non-empty selector picks the Deployment's pods.
fn matching_services<'a>(ctx: &Context<'a>, deployment: &Resource) -> Vec<(String, &'a Service)> {
    let Spec::Deployment(d) = &deployment.spec else { return Vec::new() };
    let pod_labels = d
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    ctx.store
        .typed("Service", |s| match s {
            Spec::Service(svc) => Some(svc.as_ref()),
            _ => None,
        })
        .filter(|(r, _)| !kube::ignored(r) && r.namespace() == deployment.namespace())
        .filter(|(_, svc)| {
            let selector = svc.spec.as_ref().and_then(|s| s.selector.as_ref());
            selector
                .is_some_and(|sel| !sel.is_empty() && sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v)))
        })
        .map(|(r, svc)| (format!("{}/{}", r.namespace(), r.meta.name), svc))
        .collect()
}

fn ports(service: &Service) -> &[k8s_openapi::api::core::v1::ServicePort] {
    service.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or_default()
}

/// Ports that the Services expose with more than one protocol, with every Service involved.
fn conflicting_protocols(services: &[(String, &Service)]) -> Vec<(i32, Vec<String>)> {
    let mut by_port: BTreeMap<i32, BTreeMap<&str, Vec<String>>> = BTreeMap::new();
    for (name, svc) in services {
        for port in ports(svc) {
            let protocol = port.protocol.as_deref().filter(|p| !p.is_empty()).unwrap_or("TCP");
            by_port.entry(port.port).or_default().entry(protocol).or_default().push(name.clone());
        }
    }
    by_port
        .into_iter()
        .filter(|(_, protocols)| protocols.len() > 1)
        .map(|(port, protocols)| {
            let mut names: Vec<String> = protocols.into_values().flatten().collect();
            names.sort();
            (port, names)
        })
        .collect()
}

/// Target ports that more than one service port leads to: (Services, their ports) per target.
fn conflicting_target_ports(services: &[(String, &Service)]) -> BTreeMap<String, (Vec<String>, Vec<i32>)> {
    let mut by_target: BTreeMap<String, BTreeMap<i32, String>> = BTreeMap::new();
    for (name, svc) in services {
        for port in ports(svc) {
            let target = match &port.target_port {
                Some(IntOrString::Int(n)) if *n != 0 => n.to_string(),
                Some(IntOrString::String(s)) if !s.is_empty() && s != "0" => s.clone(),
                _ => port.port.to_string(),
            };
            by_target.entry(target).or_default().insert(port.port, name.clone());
        }
    }
    by_target
        .into_iter()
        .filter(|(_, ports)| ports.len() > 1)
        .map(|(target, ports)| {
            let mut names: Vec<String> = ports.values().cloned().collect();
            names.sort();
            (target, (names, ports.into_keys().collect()))
        })
        .collect()
}

/// `applicationUID.Analyzer`: no application container (nor the pod) may run as UID 1337.
pub struct ApplicationUidAnalyzer;

impl Analyzer for ApplicationUidAnalyzer {
    fn name(&self) -> &'static str {
        "applicationUID.Analyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let mut report = Unique::new(report);
        let workloads = kube::analyzed(ctx.store, "Pod").chain(kube::analyzed(ctx.store, "Deployment"));
        for workload in workloads.filter(|r| !kube::is_control_plane(r)) {
            let Some(spec) = kube::pod_spec(workload) else { continue };
            let base = kube::pod_spec_path(workload);
            if spec.security_context.as_ref().and_then(|s| s.run_as_user) == Some(PROXY_UID) {
                let at = base.key("securityContext").key("runAsUser");
                report.add(workload, Some(&at), messages::invalid_application_uid());
            }
            for (i, container) in spec.containers.iter().enumerate() {
                if container.name == kube::ISTIO_PROXY || container.name == kube::ISTIO_OPERATOR {
                    continue;
                }
                if container.security_context.as_ref().and_then(|s| s.run_as_user) == Some(PROXY_UID) {
                    let at = base.key("containers").index(i).key("securityContext").key("runAsUser");
                    report.add(workload, Some(&at), messages::invalid_application_uid());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::kube::testing::analyze;
    use super::*;

    const MESHED: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio-injection: enabled}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: cart, namespace: shop}\nspec:\n  selector: {matchLabels: {app: cart}}\n  template:\n    metadata: {labels: {app: cart}}\n    spec: {containers: [{name: cart, image: cart}]}\n";

    fn service(name: &str, port: u16, target: u16, protocol: &str) -> String {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  selector: {{app: cart}}\n  ports: [{{port: {port}, targetPort: {target}, protocol: {protocol}}}]\n"
        )
    }

    #[test]
    fn services_disagreeing_on_a_port_are_reported() {
        let yaml = format!("{MESHED}{}{}", service("a", 80, 8080, "TCP"), service("b", 80, 8081, "UDP"));
        assert_eq!(analyze(&MultiServiceAnalyzer, &yaml), ["IST0116 Deployment shop/cart"]);
        let yaml = format!("{MESHED}{}{}", service("a", 80, 8080, "TCP"), service("b", 81, 8080, "TCP"));
        assert_eq!(analyze(&MultiServiceAnalyzer, &yaml), ["IST0137 Deployment shop/cart"]);
    }

    #[test]
    fn agreeing_services_are_clean() {
        let yaml = format!("{MESHED}{}{}", service("a", 80, 8080, "TCP"), service("b", 81, 8081, "TCP"));
        assert!(analyze(&MultiServiceAnalyzer, &yaml).is_empty());
    }

    #[test]
    fn uid_1337_is_reported_once_per_workload() {
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  securityContext: {runAsUser: 1337}\n  containers: [{name: app, securityContext: {runAsUser: 1337}}, {name: istio-proxy, securityContext: {runAsUser: 1337}}]\n";
        assert_eq!(analyze(&ApplicationUidAnalyzer, pod), ["IST0144 Pod p"]);
        let clean = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: app, securityContext: {runAsUser: 1000}}, {name: istio-proxy, securityContext: {runAsUser: 1337}}]\n";
        assert!(analyze(&ApplicationUidAnalyzer, clean).is_empty());
    }
}
