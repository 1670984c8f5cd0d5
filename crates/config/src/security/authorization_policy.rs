//! `AuthorizationPolicy`: access control on a workload's inbound traffic. Each rule matches
//! on who calls (`from.source`: principals, namespaces, service accounts, IP blocks), what is
//! called (`to.operation`: hosts, ports, methods, paths) and extra attributes (`when`); the
//! policy's `action` (ALLOW, DENY, AUDIT, or CUSTOM with an external `provider`) applies when
//! any rule matches.
//!
//! Validation follows Istio's webhook (`ValidateAuthorizationPolicy`) and the CRD's CEL rules.

use serde::Deserialize;

use crate::path::FieldPath;
use crate::resource::FieldError;
use crate::security::pattern::{IpBlock, PathPattern, Pattern, Port, Principal, ServiceAccountRef};
use crate::security::string_enum;
use crate::security::target::{ISTIO_POLICY_TARGETS, PolicyTargetRef, Targeting, WorkloadScope};
use crate::types::WorkloadSelector;
use crate::validate::Validate;

pub mod condition;

pub use condition::Condition;

/// The `spec` of an AuthorizationPolicy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicy {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<PolicyTargetRef>,
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetRef>,
    /// `None` (no `rules:`) differs from `[]`: an ALLOW policy without rules allows nothing
    /// it did not already, a DENY or CUSTOM one is rejected.
    #[serde(default)]
    pub rules: Option<Vec<Rule>>,
    #[serde(default)]
    pub action: Action,
    /// The extension provider of a CUSTOM action.
    #[serde(default)]
    pub provider: Option<ExtensionProvider>,
}

impl AuthorizationPolicy {
    /// The workloads the policy applies to.
    pub fn scope(&self) -> WorkloadScope<'_> {
        WorkloadScope::resolve(self.selector.as_ref(), self.target_ref.as_ref(), &self.target_refs)
    }
}

string_enum! {
    /// What happens when a rule matches.
    #[derive(Default)]
    pub enum Action {
        #[default]
        Allow = "ALLOW",
        Deny = "DENY",
        /// Log the match, decide nothing.
        Audit = "AUDIT",
        /// Delegate the decision to `provider`.
        Custom = "CUSTOM",
    }
}

/// `provider:` of a CUSTOM policy: an extension provider named in the mesh config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionProvider {
    #[serde(default)]
    pub name: String,
}

/// One rule: it matches when every present part matches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub from: Option<Vec<RuleFrom>>,
    #[serde(default)]
    pub to: Option<Vec<RuleTo>>,
    #[serde(default)]
    pub when: Vec<Condition>,
}

/// An entry of `from`: any entry matching is enough.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFrom {
    #[serde(default)]
    pub source: Option<Source>,
}

/// An entry of `to`: any entry matching is enough.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTo {
    #[serde(default)]
    pub operation: Option<Operation>,
}

/// Who is calling. Every present field must match; `not*` fields must not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Source {
    /// Peer identities from mTLS (`cluster.local/ns/NS/sa/SA`).
    pub principals: Vec<Principal>,
    pub not_principals: Vec<Principal>,
    /// JWT identities (`ISS/SUB`) from RequestAuthentication.
    pub request_principals: Vec<Pattern>,
    pub not_request_principals: Vec<Pattern>,
    /// Namespaces of the peer identity.
    pub namespaces: Vec<Pattern>,
    pub not_namespaces: Vec<Pattern>,
    /// Service accounts of the peer identity (`NS/SA`, or `SA` in the policy's namespace).
    pub service_accounts: Vec<ServiceAccountRef>,
    pub not_service_accounts: Vec<ServiceAccountRef>,
    /// Trust domains of the peer identity.
    pub trust_domains: Vec<Pattern>,
    pub not_trust_domains: Vec<Pattern>,
    /// The connection's peer address.
    pub ip_blocks: Vec<IpBlock>,
    pub not_ip_blocks: Vec<IpBlock>,
    /// The original client address (`X-Forwarded-For`, PROXY protocol).
    pub remote_ip_blocks: Vec<IpBlock>,
    pub not_remote_ip_blocks: Vec<IpBlock>,
}

impl Source {
    /// Whether no field is set (Istio counts trust domains too, as the CRD does).
    pub fn is_empty(&self) -> bool {
        self.identity_fields() == 0
            && self.request_principals.is_empty()
            && self.not_request_principals.is_empty()
            && self.trust_domains.is_empty()
            && self.not_trust_domains.is_empty()
            && self.ip_blocks.is_empty()
            && self.not_ip_blocks.is_empty()
            && self.remote_ip_blocks.is_empty()
            && self.not_remote_ip_blocks.is_empty()
    }

    fn identity_fields(&self) -> usize {
        self.principals.len()
            + self.not_principals.len()
            + self.namespaces.len()
            + self.not_namespaces.len()
            + self.service_accounts.len()
            + self.not_service_accounts.len()
    }
}

/// What is being called. Every present field must match; `not*` fields must not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Operation {
    /// `Host`/`:authority` values.
    pub hosts: Vec<Pattern>,
    pub not_hosts: Vec<Pattern>,
    /// Destination ports (strings in YAML).
    pub ports: Vec<Port>,
    pub not_ports: Vec<Port>,
    /// HTTP methods.
    pub methods: Vec<Pattern>,
    pub not_methods: Vec<Pattern>,
    /// Request paths, as patterns or `{*}`/`{**}` templates.
    pub paths: Vec<PathPattern>,
    pub not_paths: Vec<PathPattern>,
}

impl Operation {
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
            && self.not_hosts.is_empty()
            && self.ports.is_empty()
            && self.not_ports.is_empty()
            && self.methods.is_empty()
            && self.not_methods.is_empty()
            && self.paths.is_empty()
            && self.not_paths.is_empty()
    }
}

const MEANINGLESS_WITHOUT_RULES: &str = "without `rules` is meaningless as it will never be triggered, \
     add an empty rule `{}` if you want it be triggered for every request";

impl Validate for AuthorizationPolicy {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        Targeting {
            selector: self.selector.as_ref(),
            target_ref: self.target_ref.as_ref(),
            target_refs: &self.target_refs,
        }
        .validate(ISTIO_POLICY_TARGETS, at, errors);
        let rules_at = at.key("rules");
        match (self.action, &self.rules) {
            (Action::Custom, None) => {
                errors
                    .push(FieldError::new(at.clone(), format!("CUSTOM action {MEANINGLESS_WITHOUT_RULES}")));
            }
            (Action::Custom, Some(rules)) => {
                if self.provider.as_ref().is_none_or(|p| p.name.is_empty()) {
                    errors.push(FieldError::new(at.key("provider"), "`provider.name` must not be empty"));
                }
                for (i, rule) in rules.iter().enumerate() {
                    validate_custom_rule(rule, &rules_at.index(i), errors);
                }
            }
            (Action::Deny, None) => {
                errors.push(FieldError::new(at.clone(), format!("DENY action {MEANINGLESS_WITHOUT_RULES}")));
            }
            _ => {}
        }
        if self.provider.is_some() && self.action != Action::Custom {
            errors.push(FieldError::new(
                at.key("provider"),
                format!("`provider` must not be with non CUSTOM action, found {}", self.action),
            ));
        }
        for (i, rule) in self.rules.iter().flatten().enumerate() {
            rule.validate(&rules_at.index(i), errors);
        }
    }
}

impl Validate for Rule {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        if let Some(from) = &self.from {
            let from_at = at.key("from");
            if from.is_empty() {
                errors.push(FieldError::new(from_at.clone(), "`from` must not be empty"));
            }
            for (i, entry) in from.iter().enumerate() {
                let entry_at = from_at.index(i);
                match &entry.source {
                    None => errors.push(FieldError::new(entry_at, "`from.source` must not be nil")),
                    Some(source) => source.validate(&entry_at.key("source"), errors),
                }
            }
        }
        if let Some(to) = &self.to {
            let to_at = at.key("to");
            if to.is_empty() {
                errors.push(FieldError::new(to_at.clone(), "`to` must not be empty"));
            }
            for (i, entry) in to.iter().enumerate() {
                let entry_at = to_at.index(i);
                match &entry.operation {
                    None => errors.push(FieldError::new(entry_at, "`to.operation` must not be nil")),
                    Some(op) if op.is_empty() => errors
                        .push(FieldError::new(entry_at.key("operation"), "`to.operation` must not be empty")),
                    Some(_) => {}
                }
            }
        }
        for (i, condition) in self.when.iter().enumerate() {
            if condition.is_empty() {
                errors.push(FieldError::new(
                    at.key("when").index(i),
                    format!(
                        "at least one of `values` or `notValues` must be set for key {}",
                        condition.key()
                    ),
                ));
            }
        }
    }
}

impl Validate for Source {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        let has_accounts = !self.service_accounts.is_empty() || !self.not_service_accounts.is_empty();
        let has_others =
            self.identity_fields() > self.service_accounts.len() + self.not_service_accounts.len();
        if has_accounts && has_others {
            errors.push(FieldError::new(
                at.clone(),
                "Cannot set serviceAccounts with namespaces or principals",
            ));
        }
        if self.is_empty() {
            errors.push(FieldError::new(at.clone(), "`from.source` must not be empty"));
        }
    }
}

/// What a CUSTOM action cannot match on: identities and JWT attributes.
fn validate_custom_rule(rule: &Rule, at: &FieldPath, errors: &mut Vec<FieldError>) {
    let mut unsupported = |set: bool, at: FieldPath, name: &str| {
        if set {
            errors.push(FieldError::new(at, format!("{name} is currently not supported with CUSTOM action")));
        }
    };
    for (i, entry) in rule.from.iter().flatten().enumerate() {
        let Some(s) = &entry.source else { continue };
        let here = at.key("from").index(i).key("source");
        unsupported(!s.namespaces.is_empty(), here.key("namespaces"), "From.Namespaces");
        unsupported(!s.not_namespaces.is_empty(), here.key("notNamespaces"), "From.NotNamespaces");
        unsupported(!s.service_accounts.is_empty(), here.key("serviceAccounts"), "From.ServiceAccounts");
        unsupported(
            !s.not_service_accounts.is_empty(),
            here.key("notServiceAccounts"),
            "From.NotServiceAccounts",
        );
        unsupported(!s.principals.is_empty(), here.key("principals"), "From.Principals");
        unsupported(!s.not_principals.is_empty(), here.key("notPrincipals"), "From.NotPrincipals");
        unsupported(
            !s.request_principals.is_empty(),
            here.key("requestPrincipals"),
            "From.RequestPrincipals",
        );
        unsupported(
            !s.not_request_principals.is_empty(),
            here.key("notRequestPrincipals"),
            "From.NotRequestPrincipals",
        );
    }
    for (i, condition) in rule.when.iter().enumerate() {
        let key = condition.key();
        let identity =
            matches!(key.as_str(), "source.namespace" | "source.serviceAccount" | "source.principal");
        unsupported(identity || key.starts_with("request.auth."), at.key("when").index(i), &key);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn decode(spec: serde_json::Value) -> Result<AuthorizationPolicy, String> {
        crate::validate::testing::decode(spec)
    }

    fn errors(spec: serde_json::Value) -> Vec<String> {
        crate::validate::testing::errors::<AuthorizationPolicy>(spec)
    }

    #[test]
    fn decodes_a_payments_policy() {
        let policy = decode(json!({
            "selector": {"matchLabels": {"app": "account-service"}},
            "action": "ALLOW",
            "rules": [{
                "from": [{"source": {"principals": ["cluster.local/ns/payments/sa/payment-service"]}}],
                "to": [{"operation": {"methods": ["GET", "POST"], "paths": ["/v1/accounts/*"], "ports": ["8083"]}}],
                "when": [{"key": "request.headers[x-tenant-id]", "values": ["acme", "globex"]}],
            }],
        }))
        .expect("decodes");
        let rule = &policy.rules.as_ref().expect("rules")[0];
        let source = rule.from.as_ref().and_then(|f| f[0].source.as_ref()).expect("source");
        assert_eq!(source.principals[0].identity().map(|id| id.service_account), Some("payment-service"));
        let op = rule.to.as_ref().and_then(|t| t[0].operation.as_ref()).expect("operation");
        assert_eq!(op.ports, [Port(8083)]);
        assert!(matches!(policy.scope(), WorkloadScope::Selector(_)));
        let mut errors = Vec::new();
        policy.validate(&FieldPath::root().key("spec"), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn bad_values_fail_at_their_index() {
        assert_eq!(
            decode(json!({"rules": [{"from": [{"source": {"ipBlocks": ["1.2.3.4", "300.0.0.0/8"]}}]}]})),
            Err("spec.rules[0].from[0].source.ipBlocks[1]: bad CIDR range (300.0.0.0/8): invalid IP address syntax".into())
        );
        assert_eq!(
            decode(json!({"rules": [{"to": [{"operation": {"notPorts": ["70000"]}}]}]})),
            Err("spec.rules[0].to[0].operation.notPorts[0]: bad port (70000)".into())
        );
        assert_eq!(
            decode(json!({"rules": [{"from": [{"source": {"principal": ["x"]}}]}]}))
                .map_err(|e| e.split(", expected").next().map(str::to_owned)),
            Err(Some("spec.rules[0].from[0].source.principal: unknown field `principal`".into()))
        );
        assert_eq!(
            decode(json!({"action": "PERMIT"})),
            Err(r#"spec.action: Unsupported value: "PERMIT": supported values: "ALLOW", "DENY", "AUDIT", "CUSTOM""#.into())
        );
    }

    #[test]
    fn service_accounts_exclude_namespaces_and_principals() {
        assert_eq!(
            errors(
                json!({"rules": [{"from": [{"source": {"serviceAccounts": ["bar/sa"], "namespaces": ["bar"]}}]}]})
            ),
            ["spec.rules[0].from[0].source: Cannot set serviceAccounts with namespaces or principals"]
        );
        assert!(
            errors(json!({"rules": [{"from": [{"source": {"serviceAccounts": ["sa"], "ipBlocks": ["1.2.3.4"]}}]}]}))
                .is_empty()
        );
    }

    #[test]
    fn webhook_rules() {
        assert_eq!(
            errors(json!({"action": "DENY"})),
            [
                "spec: DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request"
            ]
        );
        assert_eq!(
            errors(json!({"action": "ALLOW", "provider": {"name": "ext"}, "rules": [{}]})),
            ["spec.provider: `provider` must not be with non CUSTOM action, found ALLOW"]
        );
        assert_eq!(
            errors(
                json!({"rules": [{"from": [], "to": [{}, {"operation": {}}], "when": [{"key": "source.ip"}]}, {"from": [{"source": {}}]}]})
            ),
            [
                "spec.rules[0].from: `from` must not be empty",
                "spec.rules[0].to[0]: `to.operation` must not be nil",
                "spec.rules[0].to[1].operation: `to.operation` must not be empty",
                "spec.rules[0].when[0]: at least one of `values` or `notValues` must be set for key source.ip",
                "spec.rules[1].from[0].source: `from.source` must not be empty",
            ]
        );
        assert!(errors(json!({})).is_empty());
        assert!(errors(json!({"action": "DENY", "rules": [{}]})).is_empty());
    }

    #[test]
    fn custom_action_needs_a_provider_and_no_identities() {
        assert_eq!(
            errors(json!({"action": "CUSTOM"})),
            [
                "spec: CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request"
            ]
        );
        assert_eq!(
            errors(json!({
                "action": "CUSTOM",
                "rules": [{
                    "from": [{"source": {"principals": ["a"], "ipBlocks": ["1.2.3.4"]}}],
                    "when": [{"key": "request.auth.claims[iss]", "values": ["x"]}, {"key": "source.ip", "values": ["1.2.3.4"]}],
                }],
            })),
            [
                "spec.provider: `provider.name` must not be empty",
                "spec.rules[0].from[0].source.principals: From.Principals is currently not supported with CUSTOM action",
                "spec.rules[0].when[0]: request.auth.claims[iss] is currently not supported with CUSTOM action",
            ]
        );
        assert!(
            errors(json!({"action": "CUSTOM", "provider": {"name": "ext-authz"}, "rules": [{}]})).is_empty()
        );
    }
}
