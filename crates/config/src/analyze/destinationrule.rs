//! Istio's DestinationRule analyzers: `destinationrule.CaCertificateAnalyzer` (TLS origination
//! that does not verify the server) and `destinationrule.SubsetSelectPodAnalyzer` (a host no
//! service has, and subsets whose labels select no pod).
//!
//! Subsets match pods the way the service registry labels endpoints: the pod's labels plus the
//! topology labels of the node it runs on, merged with the ServiceEntry's workload selector.

use std::collections::BTreeMap;

use super::kube::{self, Unique};
use super::serviceentry::full_name;
use super::serviceentry::registry::Registry;
use super::{Analyzer, Context, Report, messages};
use crate::networking::DestinationRule;
use crate::networking::destination_rule::{ClientTlsMode, ClientTlsSettings};
use crate::path::FieldPath;
use crate::resource::{Resource, Spec};

/// Node labels the registry copies onto a pod's endpoint (`label.LabelTopology*`).
const TOPOLOGY_LABELS: [&str; 3] =
    ["topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone"];
/// The endpoint label carrying the node's name.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

fn destination_rules<'a>(
    ctx: &Context<'a>,
) -> impl Iterator<Item = (&'a Resource, &'a DestinationRule)> + 'a {
    kube::analyzed(ctx.store, "DestinationRule").filter_map(|r| r.spec.destination_rule().map(|d| (r, d)))
}

/// `destinationrule.CaCertificateAnalyzer`.
pub struct CaCertificateAnalyzer;

impl CaCertificateAnalyzer {
    /// The TLS mode's name when it originates TLS that should verify the server but cannot:
    /// SIMPLE or MUTUAL without `caCertificates`, unless a workload-scoped rule names a
    /// credential (which carries the CA).
    fn unverified(tls: Option<&ClientTlsSettings>, scoped: bool) -> Option<&'static str> {
        let tls = tls?;
        let mode = match tls.mode {
            ClientTlsMode::Simple => "SIMPLE",
            ClientTlsMode::Mutual => "MUTUAL",
            ClientTlsMode::Disable | ClientTlsMode::IstioMutual => return None,
        };
        let credential = !tls.credential_name.is_empty() && scoped;
        (tls.ca_certificates.is_empty() && !credential).then_some(mode)
    }
}

impl Analyzer for CaCertificateAnalyzer {
    fn name(&self) -> &'static str {
        "destinationrule.CaCertificateAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        for (resource, rule) in destination_rules(ctx) {
            let Some(policy) = &rule.traffic_policy else { continue };
            let scoped = rule.workload_selector.is_some();
            let name = full_name(resource);
            let at = FieldPath::root().key("spec").key("trafficPolicy");
            if let Some(mode) = Self::unverified(policy.tls.as_ref(), scoped) {
                let message = messages::no_server_certificate_verification_destination_level(
                    &name,
                    resource.namespace(),
                    mode,
                    &rule.host,
                );
                report.add(resource, Some(&at.key("tls").key("caCertificates")), message);
            }
            for (i, port) in policy.port_level_settings.iter().enumerate() {
                let Some(mode) = Self::unverified(port.tls.as_ref(), scoped) else { continue };
                // Upstream prints the port selector in protobuf text form.
                let selector = port.port.map(|p| format!("number:{}", p.number)).unwrap_or_default();
                let message = messages::no_server_certificate_verification_port_level(
                    &name,
                    resource.namespace(),
                    mode,
                    &rule.host,
                    selector,
                );
                let field = at.key("portLevelSettings").index(i).key("tls").key("caCertificates");
                report.add(resource, Some(&field), message);
            }
        }
    }
}

/// `destinationrule.SubsetSelectPodAnalyzer` (upstream `PodNotSelectedAnalyzer`).
pub struct SubsetSelectPodAnalyzer;

/// The labels the registry gives a pod's endpoints: its own, plus its node's topology labels
/// and name. Empty topology labels are not copied (Istio ignores empty locality labels).
fn endpoint_labels(pod: &Resource, nodes: &BTreeMap<&str, &Resource>) -> BTreeMap<String, String> {
    let mut labels = kube::workload_labels(pod).cloned().unwrap_or_default();
    let node_name = match &pod.spec {
        Spec::Pod(p) => p.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or_default(),
        _ => "",
    };
    if let Some(node) = nodes.get(node_name) {
        for key in TOPOLOGY_LABELS {
            if let Some(value) = node.meta.labels.get(key).filter(|v| !v.is_empty()) {
                labels.insert(key.to_owned(), value.clone());
            }
        }
        labels.insert(HOSTNAME_LABEL.to_owned(), node_name.to_owned());
    }
    labels
}

impl Analyzer for SubsetSelectPodAnalyzer {
    fn name(&self) -> &'static str {
        "destinationrule.SubsetSelectPodAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let registry = Registry::new(ctx);
        let nodes: BTreeMap<&str, &Resource> =
            ctx.store.of_kind("Node").map(|n| (n.meta.name.as_str(), n)).collect();
        // Upstream matches subsets against every pod, whatever its namespace (paymesh: and
        // every Deployment's pod template, see `kube::workload_labels`).
        let pods: Vec<BTreeMap<String, String>> =
            kube::workloads(ctx.store).map(|p| endpoint_labels(p, &nodes)).collect();
        let mut report = Unique::new(report);
        for (resource, rule) in destination_rules(ctx) {
            let Some(target) = registry.lookup(resource.namespace(), &rule.export_to, rule.host.as_str())
            else {
                let at = FieldPath::root().key("spec").key("host");
                report.add(resource, Some(&at), messages::unknown_destination_rule_host(&rule.host));
                continue;
            };
            for (i, subset) in rule.subsets.iter().enumerate() {
                let mut selector = target.workload_labels().cloned().unwrap_or_default();
                selector.extend(subset.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
                let selects =
                    pods.iter().any(|labels| selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
                if !selects {
                    let at = FieldPath::root().key("spec").key("subsets").index(i).key("name");
                    report.add(
                        resource,
                        Some(&at),
                        messages::destination_rule_subset_not_select_pods(&subset.name),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::MeshConfig;
    use super::super::kube::testing::{analyze, analyze_testdata, resources};
    use super::*;
    use crate::store::Store;

    fn rule(name: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: ns}}\nspec: {spec}\n"
        )
    }

    #[test]
    fn tls_origination_must_verify_the_server() {
        let simple = rule("a", "{host: db, trafficPolicy: {tls: {mode: SIMPLE}}}");
        assert_eq!(analyze(&CaCertificateAnalyzer, &simple), ["IST0128 DestinationRule ns/a"]);
        let with_ca = rule("a", "{host: db, trafficPolicy: {tls: {mode: MUTUAL, caCertificates: /ca.pem}}}");
        assert!(analyze(&CaCertificateAnalyzer, &with_ca).is_empty());
        let mesh_mtls = rule("a", "{host: db, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}");
        assert!(analyze(&CaCertificateAnalyzer, &mesh_mtls).is_empty());
        let port = rule(
            "a",
            "{host: db, trafficPolicy: {portLevelSettings: [{port: {number: 443}, tls: {mode: MUTUAL}}, {port: {number: 80}}]}}",
        );
        assert_eq!(analyze(&CaCertificateAnalyzer, &port), ["IST0129 DestinationRule ns/a"]);
        let credential = "{host: db, trafficPolicy: {tls: {mode: SIMPLE, credentialName: c}}";
        assert_eq!(analyze(&CaCertificateAnalyzer, &rule("a", &format!("{credential}}}"))).len(), 1);
        let scoped = rule("a", &format!("{credential}, workloadSelector: {{matchLabels: {{app: x}}}}}}"));
        assert!(analyze(&CaCertificateAnalyzer, &scoped).is_empty(), "a scoped credential carries the CA");
    }

    #[test]
    fn message_names_the_rule_mode_host_and_port() {
        let yaml = rule(
            "a",
            "{host: db, trafficPolicy: {portLevelSettings: [{port: {number: 443}, tls: {mode: SIMPLE}}]}}",
        );
        let (store, _) = Store::new(resources(&yaml));
        let mesh = MeshConfig::default();
        let ctx = Context { store: &store, mesh: &mesh, istio_namespace: "istio-system" };
        let found = super::super::run(&ctx, &[&CaCertificateAnalyzer]);
        assert_eq!(
            found[0].text,
            "DestinationRule ns/a in namespace ns has TLS mode set to SIMPLE but no caCertificates are set to validate server identity for host: db at port number:443"
        );
    }

    const SERVICE: &str = "---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: ns}\nspec: {ports: [{port: 80}]}\n";
    const POD: &str = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: other, labels: {app: web, version: v1}}\nspec: {nodeName: n1, containers: [{name: web}]}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {topology.kubernetes.io/zone: z1, topology.kubernetes.io/region: ''}}\n";

    #[test]
    fn subsets_must_select_pods_of_a_known_host() {
        let unknown = rule("a", "{host: nowhere}");
        assert_eq!(analyze(&SubsetSelectPodAnalyzer, &unknown), ["IST0174 DestinationRule ns/a"]);
        let subsets = rule(
            "a",
            "{host: web, subsets: [{name: v1, labels: {version: v1}}, {name: z1, labels: {topology.kubernetes.io/zone: z1}}, {name: v2, labels: {version: v2}}, {name: r, labels: {topology.kubernetes.io/region: ''}}]}",
        );
        let yaml = format!("{SERVICE}{POD}{subsets}");
        assert_eq!(
            analyze(&SubsetSelectPodAnalyzer, &yaml),
            ["IST0173 DestinationRule ns/a", "IST0173 DestinationRule ns/a"],
            "v2 selects nothing, nor does an empty region label"
        );
        let fqdn =
            rule("a", "{host: web.ns.svc.cluster.local, subsets: [{name: v1, labels: {version: v1}}]}");
        let elsewhere = fqdn.replace("namespace: ns", "namespace: elsewhere");
        assert!(analyze(&SubsetSelectPodAnalyzer, &format!("{SERVICE}{POD}{elsewhere}")).is_empty());
    }

    #[test]
    fn upstream_cases_match() {
        let default = MeshConfig::default();
        let run = |files: &[&str]| analyze_testdata(&SubsetSelectPodAnalyzer, &default, files);
        assert_eq!(
            run(&["destinationrule-with-fake-host.yaml"]),
            ["IST0174 DestinationRule default/fake-host"]
        );
        assert!(run(&["destinationrule-subsets-with-topology-labels.yaml"]).is_empty());
        assert_eq!(
            run(&["destinationrule-empty-topology-labels.yaml"]),
            ["IST0173 DestinationRule default/empty-topology-labels"]
        );
        assert_eq!(
            analyze_testdata(
                &CaCertificateAnalyzer,
                &default,
                &["destinationrule-compound-simple-mutual.yaml"]
            ),
            ["IST0128 DestinationRule db-mtls", "IST0129 DestinationRule db-mtls"]
        );
    }
}
