//! `gateway.CertificateAnalyzer`: one certificate (the same `credentialName`, or the same
//! certificate and key files) served by two Gateways on the same workload (IST0138).
//! HTTP/2 clients reuse a connection for every host the certificate covers, so requests for
//! the second Gateway's hosts reach the first one and get 404s.
//!
//! "The same workload" is upstream's approximation: the other Gateway's selector contains
//! every label of this one's (an empty selector covers every Gateway), in any namespace
//! (`PILOT_SCOPE_GATEWAY_TO_NAMESPACE` is off by default).

use std::collections::BTreeMap;

use super::{full_name, gateways};
use crate::analyze::kube::Unique;
use crate::analyze::{Analyzer, Context, Report, messages};
use crate::networking::gateway::ServerTlsSettings;
use crate::path::FieldPath;

/// `gateway.CertificateAnalyzer`.
pub struct CertificateAnalyzer;

/// `selectorSubset`: every label of `x` is in `y` with the same value.
fn selector_subset(x: &BTreeMap<String, String>, y: &BTreeMap<String, String>) -> bool {
    x.iter().all(|(k, v)| y.get(k) == Some(v))
}

/// `haveSameCertificate`.
fn same_certificate(a: &ServerTlsSettings, b: &ServerTlsSettings) -> bool {
    match (a.credential_name.is_empty(), b.credential_name.is_empty()) {
        (false, false) => a.credential_name == b.credential_name,
        (true, true) => {
            !a.server_certificate.is_empty()
                && a.server_certificate == b.server_certificate
                && !a.private_key.is_empty()
                && a.private_key == b.private_key
        }
        _ => false,
    }
}

impl Analyzer for CertificateAnalyzer {
    fn name(&self) -> &'static str {
        "gateway.CertificateAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let mut report = Unique::new(report);
        let at = FieldPath::root().key("metadata").key("name");
        for (gateway, spec) in gateways(ctx.store) {
            let name = full_name(gateway);
            for (other, other_spec) in gateways(ctx.store) {
                let other_name = full_name(other);
                if other_name == name || !selector_subset(&spec.selector, &other_spec.selector) {
                    continue;
                }
                let shared = spec.servers.iter().filter_map(|s| s.tls.as_ref()).any(|tls| {
                    other_spec.servers.iter().filter_map(|s| s.tls.as_ref()).any(|o| same_certificate(tls, o))
                });
                if shared {
                    let names = [name.clone(), other_name];
                    report.add(gateway, Some(&at), messages::gateway_duplicate_certificate(&names));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::gateway::testing::analyze_testdata;

    #[test]
    fn upstream_case() {
        assert_eq!(
            analyze_testdata(&CertificateAnalyzer, &["gateway-duplicate-certificate.yaml"]),
            [
                "IST0138 Gateway default/gateway-01-test-03",
                "IST0138 Gateway istio-system/gateway-01-test-01",
                "IST0138 Gateway istio-system/gateway-01-test-02",
                "IST0138 Gateway istio-system/gateway-02-test-01",
            ]
        );
    }

    #[test]
    fn file_certificates_need_the_same_key_too() {
        let tls = |cert: &str, key: &str| ServerTlsSettings {
            server_certificate: cert.to_owned(),
            private_key: key.to_owned(),
            ..ServerTlsSettings::default()
        };
        assert!(same_certificate(&tls("/c.pem", "/k.pem"), &tls("/c.pem", "/k.pem")));
        assert!(!same_certificate(&tls("/c.pem", "/k.pem"), &tls("/c.pem", "/other.pem")));
        assert!(!same_certificate(&tls("", ""), &tls("", "")));
    }
}
