//! Istio's `authn.BlockedCIDRsAnalyzer`: when RequestAuthentications exist, istiod fetches
//! their JWKS URIs, so its Deployment should set `BLOCKED_CIDRS_IN_JWKS_URIS` to keep those
//! fetches off internal networks (an attacker-chosen URI would otherwise reach them).

use super::kube;
use super::serviceentry::full_name;
use super::{Analyzer, Context, Report, messages};
use crate::resource::Spec;

/// The istiod environment variable that restricts JWKS fetches.
const BLOCKED_CIDRS: &str = "BLOCKED_CIDRS_IN_JWKS_URIS";
/// How many RequestAuthentication names the message lists before "and N more".
const MAX_NAMES: usize = 5;

/// `authn.BlockedCIDRsAnalyzer`.
pub struct BlockedCIDRsAnalyzer;

/// `a, b, c`, or the first [`MAX_NAMES`] and `, and N more`.
fn list_names(names: &[String]) -> String {
    if names.len() <= MAX_NAMES {
        return names.join(", ");
    }
    format!("{}, and {} more", names[..MAX_NAMES].join(", "), names.len() - MAX_NAMES)
}

impl Analyzer for BlockedCIDRsAnalyzer {
    fn name(&self) -> &'static str {
        "authn.BlockedCIDRsAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let names: Vec<String> = kube::analyzed_in(ctx.store, "security.istio.io", "RequestAuthentication")
            .map(full_name)
            .collect();
        if names.is_empty() {
            return;
        }
        let istiods = kube::analyzed_in(ctx.store, "apps", "Deployment")
            .filter(|d| d.meta.labels.get("app").is_some_and(|v| v == "istiod"));
        for istiod in istiods {
            let Spec::Deployment(deployment) = &istiod.spec else { continue };
            let containers =
                deployment.spec.as_ref().and_then(|s| s.template.spec.as_ref()).map(|s| &s.containers);
            let configured = containers
                .into_iter()
                .flatten()
                .flat_map(|c| c.env.iter().flatten())
                .any(|e| e.name == BLOCKED_CIDRS && e.value.as_deref().is_some_and(|v| !v.is_empty()));
            if !configured {
                let count = i64::try_from(names.len()).unwrap_or(i64::MAX);
                report.add(istiod, None, messages::jwks_uri_fetch_unrestricted(count, list_names(&names)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::MeshConfig;
    use super::super::kube::testing::{analyze, analyze_testdata};
    use super::*;

    fn istiod(env: &str) -> String {
        format!(
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: istiod, namespace: istio-system, labels: {{app: istiod}}}}\nspec:\n  selector: {{matchLabels: {{app: istiod}}}}\n  template:\n    metadata: {{labels: {{app: istiod}}}}\n    spec: {{containers: [{{name: discovery, env: [{env}]}}]}}\n"
        )
    }

    const RA: &str = "---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt, namespace: pay}\nspec: {jwtRules: [{issuer: i, jwksUri: 'https://i/jwks'}]}\n";

    #[test]
    fn istiod_must_block_cidrs_when_jwks_are_fetched() {
        let open = istiod("{name: X, value: y}");
        assert_eq!(
            analyze(&BlockedCIDRsAnalyzer, &format!("{RA}{open}")),
            ["IST0175 Deployment istio-system/istiod"]
        );
        assert!(analyze(&BlockedCIDRsAnalyzer, &open).is_empty(), "no RequestAuthentication, no fetch");
        let empty = istiod("{name: BLOCKED_CIDRS_IN_JWKS_URIS, value: ''}");
        assert_eq!(analyze(&BlockedCIDRsAnalyzer, &format!("{RA}{empty}")).len(), 1);
        let blocked = istiod("{name: BLOCKED_CIDRS_IN_JWKS_URIS, value: 10.0.0.0/8}");
        assert!(analyze(&BlockedCIDRsAnalyzer, &format!("{RA}{blocked}")).is_empty());
    }

    #[test]
    fn long_name_lists_are_cut() {
        let names: Vec<String> = (1..=7).map(|i| format!("ns/ra{i}")).collect();
        assert_eq!(list_names(&names[..2]), "ns/ra1, ns/ra2");
        assert_eq!(list_names(&names), "ns/ra1, ns/ra2, ns/ra3, ns/ra4, ns/ra5, and 2 more");
    }

    #[test]
    fn upstream_cases_match() {
        let default = MeshConfig::default();
        assert_eq!(
            analyze_testdata(&BlockedCIDRsAnalyzer, &default, &["blocked-cidrs-missing.yaml"]),
            ["IST0175 Deployment istio-system/istiod"]
        );
        assert!(
            analyze_testdata(&BlockedCIDRsAnalyzer, &default, &["blocked-cidrs-configured.yaml"]).is_empty()
        );
        assert!(analyze_testdata(&BlockedCIDRsAnalyzer, &default, &["blocked-cidrs-no-ra.yaml"]).is_empty());
    }
}
