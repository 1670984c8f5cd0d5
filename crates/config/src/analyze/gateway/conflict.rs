//! `gateway.ConflictingGatewayAnalyzer`: Gateways that select the same workload and claim the
//! same host (with the same `bind`) on the same port conflict (IST0145); a selector that no
//! other Gateway shares and no Pod matches is reported as not found (IST0101).
//!
//! As upstream, Gateways are grouped by (selector, port); two groups count as the same
//! workload when their selectors are equal, or when one selector's text contains the other's
//! and some Pod matches both (`istio=ingressgateway` and `app=gw,istio=ingressgateway`).
//! Upstream's host check records each compared server's hosts into the other Gateway's
//! entry, so its result depends on Go's map order; here the check is a pure comparison.

use std::collections::BTreeMap;

use super::{full_name, gateways, pods, selector_field, selector_string, set_matches};
use crate::analyze::kube::Unique;
use crate::analyze::{Analyzer, Context, Report, messages};
use crate::networking::gateway::Server;

/// `gateway.ConflictingGatewayAnalyzer`.
pub struct ConflictingGatewayAnalyzer;

/// (selector, port) → Gateway full name → host → bind.
type GatewayMap = BTreeMap<(String, String), BTreeMap<String, BTreeMap<String, String>>>;

fn port_of(server: &Server) -> String {
    server.port.as_ref().map_or(0, |p| p.number).to_string()
}

/// `parseSelectorFromString`: `k=v,k2=v2` back into a label set.
fn parse_selector(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter_map(|pair| {
            let parts: Vec<&str> = pair.split('=').collect();
            match parts.as_slice() {
                [k, v] => Some(((*k).to_owned(), (*v).to_owned())),
                _ => None,
            }
        })
        .collect()
}

impl Analyzer for ConflictingGatewayAnalyzer {
    fn name(&self) -> &'static str {
        "gateway.ConflictingGatewayAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let mut report = Unique::new(report);
        let mut map = GatewayMap::new();
        for (gateway, spec) in gateways(ctx.store) {
            let selector = selector_string(&spec.selector);
            for server in &spec.servers {
                let hosts =
                    server.hosts.iter().map(|h| (h.as_str().to_owned(), server.bind.clone())).collect();
                map.entry((selector.clone(), port_of(server))).or_default().insert(full_name(gateway), hosts);
            }
        }

        for (gateway, spec) in gateways(ctx.store) {
            let name = full_name(gateway);
            let selector = selector_string(&spec.selector);
            let same_workload: Vec<&(String, String)> = map
                .keys()
                .filter(|(other, _)| {
                    if *other == selector {
                        return true;
                    }
                    if !other.contains(selector.as_str()) && !selector.contains(other.as_str()) {
                        return false;
                    }
                    let other = parse_selector(other);
                    pods(ctx.store).any(|p| {
                        set_matches(&spec.selector, &p.meta.labels) && set_matches(&other, &p.meta.labels)
                    })
                })
                .collect();
            if !selector.is_empty() && same_workload.is_empty() {
                let message = messages::referenced_resource_not_found("selector", &selector);
                report.add(gateway, Some(&selector_field(spec)), message);
                continue;
            }
            for server in &spec.servers {
                let port = port_of(server);
                let mut conflicting: Vec<&str> = same_workload
                    .iter()
                    .filter(|(_, p)| *p == port)
                    .flat_map(|key| map.get(*key).into_iter().flatten())
                    .filter(|(other, hosts)| {
                        **other != name
                            && server.hosts.iter().any(|h| hosts.get(h.as_str()) == Some(&server.bind))
                    })
                    .map(|(other, _)| other.as_str())
                    .collect();
                if conflicting.is_empty() {
                    continue;
                }
                conflicting.sort_unstable();
                let hosts: Vec<&str> = server.hosts.iter().map(|h| h.as_str()).collect();
                let message =
                    messages::conflicting_gateways(conflicting.join(","), &selector, &port, hosts.join(","));
                report.add(gateway, None, message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::gateway::testing::analyze_testdata;

    fn run(file: &str) -> Vec<String> {
        analyze_testdata(&ConflictingGatewayAnalyzer, &[file])
    }

    #[test]
    fn upstream_cases() {
        assert_eq!(run("conflicting-gateways.yaml"), ["IST0145 Gateway alpha", "IST0145 Gateway beta"]);
        assert!(run("gateway-different-port.yaml").is_empty());
        assert_eq!(
            run("conflicting-gateways-multiple-ports.yaml"),
            ["IST0145 Gateway alpha", "IST0145 Gateway beta"]
        );
        assert_eq!(
            run("conflicting-gateways-subSelector.yaml"),
            ["IST0145 Gateway alpha", "IST0145 Gateway beta"]
        );
        assert!(run("conflicting-gateways-invalid-port.yaml").is_empty());
    }

    #[test]
    fn selectors_parse_back() {
        let parsed = parse_selector("app=gw,istio=ingressgateway,broken");
        assert_eq!(selector_string(&parsed), "app=gw,istio=ingressgateway");
    }
}
