//! `PeerAuthentication`: whether a workload's inbound listener requires mutual TLS (STRICT),
//! accepts both mTLS and plaintext (PERMISSIVE) or only plaintext (DISABLE), for the whole
//! workload and per port.
//!
//! Port keys arrive as strings (`"8080"`, or a YAML integer the loader turned into one); they
//! parse into numbers at decode time and their range is checked by validation, with the
//! CRD's messages.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::path::FieldPath;
use crate::resource::FieldError;
use crate::security::string_enum;
use crate::types::WorkloadSelector;
use crate::validate::Validate;

use super::target::validate_selector;

/// The `spec` of a PeerAuthentication.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerAuthentication {
    /// The workloads this applies to; none means every workload of the namespace (or mesh).
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    /// The mode for every port without a port-level mode.
    #[serde(default)]
    pub mtls: Option<MutualTls>,
    /// Modes per workload port (container port number); requires a selector.
    #[serde(default)]
    pub port_level_mtls: Option<BTreeMap<PortKey, MutualTls>>,
}

impl PeerAuthentication {
    /// The mode written for `port`: the port-level one, else the workload-level one.
    pub fn mode_for_port(&self, port: u16) -> MtlsMode {
        let port_mode = self.port_level_mtls.as_ref().and_then(|ports| ports.get(&PortKey(i64::from(port))));
        port_mode.or(self.mtls.as_ref()).map_or(MtlsMode::Unset, |m| m.mode)
    }
}

/// One mTLS setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MutualTls {
    #[serde(default)]
    pub mode: MtlsMode,
}

string_enum! {
    /// How a workload's inbound traffic is authenticated.
    #[derive(Default)]
    pub enum MtlsMode {
        /// Inherit from the parent scope (namespace, then mesh); PERMISSIVE at the top.
        #[default]
        Unset = "UNSET",
        /// Plaintext only.
        Disable = "DISABLE",
        /// mTLS and plaintext.
        Permissive = "PERMISSIVE",
        /// mTLS only.
        Strict = "STRICT",
    }
}

/// A `portLevelMtls` key: an integer, as the CRD's `int(key)` reads it (validation checks the range).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey(pub i64);

impl<'de> Deserialize<'de> for PortKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map(PortKey).map_err(|_| {
            serde::de::Error::custom(format!(
                "port {text:?} is not a number: type conversion error from string to int"
            ))
        })
    }
}

impl fmt::Display for PortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Validate for PeerAuthentication {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        if let Some(selector) = &self.selector {
            validate_selector(selector, &at.key("selector"), errors);
        }
        let Some(ports) = &self.port_level_mtls else {
            return;
        };
        let ports_at = at.key("portLevelMtls");
        if self.selector.as_ref().is_none_or(|s| s.match_labels.is_empty()) {
            errors.push(FieldError::new(ports_at.clone(), "portLevelMtls requires selector"));
        }
        if ports.is_empty() {
            errors.push(FieldError::new(
                ports_at.clone(),
                "port level mTLS, if defined, must have at least one element",
            ));
        }
        for port in ports.keys() {
            if !(1..=65535).contains(&port.0) {
                errors.push(FieldError::new(ports_at.key(port.to_string()), "port must be between 1-65535"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn decode(spec: serde_json::Value) -> Result<PeerAuthentication, String> {
        crate::validate::testing::decode(spec)
    }

    fn errors(spec: serde_json::Value) -> Vec<String> {
        crate::validate::testing::errors::<PeerAuthentication>(spec)
    }

    #[test]
    fn decodes_modes_per_port() {
        let pa = decode(json!({
            "selector": {"matchLabels": {"app": "payment-service"}},
            "mtls": {"mode": "PERMISSIVE"},
            "portLevelMtls": {"8080": {"mode": "STRICT"}, "9090": {}},
        }))
        .expect("decodes");
        assert_eq!(pa.mode_for_port(8080), MtlsMode::Strict);
        assert_eq!(pa.mode_for_port(9090), MtlsMode::Unset);
        assert_eq!(pa.mode_for_port(80), MtlsMode::Permissive);
        assert_eq!(PeerAuthentication::default().mode_for_port(80), MtlsMode::Unset);
    }

    #[test]
    fn decoding_names_the_bad_field() {
        assert_eq!(
            decode(json!({"mtls": {"mode": "BLAH"}})),
            Err(r#"spec.mtls.mode: Unsupported value: "BLAH": supported values: "UNSET", "DISABLE", "PERMISSIVE", "STRICT""#.into())
        );
        assert_eq!(
            decode(json!({"portLevelMtls": {"acd": {"mode": "STRICT"}}})),
            Err(r#"spec.portLevelMtls.acd: port "acd" is not a number: type conversion error from string to int"#.into())
        );
        assert_eq!(
            decode(json!({"mtls": {"mode": "STRICT", "strict": true}})),
            Err("spec.mtls.strict: unknown field `strict`, expected `mode`".into())
        );
    }

    #[test]
    fn port_level_rules() {
        assert_eq!(
            errors(json!({"portLevelMtls": {"80": {"mode": "STRICT"}}})),
            ["spec.portLevelMtls: portLevelMtls requires selector"]
        );
        assert_eq!(
            errors(json!({"selector": {}, "portLevelMtls": {"80": {"mode": "STRICT"}}})),
            ["spec.portLevelMtls: portLevelMtls requires selector"]
        );
        assert_eq!(
            errors(
                json!({"selector": {"matchLabels": {"a": "b"}}, "portLevelMtls": {"0": {}, "42949672": {}}})
            ),
            [
                "spec.portLevelMtls.0: port must be between 1-65535",
                "spec.portLevelMtls.42949672: port must be between 1-65535",
            ]
        );
        assert_eq!(
            errors(json!({"selector": {"matchLabels": {"a": "b"}}, "portLevelMtls": {}})),
            ["spec.portLevelMtls: port level mTLS, if defined, must have at least one element"]
        );
        assert!(errors(json!({"selector": {}})).is_empty());
    }
}
