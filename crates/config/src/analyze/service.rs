//! `service.PortNameAnalyzer`: a Service port whose protocol Istio cannot tell (neither
//! `appProtocol` nor a `<protocol>[-suffix]` name) is reported, as is an ExternalName
//! Service port that does not name a protocol Istio can route.
//!
//! Protocol selection follows Istio's `kube.ConvertProtocol` exactly, because that is what
//! decides how the proxy treats the port.

use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::kube;
use super::{Analyzer, Context, Report, messages};
use crate::path::FieldPath;
use crate::resource::Spec;

/// `gateway.istio.io/managed` values of Services Istio generates itself.
const GENERATED_SERVICES: &[&str] =
    &["istio.io-gateway-controller", "istio.io-mesh-controller", "istio.io-eastwest-controller"];
/// Ports Istio treats as TCP when their name says nothing (SMTP, DNS, MySQL, MongoDB).
const WELL_KNOWN_PORTS: &[i32] = &[25, 53, 3306, 27017];

/// `service.PortNameAnalyzer`.
pub struct PortNameAnalyzer;

impl Analyzer for PortNameAnalyzer {
    fn name(&self) -> &'static str {
        "service.PortNameAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        for service in kube::analyzed(ctx.store, "Service") {
            let Spec::Service(svc) = &service.spec else { continue };
            if kube::is_control_plane(service) {
                continue;
            }
            let managed = service.meta.labels.get("gateway.istio.io/managed");
            if managed.is_some_and(|v| GENERATED_SERVICES.contains(&v.as_str())) {
                continue;
            }
            let Some(spec) = &svc.spec else { continue };
            let external_name = spec.type_.as_deref() == Some("ExternalName");
            for (i, port) in spec.ports.iter().flatten().enumerate() {
                let name = port.name.as_deref().unwrap_or_default();
                if !(is_unsupported(port) || name == "tcp" && external_name) {
                    continue;
                }
                let message = if external_name {
                    messages::external_name_service_type_invalid_port_name()
                } else {
                    messages::port_name_is_not_under_naming_convention(
                        name,
                        i64::from(port.port),
                        target_port(port.target_port.as_ref()),
                    )
                };
                let at = FieldPath::root().key("spec").key("ports").index(i);
                report.add(service, Some(&at), message);
            }
        }
    }
}

/// Go's `IntOrString.String()` (an absent target port is the zero value, `0`).
fn target_port(port: Option<&IntOrString>) -> String {
    match port {
        Some(IntOrString::Int(n)) => n.to_string(),
        Some(IntOrString::String(s)) => s.clone(),
        None => "0".to_owned(),
    }
}

/// `kube.ConvertProtocol(...).IsUnsupported()`.
fn is_unsupported(port: &ServicePort) -> bool {
    if port.protocol.as_deref() == Some("UDP") {
        return false;
    }
    let name = port.app_protocol.as_deref().or(port.name.as_deref()).unwrap_or_default();
    if name.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("grpc-web")) {
        return false;
    }
    let prefix = name.split('-').next().unwrap_or_default();
    !is_known_protocol(prefix) && !WELL_KNOWN_PORTS.contains(&port.port)
}

/// `protocol.Parse(name) != Unsupported`.
fn is_known_protocol(name: &str) -> bool {
    const KNOWN: &[&str] = &[
        "tcp",
        "udp",
        "grpc",
        "grpc-web",
        "http",
        "http_proxy",
        "http2",
        "https",
        "tls",
        "mongo",
        "redis",
        "mysql",
    ];
    KNOWN.iter().any(|k| k.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::super::kube::testing::analyze;
    use super::*;

    fn port(name: Option<&str>, app: Option<&str>, number: i32) -> ServicePort {
        ServicePort {
            name: name.map(str::to_owned),
            app_protocol: app.map(str::to_owned),
            port: number,
            ..Default::default()
        }
    }

    #[test]
    fn protocols_come_from_app_protocol_then_name_prefix() {
        assert!(!is_unsupported(&port(Some("http-web"), None, 80)));
        assert!(!is_unsupported(&port(Some("GRPC-Web-x"), None, 80)));
        assert!(!is_unsupported(&port(Some("foo"), Some("http"), 80)));
        assert!(is_unsupported(&port(Some("foo"), None, 80)));
        assert!(is_unsupported(&port(None, None, 8080)));
        assert!(!is_unsupported(&port(None, None, 3306)), "well-known ports default to TCP");
        assert!(is_unsupported(&port(Some("http"), Some("bogus"), 80)), "appProtocol wins over the name");
    }

    #[test]
    fn unnamed_ports_are_reported_outside_system_namespaces() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: a}\nspec: {ports: [{port: 8080}, {port: 8081, name: http-web}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: kube-system}\nspec: {ports: [{port: 8080}]}\n";
        assert_eq!(analyze(&PortNameAnalyzer, yaml), ["IST0118 Service a/s"]);
    }

    #[test]
    fn named_ports_are_clean() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80, name: http}, {port: 81, name: x, appProtocol: grpc}]}\n";
        assert!(analyze(&PortNameAnalyzer, yaml).is_empty());
    }
}
