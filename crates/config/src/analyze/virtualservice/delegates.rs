//! `virtualservice.DelegateAnalyzer` (paymesh's; Istio has none): what istiod does with
//! delegation but only logs (`mergeVirtualServices` in
//! `pilot/pkg/model/virtualservice_controller.go`).
//!
//! - A root rule's `delegate` must name a delegate VirtualService (one without hosts) exported
//!   to the root's namespace; otherwise istiod leaves the root rule out, and its requests go on
//!   to the next rules (PM0002, at `delegate.name`).
//! - Each rule of that delegate must have its matches within the root rule's; otherwise istiod
//!   drops the delegate rule when merging ([`merge_route`], PM0003, at the delegate's match
//!   and condition, naming the root rule's file:line).

use serde_json::Value;

use super::matches::label;
use super::virtual_services;
use crate::analyze::gateway::full_name;
use crate::analyze::{Analyzer, Context, GoList, Report, messages};
use crate::networking::VirtualService;
use crate::networking::virtual_service::Delegate;
use crate::networking::virtual_service::delegate::merge_route;
use crate::path::FieldPath;
use crate::resource::Resource;
use crate::store::Store;

/// `exportTo` entry for every namespace.
const EXPORT_TO_ALL: &str = "*";
/// `exportTo` entry for the resource's own namespace.
const EXPORT_TO_LOCAL: &str = ".";

/// `virtualservice.DelegateAnalyzer`.
pub struct DelegateAnalyzer;

impl Analyzer for DelegateAnalyzer {
    fn name(&self) -> &'static str {
        "virtualservice.DelegateAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let default_export_to = default_export_to(ctx);
        for (root, spec) in virtual_services(ctx.store).filter(|(_, vs)| !vs.is_delegate()) {
            for (i, rule) in spec.http.iter().enumerate() {
                let Some(delegate) = &rule.delegate else {
                    continue;
                };
                let at = FieldPath::root().key("spec").key("http").index(i);
                let (resource, target) = match resolve(ctx.store, root, delegate, &default_export_to) {
                    Ok(found) => found,
                    Err(reason) => {
                        let name = format!("{}/{}", delegate_namespace(root, delegate), delegate.name);
                        let message = messages::unusable_delegate(name, reason);
                        report.add(root, Some(&at.key("delegate").key("name")), message);
                        continue;
                    }
                };
                let root_location = root.origin.field(&at.key("match"));
                for (j, leaf) in target.http.iter().enumerate() {
                    let Err(conflict) = merge_route(rule, leaf) else {
                        continue;
                    };
                    let mut field = FieldPath::root()
                        .key("spec")
                        .key("http")
                        .index(j)
                        .key("match")
                        .index(conflict.delegate_match);
                    if let Some(first) = conflict.conflicts.first() {
                        field = field.join(&first.field);
                    }
                    let message = messages::delegate_rule_outside_root(
                        label(&leaf.name, j),
                        label(&rule.name, i),
                        full_name(root),
                        &root_location,
                        &conflict,
                    );
                    report.add(resource, Some(&field), message);
                }
            }
        }
    }
}

/// The mesh's `defaultVirtualServiceExportTo`, or Istio's default: every namespace.
fn default_export_to(ctx: &Context<'_>) -> Vec<String> {
    let configured = ctx.mesh.get("defaultVirtualServiceExportTo").and_then(Value::as_array);
    match configured {
        Some(entries) => entries.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        None => vec![EXPORT_TO_ALL.to_owned()],
    }
}

/// The namespace a delegate reference points into: its own, or the root's.
fn delegate_namespace<'a>(root: &'a Resource, delegate: &'a Delegate) -> &'a str {
    if delegate.namespace.is_empty() { root.namespace() } else { &delegate.namespace }
}

/// The delegate VirtualService `delegate` names for `root`, as istiod looks it up: by name in
/// its namespace, among VirtualServices without hosts, exported to the root's namespace;
/// otherwise why it cannot be used, as the end of PM0002's sentence.
fn resolve<'a>(
    store: &'a Store,
    root: &Resource,
    delegate: &Delegate,
    default_export_to: &[String],
) -> Result<(&'a Resource, &'a VirtualService), String> {
    let namespace = delegate_namespace(root, delegate);
    let Some((resource, spec)) =
        virtual_services(store).find(|(r, _)| r.namespace() == namespace && r.meta.name == delegate.name)
    else {
        return Err("does not exist".to_owned());
    };
    if !spec.is_delegate() {
        let hosts: Vec<String> = spec.hosts.iter().map(ToString::to_string).collect();
        return Err(format!("is not a delegate (it has hosts {})", GoList(&hosts)));
    }
    let export_to = if spec.export_to.is_empty() { default_export_to } else { &spec.export_to };
    let visible = export_to.iter().any(|entry| {
        let entry = if entry == EXPORT_TO_LOCAL { namespace } else { entry.as_str() };
        entry == EXPORT_TO_ALL || entry == root.namespace()
    });
    if !visible {
        return Err(format!("is not exported to namespace {}", root.namespace()));
    }
    Ok((resource, spec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::kube::testing::resources;
    use crate::analyze::{MeshConfig, output, run};

    /// istioctl's log lines for `yaml`, analyzed with `mesh`.
    fn log_with(mesh: &MeshConfig, yaml: &str) -> String {
        let (store, duplicates) = Store::new(resources(yaml));
        assert!(duplicates.is_empty(), "{duplicates:?}");
        let ctx = Context { store: &store, mesh, istio_namespace: "istio-system" };
        output::log(&run(&ctx, &[&DelegateAnalyzer]))
    }

    fn log(yaml: &str) -> String {
        log_with(&MeshConfig::default(), yaml)
    }

    /// The fault-test hook of `k8s/istio/virtual-services.yaml`: requests with
    /// `x-fault-test: "true"` go to the delegate `account-service-fault-test`.
    const ROOT: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: account-service
  namespace: payments
spec:
  hosts: [account-service]
  http:
  - name: fault-test
    match:
    - headers:
        x-fault-test:
          exact: \"true\"
    delegate:
      name: account-service-fault-test
  - route:
    - destination: {host: account-service}
";

    /// A delegate for [`ROOT`] whose single rule has `matches` (YAML flow) and `extra` fields.
    fn delegate(matches: &str, extra: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: account-service-fault-test
  namespace: payments
spec:
  {extra}http:
  - name: delay
    match: {matches}
    fault:
      delay: {{fixedDelay: 5s, percentage: {{value: 10}}}}
    route:
    - destination: {{host: account-service}}
"
        )
    }

    #[test]
    fn a_delegate_within_its_root_is_clean() {
        assert_eq!(
            log(&format!("{ROOT}---\n{}", delegate("[{headers: {x-fault-test: {exact: 'true'}}}]", ""))),
            ""
        );
        // Without matches, a delegate rule takes the root's: it widens nothing.
        assert_eq!(log(&format!("{ROOT}---\n{}", delegate("[]", ""))), "");
        assert_eq!(log(&format!("{ROOT}---\n{}", delegate("[{method: {exact: GET}}]", ""))), "");
    }

    #[test]
    fn a_missing_delegate_is_reported_at_its_name() {
        assert_eq!(
            log(ROOT),
            "Warning [PM0002] (VirtualService payments/account-service test.yaml:15) Delegate VirtualService \
             payments/account-service-fault-test does not exist: Istio ignores this rule, so its requests go \
             on to the next rules.\n"
        );
    }

    #[test]
    fn a_delegate_with_hosts_is_not_a_delegate() {
        let yaml = format!("{ROOT}---\n{}", delegate("[]", "hosts: [account-service]\n  "));
        assert_eq!(
            log(&yaml),
            "Warning [PM0002] (VirtualService payments/account-service test.yaml:15) Delegate VirtualService \
             payments/account-service-fault-test is not a delegate (it has hosts [account-service]): Istio \
             ignores this rule, so its requests go on to the next rules.\n"
        );
    }

    #[test]
    fn a_delegate_must_be_exported_to_the_root() {
        let hidden = format!("{ROOT}---\n{}", delegate("[]", "exportTo: [other]\n  "));
        assert!(
            log(&hidden)
                .contains("payments/account-service-fault-test is not exported to namespace payments:")
        );
        assert_eq!(log(&format!("{ROOT}---\n{}", delegate("[]", "exportTo: ['.']\n  "))), "");
        let private_by_default =
            MeshConfig::new(serde_json::json!({"defaultVirtualServiceExportTo": ["other"]}));
        assert!(
            log_with(&private_by_default, &format!("{ROOT}---\n{}", delegate("[]", ""))).contains("[PM0002]")
        );
    }

    #[test]
    fn a_delegate_rule_outside_its_root_names_both_places() {
        let wider = format!("{ROOT}---\n{}", delegate("[{headers: {x-fault-test: {prefix: t}}}]", ""));
        assert_eq!(
            log(&wider),
            "Warning [PM0003] (VirtualService payments/account-service-fault-test test.yaml:27) Rule \"delay\" \
             is dropped when merged into root rule \"fault-test\" of VirtualService payments/account-service \
             (test.yaml:10): match #0 of the delegate rule falls within no match of the root rule (root match \
             #0: headers.x-fault-test: prefix \"t\" is not within exact \"true\").\n"
        );
        let other_value =
            format!("{ROOT}---\n{}", delegate("[{headers: {x-fault-test: {exact: 'false'}}}]", ""));
        assert!(log(&other_value).contains("exact \"false\" is not within exact \"true\""));
    }

    /// Rule and match lines are those of the delegate's YAML: the match names the condition.
    #[test]
    fn the_line_is_the_conflicting_condition() {
        let yaml = format!(
            "{ROOT}---\n{}",
            delegate(
                "\n    - method: {exact: GET}\n    - uri: {prefix: /}\n      headers: {x-fault-test: {regex: t.*}}",
                ""
            )
        );
        let found = log(&yaml);
        assert!(
            found.contains("(VirtualService payments/account-service-fault-test test.yaml:30)"),
            "{found}"
        );
        assert!(found.contains("match #1 of the delegate rule"), "{found}");
    }
}
