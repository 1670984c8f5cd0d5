//! `webhook.Analyzer`: Istio's sidecar-injection webhooks must not overlap (a namespace or
//! pod labelled for injection would be injected twice) and must point at a Service that
//! exists.
//!
//! Overlap is found as upstream finds it: every combination of the usual namespace labels
//! (`istio-injection`, `istio.io/rev` for each revision in use) and pod labels
//! (`sidecar.istio.io/inject`, `istio.io/rev`) is tried against every webhook's selectors.
//! MutatingWebhookConfiguration is kept untyped; its raw `webhooks` are read.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use super::kube::{self, INJECTION_LABEL, REVISION_LABEL, SIDECAR_INJECT, Unique};
use super::{Analyzer, Context, GoList, Report, messages};
use crate::resource::Resource;

/// `webhook.Analyzer`.
pub struct WebhookAnalyzer;

/// One webhook of an Istio MutatingWebhookConfiguration.
struct Hook<'a> {
    /// `configuration/webhook`, as upstream names it in messages.
    id: String,
    config: &'a Resource,
    namespace_selector: Option<LabelSelector>,
    object_selector: Option<LabelSelector>,
    /// `namespace/name` of the Service the webhook calls, when it calls one.
    service: Option<(String, String)>,
}

impl Analyzer for WebhookAnalyzer {
    fn name(&self) -> &'static str {
        "webhook.Analyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let mut report = Unique::new(report);
        let mut hooks = Vec::new();
        let mut revisions = BTreeSet::new();
        for config in kube::analyzed(ctx.store, "MutatingWebhookConfiguration") {
            let raw_hooks =
                config.raw.get("webhooks").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            let config_revisions = revisions_of(config, raw_hooks);
            let istio = raw_hooks.iter().any(|h| hook_name(h).ends_with("istio.io"));
            if config_revisions.is_empty() && !istio {
                continue;
            }
            revisions.extend(config_revisions);
            for hook in raw_hooks {
                let service = hook.pointer("/clientConfig/service").filter(|s| !s.is_null()).map(|s| {
                    let field = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
                    (field("namespace"), field("name"))
                });
                hooks.push(Hook {
                    id: format!("{}/{}", config.meta.name, hook_name(hook)),
                    config,
                    namespace_selector: kube::label_selector(hook.get("namespaceSelector")),
                    object_selector: kube::label_selector(hook.get("objectSelector")),
                    service,
                });
            }
        }

        let namespace_labels = label_sets(INJECTION_LABEL, ["enabled", "disabled"], &revisions);
        let object_labels = label_sets(SIDECAR_INJECT, ["true", "false"], &revisions);
        for ns in &namespace_labels {
            for object in &object_labels {
                let matching: Vec<&Hook<'_>> = hooks
                    .iter()
                    .filter(|h| {
                        kube::optional_selector_matches(h.namespace_selector.as_ref(), ns)
                            && kube::optional_selector_matches(h.object_selector.as_ref(), object)
                    })
                    .collect();
                if matching.len() < 2 {
                    continue;
                }
                for hook in &matching {
                    let others: Vec<&str> =
                        matching.iter().filter(|o| o.id != hook.id).map(|o| o.id.as_str()).collect();
                    let problem = format!(
                        "Webhook overlaps with others: {}. This may cause injection to occur twice.",
                        GoList(&others)
                    );
                    report.add(hook.config, None, messages::invalid_webhook(problem));
                }
            }
        }

        for hook in &hooks {
            let Some((namespace, name)) = &hook.service else { continue };
            if ctx.store.get("Service", namespace, name).is_none() {
                let problem = format!(
                    "Injector refers to a control plane service that does not exist: {namespace}/{name}."
                );
                report.add(hook.config, None, messages::invalid_webhook(problem));
            }
        }
    }
}

fn hook_name(hook: &Value) -> &str {
    hook.get("name").and_then(Value::as_str).unwrap_or_default()
}

/// The revisions a configuration serves: its `istio.io/rev` label and every revision its
/// webhooks' selectors name.
fn revisions_of(config: &Resource, hooks: &[Value]) -> BTreeSet<String> {
    let mut revisions: BTreeSet<String> =
        config.meta.labels.get(REVISION_LABEL).cloned().into_iter().collect();
    for selector in hooks.iter().flat_map(|h| [h.get("namespaceSelector"), h.get("objectSelector")]) {
        let Some(selector) = kube::label_selector(selector) else { continue };
        revisions.extend(
            selector
                .match_labels
                .iter()
                .flatten()
                .filter(|(k, _)| *k == REVISION_LABEL)
                .map(|(_, v)| v.clone()),
        );
        for requirement in selector.match_expressions.iter().flatten().filter(|r| r.key == REVISION_LABEL) {
            revisions.extend(requirement.values.iter().flatten().cloned());
        }
    }
    revisions
}

/// No labels, `key=on`, `key=off`, then each of those with `istio.io/rev=<rev>` added.
fn label_sets(key: &str, values: [&str; 2], revisions: &BTreeSet<String>) -> Vec<BTreeMap<String, String>> {
    let base: Vec<BTreeMap<String, String>> = std::iter::once(BTreeMap::new())
        .chain(values.iter().map(|v| BTreeMap::from([(key.to_owned(), (*v).to_owned())])))
        .collect();
    let mut sets = base.clone();
    for revision in revisions {
        sets.extend(base.iter().map(|labels| {
            let mut labels = labels.clone();
            labels.insert(REVISION_LABEL.to_owned(), revision.clone());
            labels
        }));
    }
    sets
}

#[cfg(test)]
mod tests {
    use super::super::kube::testing::analyze;
    use super::*;

    fn webhook(name: &str, service: &str, selector: &str) -> String {
        format!(
            "---\napiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {{name: {name}}}\nwebhooks:\n- name: sidecar-injector.istio.io\n  clientConfig: {{service: {{name: {service}, namespace: istio-system}}}}\n  namespaceSelector: {selector}\n"
        )
    }

    const ISTIOD: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: istiod, namespace: istio-system}\n";

    #[test]
    fn overlapping_webhooks_and_missing_services_are_reported() {
        let yaml = format!(
            "{ISTIOD}{}{}",
            webhook("a", "istiod", "{matchLabels: {istio-injection: enabled}}"),
            webhook("b", "gone", "{matchLabels: {istio-injection: enabled}}")
        );
        assert_eq!(
            analyze(&WebhookAnalyzer, &yaml),
            [
                "IST0139 MutatingWebhookConfiguration a",
                "IST0139 MutatingWebhookConfiguration b",
                "IST0139 MutatingWebhookConfiguration b"
            ]
        );
    }

    #[test]
    fn disjoint_webhooks_are_clean() {
        let yaml = format!(
            "{ISTIOD}{}{}",
            webhook("a", "istiod", "{matchLabels: {istio-injection: enabled}}"),
            webhook(
                "b",
                "istiod",
                "{matchLabels: {istio.io/rev: canary}, matchExpressions: [{key: istio-injection, operator: DoesNotExist}]}"
            )
        );
        assert!(analyze(&WebhookAnalyzer, &yaml).is_empty());
    }
}
