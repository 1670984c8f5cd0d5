//! The mesh-wide settings some analyzers need (Istio's `MeshConfig`), read from the file
//! `--meshConfigFile` names, or Istio's defaults.

use serde_json::Value;

/// Istio's `MeshConfig`, kept as read; accessors give each field with Istio's default.
#[derive(Clone, Debug, Default)]
pub struct MeshConfig {
    raw: Value,
}

impl MeshConfig {
    pub fn new(raw: Value) -> Self {
        Self { raw }
    }

    /// A field of the config, when set.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.raw.get(field)
    }

    /// Where mesh-wide policies live (`rootNamespace`, default `istio-system`).
    pub fn root_namespace(&self) -> &str {
        self.raw.get("rootNamespace").and_then(Value::as_str).unwrap_or("istio-system")
    }
}
