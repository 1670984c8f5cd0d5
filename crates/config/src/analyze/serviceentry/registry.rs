//! The services a host name can name, as Istio's analyzers see them (`util.InitServiceEntryHostMap`
//! and `util.GetDestinationHost`): every ServiceEntry host and every Kubernetes Service, keyed
//! by the namespace it is visible in (`*` for everywhere) and its fully qualified name.
//!
//! Short names resolve against the namespace of the resource that writes them (`reviews` in
//! `prod` is `reviews.prod.svc.cluster.local`); visibility follows `exportTo` (ServiceEntry) or
//! the `networking.istio.io/exportTo` annotation (Service).

use std::collections::BTreeMap;

use super::super::{Context, kube};
use crate::networking::ServiceEntry;
use crate::resource::Resource;

/// The cluster's DNS suffix for services.
pub const KUBERNETES_DOMAIN: &str = "svc.cluster.local";
/// `exportTo` value for every namespace.
pub const EXPORT_TO_ALL: &str = "*";
/// `exportTo` value for the resource's own namespace.
pub const EXPORT_TO_LOCAL: &str = ".";
/// The Service annotation that limits where it is visible.
const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";

/// `ConvertHostToFQDN`: a short name (no dot, no wildcard) gets `.<namespace>.svc.cluster.local`.
pub fn fqdn(namespace: &str, host: &str) -> String {
    if host.starts_with('*') || host.contains('.') {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.{KUBERNETES_DOMAIN}")
    }
}

/// What a host resolved to.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    ServiceEntry(&'a Resource, &'a ServiceEntry),
    Service(&'a Resource),
}

impl<'a> Target<'a> {
    /// The labels that pick the service's workloads when a ServiceEntry selects them.
    pub fn workload_labels(&self) -> Option<&'a BTreeMap<String, String>> {
        match self {
            Target::ServiceEntry(_, entry) => entry.workload_selector.as_ref().map(|s| &s.labels),
            Target::Service(_) => None,
        }
    }
}

/// Every known service host by (visible-in namespace or `*`, FQDN).
pub struct Registry<'a> {
    hosts: BTreeMap<(String, String), Target<'a>>,
}

impl<'a> Registry<'a> {
    /// The ServiceEntries and Services of `ctx` (later ones win a shared key, as upstream).
    pub fn new(ctx: &Context<'a>) -> Self {
        let mut hosts = BTreeMap::new();
        for resource in kube::analyzed(ctx.store, "ServiceEntry") {
            let Some(entry) = resource.spec.service_entry() else { continue };
            let namespace = resource.namespace();
            let scopes: Vec<&str> =
                if entry.export_to.is_empty() || entry.export_to.iter().any(|e| e == EXPORT_TO_ALL) {
                    vec![EXPORT_TO_ALL]
                } else {
                    entry
                        .export_to
                        .iter()
                        .map(|e| if e == EXPORT_TO_LOCAL { namespace } else { e.as_str() })
                        .collect()
                };
            for host in &entry.hosts {
                for scope in &scopes {
                    hosts.insert(
                        ((*scope).to_owned(), fqdn(namespace, host.as_str())),
                        Target::ServiceEntry(resource, entry),
                    );
                }
            }
        }
        for service in kube::analyzed_in(ctx.store, "", "Service") {
            let namespace = service.namespace();
            let scopes: Vec<&str> = match service.meta.annotations.get(EXPORT_TO_ANNOTATION) {
                None => vec![EXPORT_TO_ALL],
                Some(list) if list.is_empty() => vec![EXPORT_TO_ALL],
                Some(list) => {
                    list.split(',').map(|e| if e == EXPORT_TO_LOCAL { namespace } else { e }).collect()
                }
            };
            for scope in scopes {
                hosts.insert(
                    (scope.to_owned(), fqdn(namespace, &service.meta.name)),
                    Target::Service(service),
                );
            }
        }
        Self { hosts }
    }

    /// `GetDestinationHost`: the service `host`, written in `namespace` by a resource exported
    /// to `export_to`, names; exact names first, then wildcard ServiceEntry hosts.
    pub fn lookup(&self, namespace: &str, export_to: &[String], host: &str) -> Option<Target<'a>> {
        let name = fqdn(namespace, host);
        let get = |scope: &str| self.hosts.get(&(scope.to_owned(), name.clone())).copied();
        if let Some(found) = get(EXPORT_TO_ALL) {
            return Some(found);
        }
        let scoped = if export_to.is_empty() {
            get(namespace)
        } else {
            export_to.iter().find_map(|e| get(if e == EXPORT_TO_LOCAL { namespace } else { e }))
        };
        if scoped.is_some() {
            return scoped;
        }
        let bare = host.strip_prefix('*').unwrap_or(host);
        self.hosts.iter().find_map(|((scope, known), target)| {
            let suffix = known.strip_prefix('*')?;
            let visible = scope == EXPORT_TO_ALL || scope == namespace;
            (visible && bare.ends_with(suffix)).then_some(*target)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::MeshConfig;
    use super::super::super::kube::testing::resources;
    use super::*;
    use crate::store::Store;

    const YAML: &str = "\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: prod}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: secret, namespace: prod, annotations: {networking.istio.io/exportTo: '.'}}
spec: {ports: [{port: 80}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: edge}
spec: {hosts: ['*.example.com'], exportTo: ['.', team], ports: [{number: 443, name: https, protocol: HTTPS}]}
";

    fn found(registry: &Registry<'_>, namespace: &str, host: &str) -> Option<String> {
        registry.lookup(namespace, &[], host).map(|t| match t {
            Target::ServiceEntry(r, _) | Target::Service(r) => r.friendly_name(),
        })
    }

    #[test]
    fn hosts_resolve_by_namespace_and_visibility() {
        let (store, _) = Store::new(resources(YAML));
        let mesh = MeshConfig::default();
        let ctx = Context { store: &store, mesh: &mesh, istio_namespace: "istio-system" };
        let registry = Registry::new(&ctx);
        assert_eq!(found(&registry, "prod", "reviews").as_deref(), Some("Service prod/reviews"));
        assert_eq!(found(&registry, "other", "reviews"), None, "a short name is local to its namespace");
        assert_eq!(
            found(&registry, "other", "reviews.prod.svc.cluster.local").as_deref(),
            Some("Service prod/reviews")
        );
        assert_eq!(found(&registry, "other", "secret.prod.svc.cluster.local"), None, "exported to prod only");
        assert!(found(&registry, "prod", "secret").is_some());
        assert_eq!(found(&registry, "team", "api.example.com").as_deref(), Some("ServiceEntry edge/ext"));
        assert_eq!(found(&registry, "edge", "*.api.example.com").as_deref(), Some("ServiceEntry edge/ext"));
        assert_eq!(found(&registry, "prod", "api.example.com"), None, "not exported to prod");
    }
}
