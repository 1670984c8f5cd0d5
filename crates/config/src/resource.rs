//! A loaded resource: its identity (apiVersion, kind, namespace, name), its typed spec and
//! where it came from.
//!
//! Typed decoding lives in [`Spec::decode`]: one arm per kind paymesh understands. A kind
//! that Kubernetes or Istio defines but paymesh does not type is kept as [`Spec::Other`] so
//! the analyzers can still look at it; a kind in an Istio group that Istio does not define
//! is an error.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::networking::{self, DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService};
use crate::path::FieldPath;
use crate::ratelimit::RateLimitPolicy;
use crate::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication, decode_spec};
use crate::source::Location;
use crate::telemetry::Telemetry;
use crate::yaml::Node;

/// The namespace a resource without `metadata.namespace` lands in, as with `kubectl apply`.
pub const DEFAULT_NAMESPACE: &str = "default";

/// `apiVersion` split into group and version (`networking.istio.io/v1` → group, version).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ApiVersion {
    pub group: String,
    pub version: String,
}

impl ApiVersion {
    pub fn parse(s: &str) -> Self {
        match s.rsplit_once('/') {
            Some((group, version)) => Self { group: group.to_owned(), version: version.to_owned() },
            None => Self { group: String::new(), version: s.to_owned() },
        }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.version)
        } else {
            write!(f, "{}/{}", self.group, self.version)
        }
    }
}

/// The part of `metadata` every resource has and every message needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    pub name: String,
    /// As written; `None` means the default namespace (see [`Resource::namespace`]).
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Where a resource came from: its document's first line and its tree, to find field lines.
#[derive(Clone, Debug)]
pub struct Origin {
    pub location: Location,
    pub tree: Arc<Node>,
}

impl Origin {
    /// The location of a field inside this resource (the document start when unknown).
    pub fn field(&self, path: &FieldPath) -> Location {
        Location { line: self.tree.line_of(path), ..self.location.clone() }
    }
}

/// The typed content of a resource, one variant per kind paymesh understands.
#[derive(Clone, Debug)]
pub enum Spec {
    Namespace(Box<Namespace>),
    ServiceAccount(Box<ServiceAccount>),
    Service(Box<Service>),
    Deployment(Box<Deployment>),
    Pod(Box<Pod>),
    PeerAuthentication(Box<PeerAuthentication>),
    AuthorizationPolicy(Box<AuthorizationPolicy>),
    RequestAuthentication(Box<RequestAuthentication>),
    Telemetry(Box<Telemetry>),
    RateLimitPolicy(Box<RateLimitPolicy>),
    VirtualService(Box<VirtualService>),
    DestinationRule(Box<DestinationRule>),
    Gateway(Box<Gateway>),
    ServiceEntry(Box<ServiceEntry>),
    Sidecar(Box<Sidecar>),
    /// A kind paymesh keeps for the analyzers but does not type.
    Other,
}

/// A typed decoding failure: the field and what was wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_root() { String::new() } else { format!("{path}: ") })]
pub struct FieldError {
    pub path: FieldPath,
    pub message: String,
}

impl FieldError {
    pub fn new(path: FieldPath, message: impl Into<String>) -> Self {
        Self { path, message: message.into() }
    }
}

/// What [`Spec::decode`] makes of a document's kind.
pub enum KindSupport {
    Typed(Spec),
    Untyped,
    Unknown,
}

impl Spec {
    /// Decodes the whole document `doc` of kind `kind` into its typed form.
    pub fn decode(api: &ApiVersion, kind: &str, doc: &Value) -> Result<KindSupport, FieldError> {
        let net = networking::VERSIONS.contains(&api.version.as_str());
        let typed = match (api.group.as_str(), kind) {
            ("", "Namespace") => Spec::Namespace(decode_object(doc)?),
            ("", "ServiceAccount") => Spec::ServiceAccount(decode_object(doc)?),
            ("", "Service") => Spec::Service(decode_object(doc)?),
            ("", "Pod") => Spec::Pod(decode_object(doc)?),
            ("apps", "Deployment") => Spec::Deployment(decode_object(doc)?),
            ("security.istio.io", "PeerAuthentication")
                if matches!(api.version.as_str(), "v1" | "v1beta1") =>
            {
                Spec::PeerAuthentication(decode_spec(doc)?)
            }
            ("security.istio.io", "AuthorizationPolicy")
                if matches!(api.version.as_str(), "v1" | "v1beta1") =>
            {
                Spec::AuthorizationPolicy(decode_spec(doc)?)
            }
            ("security.istio.io", "RequestAuthentication")
                if matches!(api.version.as_str(), "v1" | "v1beta1") =>
            {
                Spec::RequestAuthentication(decode_spec(doc)?)
            }
            ("telemetry.istio.io", "Telemetry") if matches!(api.version.as_str(), "v1" | "v1alpha1") => {
                Spec::Telemetry(decode_spec(doc)?)
            }
            ("paymesh.io", "RateLimitPolicy") if api.version == "v1alpha1" => {
                Spec::RateLimitPolicy(decode_spec(doc)?)
            }
            (networking::GROUP, "VirtualService") if net => {
                Spec::VirtualService(networking::decode_spec(doc)?)
            }
            (networking::GROUP, "DestinationRule") if net => {
                Spec::DestinationRule(networking::decode_spec(doc)?)
            }
            (networking::GROUP, "Gateway") if net => Spec::Gateway(networking::decode_spec(doc)?),
            (networking::GROUP, "ServiceEntry") if net => Spec::ServiceEntry(networking::decode_spec(doc)?),
            (networking::GROUP, "Sidecar") if net => Spec::Sidecar(networking::decode_spec(doc)?),
            (group, kind) if group.ends_with("istio.io") || group == "paymesh.io" => {
                return Ok(if ISTIO_UNTYPED_KINDS.contains(&kind) {
                    KindSupport::Untyped
                } else {
                    KindSupport::Unknown
                });
            }
            _ => return Ok(KindSupport::Untyped),
        };
        Ok(KindSupport::Typed(typed))
    }

    /// The spec when this is a PeerAuthentication.
    pub fn peer_authentication(&self) -> Option<&PeerAuthentication> {
        if let Spec::PeerAuthentication(spec) = self { Some(spec) } else { None }
    }

    /// The spec when this is an AuthorizationPolicy.
    pub fn authorization_policy(&self) -> Option<&AuthorizationPolicy> {
        if let Spec::AuthorizationPolicy(spec) = self { Some(spec) } else { None }
    }

    /// The spec when this is a RequestAuthentication.
    pub fn request_authentication(&self) -> Option<&RequestAuthentication> {
        if let Spec::RequestAuthentication(spec) = self { Some(spec) } else { None }
    }

    /// The spec when this is a Telemetry.
    pub fn telemetry(&self) -> Option<&Telemetry> {
        if let Spec::Telemetry(spec) = self { Some(spec) } else { None }
    }

    /// The spec when this is a RateLimitPolicy.
    pub fn rate_limit_policy(&self) -> Option<&RateLimitPolicy> {
        if let Spec::RateLimitPolicy(spec) = self { Some(spec) } else { None }
    }

    pub fn virtual_service(&self) -> Option<&VirtualService> {
        if let Self::VirtualService(s) = self { Some(s) } else { None }
    }

    pub fn destination_rule(&self) -> Option<&DestinationRule> {
        if let Self::DestinationRule(s) = self { Some(s) } else { None }
    }

    pub fn gateway(&self) -> Option<&Gateway> {
        if let Self::Gateway(s) = self { Some(s) } else { None }
    }

    pub fn service_entry(&self) -> Option<&ServiceEntry> {
        if let Self::ServiceEntry(s) = self { Some(s) } else { None }
    }

    pub fn sidecar(&self) -> Option<&Sidecar> {
        if let Self::Sidecar(s) = self { Some(s) } else { None }
    }
}

/// Istio kinds that paymesh accepts and keeps without a typed model.
const ISTIO_UNTYPED_KINDS: &[&str] = &[
    "EnvoyFilter",
    "WorkloadEntry",
    "WorkloadGroup",
    "ProxyConfig",
    "WasmPlugin",
    "TrafficExtension",
    "IstioOperator",
    "MeshConfig",
];

/// Deserializes a value, reporting the path of the first offending field.
pub fn decode_value<T: DeserializeOwned>(value: &Value, base: &FieldPath) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path = base.clone();
        for segment in FieldPath::from(e.path()).segments() {
            path = match segment {
                crate::path::Segment::Key(k) => path.key(k.clone()),
                crate::path::Segment::Index(i) => path.index(*i),
            };
        }
        FieldError::new(path, e.into_inner().to_string())
    })
}

fn decode_object<T: DeserializeOwned>(doc: &Value) -> Result<Box<T>, FieldError> {
    decode_value(doc, &FieldPath::root()).map(Box::new)
}

/// One resource read from a file.
#[derive(Clone, Debug)]
pub struct Resource {
    pub api_version: ApiVersion,
    pub kind: String,
    pub meta: Metadata,
    pub spec: Spec,
    /// The whole document as read, for analyzers that look past the typed model.
    pub raw: Value,
    pub origin: Origin,
}

impl Resource {
    /// The namespace the resource lives in (`default` when the file does not say).
    pub fn namespace(&self) -> &str {
        self.meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }

    /// `Kind namespace/name`, or `Kind name` when the file gives no namespace, as istioctl prints it.
    pub fn friendly_name(&self) -> String {
        match &self.meta.namespace {
            Some(ns) => format!("{} {}/{}", self.kind, ns, self.meta.name),
            None => format!("{} {}", self.kind, self.meta.name),
        }
    }

    /// The `spec` object of the raw document (`Null` when absent).
    pub fn raw_spec(&self) -> &Value {
        self.raw.get("spec").unwrap_or(&Value::Null)
    }
}
