//! `gateway.IngressGatewayPortAnalyzer`: a Gateway whose selector matches no Pod (IST0101),
//! or whose server listens on a port that no Service of its Pods exposes (IST0162).
//!
//! A Service "exposes" a port when it lists it as `port` or as `targetPort`: the gateway
//! proxy listens on the target port, and Istio translates a Service port to it. Only TCP
//! ports count; a port without `protocol` is TCP, as Kubernetes defaults it (istioctl reads
//! files without defaulting, so there such a port counts for nothing).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{full_name, gateways, pods, selector_field, selector_string, set_matches};
use crate::analyze::kube::{self, Unique};
use crate::analyze::{Analyzer, Context, Report, messages};
use crate::resource::{Resource, Spec};

/// `gateway.IngressGatewayPortAnalyzer`.
pub struct IngressGatewayPortAnalyzer;

impl Analyzer for IngressGatewayPortAnalyzer {
    fn name(&self) -> &'static str {
        "gateway.IngressGatewayPortAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let mut report = Unique::new(report);
        // Without a Gateway there is nothing to check: skip matching every pod to every Service.
        if gateways(ctx.store).next().is_none() {
            return;
        }
        let services: Vec<(&Resource, &Service)> = kube::analyzed(ctx.store, "Service")
            .filter_map(|r| match &r.spec {
                Spec::Service(s) => Some((r, s.as_ref())),
                _ => None,
            })
            .collect();
        // Pod (`namespace/name`) → the ports its Services expose.
        let mut exposed: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        for pod in pods(ctx.store) {
            let ports = exposed.entry(full_name(pod)).or_default();
            for (service, spec) in &services {
                let Some(spec) = &spec.spec else { continue };
                if service.namespace() != pod.namespace()
                    || !spec.selector.as_ref().is_none_or(|selector| set_matches(selector, &pod.meta.labels))
                {
                    continue;
                }
                for port in spec.ports.iter().flatten() {
                    // Kubernetes defaults an omitted protocol to TCP.
                    if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                        continue;
                    }
                    ports.extend(u32::try_from(port.port).ok());
                    ports.extend(port.target_port.as_ref().and_then(target_port));
                }
            }
        }

        for (gateway, spec) in gateways(ctx.store) {
            let selector = selector_string(&spec.selector);
            let selected: Vec<&Resource> =
                pods(ctx.store).filter(|p| set_matches(&spec.selector, &p.meta.labels)).collect();
            if selected.is_empty() {
                let message = messages::referenced_resource_not_found("selector", &selector);
                report.add(gateway, Some(&selector_field(spec)), message);
                continue;
            }
            let ports: BTreeSet<u32> = selected
                .iter()
                .flat_map(|p| exposed.get(&full_name(p)).into_iter().flatten().copied())
                .collect();
            for server in &spec.servers {
                let Some(port) = &server.port else { continue };
                if !ports.contains(&port.number) {
                    let message =
                        messages::gateway_port_not_defined_on_service(i64::from(port.number), &selector);
                    report.add(gateway, Some(&selector_field(spec)), message);
                }
            }
        }
    }
}

/// A numeric target port (a named one is not a port number: Go's `IntValue()` gives 0).
fn target_port(port: &IntOrString) -> Option<u32> {
    let number = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(s) => s.parse().ok()?,
    };
    u32::try_from(number).ok().filter(|n| *n != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::gateway::testing::{analyze, analyze_testdata};
    use crate::analyze::kube::testing;

    fn run(file: &str) -> Vec<String> {
        analyze_testdata(&IngressGatewayPortAnalyzer, &[file])
    }

    #[test]
    fn upstream_cases() {
        assert_eq!(run("gateway-no-workload.yaml"), ["IST0101 Gateway httpbin-gateway"]);
        assert_eq!(run("gateway-no-port.yaml"), ["IST0162 Gateway httpbin-gateway"]);
        assert!(run("gateway-correct-port.yaml").is_empty());
        assert!(run("gateway-custom-ingressgateway.yaml").is_empty());
        assert!(run("gateway-custom-ingressgateway-translation.yaml").is_empty());
        assert_eq!(run("gateway-custom-ingressgateway-badport.yaml"), ["IST0162 Gateway httpbin-gateway"]);
        assert_eq!(
            run("gateway-custom-ingressgateway-badport-notarget.yaml"),
            ["IST0162 Gateway httpbin-gateway"]
        );
        assert_eq!(
            run("gateway-custom-ingressgateway-svcselector.yaml"),
            ["IST0162 Gateway httpbin8002-gateway"]
        );
    }

    #[test]
    fn the_builtin_gateway_serves_its_service_and_target_ports() {
        let gateway = |port: u32| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: payments}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {port}, name: p, protocol: HTTP}}\n    hosts: ['*']\n"
            )
        };
        for port in [80, 443, 8080, 8443, 15443] {
            assert!(analyze(&IngressGatewayPortAnalyzer, &gateway(port)).is_empty(), "port {port}");
        }
        assert_eq!(analyze(&IngressGatewayPortAnalyzer, &gateway(9000)), ["IST0162 Gateway payments/gw"]);
        assert_eq!(
            testing::analyze(&IngressGatewayPortAnalyzer, &gateway(80)),
            ["IST0101 Gateway payments/gw"],
            "without the built-in gateway nothing is selected"
        );
    }
}
