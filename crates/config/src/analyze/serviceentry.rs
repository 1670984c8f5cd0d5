//! Istio's ServiceEntry analyzers: `serviceentry.Analyzer` (TCP or protocol-less ports with no
//! address to tell the service apart) and `serviceentry.ConflictingServiceEntryProtocolAnalyzer`
//! (ServiceEntries visible in the same namespace that give one host and port two protocols).
//!
//! [`registry`] holds the host lookup (ServiceEntries and Services by visible namespace) that
//! the DestinationRule analyzers share.

pub mod registry;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::Value;

use super::{Analyzer, Context, Report, kube, messages};
use crate::path::FieldPath;
use crate::resource::Resource;
use registry::{EXPORT_TO_ALL, EXPORT_TO_LOCAL};

/// The ServiceEntries istioctl analyzes, with their specs.
fn service_entries<'a>(
    ctx: &Context<'a>,
) -> impl Iterator<Item = (&'a Resource, &'a crate::networking::ServiceEntry)> + 'a {
    kube::analyzed(ctx.store, "ServiceEntry").filter_map(|r| r.spec.service_entry().map(|s| (r, s)))
}

/// `serviceentry.Analyzer` (upstream `ProtocolAddressesAnalyzer`).
pub struct ProtocolAddressesAnalyzer;

impl ProtocolAddressesAnalyzer {
    /// Whether the proxies allocate addresses themselves (`ISTIO_META_DNS_CAPTURE` with
    /// `ISTIO_META_DNS_AUTO_ALLOCATE` or `PILOT_ENABLE_IP_AUTOALLOCATE` in the default proxy
    /// metadata).
    fn auto_allocated(ctx: &Context<'_>) -> bool {
        let metadata = ctx.mesh.get("defaultConfig").and_then(|d| d.get("proxyMetadata"));
        let is_true = |key: &str| metadata.and_then(|m| m.get(key)).and_then(Value::as_str) == Some("true");
        is_true("ISTIO_META_DNS_CAPTURE")
            && (is_true("ISTIO_META_DNS_AUTO_ALLOCATE") || is_true("PILOT_ENABLE_IP_AUTOALLOCATE"))
    }
}

impl Analyzer for ProtocolAddressesAnalyzer {
    fn name(&self) -> &'static str {
        "serviceentry.Analyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        if Self::auto_allocated(ctx) {
            return;
        }
        for (resource, entry) in service_entries(ctx) {
            let allocated = resource
                .raw
                .pointer("/status/addresses")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if !entry.addresses.is_empty() || allocated {
                continue;
            }
            for (i, port) in entry.ports.iter().enumerate() {
                if port.protocol.is_empty() || port.protocol.eq_ignore_ascii_case("TCP") {
                    let at = FieldPath::root().key("spec").key("ports").index(i).key("protocol");
                    report.add(resource, Some(&at), messages::service_entry_addresses_required());
                }
            }
        }
    }
}

/// `serviceentry.ConflictingServiceEntryProtocolAnalyzer`.
pub struct ConflictingServiceEntryProtocolAnalyzer;

/// Where a ServiceEntry port is visible: a namespace or `*`, a host as written, a port.
type ScopedHostPort<'a> = (&'a str, &'a str, u32);

impl Analyzer for ConflictingServiceEntryProtocolAnalyzer {
    fn name(&self) -> &'static str {
        "serviceentry.ConflictingServiceEntryProtocolAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let mut index: BTreeMap<ScopedHostPort<'_>, Vec<(&str, &Resource)>> = BTreeMap::new();
        for (resource, entry) in service_entries(ctx) {
            let namespace = resource.namespace();
            let scopes: BTreeSet<&str> =
                if entry.export_to.is_empty() || entry.export_to.iter().any(|e| e == EXPORT_TO_ALL) {
                    BTreeSet::from([EXPORT_TO_ALL])
                } else {
                    entry.export_to.iter().map(|e| if e == EXPORT_TO_LOCAL { namespace } else { e }).collect()
                };
            for scope in scopes {
                for host in &entry.hosts {
                    for port in &entry.ports {
                        let key = (scope, host.as_str(), port.number);
                        index.entry(key).or_default().push((port.protocol.as_str(), resource));
                    }
                }
            }
        }
        let mut reported: HashSet<String> = HashSet::new();
        for (&(scope, host, port), entries) in &index {
            let mut entries = entries.clone();
            if scope != EXPORT_TO_ALL {
                entries.extend(index.get(&(EXPORT_TO_ALL, host, port)).into_iter().flatten().copied());
            }
            let protocols: BTreeSet<String> = entries.iter().map(|(p, _)| p.to_ascii_uppercase()).collect();
            if protocols.len() < 2 {
                continue;
            }
            let names: BTreeSet<String> = entries.iter().map(|(_, r)| full_name(r)).collect();
            let names = names.into_iter().collect::<Vec<_>>().join(", ");
            let protocols = protocols.into_iter().collect::<Vec<_>>().join(", ");
            for (_, resource) in entries {
                if reported.insert(full_name(resource)) {
                    let message = messages::conflicting_service_entry_protocol(
                        &names,
                        host,
                        i64::from(port),
                        &protocols,
                    );
                    let at = FieldPath::root().key("metadata").key("name");
                    report.add(resource, Some(&at), message);
                }
            }
        }
    }
}

/// `namespace/name`, as upstream names resources in message texts.
pub(crate) fn full_name(resource: &Resource) -> String {
    format!("{}/{}", resource.namespace(), resource.meta.name)
}

#[cfg(test)]
mod tests {
    use super::super::MeshConfig;
    use super::super::kube::testing::{analyze, analyze_testdata, analyze_with};
    use super::*;

    fn entry(name: &str, namespace: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n"
        )
    }

    #[test]
    fn tcp_ports_need_addresses_unless_allocated() {
        let tcp = "{hosts: [db.example.com], ports: [{number: 5432, name: pg, protocol: tcp}, {number: 1, name: x}, {number: 443, name: https, protocol: HTTPS}]}";
        let yaml = entry("db", "ns", tcp);
        // Two ports need addresses; the identical message is printed once, as istioctl does.
        assert_eq!(analyze(&ProtocolAddressesAnalyzer, &yaml), ["IST0134 ServiceEntry ns/db"]);
        let with_address = entry(
            "db",
            "ns",
            "{hosts: [db.example.com], addresses: [10.0.0.1], ports: [{number: 5432, name: pg, protocol: TCP}]}",
        );
        assert!(analyze(&ProtocolAddressesAnalyzer, &with_address).is_empty());
        let allocated =
            format!("{yaml}status: {{addresses: [{{host: db.example.com, value: 240.240.0.1}}]}}\n");
        assert!(analyze(&ProtocolAddressesAnalyzer, &allocated).is_empty());
        let mesh = MeshConfig::new(serde_json::json!({"defaultConfig": {"proxyMetadata": {
            "ISTIO_META_DNS_CAPTURE": "true", "PILOT_ENABLE_IP_AUTOALLOCATE": "true"}}}));
        assert!(analyze_with(&ProtocolAddressesAnalyzer, &mesh, &yaml).is_empty());
    }

    #[test]
    fn protocols_conflict_only_where_both_are_visible() {
        let http = "{hosts: [a.com], ports: [{number: 80, name: http, protocol: HTTP}]";
        let tcp = "{hosts: [a.com], ports: [{number: 80, name: tcp, protocol: TCP}]";
        let yaml = entry("h", "ns1", &format!("{http}}}")) + &entry("t", "ns2", &format!("{tcp}}}"));
        assert_eq!(
            analyze(&ConflictingServiceEntryProtocolAnalyzer, &yaml),
            ["IST0177 ServiceEntry ns1/h", "IST0177 ServiceEntry ns2/t"]
        );
        let local = entry("h", "ns1", &format!("{http}, exportTo: [.]}}"))
            + &entry("t", "ns2", &format!("{tcp}, exportTo: [.]}}"));
        assert!(analyze(&ConflictingServiceEntryProtocolAnalyzer, &local).is_empty());
        let exported = entry("h", "ns1", &format!("{http}, exportTo: [.]}}"))
            + &entry("t", "ns2", &format!("{tcp}, exportTo: [ns1]}}"));
        assert_eq!(analyze(&ConflictingServiceEntryProtocolAnalyzer, &exported).len(), 2);
        let same = entry("h", "ns1", &format!("{http}}}"))
            + &entry("h2", "ns1", &format!("{}}}", http.replace("HTTP", "http")));
        assert!(analyze(&ConflictingServiceEntryProtocolAnalyzer, &same).is_empty(), "case does not matter");
    }

    #[test]
    fn upstream_cases_match() {
        let default = MeshConfig::default();
        assert_eq!(
            analyze_testdata(
                &ProtocolAddressesAnalyzer,
                &default,
                &["serviceentry-missing-addresses-protocol.yaml"]
            ),
            [
                "IST0134 ServiceEntry default/service-entry-test-03",
                "IST0134 ServiceEntry default/service-entry-test-04",
                "IST0134 ServiceEntry default/service-entry-test-07",
            ]
        );
        assert_eq!(
            analyze_testdata(
                &ConflictingServiceEntryProtocolAnalyzer,
                &default,
                &["serviceentry-conflicting-protocol.yaml"]
            ),
            ["IST0177 ServiceEntry default/se-http", "IST0177 ServiceEntry default/se-https"]
        );
    }
}
