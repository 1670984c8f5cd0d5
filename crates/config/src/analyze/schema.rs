//! `schema.ValidationAnalyzer.<Kind>`: every per-kind validation failure as IST0106
//! (SchemaValidationError), pointing at the offending field. For VirtualServices it also
//! reports the rule-order warnings Istio's validation raises (IST0130 unreachable rule,
//! IST0131 ineffective match; see [`virtualservice::matches`]).

use super::kube::Unique;
use super::virtualservice;
use super::{Analyzer, Context, Report, messages};
use crate::resource::Spec;
use crate::validate;

/// Validates the resources of one kind, as istioctl's per-kind schema analyzers do.
pub struct ValidationAnalyzer {
    pub name: &'static str,
    pub kind: &'static str,
}

/// The Istio kinds with a schema analyzer, under istioctl's names.
pub const KINDS: &[ValidationAnalyzer] = &[
    ValidationAnalyzer { name: "schema.ValidationAnalyzer.VirtualService", kind: "VirtualService" },
    ValidationAnalyzer { name: "schema.ValidationAnalyzer.DestinationRule", kind: "DestinationRule" },
    ValidationAnalyzer { name: "schema.ValidationAnalyzer.Gateway", kind: "Gateway" },
    ValidationAnalyzer { name: "schema.ValidationAnalyzer.ServiceEntry", kind: "ServiceEntry" },
    ValidationAnalyzer { name: "schema.ValidationAnalyzer.Sidecar", kind: "Sidecar" },
    ValidationAnalyzer { name: "schema.ValidationAnalyzer.EnvoyFilter", kind: "EnvoyFilter" },
    ValidationAnalyzer { name: "schema.ValidationAnalyzer.WorkloadEntry", kind: "WorkloadEntry" },
    ValidationAnalyzer { name: "schema.ValidationAnalyzer.WorkloadGroup", kind: "WorkloadGroup" },
    ValidationAnalyzer { name: "schema.ValidationAnalyzer.ProxyConfig", kind: "ProxyConfig" },
    ValidationAnalyzer { name: "schema.ValidationAnalyzer.PeerAuthentication", kind: "PeerAuthentication" },
    ValidationAnalyzer { name: "schema.ValidationAnalyzer.AuthorizationPolicy", kind: "AuthorizationPolicy" },
    ValidationAnalyzer {
        name: "schema.ValidationAnalyzer.RequestAuthentication",
        kind: "RequestAuthentication",
    },
    ValidationAnalyzer { name: "schema.ValidationAnalyzer.Telemetry", kind: "Telemetry" },
    ValidationAnalyzer { name: "schema.ValidationAnalyzer.WasmPlugin", kind: "WasmPlugin" },
    ValidationAnalyzer { name: "schema.ValidationAnalyzer.RateLimitPolicy", kind: "RateLimitPolicy" },
];

impl Analyzer for ValidationAnalyzer {
    fn name(&self) -> &'static str {
        self.name
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let mut report = Unique::new(report);
        for resource in ctx.store.of_kind(self.kind) {
            for error in validate::validate(resource) {
                report.add(resource, Some(&error.path), messages::schema_validation_error(&error));
            }
            if let Spec::VirtualService(vs) = &resource.spec {
                for (at, message) in virtualservice::matches::check(vs) {
                    report.add(resource, Some(&at), message);
                }
            }
        }
    }
}
