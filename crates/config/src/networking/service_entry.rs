//! `ServiceEntry`: adds a service to the mesh's registry — an external API, a database
//! outside the cluster, or workloads (VMs) inside it — with its hosts, ports, how endpoints
//! are found (`resolution`) and where they are (`location`).

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use super::rules::{self, Protocol, UNIX_ADDRESS_PREFIX, push};
use super::{Host, Placement, WorkloadSelector, host};
use crate::path::FieldPath;
use crate::resource::FieldError;
use crate::validate::Validate;

/// The spec of a ServiceEntry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceEntry {
    #[serde(default)]
    pub hosts: Vec<Host>,
    /// Virtual IPs or CIDR blocks of the service.
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub location: Location,
    #[serde(default)]
    pub resolution: Resolution,
    #[serde(default)]
    pub endpoints: Vec<WorkloadEntry>,
    /// Selects mesh workloads (pods, WorkloadEntries) as the endpoints, instead of `endpoints`.
    pub workload_selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub export_to: Vec<String>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

/// A port of the service.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default)]
    pub number: u32,
    /// `HTTP`, `HTTPS`, `GRPC`, `TCP`, ...; empty means "detect".
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub name: String,
    /// Port on the endpoints, when it differs from `number`.
    #[serde(default)]
    pub target_port: u32,
}

/// Whether the service is part of the mesh (sidecars at the endpoints) or outside it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Outside the mesh: no sidecars, no mTLS to the endpoints.
    #[default]
    MeshExternal,
    /// Part of the mesh, e.g. VMs with sidecars.
    MeshInternal,
}

/// How the proxy finds the endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Forward to the address the client connected to.
    #[default]
    None,
    /// The addresses in `endpoints`.
    Static,
    /// Resolve the hosts (or endpoint addresses) by DNS, using every address.
    Dns,
    /// Resolve by DNS, using the first address only.
    DnsRoundRobin,
    DynamicDns,
}

impl Resolution {
    fn name(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Static => "STATIC",
            Self::Dns => "DNS",
            Self::DnsRoundRobin => "DNS_ROUND_ROBIN",
            Self::DynamicDns => "DYNAMIC_DNS",
        }
    }
}

/// An endpoint of the service (a `WorkloadEntry` inline).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadEntry {
    /// IP, host name, or `unix://` socket path.
    #[serde(default)]
    pub address: String,
    /// Port name to endpoint port.
    #[serde(default)]
    pub ports: BTreeMap<String, u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub network: String,
    #[serde(default)]
    pub locality: String,
    #[serde(default)]
    pub weight: u32,
    #[serde(default)]
    pub service_account: String,
}

impl Validate for ServiceEntry {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        if let Some(selector) = &self.workload_selector {
            selector.validate(&at.key("workloadSelector"), errors);
            if !self.endpoints.is_empty() {
                push(errors, at, "only one of WorkloadSelector or Endpoints is allowed in Service Entry");
            }
        }
        self.check_hosts(at, errors);
        let mut cidr = false;
        for (i, address) in self.addresses.iter().enumerate() {
            cidr |= address.contains('/');
            if let Err(e) = host::validate_ip_subnet(address) {
                push(errors, &at.key("addresses").index(i), e);
            }
        }
        if cidr && !matches!(self.resolution, Resolution::None | Resolution::Static) {
            push(
                errors,
                &at.key("addresses"),
                "CIDR addresses are allowed only for NONE/STATIC resolution types",
            );
        }
        let port_names = self.check_ports(at, errors);
        self.check_endpoints(&port_names, at, errors);
        // Plain TCP cannot tell several hosts apart (HTTP has the authority, TLS the SNI).
        if self.resolution != Resolution::None && self.hosts.len() > 1 {
            let opaque = self
                .ports
                .iter()
                .any(|p| Protocol::parse(&p.protocol).is_none_or(|p| !p.is_http() && !p.is_tls()));
            if opaque {
                push(errors, &at.key("ports"), "multiple hosts provided with non-HTTP, non-TLS ports");
            }
        }
    }
}

impl Placement for ServiceEntry {
    fn validate_placement(&self, _name: &str, namespace: &str, at: &FieldPath, errors: &mut Vec<FieldError>) {
        rules::check_export_to(namespace, &self.export_to, true, false, &at.key("exportTo"), errors);
    }
}

impl ServiceEntry {
    fn check_hosts(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        if self.hosts.is_empty() {
            push(errors, &at.key("hosts"), "service entry must have at least one host");
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let at = at.key("hosts").index(i);
            if h.as_str() == "*" {
                push(errors, &at, format!("invalid host {h}"));
            } else if let Err(e) = host::validate_wildcard_domain(h.as_str()) {
                push(errors, &at, e);
            }
        }
    }

    /// Unique names and numbers, valid protocols; returns the port names.
    fn check_ports(&self, at: &FieldPath, errors: &mut Vec<FieldError>) -> HashSet<&str> {
        let mut names = HashSet::new();
        let mut numbers = HashSet::new();
        for (i, port) in self.ports.iter().enumerate() {
            let at = at.key("ports").index(i);
            if !names.insert(port.name.as_str()) {
                push(
                    errors,
                    &at.key("name"),
                    format!("service entry port name {:?} already defined", port.name),
                );
            }
            if !numbers.insert(port.number) {
                push(
                    errors,
                    &at.key("number"),
                    format!("service entry port {} already defined", port.number),
                );
            }
            if port.target_port != 0 {
                rules::check_port(port.target_port, &at.key("targetPort"), errors);
            }
            rules::check_port_name(&port.name, &at.key("name"), errors);
            rules::check_protocol(&port.protocol, &at.key("protocol"), errors);
            rules::check_port(port.number, &at.key("number"), errors);
        }
        names
    }

    /// What `endpoints` may hold depends on the resolution.
    fn check_endpoints(&self, port_names: &HashSet<&str>, at: &FieldPath, errors: &mut Vec<FieldError>) {
        let endpoints = at.key("endpoints");
        match self.resolution {
            Resolution::None => {
                if !self.endpoints.is_empty() {
                    push(errors, &endpoints, "no endpoints should be provided for resolution type none");
                }
            }
            Resolution::Static => {
                for (i, endpoint) in self.endpoints.iter().enumerate() {
                    check_static_endpoint(endpoint, port_names, &endpoints.index(i), errors);
                }
            }
            Resolution::Dns | Resolution::DnsRoundRobin => {
                if self.endpoints.is_empty() {
                    for (i, h) in self.hosts.iter().enumerate() {
                        if host::validate_fqdn(h.as_str()).is_err() {
                            push(
                                errors,
                                &at.key("hosts").index(i),
                                format!(
                                    "hosts must be FQDN if no endpoints are provided for resolution mode {}",
                                    self.resolution.name()
                                ),
                            );
                        }
                    }
                }
                if self.resolution == Resolution::DnsRoundRobin && self.endpoints.len() > 1 {
                    push(
                        errors,
                        &endpoints,
                        format!(
                            "there must only be 0 or 1 endpoint for resolution mode {}",
                            self.resolution.name()
                        ),
                    );
                }
                for (i, endpoint) in self.endpoints.iter().enumerate() {
                    let at = endpoints.index(i);
                    if !host::is_ip(&endpoint.address) && host::validate_fqdn(&endpoint.address).is_err() {
                        push(
                            errors,
                            &at.key("address"),
                            format!(
                                "endpoint address {:?} is not a valid FQDN or an IP address",
                                endpoint.address
                            ),
                        );
                    }
                    rules::check_labels(&endpoint.labels, &at.key("labels"), errors);
                    check_endpoint_ports(endpoint, port_names, &at, errors);
                }
            }
            // Resolved per request by the (waypoint) proxy; Istio's webhook has no endpoint rules for it.
            Resolution::DynamicDns => {}
        }
    }
}

/// An endpoint of a STATIC ServiceEntry: an IP or a socket (`validateWorkloadEntry`).
fn check_static_endpoint(
    endpoint: &WorkloadEntry,
    port_names: &HashSet<&str>,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    let address = &endpoint.address;
    if address.is_empty() && endpoint.network.is_empty() {
        return push(errors, &at.key("address"), "address is required");
    }
    if let Some(path) = address.strip_prefix(UNIX_ADDRESS_PREFIX) {
        rules::check_unix_address(path, &at.key("address"), errors);
        if !endpoint.ports.is_empty() {
            push(errors, &at.key("ports"), format!("unix endpoint {address} must not include ports"));
        }
        if port_names.len() != 1 {
            push(errors, &at.key("address"), "exactly 1 service port required for unix endpoints");
        }
    } else if !address.is_empty() && !host::is_ip(address) {
        push(errors, &at.key("address"), format!("endpoint address {address:?} is not a valid IP address"));
    }
    check_endpoint_ports(endpoint, port_names, at, errors);
    rules::check_labels(&endpoint.labels, &at.key("labels"), errors);
}

fn check_endpoint_ports(
    endpoint: &WorkloadEntry,
    port_names: &HashSet<&str>,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    for (name, port) in &endpoint.ports {
        let at = at.key("ports").key(name.as_str());
        if !port_names.contains(name.as_str()) {
            push(errors, &at, format!("endpoint port {port} is not defined by the service entry"));
        }
        rules::check_port_name(name, &at, errors);
        rules::check_port(*port, &at, errors);
    }
}
