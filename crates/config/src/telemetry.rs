//! Istio's `Telemetry` (`telemetry.istio.io`): per mesh, namespace or workload, which
//! providers receive traces, metrics and access logs, the trace sampling rate and custom span
//! tags, metric overrides (disable a metric, add, change or remove its tags) and access-log
//! filters.
//!
//! Decoding turns the API's oneOfs into enums (a custom tag's source, a metric selector, a
//! tag override's operation) with the CRD's CEL messages; validation applies the rest of
//! Istio's `ValidateTelemetry`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::path::FieldPath;
use crate::resource::FieldError;
use crate::security::target::{ISTIO_POLICY_TARGETS, PolicyTargetRef, Targeting, WorkloadScope};
use crate::security::{deserialize_cel_duration, string_enum, validate_duration};
use crate::types::{Duration, WorkloadSelector};
use crate::validate::Validate;

/// The `spec` of a Telemetry resource.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Telemetry {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<PolicyTargetRef>,
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetRef>,
    #[serde(default)]
    pub tracing: Vec<Tracing>,
    #[serde(default)]
    pub metrics: Vec<Metrics>,
    #[serde(default)]
    pub access_logging: Vec<AccessLogging>,
}

impl Telemetry {
    /// The workloads the resource applies to.
    pub fn scope(&self) -> WorkloadScope<'_> {
        WorkloadScope::resolve(self.selector.as_ref(), self.target_ref.as_ref(), &self.target_refs)
    }
}

/// A provider named in the mesh config's `extensionProviders` (or a built-in one).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderRef {
    pub name: String,
}

/// Which side of the traffic a setting is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeSelector {
    #[serde(default)]
    pub mode: WorkloadMode,
}

string_enum! {
    /// The side of a connection a workload plays.
    #[derive(Default)]
    pub enum WorkloadMode {
        #[default]
        ClientAndServer = "CLIENT_AND_SERVER",
        Client = "CLIENT",
        Server = "SERVER",
    }
}

/// Tracing settings.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tracing {
    #[serde(default, rename = "match")]
    pub matches: Option<ModeSelector>,
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    /// Extra span tags, by tag name.
    #[serde(default)]
    pub custom_tags: BTreeMap<String, CustomTag>,
    #[serde(default)]
    pub disable_span_reporting: Option<bool>,
    /// Percentage of requests sampled, 0 to 100.
    #[serde(default)]
    pub random_sampling_percentage: Option<f64>,
    #[serde(default)]
    pub use_request_id_for_trace_sampling: Option<bool>,
    #[serde(default)]
    pub enable_istio_tags: Option<bool>,
    #[serde(default)]
    pub disable_context_propagation: Option<bool>,
}

/// Where a custom span tag's value comes from.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawCustomTag")]
pub enum CustomTag {
    Literal {
        value: String,
    },
    Environment {
        name: String,
        default_value: String,
    },
    Header {
        name: String,
        default_value: String,
    },
    /// An access-log style format string (`%REQ(x-tenant-id)%`).
    Formatter {
        value: String,
    },
    /// `{}`: accepted by Istio, and ignored.
    Unset,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustomTag {
    #[serde(default)]
    literal: Option<ValueTag>,
    #[serde(default)]
    environment: Option<NamedTag>,
    #[serde(default)]
    header: Option<NamedTag>,
    #[serde(default)]
    formatter: Option<ValueTag>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValueTag {
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NamedTag {
    name: String,
    #[serde(default)]
    default_value: String,
}

impl TryFrom<RawCustomTag> for CustomTag {
    type Error = &'static str;

    fn try_from(raw: RawCustomTag) -> Result<Self, Self::Error> {
        Ok(match (raw.literal, raw.environment, raw.header, raw.formatter) {
            (None, None, None, None) => CustomTag::Unset,
            (Some(t), None, None, None) => CustomTag::Literal { value: t.value },
            (None, Some(t), None, None) => {
                CustomTag::Environment { name: t.name, default_value: t.default_value }
            }
            (None, None, Some(t), None) => CustomTag::Header { name: t.name, default_value: t.default_value },
            (None, None, None, Some(t)) => CustomTag::Formatter { value: t.value },
            _ => return Err("only one of literal, environment, header or formatter can be set"),
        })
    }
}

/// Metrics settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metrics {
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    #[serde(default)]
    pub overrides: Vec<MetricsOverrides>,
    /// How often metrics are reported (TCP metrics and the like).
    #[serde(default, deserialize_with = "deserialize_cel_duration")]
    pub reporting_interval: Option<Duration>,
}

/// Changes to the metrics a selector picks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricsOverrides {
    #[serde(default, rename = "match")]
    pub matches: Option<MetricSelector>,
    #[serde(default)]
    pub disabled: Option<bool>,
    /// Tag changes, by tag name.
    #[serde(default)]
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

/// Which metrics an override changes (all standard metrics when unset).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawMetricSelector")]
pub struct MetricSelector {
    pub metric: MetricMatch,
    pub mode: WorkloadMode,
}

/// A standard Istio metric or a custom one by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricMatch {
    Standard(IstioMetric),
    Custom(String),
}

string_enum! {
    /// Istio's standard metrics.
    pub enum IstioMetric {
        AllMetrics = "ALL_METRICS",
        RequestCount = "REQUEST_COUNT",
        RequestDuration = "REQUEST_DURATION",
        RequestSize = "REQUEST_SIZE",
        ResponseSize = "RESPONSE_SIZE",
        TcpOpenedConnections = "TCP_OPENED_CONNECTIONS",
        TcpClosedConnections = "TCP_CLOSED_CONNECTIONS",
        TcpSentBytes = "TCP_SENT_BYTES",
        TcpReceivedBytes = "TCP_RECEIVED_BYTES",
        GrpcRequestMessages = "GRPC_REQUEST_MESSAGES",
        GrpcResponseMessages = "GRPC_RESPONSE_MESSAGES",
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMetricSelector {
    #[serde(default)]
    metric: Option<IstioMetric>,
    #[serde(default)]
    custom_metric: Option<String>,
    #[serde(default)]
    mode: WorkloadMode,
}

impl TryFrom<RawMetricSelector> for MetricSelector {
    type Error = &'static str;

    fn try_from(raw: RawMetricSelector) -> Result<Self, Self::Error> {
        let metric = match (raw.metric, raw.custom_metric) {
            (Some(_), Some(_)) => return Err("only one of metric or customMetric can be set"),
            (Some(standard), None) => MetricMatch::Standard(standard),
            (None, Some(custom)) => MetricMatch::Custom(custom),
            (None, None) => MetricMatch::Standard(IstioMetric::AllMetrics),
        };
        Ok(Self { metric, mode: raw.mode })
    }
}

/// A change to one tag: set it from an expression, or remove it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawTagOverride")]
pub enum TagOverride {
    /// Add or replace the tag with the value of this CEL expression.
    Upsert(String),
    Remove,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTagOverride {
    #[serde(default)]
    operation: Option<TagOperation>,
    #[serde(default)]
    value: Option<String>,
}

string_enum! {
    enum TagOperation {
        Upsert = "UPSERT",
        Remove = "REMOVE",
    }
}

impl TryFrom<RawTagOverride> for TagOverride {
    type Error = &'static str;

    /// The CRD's two CEL rules; an unset operation is UPSERT, as Istio's webhook reads it.
    fn try_from(raw: RawTagOverride) -> Result<Self, Self::Error> {
        match (raw.operation, raw.value) {
            (Some(TagOperation::Remove), None) => Ok(TagOverride::Remove),
            (Some(TagOperation::Remove), Some(_)) => Err("value must not be set when operation is REMOVE"),
            (_, Some(value)) if !value.is_empty() => Ok(TagOverride::Upsert(value)),
            _ => Err("value must be set when operation is UPSERT"),
        }
    }
}

/// Access-logging settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessLogging {
    #[serde(default, rename = "match")]
    pub matches: Option<ModeSelector>,
    #[serde(default)]
    pub providers: Vec<ProviderRef>,
    #[serde(default)]
    pub disabled: Option<bool>,
    /// Only requests for which this CEL expression holds are logged.
    #[serde(default)]
    pub filter: Option<AccessLogFilter>,
}

/// An access-log filter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFilter {
    #[serde(default)]
    pub expression: String,
}

impl Validate for Telemetry {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        Targeting {
            selector: self.selector.as_ref(),
            target_ref: self.target_ref.as_ref(),
            target_refs: &self.target_refs,
        }
        .validate(ISTIO_POLICY_TARGETS, at, errors);
        for (i, tracing) in self.tracing.iter().enumerate() {
            tracing.validate(&at.key("tracing").index(i), errors);
        }
        for (i, metrics) in self.metrics.iter().enumerate() {
            metrics.validate(&at.key("metrics").index(i), errors);
        }
        for (i, logging) in self.access_logging.iter().enumerate() {
            let here = at.key("accessLogging").index(i);
            validate_providers(&logging.providers, &here, errors);
            if logging.filter.as_ref().is_some_and(|f| f.expression.trim().is_empty()) {
                errors.push(FieldError::new(
                    here.key("filter").key("expression"),
                    "must be a valid CEL expression, the expression is empty",
                ));
            }
        }
    }
}

impl Validate for Tracing {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        validate_providers(&self.providers, at, errors);
        if self.random_sampling_percentage.is_some_and(|p| !(0.0..=100.0).contains(&p)) {
            errors.push(FieldError::new(
                at.key("randomSamplingPercentage"),
                "randomSamplingPercentage must be in range [0.0, 100.0]",
            ));
        }
        for (name, tag) in &self.custom_tags {
            let here = at.key("customTags").key(name.clone());
            if name.is_empty() {
                errors.push(FieldError::new(here.clone(), "tag name may not be empty"));
            }
            let empty = match tag {
                CustomTag::Literal { value } if value.is_empty() => {
                    Some("literal tag value may not be empty")
                }
                CustomTag::Header { name, .. } if name.is_empty() => Some("header tag name may not be empty"),
                CustomTag::Environment { name, .. } if name.is_empty() => {
                    Some("environment tag name may not be empty")
                }
                CustomTag::Formatter { value } if value.is_empty() => {
                    Some("formatter tag value may not be empty")
                }
                _ => None,
            };
            if let Some(message) = empty {
                errors.push(FieldError::new(here, message));
            }
        }
    }
}

impl Validate for Metrics {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        validate_providers(&self.providers, at, errors);
        if let Some(interval) = self.reporting_interval {
            validate_duration(interval, &at.key("reportingInterval"), errors);
        }
        for (i, o) in self.overrides.iter().enumerate() {
            if let Some(MetricSelector { metric: MetricMatch::Custom(name), .. }) = &o.matches {
                if name.is_empty() {
                    errors.push(FieldError::new(
                        at.key("overrides").index(i).key("match").key("customMetric"),
                        "customMetric may not be empty",
                    ));
                }
            }
        }
    }
}

fn validate_providers(providers: &[ProviderRef], at: &FieldPath, errors: &mut Vec<FieldError>) {
    for (i, provider) in providers.iter().enumerate() {
        if provider.name.is_empty() {
            errors.push(FieldError::new(
                at.key("providers").index(i).key("name"),
                "providers.name may not be empty",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn decode(spec: serde_json::Value) -> Result<Telemetry, String> {
        crate::validate::testing::decode(spec)
    }

    fn errors(spec: serde_json::Value) -> Vec<String> {
        crate::validate::testing::errors::<Telemetry>(spec)
    }

    #[test]
    fn decodes_the_oneofs_into_enums() {
        let t = decode(json!({
            "tracing": [{"providers": [{"name": "otlp"}], "randomSamplingPercentage": 10.0,
                         "customTags": {"tenant": {"header": {"name": "x-tenant-id", "defaultValue": "none"}}, "empty": {}}}],
            "metrics": [{"overrides": [
                {"match": {"metric": "REQUEST_COUNT", "mode": "SERVER"}, "tagOverrides": {"tenant": {"value": "request.headers['x-tenant-id']"}}},
                {"match": {"customMetric": "payments_total"}, "tagOverrides": {"request_protocol": {"operation": "REMOVE"}}},
                {"disabled": true},
            ]}],
            "accessLogging": [{"providers": [{"name": "envoy"}], "filter": {"expression": "response.code >= 400"}}],
        }))
        .expect("decodes");
        assert_eq!(
            t.tracing[0].custom_tags["tenant"],
            CustomTag::Header { name: "x-tenant-id".into(), default_value: "none".into() }
        );
        assert_eq!(t.tracing[0].custom_tags["empty"], CustomTag::Unset);
        let overrides = &t.metrics[0].overrides;
        assert_eq!(
            overrides[0].matches,
            Some(MetricSelector {
                metric: MetricMatch::Standard(IstioMetric::RequestCount),
                mode: WorkloadMode::Server
            })
        );
        assert_eq!(
            overrides[0].tag_overrides["tenant"],
            TagOverride::Upsert("request.headers['x-tenant-id']".into())
        );
        assert_eq!(overrides[1].tag_overrides["request_protocol"], TagOverride::Remove);
        assert_eq!(
            overrides[1].matches.as_ref().map(|m| &m.metric),
            Some(&MetricMatch::Custom("payments_total".into()))
        );
        assert_eq!(t.scope(), WorkloadScope::Namespace);
    }

    #[test]
    fn decoding_applies_the_cel_rules() {
        let cases = [
            (
                json!({"metrics": [{"overrides": [{"tagOverrides": {"foo": {"operation": "UPSERT"}}}]}]}),
                "spec.metrics[0].overrides[0].tagOverrides.foo: value must be set when operation is UPSERT",
            ),
            (
                json!({"metrics": [{"overrides": [{"tagOverrides": {"foo": {"operation": "REMOVE", "value": "oops"}}}]}]}),
                "spec.metrics[0].overrides[0].tagOverrides.foo: value must not be set when operation is REMOVE",
            ),
            (
                json!({"metrics": [{"overrides": [{"match": {"metric": "REQUEST_COUNT", "customMetric": "x"}}]}]}),
                "spec.metrics[0].overrides[0].match: only one of metric or customMetric can be set",
            ),
            (
                json!({"metrics": [{"reportingInterval": "soon"}]}),
                "spec.metrics[0].reportingInterval: must be a valid duration greater than 1ms: invalid duration \"soon\": expected a number (expected e.g. \"500ms\", \"1s\", \"1m30s\", \"1h\")",
            ),
            (
                json!({"tracing": [{"customTags": {"t": {"literal": {"value": "a"}, "header": {"name": "b"}}}}]}),
                "spec.tracing[0].customTags.t: only one of literal, environment, header or formatter can be set",
            ),
            (
                json!({"accessLogging": [{"match": {"mode": "BOTH"}}]}),
                "spec.accessLogging[0].match.mode: Unsupported value: \"BOTH\": supported values: \"CLIENT_AND_SERVER\", \"CLIENT\", \"SERVER\"",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(decode(spec), Err(want.to_owned()));
        }
    }

    #[test]
    fn webhook_rules() {
        assert_eq!(
            errors(json!({
                "tracing": [{"providers": [{"name": ""}], "randomSamplingPercentage": 100.5,
                             "customTags": {"a": {"literal": {"value": ""}}}}],
                "metrics": [{"reportingInterval": "0s", "overrides": [{"match": {"customMetric": ""}}]}],
                "accessLogging": [{"filter": {"expression": " "}}],
            })),
            [
                "spec.tracing[0].providers[0].name: providers.name may not be empty",
                "spec.tracing[0].randomSamplingPercentage: randomSamplingPercentage must be in range [0.0, 100.0]",
                "spec.tracing[0].customTags.a: literal tag value may not be empty",
                "spec.metrics[0].reportingInterval: must be a valid duration greater than 1ms (got 0s)",
                "spec.metrics[0].overrides[0].match.customMetric: customMetric may not be empty",
                "spec.accessLogging[0].filter.expression: must be a valid CEL expression, the expression is empty",
            ]
        );
    }
}
