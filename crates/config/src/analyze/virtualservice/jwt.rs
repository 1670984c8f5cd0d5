//! `virtualservice.JWTClaimRouteAnalyzer`: a gateway-bound VirtualService that routes on a
//! JWT claim (`@request.auth.claims.*` in `headers` or `withoutHeaders`) needs a
//! RequestAuthentication on every gateway Pod, in the Pod's namespace or the Istio
//! namespace (IST0149); without one the claims are never extracted and the match never holds.

use std::collections::BTreeMap;

use super::{reference_name, short_or_full_name, virtual_services};
use crate::analyze::gateway::set_matches;
use crate::analyze::kube::{self, Unique};
use crate::analyze::{Analyzer, Context, Report, messages};
use crate::networking::VirtualService;
use crate::networking::virtual_service::MESH_GATEWAY;
use crate::resource::Spec;

/// The header prefix Istio reserves for claim-based routing.
const CLAIM_HEADER: &str = "@request.auth.claims";

/// `virtualservice.JWTClaimRouteAnalyzer`.
pub struct JwtClaimRouteAnalyzer;

/// `routeBasedOnJWTClaimKey`: the first claim header a match uses.
fn claim_key(vs: &VirtualService) -> Option<&str> {
    vs.http
        .iter()
        .flat_map(|r| &r.matches)
        .flat_map(|m| m.headers.keys().chain(m.without_headers.keys()))
        .map(String::as_str)
        .find(|k| k.starts_with(CLAIM_HEADER))
}

impl Analyzer for JwtClaimRouteAnalyzer {
    fn name(&self) -> &'static str {
        "virtualservice.JWTClaimRouteAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let mut report = Unique::new(report);
        // Namespace → the selectors (match labels) of its RequestAuthentications.
        let mut authn: BTreeMap<&str, Vec<BTreeMap<String, String>>> = BTreeMap::new();
        let policies = ctx.store.typed("RequestAuthentication", Spec::request_authentication);
        for (policy, spec) in policies.filter(|(r, _)| !kube::ignored(r)) {
            let labels = spec.selector.as_ref().map(|s| s.match_labels.clone()).unwrap_or_default();
            authn.entry(policy.namespace()).or_default().push(labels);
        }

        for (vs, spec) in virtual_services(ctx.store) {
            let Some(key) = claim_key(spec) else { continue };
            for name in spec.gateways.iter().filter(|g| *g != MESH_GATEWAY) {
                let (namespace, gateway_name) = short_or_full_name(vs.namespace(), name);
                let gateway = ctx
                    .store
                    .typed("Gateway", Spec::gateway)
                    .find(|(r, _)| r.namespace() == namespace && r.meta.name == gateway_name);
                // A missing gateway is the gateway analyzer's business.
                let Some((_, gateway)) = gateway else { continue };
                for pod in kube::analyzed(ctx.store, "Pod")
                    .filter(|p| set_matches(&gateway.selector, &p.meta.labels))
                {
                    let selectors = authn.get(ctx.istio_namespace).into_iter().flatten();
                    let mut selectors = selectors.chain(authn.get(pod.namespace()).into_iter().flatten());
                    if !selectors.any(|s| set_matches(s, &pod.meta.labels)) {
                        let message = messages::jwt_claim_based_routing_without_request_auth_n(
                            key,
                            reference_name(vs, name),
                            &pod.meta.name,
                        );
                        report.add(vs, None, message);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::gateway::testing::{analyze, analyze_testdata};

    #[test]
    fn upstream_case() {
        assert_eq!(
            analyze_testdata(&JwtClaimRouteAnalyzer, &["virtualservice_jwtclaimroute.yaml"]),
            ["IST0149 VirtualService foo"]
        );
    }

    #[test]
    fn a_request_authentication_on_the_gateway_pods_satisfies_it() {
        let vs = std::fs::read_to_string(
            paymesh_test_util::istio_conformance().join("analyze/testdata/virtualservice_jwtclaimroute.yaml"),
        )
        .expect("test data");
        let authn = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt, namespace: istio-system}\nspec:\n  selector: {matchLabels: {istio: ingressgateway}}\n  jwtRules: [{issuer: https://issuer.example}]\n";
        assert!(analyze(&JwtClaimRouteAnalyzer, &format!("{vs}\n---\n{authn}")).is_empty());
    }
}
