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
    let name = port.name.as_deref().unwrap_or_default();
    port_protocol(name, port.app_protocol.as_deref()).is_none() && !WELL_KNOWN_PORTS.contains(&port.port)
}

/// Istio's protocols (`protocol.Instance`) a Service port can select.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortProtocol {
    /// `tcp`.
    Tcp,
    /// `udp`.
    Udp,
    /// `grpc`.
    Grpc,
    /// `grpc-web`.
    GrpcWeb,
    /// `http` (and `kubernetes.io/ws`, `kubernetes.io/wss` as appProtocol).
    Http,
    /// `http_proxy`.
    HttpProxy,
    /// `http2` (and `kubernetes.io/h2c` as appProtocol).
    Http2,
    /// `https`.
    Https,
    /// `tls`.
    Tls,
    /// `mongo`.
    Mongo,
    /// `redis`.
    Redis,
    /// `mysql`.
    Mysql,
}

/// The protocol a Service port selects, as Istio's `kube.ConvertProtocol` reads it (without
/// its port-number fallbacks): `appProtocol` when set, else the port name; `grpc-web` whole,
/// else the part before the first `-`; case-insensitive. `None`: Istio's `Unsupported`.
/// `paymesh analyze` and the control plane's registry both decide with this.
pub fn port_protocol(name: &str, app_protocol: Option<&str>) -> Option<PortProtocol> {
    let selector = app_protocol.unwrap_or(name);
    match selector {
        "kubernetes.io/h2c" => return Some(PortProtocol::Http2),
        "kubernetes.io/ws" | "kubernetes.io/wss" => return Some(PortProtocol::Http),
        _ => {}
    }
    if selector.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("grpc-web")) {
        return Some(PortProtocol::GrpcWeb);
    }
    let prefix = selector.split('-').next().unwrap_or_default().to_ascii_lowercase();
    Some(match prefix.as_str() {
        "tcp" => PortProtocol::Tcp,
        "udp" => PortProtocol::Udp,
        "grpc" => PortProtocol::Grpc,
        "http" => PortProtocol::Http,
        "http_proxy" => PortProtocol::HttpProxy,
        "http2" => PortProtocol::Http2,
        "https" => PortProtocol::Https,
        "tls" => PortProtocol::Tls,
        "mongo" => PortProtocol::Mongo,
        "redis" => PortProtocol::Redis,
        "mysql" => PortProtocol::Mysql,
        _ => return None,
    })
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
