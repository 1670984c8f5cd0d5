//! Validation against Istio's own CRDs, as the Kubernetes API server does it: the OpenAPI v3
//! structural schema of each kind and version, plus its CEL `x-kubernetes-validations`.
//!
//! Istio's `crd-all.gen.yaml` is embedded (`data/istio-crds.yaml`) and compiled once, on
//! first use, into a [`Registry`] with one schema per group, version and kind: patterns and
//! CEL rules are compiled there, never per validation. [`validate`] then checks a loaded
//! resource's raw document against its schema and returns errors in the API server's
//! wording (`spec.hosts: Required value`, `... in body should match '...'`, rule messages).
//! This catches what the typed rules do not look at: unknown fields, enum values, bounds,
//! and every CEL rule Istio ships, with no cluster needed.

mod cel;
mod check;
mod compile;
mod message;

use std::sync::LazyLock;

use serde_json::Value;

use crate::path::FieldPath;
use crate::resource::{ApiVersion, FieldError, Resource};
use compile::{Compiler, Schema, Type};

/// Istio's CRDs, unchanged (see `data/NOTICE`).
const ISTIO_CRDS: &str = include_str!("../data/istio-crds.yaml");

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry::from_yaml(ISTIO_CRDS));

/// Istio's compiled CRD schemas (compiled on first use).
pub fn registry() -> &'static Registry {
    &REGISTRY
}

/// The schema errors of `resource`; none when no Istio CRD defines its kind.
pub fn validate(resource: &Resource) -> Vec<FieldError> {
    registry().validate(&resource.api_version, &resource.kind, &resource.raw).unwrap_or_default()
}

/// Compiled CRD schemas, one per group, version and kind.
#[derive(Debug)]
pub struct Registry {
    versions: Vec<CrdVersion>,
    problems: Vec<String>,
    rules: RuleCount,
}

#[derive(Debug)]
struct CrdVersion {
    group: String,
    version: String,
    kind: String,
    root: Schema,
}

/// How many CEL rules the CRDs hold, and how many of them compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleCount {
    /// Rules in the CRDs (a rule repeated in several versions counts once per version).
    pub total: usize,
    /// Rules that compiled; the others are listed in [`Registry::problems`] and never run.
    pub compiled: usize,
}

impl Registry {
    /// Compiles every `CustomResourceDefinition` in the YAML stream `text`. What cannot be
    /// compiled (a malformed document, an unsupported keyword, a CEL rule outside the
    /// supported subset) is listed in [`Registry::problems`] rather than failing the rest.
    pub fn from_yaml(text: &str) -> Self {
        let mut compiler = Compiler::default();
        let mut versions = Vec::new();
        for (i, document) in crate::yaml::parse_stream(text).into_iter().enumerate() {
            match document {
                Ok(crate::yaml::Document { root: Some(root), .. }) => {
                    if let Err(problem) = compile_crd(&root.to_json(), &mut compiler, &mut versions) {
                        compiler.problems.push(format!("document {}: {problem}", i + 1));
                    }
                }
                Ok(_) => {}
                Err(e) => compiler.problems.push(format!("line {}: invalid YAML: {}", e.line, e.message)),
            }
        }
        let rules = RuleCount { total: compiler.rules_total, compiled: compiler.rules_compiled };
        Self { versions, problems: compiler.problems, rules }
    }

    /// What could not be compiled; empty for Istio's own CRDs.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// The CEL rules found, and how many compiled.
    pub fn rules(&self) -> RuleCount {
        self.rules
    }

    /// Every (group, version, kind) with a schema.
    pub fn kinds(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.versions.iter().map(|v| (v.group.as_str(), v.version.as_str(), v.kind.as_str()))
    }

    /// Validates the whole document `doc` of `kind` in `api_version`. `None` when no CRD
    /// defines `kind` in that group; an error on `apiVersion` when the group defines the kind
    /// but not that version.
    pub fn validate(&self, api_version: &ApiVersion, kind: &str, doc: &Value) -> Option<Vec<FieldError>> {
        let mut same_kind =
            self.versions.iter().filter(|v| v.group == api_version.group && v.kind == kind).peekable();
        same_kind.peek()?;
        match same_kind.find(|v| v.version == api_version.version) {
            Some(crd) => Some(check::validate(&crd.root, doc)),
            None => Some(vec![FieldError::new(
                FieldPath::root().key("apiVersion"),
                format!(
                    "no matches for kind {} in version {}",
                    message::go_quote(kind),
                    message::go_quote(&api_version.to_string())
                ),
            )]),
        }
    }
}

/// Compiles every version of one CRD document into `versions`.
fn compile_crd(doc: &Value, compiler: &mut Compiler, versions: &mut Vec<CrdVersion>) -> Result<(), String> {
    let text = |pointer: &str| doc.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
    if text("/kind").as_deref() != Some("CustomResourceDefinition") {
        return Err("not a CustomResourceDefinition".into());
    }
    let group = text("/spec/group").ok_or("spec.group missing")?;
    let kind = text("/spec/names/kind").ok_or("spec.names.kind missing")?;
    let Some(Value::Array(entries)) = doc.pointer("/spec/versions") else {
        return Err(format!("{kind}: spec.versions missing"));
    };
    for entry in entries {
        let version = entry
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{kind}: a version without a name"))?;
        let schema = entry
            .pointer("/schema/openAPIV3Schema")
            .ok_or_else(|| format!("{group}/{version} {kind}: no openAPIV3Schema"))?;
        let mut root = compiler.schema(schema, &format!("{group}/{version} {kind}"));
        // The API server knows these top-level fields of every object without the CRD saying so.
        for (field, ty) in [("apiVersion", Type::String), ("kind", Type::String), ("metadata", Type::Object)]
        {
            root.properties.entry(field.to_owned()).or_insert_with(|| Schema {
                ty: Some(ty),
                preserve_unknown: true,
                ..Schema::default()
            });
        }
        versions.push(CrdVersion {
            group: group.clone(),
            version: version.to_owned(),
            kind: kind.clone(),
            root,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(api_version: &str, kind: &str, doc: Value) -> Vec<String> {
        registry()
            .validate(&ApiVersion::parse(api_version), kind, &doc)
            .expect("an Istio kind")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn istio_crds_compile_completely() {
        let registry = registry();
        assert_eq!(registry.problems(), &[] as &[String]);
        assert_eq!(registry.kinds().count(), 33);
        assert_eq!(registry.rules(), RuleCount { total: 398, compiled: 398 });
    }

    #[test]
    fn reports_in_the_api_servers_words() {
        let errors = check(
            "security.istio.io/v1",
            "PeerAuthentication",
            json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": {"name": "x"},
                   "spec": {"mtls": {"mode": "BLAH"}, "extra": 1}}),
        );
        assert_eq!(
            errors,
            [
                r#"spec.extra: unknown field "spec.extra""#,
                r#"spec.mtls.mode: Unsupported value: "BLAH": supported values: "UNSET", "DISABLE", "PERMISSIVE", "STRICT""#,
                "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ]
        );
    }

    #[test]
    fn cel_rules_run_when_nothing_blocks_them() {
        let errors = check(
            "networking.istio.io/v1",
            "ServiceEntry",
            json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "x"},
                   "spec": {"hosts": ["*"], "ports": [{"number": 0, "name": "http"}]}}),
        );
        assert_eq!(
            errors,
            [
                r#"spec.hosts[0]: Invalid value: "string": hostname cannot be wildcard"#,
                r#"spec.ports[0].number: Invalid value: "integer": port must be between 1-65535"#,
            ]
        );
    }

    #[test]
    fn unknown_versions_and_kinds() {
        let doc = json!({"spec": {}});
        let errors = check("networking.istio.io/v9", "VirtualService", doc.clone());
        assert_eq!(
            errors,
            [r#"apiVersion: no matches for kind "VirtualService" in version "networking.istio.io/v9""#]
        );
        assert!(registry().validate(&ApiVersion::parse("paymesh.io/v1"), "RateLimitPolicy", &doc).is_none());
        assert!(registry().validate(&ApiVersion::parse("v1"), "Service", &doc).is_none());
    }

    #[test]
    fn broken_crds_are_problems_not_panics() {
        let registry = Registry::from_yaml(
            "kind: ConfigMap\n---\n[unclosed\n---\nkind: CustomResourceDefinition\nspec: {}\n",
        );
        assert_eq!(registry.kinds().count(), 0);
        assert_eq!(registry.problems().len(), 3, "{:?}", registry.problems());
    }
}
