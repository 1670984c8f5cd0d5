//! paymesh's own `RateLimitPolicy` (`paymesh.io/v1alpha1`): per-tenant request rate limits
//! that a workload's inbound sidecar enforces, shaped like Istio's policies (`selector` or
//! `targetRefs`). docs/ratelimit.md is the user reference; k8s/crds/ratelimitpolicy.yaml the
//! CRD that lets a real cluster accept the same files.
//!
//! The tenant of a request comes from `tenantKey` (a header, `x-tenant-id` by default, or a
//! JWT claim); each limit entry names its tenants or is the `default` for all others.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use serde::Deserialize;

use crate::path::FieldPath;
use crate::resource::FieldError;
use crate::security::pattern::Pattern;
use crate::security::target::{AllowedTarget, PolicyTargetRef, Targeting, WorkloadScope};
use crate::security::{string_enum, validate_strict_header_name};
use crate::types::WorkloadSelector;
use crate::validate::Validate;

/// The header carrying the tenant when `tenantKey` is not given.
pub const DEFAULT_TENANT_HEADER: &str = "x-tenant-id";

/// The status of a rejected request when `denyStatus` is not given.
pub const DEFAULT_DENY_STATUS: u16 = 429;

/// A RateLimitPolicy targets the Services whose workloads enforce it.
const RATE_LIMIT_TARGETS: &[AllowedTarget] = &[AllowedTarget { group: "core", kind: "Service" }];

/// The `spec` of a RateLimitPolicy.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitPolicy {
    /// The workloads whose sidecars enforce the limits; none means the whole namespace.
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    /// Or: the Services whose workloads enforce the limits.
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetRef>,
    #[serde(default)]
    pub tenant_key: TenantKey,
    /// Only requests matching this are limited; all requests when absent.
    #[serde(default, rename = "match")]
    pub matches: Option<RequestMatch>,
    pub limits: Vec<TenantLimit>,
    /// The HTTP status of a rejected request.
    #[serde(default = "default_deny_status")]
    pub deny_status: u16,
}

fn default_deny_status() -> u16 {
    DEFAULT_DENY_STATUS
}

impl RateLimitPolicy {
    /// The workloads that enforce the policy.
    pub fn scope(&self) -> WorkloadScope<'_> {
        WorkloadScope::resolve(self.selector.as_ref(), None, &self.target_refs)
    }

    /// The limit for `tenant`: its own entry, else the default entry, else none (unlimited).
    pub fn limit_for(&self, tenant: &str) -> Option<&TenantLimit> {
        let own = self
            .limits
            .iter()
            .find(|l| matches!(&l.applies_to, LimitTarget::Tenants(t) if t.iter().any(|id| id == tenant)));
        own.or_else(|| self.limits.iter().find(|l| l.applies_to == LimitTarget::Default))
    }
}

/// Where the tenant of a request is read from.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum TenantKey {
    /// A request header.
    Header(String),
    /// A claim of the JWT that a RequestAuthentication verified.
    Claim(String),
}

impl Default for TenantKey {
    fn default() -> Self {
        TenantKey::Header(DEFAULT_TENANT_HEADER.to_owned())
    }
}

/// Which requests a policy limits: every listed part must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestMatch {
    /// Request paths (`/v1/payments`, `/v1/payments/*`); any path when empty.
    #[serde(default)]
    pub paths: Vec<Pattern>,
    /// HTTP methods; any method when empty.
    #[serde(default)]
    pub methods: Vec<Pattern>,
}

/// One limit: a token bucket per tenant holding `requests_per_unit + burst` tokens and
/// refilled at `requests_per_unit` tokens per `unit`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawTenantLimit")]
pub struct TenantLimit {
    pub applies_to: LimitTarget,
    pub requests_per_unit: u32,
    pub unit: Unit,
    /// Requests allowed above the rate in a burst.
    pub burst: u32,
}

impl TenantLimit {
    /// The time one token takes to refill.
    pub fn refill_interval(&self) -> Option<StdDuration> {
        (self.requests_per_unit > 0).then(|| self.unit.period() / self.requests_per_unit)
    }
}

/// Which tenants a limit is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitTarget {
    /// These tenants, each with its own bucket.
    Tenants(Vec<String>),
    /// Every tenant not named by another entry (and requests without a tenant), each with its
    /// own bucket.
    Default,
}

string_enum! {
    /// The period `requestsPerUnit` counts over.
    pub enum Unit {
        Second = "SECOND",
        Minute = "MINUTE",
        Hour = "HOUR",
    }
}

impl Unit {
    pub fn period(self) -> StdDuration {
        match self {
            Unit::Second => StdDuration::from_secs(1),
            Unit::Minute => StdDuration::from_secs(60),
            Unit::Hour => StdDuration::from_secs(3600),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTenantLimit {
    #[serde(default)]
    tenants: Option<Vec<String>>,
    #[serde(default)]
    default: bool,
    requests_per_unit: u32,
    unit: Unit,
    #[serde(default)]
    burst: u32,
}

impl TryFrom<RawTenantLimit> for TenantLimit {
    type Error = &'static str;

    fn try_from(raw: RawTenantLimit) -> Result<Self, Self::Error> {
        let applies_to = match (raw.tenants, raw.default) {
            (Some(_), true) => return Err("set either tenants or default: true, not both"),
            (Some(tenants), false) if tenants.is_empty() => {
                return Err("tenants must name at least one tenant");
            }
            (Some(tenants), false) => LimitTarget::Tenants(tenants),
            (None, true) => LimitTarget::Default,
            (None, false) => return Err("a limit needs tenants or default: true"),
        };
        Ok(Self { applies_to, requests_per_unit: raw.requests_per_unit, unit: raw.unit, burst: raw.burst })
    }
}

impl Validate for RateLimitPolicy {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        Targeting { selector: self.selector.as_ref(), target_ref: None, target_refs: &self.target_refs }
            .validate(RATE_LIMIT_TARGETS, at, errors);
        let key_at = at.key("tenantKey");
        match &self.tenant_key {
            TenantKey::Header(name) => validate_strict_header_name(name, &key_at.key("header"), errors),
            TenantKey::Claim(name) if name.is_empty() => {
                errors.push(FieldError::new(key_at.key("claim"), "claim name cannot be empty"));
            }
            TenantKey::Claim(_) => {}
        }
        if !(400..=599).contains(&self.deny_status) {
            errors.push(FieldError::new(at.key("denyStatus"), "denyStatus must be between 400 and 599"));
        }
        let limits_at = at.key("limits");
        if self.limits.is_empty() {
            errors.push(FieldError::new(limits_at.clone(), "limits must have at least one entry"));
        }
        let mut default_at: Option<usize> = None;
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, limit) in self.limits.iter().enumerate() {
            let here = limits_at.index(i);
            if limit.requests_per_unit == 0 {
                errors.push(FieldError::new(
                    here.key("requestsPerUnit"),
                    "requestsPerUnit must be greater than 0",
                ));
            }
            match &limit.applies_to {
                LimitTarget::Default => match default_at {
                    Some(first) => errors.push(FieldError::new(
                        here.key("default"),
                        format!("only one limit may be the default; limits[{first}] already is"),
                    )),
                    None => default_at = Some(i),
                },
                LimitTarget::Tenants(tenants) => {
                    for (j, tenant) in tenants.iter().enumerate() {
                        let tenant_at = here.key("tenants").index(j);
                        if tenant.is_empty() {
                            errors.push(FieldError::new(tenant_at, "tenant id cannot be empty"));
                        } else if let Some(first) = seen.insert(tenant, i) {
                            let message = if first == i {
                                format!("tenant {tenant:?} is listed twice")
                            } else {
                                format!("tenant {tenant:?} already has a limit in limits[{first}]")
                            };
                            errors.push(FieldError::new(tenant_at, message));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn decode(spec: serde_json::Value) -> Result<RateLimitPolicy, String> {
        crate::validate::testing::decode(spec)
    }

    fn errors(spec: serde_json::Value) -> Vec<String> {
        crate::validate::testing::errors::<RateLimitPolicy>(spec)
    }

    #[test]
    fn premium_tenants_get_their_own_limit_and_everyone_else_the_default() {
        let policy = decode(json!({
            "selector": {"matchLabels": {"app": "payment-service"}},
            "match": {"paths": ["/v1/payments*"], "methods": ["POST"]},
            "limits": [
                {"tenants": ["acme", "globex"], "requestsPerUnit": 600, "unit": "MINUTE", "burst": 100},
                {"default": true, "requestsPerUnit": 60, "unit": "MINUTE"},
            ],
        }))
        .expect("decodes");
        assert_eq!(policy.tenant_key, TenantKey::Header("x-tenant-id".into()));
        assert_eq!(policy.deny_status, 429);
        assert_eq!(policy.limit_for("acme").map(|l| (l.requests_per_unit, l.burst)), Some((600, 100)));
        assert_eq!(policy.limit_for("initech").map(|l| l.requests_per_unit), Some(60));
        assert_eq!(policy.limit_for("").map(|l| &l.applies_to), Some(&LimitTarget::Default));
        assert_eq!(policy.limits[0].refill_interval(), Some(StdDuration::from_millis(100)));
        let mut errors = Vec::new();
        policy.validate(&FieldPath::root().key("spec"), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn decoding_errors() {
        let limit = |extra: serde_json::Value| {
            let mut entry = json!({"requestsPerUnit": 1, "unit": "SECOND"});
            if let (Some(e), Some(x)) = (entry.as_object_mut(), extra.as_object()) {
                e.extend(x.clone());
            }
            decode(json!({"limits": [entry]}))
        };
        assert_eq!(limit(json!({})), Err("spec.limits[0]: a limit needs tenants or default: true".into()));
        assert_eq!(
            limit(json!({"tenants": ["a"], "default": true})),
            Err("spec.limits[0]: set either tenants or default: true, not both".into())
        );
        assert_eq!(
            limit(json!({"tenants": []})),
            Err("spec.limits[0]: tenants must name at least one tenant".into())
        );
        assert_eq!(
            limit(json!({"default": true, "unit": "DAY"})),
            Err(r#"spec.limits[0].unit: Unsupported value: "DAY": supported values: "SECOND", "MINUTE", "HOUR""#.into())
        );
        assert_eq!(
            limit(json!({"default": true, "burst": -1})),
            Err("spec.limits[0].burst: invalid value: integer `-1`, expected u32".into())
        );
        assert_eq!(
            decode(json!({"tenantKey": {"cookie": "t"}, "limits": []}))
                .map_err(|e| e.split(", expected").next().map(str::to_owned)),
            Err(Some("spec.tenantKey: unknown variant `cookie`".into()))
        );
    }

    #[test]
    fn validation_rules() {
        assert_eq!(
            errors(json!({
                "selector": {"matchLabels": {"app": "a"}},
                "targetRefs": [{"kind": "Deployment", "group": "apps", "name": "a"}],
                "tenantKey": {"header": "x tenant"},
                "denyStatus": 200,
                "limits": [
                    {"tenants": ["acme", "acme", ""], "requestsPerUnit": 0, "unit": "SECOND"},
                    {"default": true, "requestsPerUnit": 5, "unit": "SECOND"},
                    {"tenants": ["acme"], "requestsPerUnit": 5, "unit": "HOUR"},
                    {"default": true, "requestsPerUnit": 5, "unit": "SECOND"},
                ],
            })),
            [
                "spec: only one of targetRefs or selector can be set",
                "spec.targetRefs[0]: targetRef must be to one of [Service] but was apps/Deployment",
                "spec.tenantKey.header: header name x tenant is not a valid header name",
                "spec.denyStatus: denyStatus must be between 400 and 599",
                "spec.limits[0].requestsPerUnit: requestsPerUnit must be greater than 0",
                "spec.limits[0].tenants[1]: tenant \"acme\" is listed twice",
                "spec.limits[0].tenants[2]: tenant id cannot be empty",
                "spec.limits[2].tenants[0]: tenant \"acme\" already has a limit in limits[0]",
                "spec.limits[3].default: only one limit may be the default; limits[1] already is",
            ]
        );
        assert_eq!(errors(json!({"limits": []})), ["spec.limits: limits must have at least one entry"]);
    }
}
