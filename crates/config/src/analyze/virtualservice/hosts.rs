//! Host names as Istio's analyzers resolve them (`analyzers/util/hosts.go` and
//! `service_lookup.go`): short names complete to `name.<namespace>.svc.<domain>` with the
//! namespace of the resource that wrote them, and a host is known when a Service or a
//! ServiceEntry visible from the asking namespace defines it, exactly or by wildcard.
//!
//! [`Services`] indexes every known host by the namespace it is visible in (`*` for all):
//! a ServiceEntry by its `exportTo`, a Service by its `networking.istio.io/exportTo`
//! annotation. Each entry keeps the ports, which the destination checks need.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use serde_json::Value;

use crate::analyze::kube;
use crate::analyze::{Context, MeshConfig};
use crate::resource::Spec;

/// `exportTo` value meaning every namespace.
pub const EXPORT_TO_ALL: &str = "*";
/// `exportTo` value meaning the resource's own namespace.
pub const EXPORT_TO_LOCAL: &str = ".";
/// The annotation that sets a Service's visibility.
const SERVICE_EXPORT_TO: &str = "networking.istio.io/exportTo";

/// The cluster's DNS domain: the mesh config's `clusterDomain`, or `cluster.local`.
pub fn cluster_domain(mesh: &MeshConfig) -> &str {
    mesh.get("clusterDomain").and_then(Value::as_str).filter(|d| !d.is_empty()).unwrap_or("cluster.local")
}

/// `util.ConvertHostToFQDN`: a short name (no `.`, no leading `*`) completed in `namespace`.
pub fn to_fqdn(namespace: &str, host: &str, domain: &str) -> String {
    if host.starts_with('*') || host.contains('.') {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.{domain}")
    }
}

/// `util.GetResourceNameFromHost`: (namespace, name) of the Service a host names; a host
/// that is not `name.namespace.svc.cluster.local` is taken as a name in `default_namespace`.
pub fn resource_name(default_namespace: &str, host: &str) -> (String, String) {
    let parsed = host
        .strip_suffix(".svc.cluster.local")
        .and_then(|rest| rest.rsplit_once('.'))
        .filter(|(name, namespace)| !name.is_empty() && !namespace.is_empty());
    match parsed {
        Some((name, namespace)) => (namespace.to_owned(), name.to_owned()),
        None => (default_namespace.to_owned(), host.to_owned()),
    }
}

/// Every Service and ServiceEntry host, by (visible-in namespace or `*`, FQDN) → its ports.
pub struct Services {
    domain: String,
    by_scope: BTreeMap<(String, String), Vec<u32>>,
}

impl Services {
    /// `util.InitServiceEntryHostMap`.
    pub fn new(ctx: &Context<'_>) -> Self {
        let domain = cluster_domain(ctx.mesh).to_owned();
        let mut by_scope = BTreeMap::new();
        for (entry, spec) in
            ctx.store.typed("ServiceEntry", Spec::service_entry).filter(|(r, _)| !kube::ignored(r))
        {
            let namespace = entry.namespace();
            let ports: Vec<u32> = spec.ports.iter().map(|p| p.number).collect();
            let mut exports_to_all = false;
            for host in &spec.hosts {
                let fqdn = to_fqdn(namespace, host.as_str(), &domain);
                if spec.export_to.is_empty() || exports_to_all {
                    by_scope.insert((EXPORT_TO_ALL.to_owned(), fqdn), ports.clone());
                    continue;
                }
                for scope in &spec.export_to {
                    let scope = match scope.as_str() {
                        EXPORT_TO_ALL => {
                            exports_to_all = true;
                            EXPORT_TO_ALL
                        }
                        EXPORT_TO_LOCAL => namespace,
                        other => other,
                    };
                    by_scope.insert((scope.to_owned(), fqdn.clone()), ports.clone());
                    if exports_to_all {
                        break;
                    }
                }
            }
        }
        for service in kube::analyzed_in(ctx.store, "", "Service") {
            let Spec::Service(spec) = &service.spec else { continue };
            let namespace = service.namespace();
            let fqdn = to_fqdn(namespace, &service.meta.name, &domain);
            let ports: Vec<u32> = service_ports(spec);
            let scopes: Vec<&str> = match service.meta.annotations.get(SERVICE_EXPORT_TO) {
                None => vec![EXPORT_TO_ALL],
                Some(list) if list.is_empty() => vec![EXPORT_TO_ALL],
                Some(list) => {
                    list.split(',').map(|ns| if ns == EXPORT_TO_LOCAL { namespace } else { ns }).collect()
                }
            };
            for scope in scopes {
                by_scope.insert((scope.to_owned(), fqdn.clone()), ports.clone());
            }
        }
        Self { domain, by_scope }
    }

    /// `util.GetDestinationHost`: the ports of the service `host` names, as seen by a
    /// resource in `namespace` exported to `export_to`; `None` when no visible service has it.
    pub fn find(&self, namespace: &str, export_to: &[String], host: &str) -> Option<&[u32]> {
        let fqdn = to_fqdn(namespace, host, &self.domain);
        let at = |scope: &str| self.by_scope.get(&(scope.to_owned(), fqdn.clone())).map(Vec::as_slice);
        if let Some(ports) = at(EXPORT_TO_ALL) {
            return Some(ports);
        }
        let scoped = if export_to.is_empty() {
            at(namespace)
        } else {
            export_to.iter().find_map(|e| at(if e == EXPORT_TO_LOCAL { namespace } else { e }))
        };
        if scoped.is_some() {
            return scoped;
        }
        let wanted = host.strip_prefix('*').unwrap_or(host);
        self.by_scope
            .iter()
            .filter(|((scope, _), _)| scope == EXPORT_TO_ALL || scope == namespace)
            .find(|((_, known), _)| known.strip_prefix('*').is_some_and(|suffix| wanted.ends_with(suffix)))
            .map(|(_, ports)| ports.as_slice())
    }
}

fn service_ports(service: &Service) -> Vec<u32> {
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
    ports.into_iter().flatten().filter_map(|p| u32::try_from(p.port).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_complete_in_the_namespace() {
        assert_eq!(to_fqdn("payments", "ledger", "cluster.local"), "ledger.payments.svc.cluster.local");
        assert_eq!(to_fqdn("payments", "ledger.other", "cluster.local"), "ledger.other");
        assert_eq!(to_fqdn("payments", "*", "cluster.local"), "*");
    }

    #[test]
    fn resource_names_come_from_kubernetes_fqdns_only() {
        assert_eq!(resource_name("d", "reviews"), ("d".to_owned(), "reviews".to_owned()));
        assert_eq!(
            resource_name("d", "reviews.prod.svc.cluster.local"),
            ("prod".to_owned(), "reviews".to_owned())
        );
        assert_eq!(resource_name("d", "a.b.c.svc.cluster.local"), ("c".to_owned(), "a.b".to_owned()));
        assert_eq!(resource_name("d", "example.com"), ("d".to_owned(), "example.com".to_owned()));
    }
}
