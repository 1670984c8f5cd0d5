//! `envoyfilter.EnvoyPatchAnalyzer`: EnvoyFilter patches whose operation does not fit what
//! they apply to (ADD or REMOVE on routes, REPLACE outside filters and virtual hosts), and
//! relative operations (INSERT_BEFORE/AFTER, REPLACE, REMOVE; MERGE is not relative since
//! istio#39904) without a `priority`, whose outcome depends on the order filters apply in.
//!
//! EnvoyFilter is kept untyped, so the analyzer reads the raw `spec.configPatches`.
//! Filter names seen on patches with a `proxyVersion` carry over from one EnvoyFilter to
//! the next, as in upstream, to tell when a relative patch targets a version-specific one.

use serde_json::Value;

use super::kube::Unique;
use super::{Analyzer, Context, Report, messages};
use crate::path::FieldPath;

/// `envoyfilter.EnvoyPatchAnalyzer`.
pub struct EnvoyPatchAnalyzer;

/// The name a patch is known by: its value's `name` (compared as a value) or, failing
/// that, the filter its listener match names.
#[derive(Clone, Debug, PartialEq)]
enum PatchName {
    Text(String),
    Value(Value),
}

impl Analyzer for EnvoyPatchAnalyzer {
    fn name(&self) -> &'static str {
        "envoyfilter.EnvoyPatchAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let mut report = Unique::new(report);
        let mut versioned_names: Vec<PatchName> = Vec::new();
        for filter in super::kube::analyzed(ctx.store, "EnvoyFilter") {
            let spec = filter.raw_spec();
            let priority = spec.get("priority").and_then(Value::as_i64).unwrap_or(0);
            let patches =
                spec.get("configPatches").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            for (index, config_patch) in patches.iter().enumerate() {
                let Some(patch) = config_patch.get("patch").filter(|p| !p.is_null()) else { break };
                let name = patch_name(config_patch, patch);
                let apply_to = config_patch.get("applyTo").and_then(Value::as_str).unwrap_or("INVALID");
                let on_route = matches!(apply_to, "ROUTE_CONFIGURATION" | "HTTP_ROUTE");
                let relative = |versioned: &[PatchName]| {
                    (priority == 0).then(|| {
                        if versioned.contains(&name) {
                            messages::envoy_filter_uses_relative_operation_with_proxy_version()
                        } else {
                            messages::envoy_filter_uses_relative_operation()
                        }
                    })
                };
                let message = match patch.get("operation").and_then(Value::as_str).unwrap_or("INVALID") {
                    "ADD" => on_route.then(messages::envoy_filter_uses_add_operation_incorrectly),
                    "REMOVE" if on_route => Some(messages::envoy_filter_uses_remove_operation_incorrectly()),
                    "REPLACE" if !matches!(apply_to, "NETWORK_FILTER" | "HTTP_FILTER" | "VIRTUAL_HOST") => {
                        Some(messages::envoy_filter_uses_replace_operation_incorrectly())
                    }
                    "REMOVE" | "REPLACE" | "INSERT_BEFORE" | "INSERT_AFTER" => relative(&versioned_names),
                    _ => None,
                };
                if let Some(message) = message {
                    let at = FieldPath::root().key("spec").key("configPatches").index(index);
                    report.add(filter, Some(&at), message);
                }
                let proxy_version = config_patch.pointer("/match/proxy/proxyVersion").and_then(Value::as_str);
                if proxy_version.is_some_and(|v| !v.is_empty()) {
                    versioned_names.push(name);
                }
            }
        }
    }
}

/// The name of the patch, as upstream derives it (empty when neither is given).
fn patch_name(config_patch: &Value, patch: &Value) -> PatchName {
    match patch.get("value").and_then(Value::as_object) {
        Some(value) => match value.get("name") {
            Some(name) => PatchName::Value(name.clone()),
            None => PatchName::Text(
                config_patch
                    .pointer("/match/listener/filterChain/filter/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            ),
        },
        None => PatchName::Text(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::kube::testing::analyze;
    use super::EnvoyPatchAnalyzer;

    fn filter(name: &str, priority: i32, patches: &str) -> String {
        format!(
            "---\napiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {{name: {name}, namespace: n}}\nspec:\n  priority: {priority}\n  configPatches:\n{patches}"
        )
    }

    #[test]
    fn misplaced_and_unordered_patches_are_reported() {
        let yaml = filter(
            "f",
            0,
            "  - {applyTo: HTTP_ROUTE, patch: {operation: ADD, value: {}}}\n  - {applyTo: HTTP_FILTER, match: {proxy: {proxyVersion: '^1'}}, patch: {operation: INSERT_BEFORE, value: {name: lua}}}\n  - {applyTo: HTTP_FILTER, patch: {operation: INSERT_AFTER, value: {name: lua}}}\n  - {applyTo: CLUSTER, patch: {operation: REPLACE, value: {name: c}}}\n",
        );
        assert_eq!(
            analyze(&EnvoyPatchAnalyzer, &yaml),
            [
                "IST0151 EnvoyFilter n/f",
                "IST0152 EnvoyFilter n/f",
                "IST0153 EnvoyFilter n/f",
                "IST0155 EnvoyFilter n/f"
            ]
        );
    }

    #[test]
    fn prioritized_absolute_and_merge_patches_are_clean() {
        let yaml = filter(
            "f",
            10,
            "  - {applyTo: HTTP_FILTER, patch: {operation: INSERT_BEFORE, value: {name: lua}}}\n  - {applyTo: CLUSTER, patch: {operation: ADD, value: {name: c}}}\n",
        ) + &filter(
            "g",
            0,
            "  - {applyTo: FILTER_CHAIN, patch: {operation: MERGE, value: {a: 1}}}\n  - {applyTo: HTTP_FILTER, patch: {operation: INSERT_FIRST, value: {name: x}}}\n",
        );
        assert!(analyze(&EnvoyPatchAnalyzer, &yaml).is_empty());
    }
}
