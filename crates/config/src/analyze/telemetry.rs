//! Istio's Telemetry analyzers: `telemetry.ProviderAnalyzer` (access logging with no
//! provider when the mesh has no default one), `telemetry.SelectorAnalyzer` (selectors that
//! match no pod, or pods selected by more than one Telemetry), `telemetry.DefaultSelectorAnalyzer`
//! (more than one selector-less Telemetry in a namespace) and `telemetry.LightstepAnalyzer`
//! (tracing through the deprecated Lightstep provider).
//!
//! They read the raw `spec` of each Telemetry and the mesh config, so they do not depend on
//! the typed Telemetry model.

use std::collections::BTreeMap;

use serde_json::Value;

use super::kube::{self, Unique};
use super::{Analyzer, Context, Report, messages};
use crate::path::FieldPath;
use crate::resource::Resource;

const GROUP: &str = "telemetry.istio.io";

fn telemetries<'a>(ctx: &Context<'a>) -> impl Iterator<Item = &'a Resource> + 'a {
    kube::analyzed_in(ctx.store, GROUP, "Telemetry")
}

fn list<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// The namespace as the file gives it (empty when absent), as upstream prints it.
fn written_namespace(resource: &Resource) -> &str {
    resource.meta.namespace.as_deref().unwrap_or_default()
}

/// `telemetry.ProviderAnalyzer`.
pub struct ProviderAnalyzer;

impl Analyzer for ProviderAnalyzer {
    fn name(&self) -> &'static str {
        "telemetry.ProviderAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let default_access_logging = ctx.mesh.get("defaultProviders").and_then(|d| d.get("accessLogging"));
        if default_access_logging.and_then(Value::as_array).is_some_and(|p| !p.is_empty()) {
            return;
        }
        let mut report = Unique::new(report);
        for telemetry in telemetries(ctx) {
            for logging in list(telemetry.raw_spec(), "accessLogging") {
                if logging.get("disabled").and_then(Value::as_bool) == Some(true) {
                    continue;
                }
                if list(logging, "providers").next().is_none() {
                    let message = messages::invalid_telemetry_provider(
                        &telemetry.meta.name,
                        written_namespace(telemetry),
                    );
                    report.add(telemetry, None, message);
                }
            }
        }
    }
}

/// `telemetry.SelectorAnalyzer`.
pub struct SelectorAnalyzer;

impl Analyzer for SelectorAnalyzer {
    fn name(&self) -> &'static str {
        "telemetry.SelectorAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let mut report = Unique::new(report);
        // Pod → the Telemetries selecting it, in the order they were read.
        let mut selected: BTreeMap<(&str, &str), Vec<&Resource>> = BTreeMap::new();
        for telemetry in telemetries(ctx) {
            let selector = kube::string_map(telemetry.raw_spec().pointer("/selector/matchLabels"));
            if selector.is_empty() {
                continue;
            }
            let mut found = false;
            let pods = kube::analyzed(ctx.store, "Pod").filter(|p| p.namespace() == telemetry.namespace());
            for pod in pods.filter(|p| selector.iter().all(|(k, v)| p.meta.labels.get(k) == Some(v))) {
                found = true;
                selected.entry((pod.namespace(), &pod.meta.name)).or_default().push(telemetry);
            }
            if !found {
                let text: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let at = FieldPath::root().key("spec").key("selector");
                report.add(
                    telemetry,
                    Some(&at),
                    messages::referenced_resource_not_found("selector", text.join(",")),
                );
            }
        }
        let name = FieldPath::root().key("metadata").key("name");
        for ((namespace, pod), telemetries) in selected.into_iter().filter(|(_, t)| t.len() > 1) {
            let names: Vec<String> = telemetries.iter().map(|t| t.meta.name.clone()).collect();
            for telemetry in telemetries {
                let message = messages::conflicting_telemetry_workload_selectors(&names, namespace, pod);
                report.add(telemetry, Some(&name), message);
            }
        }
    }
}

/// `telemetry.DefaultSelectorAnalyzer`.
pub struct DefaultSelectorAnalyzer;

impl Analyzer for DefaultSelectorAnalyzer {
    fn name(&self) -> &'static str {
        "telemetry.DefaultSelectorAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let mut by_namespace: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
        for telemetry in telemetries(ctx).filter(|t| t.raw_spec().get("selector").is_none_or(Value::is_null))
        {
            by_namespace.entry(written_namespace(telemetry)).or_default().push(telemetry);
        }
        for (namespace, telemetries) in by_namespace.into_iter().filter(|(_, t)| t.len() > 1) {
            let names: Vec<String> = telemetries.iter().map(|t| t.meta.name.clone()).collect();
            for telemetry in telemetries {
                report.add(
                    telemetry,
                    None,
                    messages::multiple_telemetries_without_workload_selectors(&names, namespace),
                );
            }
        }
    }
}

/// `telemetry.LightstepAnalyzer`.
pub struct LightstepAnalyzer;

impl Analyzer for LightstepAnalyzer {
    fn name(&self) -> &'static str {
        "telemetry.LightstepAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let providers = ctx.mesh.get("extensionProviders").and_then(Value::as_array).into_iter().flatten();
        let lightstep: Vec<&str> = providers
            .filter(|p| p.get("lightstep").is_some_and(|l| !l.is_null()))
            .filter_map(|p| p.get("name").and_then(Value::as_str))
            .collect();
        if lightstep.is_empty() {
            return;
        }
        for telemetry in telemetries(ctx) {
            for tracing in list(telemetry.raw_spec(), "tracing") {
                for provider in
                    list(tracing, "providers").filter_map(|p| p.get("name").and_then(Value::as_str))
                {
                    if lightstep.contains(&provider) {
                        let detail = format!(
                            "The Lightstep provider {provider} is deprecated, please migrate to OpenTelemetry provider."
                        );
                        report.add(telemetry, None, messages::deprecated(detail));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::MeshConfig;
    use super::super::kube::testing::{analyze, analyze_testdata, analyze_with};
    use super::*;

    fn telemetry(name: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: ns}}\nspec: {spec}\n"
        )
    }

    #[test]
    fn access_logging_without_provider_needs_a_mesh_default() {
        let yaml =
            telemetry("t", "{accessLogging: [{providers: [{name: envoy}]}, {filter: {expression: x}}]}");
        assert_eq!(analyze(&ProviderAnalyzer, &yaml), ["IST0157 Telemetry ns/t"]);
        let mesh = MeshConfig::new(serde_json::json!({"defaultProviders": {"accessLogging": ["envoy"]}}));
        assert!(analyze_with(&ProviderAnalyzer, &mesh, &yaml).is_empty());
        let disabled = telemetry("t", "{accessLogging: [{disabled: true}]}");
        assert!(analyze(&ProviderAnalyzer, &disabled).is_empty());
    }

    #[test]
    fn selectors_must_match_one_pod_and_one_telemetry() {
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns, labels: {app: a}}\nspec: {containers: [{name: c}]}\n";
        let yaml = format!(
            "{pod}{}{}{}",
            telemetry("a1", "{selector: {matchLabels: {app: a}}}"),
            telemetry("a2", "{selector: {matchLabels: {app: a}}}"),
            telemetry("b", "{selector: {matchLabels: {app: b}}}")
        );
        assert_eq!(
            analyze(&SelectorAnalyzer, &yaml),
            ["IST0101 Telemetry ns/b", "IST0159 Telemetry ns/a1", "IST0159 Telemetry ns/a2"]
        );
        let clean = format!(
            "{pod}{}{}",
            telemetry("a1", "{selector: {matchLabels: {app: a}}}"),
            telemetry("all", "{}")
        );
        assert!(analyze(&SelectorAnalyzer, &clean).is_empty());
    }

    #[test]
    fn one_selectorless_telemetry_per_namespace() {
        let yaml = telemetry("x", "{}") + &telemetry("y", "{tracing: []}");
        assert_eq!(
            analyze(&DefaultSelectorAnalyzer, &yaml),
            ["IST0160 Telemetry ns/x", "IST0160 Telemetry ns/y"]
        );
        let clean = telemetry("x", "{}") + &telemetry("y", "{selector: {matchLabels: {app: a}}}");
        assert!(analyze(&DefaultSelectorAnalyzer, &clean).is_empty());
    }

    #[test]
    fn lightstep_tracing_is_deprecated() {
        let mesh =
            MeshConfig::new(serde_json::json!({"extensionProviders": [{"name": "ls", "lightstep": {}}]}));
        let yaml = telemetry("t", "{tracing: [{providers: [{name: ls}]}]}");
        assert_eq!(analyze_with(&LightstepAnalyzer, &mesh, &yaml), ["IST0002 Telemetry ns/t"]);
        let otel = telemetry("t", "{tracing: [{providers: [{name: otel}]}]}");
        assert!(analyze_with(&LightstepAnalyzer, &mesh, &otel).is_empty());
    }

    /// Istio's Telemetry cases, run in-crate so they do not depend on Telemetry loading typed.
    #[test]
    fn upstream_cases_match() {
        let default = MeshConfig::default();
        assert_eq!(
            analyze_testdata(&ProviderAnalyzer, &default, &["telemetry-invalid-provider.yaml"]),
            ["IST0157 Telemetry istio-system/mesh-default"]
        );
        assert!(
            analyze_testdata(&ProviderAnalyzer, &default, &["telemetry-disable-provider.yaml"]).is_empty()
        );
        assert_eq!(
            analyze_testdata(&SelectorAnalyzer, &default, &["telemetry-selector.yaml"]),
            [
                "IST0101 Telemetry default/maps-to-nonexistent",
                "IST0101 Telemetry other/maps-to-different-ns",
                "IST0159 Telemetry default/dupe-1",
                "IST0159 Telemetry default/dupe-2",
                "IST0159 Telemetry default/overlap-1",
                "IST0159 Telemetry default/overlap-2",
            ]
        );
        assert_eq!(
            analyze_testdata(&DefaultSelectorAnalyzer, &default, &["telemetry-default-selector.yaml"]),
            ["IST0160 Telemetry ns2/has-conflict-1", "IST0160 Telemetry ns2/has-conflict-2"]
        );
        let dir = paymesh_test_util::istio_conformance().join("analyze/testdata");
        let text =
            std::fs::read_to_string(dir.join("telemetry-lightstep-meshconfig.yaml")).expect("mesh config");
        let root = crate::yaml::parse_stream(&text).remove(0).expect("yaml").root.expect("a document");
        let mesh = MeshConfig::new(root.to_json());
        assert_eq!(
            analyze_testdata(&LightstepAnalyzer, &mesh, &["telemetry-lightstep.yaml"]),
            ["IST0002 Telemetry istio-system/mesh-default"]
        );
    }
}
