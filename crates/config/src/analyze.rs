//! `istioctl analyze` on files: analyzers that look across resources and report Istio's
//! messages (same codes, names, levels and texts).
//!
//! Each analyzer is a unit struct implementing [`Analyzer`]; [`all`] lists them under
//! Istio's names (`gateway.ConflictingGatewayAnalyzer`) so `--analyzer` selects them as
//! istioctl does. An analyzer reads the [`Context`] (the [`Store`], the mesh config) and
//! pushes [`Message`]s into a [`Report`], each attached to the resource — and when it can,
//! the field — it is about, so the output points at file:line.

use std::fmt;

use serde::Serialize;

use crate::path::FieldPath;
use crate::resource::Resource;
use crate::source::Location;
use crate::store::Store;

pub mod annotations;
pub mod auth;
pub mod authn;
pub mod conditions;
pub mod deployment;
pub mod deprecation;
pub mod destinationrule;
pub mod envoyfilter;
pub mod externalcontrolplane;
pub mod gateway;
pub mod injection;
pub mod k8sgateway;
pub mod kube;
pub mod mesh;
pub mod meshnetworks;
pub mod messages;
pub mod output;
pub mod schema;
pub mod service;
pub mod serviceentry;
pub mod sidecar;
pub mod telemetry;
pub mod virtualservice;
pub mod webhook;

pub use mesh::MeshConfig;

/// How serious a message is; lower is worse, as in istioctl.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Level {
    Error,
    Warning,
    Info,
}

impl Level {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warning" | "warn" => Some(Level::Warning),
            "info" => Some(Level::Info),
            _ => None,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One kind of message in Istio's catalogue.
#[derive(Debug, PartialEq, Eq)]
pub struct MessageType {
    pub code: &'static str,
    pub name: &'static str,
    pub level: Level,
    pub description: &'static str,
}

/// A message about one resource (or about the whole input when `origin` is `None`).
#[derive(Clone, Debug)]
pub struct Message {
    pub kind: &'static MessageType,
    pub text: String,
    pub origin: Option<Origin>,
}

/// The resource a message is about and the place in its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// `Kind namespace/name` (or `Kind name` when the file gives no namespace).
    pub resource: String,
    pub location: Option<Location>,
}

impl Message {
    pub fn new(kind: &'static MessageType, text: String) -> Self {
        Self { kind, text, origin: None }
    }
}

/// Formats a list the way Go's `%v` prints a slice: `[a b c]`.
pub struct GoList<'a, T>(pub &'a [T]);

impl<T: fmt::Display> fmt::Display for GoList<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{item}")?;
        }
        f.write_str("]")
    }
}

/// Formats a value the way Go's `%q` quotes a string.
pub struct GoQuote<T>(pub T);

impl<T: fmt::Display> fmt::Display for GoQuote<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.to_string())
    }
}

/// What analyzers read.
pub struct Context<'a> {
    pub store: &'a Store,
    pub mesh: &'a MeshConfig,
    /// Where the control plane lives (`istio-system`).
    pub istio_namespace: &'a str,
}

/// Where analyzers put their findings.
#[derive(Debug, Default)]
pub struct Report {
    messages: Vec<Message>,
}

impl Report {
    /// Reports `message` about `resource`, at the line of `field` when given.
    pub fn add(&mut self, resource: &Resource, field: Option<&FieldPath>, mut message: Message) {
        let location = match field {
            Some(path) => resource.origin.field(path),
            None => resource.origin.location.clone(),
        };
        message.origin = Some(Origin { resource: resource.friendly_name(), location: Some(location) });
        self.messages.push(message);
    }

    pub fn into_messages(self) -> Vec<Message> {
        self.messages
    }
}

/// A cross-resource check, named as istioctl names it.
pub trait Analyzer: Sync {
    /// Istio's analyzer name, e.g. `virtualservice.DestinationHostAnalyzer`.
    fn name(&self) -> &'static str;
    fn analyze(&self, ctx: &Context<'_>, report: &mut Report);
}

/// Every analyzer paymesh implements.
pub fn all() -> Vec<&'static dyn Analyzer> {
    let mut all: Vec<&'static dyn Analyzer> = Vec::new();
    all.extend(schema::KINDS.iter().map(|a| a as &dyn Analyzer));
    all.extend([
        &annotations::K8sAnalyzer as &dyn Analyzer,
        &annotations::AlphaAnalyzer,
        &conditions::ConditionAnalyzer,
        &deployment::MultiServiceAnalyzer,
        &deployment::ApplicationUidAnalyzer,
        &envoyfilter::EnvoyPatchAnalyzer,
        &externalcontrolplane::ExternalControlPlaneAnalyzer,
        &gateway::IngressGatewayPortAnalyzer,
        &gateway::ConflictingGatewayAnalyzer,
        &gateway::SecretAnalyzer,
        &gateway::CertificateAnalyzer,
        &virtualservice::GatewayAnalyzer,
        &virtualservice::ConflictingMeshGatewayHostsAnalyzer,
        &virtualservice::DestinationHostAnalyzer,
        &virtualservice::DestinationRuleAnalyzer,
        &virtualservice::JwtClaimRouteAnalyzer,
        &injection::InjectionAnalyzer,
        &injection::ImageAnalyzer,
        &injection::ImageAutoAnalyzer,
        &k8sgateway::SelectorAnalyzer,
        &k8sgateway::CrdVersionAnalyzer,
        &meshnetworks::MeshNetworksAnalyzer,
        &service::PortNameAnalyzer,
        &telemetry::ProviderAnalyzer,
        &telemetry::SelectorAnalyzer,
        &telemetry::DefaultSelectorAnalyzer,
        &telemetry::LightstepAnalyzer,
        &webhook::WebhookAnalyzer,
    ]);
    all.extend([
        &auth::AuthorizationPoliciesAnalyzer as &dyn Analyzer,
        &authn::BlockedCIDRsAnalyzer,
        &deprecation::DeprecationAnalyzer,
        &destinationrule::CaCertificateAnalyzer,
        &destinationrule::SubsetSelectPodAnalyzer,
        &serviceentry::ProtocolAddressesAnalyzer,
        &serviceentry::ConflictingServiceEntryProtocolAnalyzer,
        &sidecar::SelectorAnalyzer,
    ]);
    // paymesh's own, with `PM` codes: what Istio accepts without a word.
    all.extend([&virtualservice::DelegateAnalyzer as &dyn Analyzer, &virtualservice::RetryTimeoutAnalyzer]);
    all
}

/// Runs `analyzers` over `ctx` and returns their messages, worst first, then by origin;
/// a message two analyzers both report (same code, resource and text) is kept once, as
/// istioctl's `SortedDedupedCopy` does.
pub fn run(ctx: &Context<'_>, analyzers: &[&dyn Analyzer]) -> Vec<Message> {
    let mut report = Report::default();
    for analyzer in analyzers {
        analyzer.analyze(ctx, &mut report);
    }
    let mut messages = report.into_messages();
    // Borrowed keys: sorting thousands of messages must not clone their strings per comparison.
    fn key(m: &Message) -> (Level, Option<&str>, &str, &str) {
        (m.kind.level, m.origin.as_ref().map(|o| o.resource.as_str()), m.kind.code, &m.text)
    }
    messages.sort_by(|a, b| key(a).cmp(&key(b)));
    messages.dedup_by(|a, b| key(a) == key(b));
    messages
}

/// Splits load errors: a resource that does not fit its kind's schema is istioctl's IST0106
/// at the field's line (a message like the analyzers'); every other error means a file or
/// document could not be read.
pub fn schema_messages(
    errors: impl IntoIterator<Item = crate::load::LoadError>,
) -> (Vec<Message>, Vec<crate::load::LoadError>) {
    let mut found = Vec::new();
    let mut unreadable = Vec::new();
    for error in errors {
        match (&error.problem, &error.resource) {
            (crate::load::Problem::Schema(field), Some(resource)) => {
                let mut message = messages::schema_validation_error(field);
                message.origin =
                    Some(Origin { resource: resource.clone(), location: Some(error.location.clone()) });
                found.push(message);
            }
            _ => unreadable.push(error),
        }
    }
    (found, unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports every Namespace as not injected, at its `metadata.name` line.
    struct EveryNamespace;

    impl Analyzer for EveryNamespace {
        fn name(&self) -> &'static str {
            "test.EveryNamespace"
        }

        fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
            for ns in ctx.store.of_kind("Namespace") {
                let at = FieldPath::parse("metadata.name");
                report.add(ns, Some(&at), messages::namespace_not_injected(&ns.meta.name, &ns.meta.name));
            }
        }
    }

    #[test]
    fn a_message_reported_twice_is_printed_once_with_its_line() {
        let resources = kube::testing::resources("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: b\n");
        let (store, _) = Store::new(resources);
        let mesh = MeshConfig::default();
        let ctx = Context { store: &store, mesh: &mesh, istio_namespace: "istio-system" };
        let messages = run(&ctx, &[&EveryNamespace, &EveryNamespace]);
        assert_eq!(
            output::log(&messages),
            "Info [IST0102] (Namespace b test.yaml:4) The namespace is not enabled for Istio injection. \
             Run 'kubectl label namespace b istio-injection=enabled' to enable it, or 'kubectl label \
             namespace b istio-injection=disabled' to explicitly mark it as not needing injection.\n"
        );
    }
}
