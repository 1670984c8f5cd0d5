//! `gateway.SecretAnalyzer`: a Gateway whose selector matches no Pod (IST0101), whose TLS
//! `credentialName` names no Secret in the namespace of its workload (IST0101: the gateway
//! reads Secrets from its own namespace, not the Gateway's), or whose Secret holds no
//! currently valid certificate (IST0161).
//!
//! paymesh deviates in one case: when the input holds no Secret at all, credentials are not
//! checked. Certificates are kept out of configuration repositories (`kubectl create secret
//! tls` puts them in the cluster), and istioctl itself never checks them from files: its
//! file source drops Secrets, which skips this analyzer entirely.

use k8s_openapi::api::core::v1::Secret;
use x509_parser::pem::Pem;

use super::{gateways, pods, selector_field, selector_string, set_matches};
use crate::analyze::kube::{self, Unique};
use crate::analyze::{Analyzer, Context, Report, messages};
use crate::path::FieldPath;
use crate::resource::Resource;

/// `gateway.SecretAnalyzer`.
pub struct SecretAnalyzer;

impl Analyzer for SecretAnalyzer {
    fn name(&self) -> &'static str {
        "gateway.SecretAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let mut report = Unique::new(report);
        let secrets: Vec<&Resource> = kube::analyzed_in(ctx.store, "", "Secret").collect();
        for (gateway, spec) in gateways(ctx.store) {
            // The namespace of the (first) workload the Gateway configures.
            let Some(namespace) = pods(ctx.store)
                .find(|p| set_matches(&spec.selector, &p.meta.labels))
                .map(Resource::namespace)
            else {
                let selector = selector_string(&spec.selector);
                let message = messages::referenced_resource_not_found("selector", selector);
                report.add(gateway, Some(&selector_field(spec)), message);
                continue;
            };
            if secrets.is_empty() {
                continue;
            }
            for (i, server) in spec.servers.iter().enumerate() {
                let Some(tls) = &server.tls else { continue };
                let name = tls.credential_name.as_str();
                if name.is_empty() {
                    continue;
                }
                let (secret_namespace, secret_name) = name.split_once('/').unwrap_or((namespace, name));
                let at =
                    FieldPath::root().key("spec").key("servers").index(i).key("tls").key("credentialName");
                let found =
                    secrets.iter().find(|s| s.namespace() == secret_namespace && s.meta.name == secret_name);
                match found {
                    None => report.add(
                        gateway,
                        Some(&at),
                        messages::referenced_resource_not_found("credentialName", name),
                    ),
                    Some(secret) if !valid_secret(secret) => report.add(
                        gateway,
                        Some(&at),
                        messages::invalid_gateway_credential(&gateway.meta.name, namespace),
                    ),
                    Some(_) => {}
                }
            }
        }
    }
}

/// `isValidSecret`: the Secret holds a certificate (`cert`/`key` or `tls.crt`/`tls.key`, both
/// non-empty) whose first PEM block parses and is within its validity period now.
fn valid_secret(secret: &Resource) -> bool {
    let Ok(secret) = serde_json::from_value::<Secret>(secret.raw.clone()) else { return false };
    let data = secret.data.unwrap_or_default();
    let value = |key: &str| data.get(key).map(|v| v.0.as_slice()).filter(|v| !v.is_empty());
    let cert = match (value("cert"), value("key"), value("tls.crt"), value("tls.key")) {
        (Some(cert), Some(_), _, _) | (_, _, Some(cert), Some(_)) => cert,
        _ => return false,
    };
    valid_certificate(cert)
}

/// `xds.ValidateCertificate`: the first PEM block is a certificate valid at this moment.
fn valid_certificate(pem: &[u8]) -> bool {
    let Some(Ok(block)) = Pem::iter_from_buffer(pem).next() else { return false };
    block.parse_x509().is_ok_and(|cert| cert.validity().is_valid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::gateway::testing::{analyze, analyze_testdata};

    #[test]
    fn upstream_cases() {
        assert_eq!(
            analyze_testdata(&SecretAnalyzer, &["gateway-secrets.yaml"]),
            [
                "IST0101 Gateway bogusgateway",
                "IST0101 Gateway customgateway-wrongnamespace",
                "IST0101 Gateway defaultgateway-bogusCredentialName",
            ]
        );
        assert_eq!(
            analyze_testdata(&SecretAnalyzer, &["gateway-secrets-validation.yaml"]),
            [
                "IST0161 Gateway defaultgateway-expired",
                "IST0161 Gateway defaultgateway-invalid-cert",
                "IST0161 Gateway defaultgateway-invalid-keys",
                "IST0161 Gateway defaultgateway-missing-keys",
            ]
        );
    }

    #[test]
    fn credentials_are_not_checked_without_secrets_in_the_input() {
        let gateway = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: payments}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    tls: {mode: SIMPLE, credentialName: payments-tls}\n    hosts: ['*']\n";
        assert!(analyze(&SecretAnalyzer, gateway).is_empty());
        let other_secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: other, namespace: istio-system}\n";
        assert_eq!(
            analyze(&SecretAnalyzer, &format!("{gateway}---\n{other_secret}")),
            ["IST0101 Gateway payments/gw"]
        );
    }

    #[test]
    fn garbage_is_no_certificate() {
        assert!(!valid_certificate(b"hush hush hush\n"));
        assert!(!valid_certificate(b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n"));
    }
}
