//! Conformance of the security, telemetry and rate-limit kinds with Istio's own test data:
//! the CRD validation fixtures (`validation/crds/{authz,peerauth,reqauth,telemetry}-*.yaml`),
//! the webhook dataset, and the analyzer inputs; plus paymesh's RateLimitPolicy documents
//! (the reference's example and the CRD) against the typed model.
//!
//! A fixture whose expected error is Istio or CEL wording must fail with that text. One whose
//! expected error is Kubernetes OpenAPI wording ("in body should …") belongs to the generic
//! CRD-schema validator: it is counted and listed here, not required.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use paymesh_config::load::{Loaded, load_bytes, load_paths};
use paymesh_config::resource::Spec;
use paymesh_config::{Store, validate, yaml};
use serde_json::Value;

/// Markers of messages worded by the Kubernetes API server's OpenAPI checks.
const OPENAPI_WORDING: &[&str] =
    &["in body should", "in body must", "Unsupported value", "Required value", "type conversion error"];

const SECURITY_KINDS: &[&str] =
    &["PeerAuthentication", "AuthorizationPolicy", "RequestAuthentication", "Telemetry"];

fn conformance() -> PathBuf {
    paymesh_test_util::istio_conformance()
}

/// One fixture document and what loading plus validation made of it.
#[derive(Debug)]
struct Outcome {
    kind: String,
    name: String,
    expected: Option<String>,
    /// Every load error and validation error, as printed.
    messages: Vec<String>,
}

impl Outcome {
    fn is_openapi(&self) -> bool {
        self.expected.as_deref().is_some_and(|e| OPENAPI_WORDING.iter().any(|w| e.contains(w)))
    }

    fn matched(&self) -> bool {
        self.expected.as_deref().is_some_and(|e| self.messages.iter().any(|m| m.contains(e)))
    }
}

/// Loads every document of `file` with its top-level `_err` line blanked (so lines stay
/// true), validates each, and pairs the messages with the expectations.
fn run_fixture_file(file: &Path) -> Vec<Outcome> {
    let text = std::fs::read_to_string(file).expect("fixture readable");
    let mut outcomes = Vec::new();
    for document in yaml::parse_stream(&text) {
        let Some(root) = document.expect("fixture is YAML").root else { continue };
        let doc = root.to_json();
        let field = |path: &[&str]| {
            path.iter().try_fold(&doc, |v, k| v.get(k)).and_then(Value::as_str).unwrap_or_default().to_owned()
        };
        outcomes.push(Outcome {
            kind: field(&["kind"]),
            name: field(&["metadata", "name"]),
            expected: doc.get("_err").and_then(Value::as_str).map(str::to_owned),
            messages: Vec::new(),
        });
    }
    let stripped: String = text
        .lines()
        .map(|l| if l.starts_with("_err:") { "#\n".to_owned() } else { format!("{l}\n") })
        .collect();
    let mut loaded = Loaded::default();
    load_bytes(Arc::from(file), stripped.as_bytes(), &mut loaded);
    for outcome in &mut outcomes {
        let resource_name = format!("{} {}", outcome.kind, outcome.name);
        outcome.messages.extend(
            loaded
                .errors
                .iter()
                .filter(|e| e.resource.as_deref() == Some(resource_name.as_str()))
                .map(ToString::to_string),
        );
        for resource in loaded.resources.iter().filter(|r| r.meta.name == outcome.name) {
            outcome.messages.extend(validate::validate(resource).iter().map(ToString::to_string));
        }
    }
    let unmatched: Vec<_> = loaded
        .errors
        .iter()
        .filter(|e| {
            !outcomes.iter().any(|o| e.resource.as_deref() == Some(&format!("{} {}", o.kind, o.name)))
        })
        .collect();
    assert!(unmatched.is_empty(), "errors not tied to a document: {unmatched:?}");
    outcomes
}

fn fixture_outcomes() -> Vec<Outcome> {
    let dir = conformance().join("validation/crds");
    ["authz", "peerauth", "reqauth", "telemetry"]
        .iter()
        .flat_map(|kind| ["valid", "invalid"].map(|v| dir.join(format!("{kind}-{v}.yaml"))))
        .flat_map(|file| run_fixture_file(&file))
        .collect()
}

#[test]
fn crd_validation_fixtures_agree() {
    let outcomes = fixture_outcomes();
    assert_eq!(outcomes.len(), 40, "documents in the four fixture pairs (expected.json counts)");

    let mut per_kind: BTreeMap<&str, [usize; 2]> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut openapi_other_words = Vec::new();
    let mut openapi_accepted = Vec::new();
    for o in &outcomes {
        let agrees = match &o.expected {
            None => o.messages.is_empty(),
            Some(_) => !o.messages.is_empty(),
        };
        let entry = per_kind.entry(&o.kind).or_default();
        entry[0] += usize::from(agrees);
        entry[1] += 1;
        match (&o.expected, o.is_openapi()) {
            (None, _) if !o.messages.is_empty() => {
                failures.push(format!("{} {}: valid, got {:?}", o.kind, o.name, o.messages))
            }
            (Some(want), false) if !o.matched() => {
                failures.push(format!("{} {}: want {want:?}, got {:?}", o.kind, o.name, o.messages));
            }
            (Some(want), true) if o.messages.is_empty() => {
                openapi_accepted.push(format!("{} {} ({want})", o.kind, o.name))
            }
            (Some(want), true) if !o.matched() => {
                openapi_other_words
                    .push(format!("{} {}: want {want:?}, got {:?}", o.kind, o.name, o.messages));
            }
            _ => {}
        }
    }
    for (kind, [agree, total]) in &per_kind {
        println!("{kind}: {agree}/{total} fixtures agree");
    }
    let openapi = outcomes.iter().filter(|o| o.is_openapi()).count();
    println!(
        "OpenAPI-worded fixtures: {openapi}; same words {}, rejected in other words {}, accepted {}",
        openapi - openapi_other_words.len() - openapi_accepted.len(),
        openapi_other_words.len(),
        openapi_accepted.len()
    );
    for line in openapi_other_words.iter().chain(&openapi_accepted) {
        println!("  {line}");
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(openapi_accepted.is_empty(), "OpenAPI-worded fixtures accepted: {openapi_accepted:#?}");
    let counts: Vec<_> = per_kind.iter().map(|(k, [a, t])| (*k, *a, *t)).collect();
    assert_eq!(
        counts,
        [
            ("AuthorizationPolicy", 4, 4),
            ("PeerAuthentication", 8, 8),
            ("RequestAuthentication", 21, 21),
            ("Telemetry", 7, 7)
        ]
    );
}

#[test]
fn istio_worded_fixture_messages_are_exact() {
    let outcomes = fixture_outcomes();
    let crds = conformance().join("validation/crds");
    let at = |file: &str, line: u32| format!("{}:{line}", crds.join(file).display());
    let want: &[(&str, Vec<String>)] = &[
        (
            "service-account-and-namespace",
            vec![
                "spec.rules[0].from[0].source: Cannot set serviceAccounts with namespaces or principals"
                    .into(),
            ],
        ),
        ("port-level-global", vec!["spec.portLevelMtls: portLevelMtls requires selector".into()]),
        ("zero-port", vec!["spec.portLevelMtls.0: port must be between 1-65535".into()]),
        ("high-port", vec!["spec.portLevelMtls.42949672: port must be between 1-65535".into()]),
        ("ref-and-selector", vec!["spec: only one of targetRefs or selector can be set".into()]),
        (
            "bad-target-namespace",
            vec!["spec.targetRef.namespace: cross namespace referencing is not currently supported".into()],
        ),
        (
            "invalid-jwks",
            vec![format!(
                "{}: RequestAuthentication invalid-jwks: spec.jwtRules[0].jwksUri: url must have scheme http:// or https://",
                at("reqauth-invalid.yaml", 109)
            )],
        ),
        (
            "bad-timeout",
            vec![format!(
                "{}: RequestAuthentication bad-timeout: spec.jwtRules[0].timeout: must be a valid duration greater \
             than 1ms: invalid duration \"apple\": expected a number (expected e.g. \"500ms\", \"1s\", \"1m30s\", \"1h\")",
                at("reqauth-invalid.yaml", 211)
            )],
        ),
        (
            "bad-tag-upsert",
            vec![format!(
                "{}: Telemetry bad-tag-upsert: spec.metrics[0].overrides[0].tagOverrides.foo: value must be set when operation is UPSERT",
                at("telemetry-invalid.yaml", 31)
            )],
        ),
        (
            "bad-tag-remove",
            vec![format!(
                "{}: Telemetry bad-tag-remove: spec.metrics[0].overrides[0].tagOverrides.foo: value must not be set when operation is REMOVE",
                at("telemetry-invalid.yaml", 43)
            )],
        ),
    ];
    for (name, messages) in want {
        let outcome = outcomes.iter().find(|o| o.name == *name).expect(name);
        assert_eq!(&outcome.messages, messages, "{name}");
    }
}

#[test]
fn webhook_dataset_is_clean() {
    let dir = conformance().join("validation/dataset");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dataset")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with("security-") || name.starts_with("telemetry-")
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 8);
    let loaded = load_paths(&files);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    assert_eq!(loaded.resources.len(), 8);
    for resource in &loaded.resources {
        assert!(!matches!(resource.spec, Spec::Other), "{} is typed", resource.friendly_name());
        assert_eq!(validate::validate(resource), [], "{}", resource.friendly_name());
    }
}

#[test]
fn analyzer_inputs_load() {
    let loaded = load_paths(&[conformance().join("analyze/testdata")]);
    let ours = |kind: Option<&str>| {
        kind.is_some_and(|k| SECURITY_KINDS.iter().any(|s| k.starts_with(&format!("{s} "))))
    };
    let load_failures: Vec<String> =
        loaded.errors.iter().filter(|e| ours(e.resource.as_deref())).map(ToString::to_string).collect();
    assert_eq!(load_failures, Vec::<String>::new());

    let documents: Vec<usize> =
        SECURITY_KINDS.iter().map(|k| loaded.resources.iter().filter(|r| r.kind == *k).count()).collect();
    assert_eq!(documents, [0, 13, 4, 17], "documents of {SECURITY_KINDS:?}");
    let (store, _) = Store::new(loaded.resources);
    assert_eq!(store.typed("AuthorizationPolicy", Spec::authorization_policy).count(), 13);
    assert_eq!(store.typed("RequestAuthentication", Spec::request_authentication).count(), 3);
    assert_eq!(store.typed("Telemetry", Spec::telemetry).count(), 15, "mesh-default is in three files");

    let invalid: BTreeSet<String> = SECURITY_KINDS
        .iter()
        .flat_map(|k| store.of_kind(k))
        .flat_map(|r| validate::validate(r).into_iter().map(move |e| format!("{}: {e}", r.friendly_name())))
        .collect();
    assert_eq!(
        invalid,
        BTreeSet::from([
            "Telemetry default/telemetry-effective: spec: only one of targetRefs or selector can be set"
                .to_owned()
        ])
    );
}

/// The YAML blocks of docs/ratelimit.md that hold a RateLimitPolicy.
fn ratelimit_doc_examples() -> Vec<String> {
    let doc = paymesh_test_util::workspace_root().join("docs/ratelimit.md");
    let text = std::fs::read_to_string(doc).expect("docs/ratelimit.md");
    text.split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .filter(|block| block.contains("kind: RateLimitPolicy"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn ratelimit_reference_example_is_valid() {
    let examples = ratelimit_doc_examples();
    assert_eq!(examples.len(), 1);
    let mut loaded = Loaded::default();
    load_bytes(Arc::from(Path::new("docs/ratelimit.md")), examples[0].as_bytes(), &mut loaded);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let resource = &loaded.resources[0];
    assert_eq!(validate::validate(resource), []);
    let policy = resource.spec.rate_limit_policy().expect("typed");
    assert_eq!(policy.limit_for("acme").map(|l| l.requests_per_unit + l.burst), Some(700));
    assert_eq!(policy.limit_for("initech").map(|l| l.requests_per_unit), Some(60));
}

#[test]
fn invalid_ratelimit_policy_points_at_its_lines() {
    let text = "\
apiVersion: paymesh.io/v1alpha1
kind: RateLimitPolicy
metadata: {name: bad, namespace: payments}
spec:
  limits:
  - default: true
    requestsPerUnit: 0
    unit: SECOND
  - default: true
    requestsPerUnit: 1
    unit: SECOND
---
apiVersion: paymesh.io/v1alpha1
kind: RateLimitPolicy
metadata: {name: typo, namespace: payments}
spec:
  limits:
  - tenants: [acme]
    requestPerUnit: 5
";
    let mut loaded = Loaded::default();
    load_bytes(Arc::from(Path::new("rl.yaml")), text.as_bytes(), &mut loaded);
    assert_eq!(
        loaded.errors.iter().map(|e| e.to_string().split(", expected").next().map(str::to_owned)).collect::<Vec<_>>(),
        [Some("rl.yaml:19: RateLimitPolicy payments/typo: spec.limits[0].requestPerUnit: unknown field `requestPerUnit`".to_owned())]
    );
    let resource = &loaded.resources[0];
    let errors = validate::validate(resource);
    let located: Vec<String> =
        errors.iter().map(|e| format!("{}: {e}", resource.origin.field(&e.path))).collect();
    assert_eq!(
        located,
        [
            "rl.yaml:7: spec.limits[0].requestsPerUnit: requestsPerUnit must be greater than 0",
            "rl.yaml:9: spec.limits[1].default: only one limit may be the default; limits[0] already is",
        ]
    );
}

/// Every property path of a schema (`limits[].unit`), and every object node's declared type.
fn schema_paths(schema: &Value, prefix: &str, paths: &mut BTreeSet<String>) {
    let kind = schema.get("type").and_then(Value::as_str);
    let preserves = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    assert!(kind.is_some() || preserves, "structural schemas type every node: {prefix}");
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        assert_eq!(kind, Some("object"), "{prefix}");
        for (name, child) in properties {
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            paths.insert(path.clone());
            schema_paths(child, &path, paths);
        }
    }
    if let Some(items) = schema.get("items") {
        schema_paths(items, &format!("{prefix}[]"), paths);
    }
}

/// Every field path of a document (`limits[].unit`), map keys under `matchLabels` excluded.
fn document_paths(value: &Value, prefix: &str, paths: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) if !prefix.ends_with("matchLabels") => {
            for (name, child) in map {
                let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
                paths.insert(path.clone());
                document_paths(child, &path, paths);
            }
        }
        Value::Array(items) => {
            items.iter().for_each(|item| document_paths(item, &format!("{prefix}[]"), paths))
        }
        _ => {}
    }
}

#[test]
fn ratelimit_crd_describes_the_typed_model() {
    let crd_file = paymesh_test_util::workspace_root().join("k8s/crds/ratelimitpolicy.yaml");
    let loaded = load_paths(&[&crd_file]);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let crd = &loaded.resources[0].raw;
    assert_eq!(crd["spec"]["group"], "paymesh.io");
    assert_eq!(crd["spec"]["names"]["kind"], "RateLimitPolicy");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    let spec_schema = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut crd_paths = BTreeSet::new();
    schema_paths(spec_schema, "", &mut crd_paths);

    // Two documents that between them set every field the typed model has.
    let full = [
        r#"{"selector": {"matchLabels": {"app": "payment-service"}},
            "tenantKey": {"header": "x-tenant-id"},
            "match": {"paths": ["/v1/payments*"], "methods": ["POST"]},
            "limits": [{"tenants": ["acme"], "requestsPerUnit": 10, "unit": "SECOND", "burst": 5},
                       {"default": true, "requestsPerUnit": 1, "unit": "SECOND"}],
            "denyStatus": 429}"#,
        r#"{"targetRefs": [{"group": "", "kind": "Service", "name": "payment-service", "namespace": ""}],
            "tenantKey": {"claim": "tenant"},
            "limits": [{"default": true, "requestsPerUnit": 1, "unit": "HOUR"}]}"#,
    ];
    let mut model_paths = BTreeSet::new();
    for spec in full {
        let spec: Value = serde_json::from_str(spec).expect("json");
        document_paths(&spec, "", &mut model_paths);
        let doc = serde_json::json!({
            "apiVersion": "paymesh.io/v1alpha1", "kind": "RateLimitPolicy",
            "metadata": {"name": "full", "namespace": "payments"}, "spec": spec,
        });
        let mut loaded = Loaded::default();
        load_bytes(Arc::from(Path::new("full.yaml")), yaml::emit(&doc).as_bytes(), &mut loaded);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(validate::validate(&loaded.resources[0]), []);
    }
    assert_eq!(crd_paths, model_paths);
}
