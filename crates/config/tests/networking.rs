//! Istio's networking kinds against Istio's own data: every VirtualService, DestinationRule,
//! Gateway, ServiceEntry and Sidecar of the upstream samples and validation dataset loads and
//! validates clean; the CRD-level invalid fixtures are rejected; every field the CRD schema
//! defines decodes; and load errors name the right line.

#[path = "networking/destination_rule.rs"]
mod destination_rule;
#[path = "networking/durations.rs"]
mod durations;
#[path = "networking/gateway.rs"]
mod gateway;
#[path = "networking/service_entry.rs"]
mod service_entry;
#[path = "networking/sidecar.rs"]
mod sidecar;
#[path = "networking/virtual_service.rs"]
mod virtual_service;

use std::path::Path;
use std::sync::Arc;

use paymesh_config::load::{self, Loaded};
use paymesh_config::validate::validate;
use paymesh_config::yaml;
use serde_json::{Map, Value, json};

const KINDS: &[&str] = &["VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "Sidecar"];

fn is_networking_error(error: &load::LoadError) -> bool {
    error.resource.as_deref().is_some_and(|r| KINDS.iter().any(|k| r.starts_with(&format!("{k} "))))
}

/// Loads `paths`, keeps the networking kinds, and checks that none fails to load or validate.
fn load_clean(paths: &[std::path::PathBuf]) -> usize {
    check_clean(&load::load_paths(paths))
}

/// Checks that no networking resource of `loaded` failed to load or validate; returns how
/// many there are.
fn check_clean(loaded: &Loaded) -> usize {
    let load_errors: Vec<String> =
        loaded.errors.iter().filter(|e| is_networking_error(e)).map(ToString::to_string).collect();
    assert!(load_errors.is_empty(), "load errors:\n{}", load_errors.join("\n"));
    let mut count = 0;
    let mut problems = Vec::new();
    let networking = loaded.resources.iter().filter(|r| r.api_version.group == "networking.istio.io");
    for resource in networking.filter(|r| KINDS.contains(&r.kind.as_str())) {
        count += 1;
        for error in validate(resource) {
            problems.push(format!(
                "{} {}: {error}",
                resource.origin.field(&error.path),
                resource.friendly_name()
            ));
        }
    }
    assert!(problems.is_empty(), "validation errors:\n{}", problems.join("\n"));
    count
}

#[test]
fn upstream_samples_load_and_validate_clean() {
    let samples = paymesh_test_util::istio_conformance().join("samples");
    // 31 VirtualServices, 13 DestinationRules, 9 Gateways, 9 ServiceEntries.
    assert_eq!(load_clean(&[samples]), 62);
}

#[test]
fn validation_dataset_loads_and_validates_clean() {
    let dir = paymesh_test_util::istio_conformance().join("validation/dataset");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dataset dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("networking-")))
        .collect();
    // Three versions of each of the five kinds.
    assert_eq!(load_clean(&files), 15);
}

/// Analyzer inputs are often invalid on purpose, but they must load: istioctl analyze reports
/// on every one of them.
#[test]
fn analyzer_inputs_all_load() {
    let loaded = load::load_paths(&[paymesh_test_util::istio_conformance().join("analyze/testdata")]);
    let errors: Vec<String> =
        loaded.errors.iter().filter(|e| is_networking_error(e)).map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let count = loaded
        .resources
        .iter()
        .filter(|r| r.api_version.group == "networking.istio.io" && KINDS.contains(&r.kind.as_str()))
        .count();
    assert_eq!(count, 227);
}

/// The CRD fixtures: documents with a top-level `_err` are invalid, the others valid.
#[test]
fn crd_fixtures_agree_with_istio() {
    let dir = paymesh_test_util::istio_conformance().join("validation/crds");
    let mut valid = 0;
    for name in ["destinationrule-valid.yaml", "serviceentry-valid.yaml"] {
        let text = std::fs::read_to_string(dir.join(name)).expect("fixture");
        let loaded = load_text(&text);
        valid += check_clean(&loaded);
    }
    assert_eq!(valid, 9);
    let mut rejected = 0;
    for name in ["destinationrule-invalid.yaml", "serviceentry-invalid.yaml"] {
        let loaded = load::load_paths(&[dir.join(name)]);
        rejected += loaded.errors.iter().filter(|e| is_networking_error(e)).count();
        for resource in &loaded.resources {
            assert!(
                !validate(resource).is_empty(),
                "{} {} should be invalid",
                resource.origin.location,
                resource.friendly_name()
            );
            rejected += 1;
        }
    }
    // 3 DestinationRules and 12 ServiceEntries carry `_err`.
    assert_eq!(rejected, 15);
}

/// The validation errors, as sorted (path, message) pairs, of a `kind` called `name` in
/// namespace `ns` whose spec is the YAML `spec`; the document must load.
fn validation_errors(kind: &str, name: &str, spec: &str) -> Vec<(String, String)> {
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: ns\nspec: {spec}\n"
    );
    let loaded = load_text(&text);
    assert!(loaded.errors.is_empty(), "{spec}: {:?}", loaded.errors);
    let mut errors: Vec<(String, String)> =
        validate(&loaded.resources[0]).into_iter().map(|e| (e.path.to_string(), e.message)).collect();
    errors.sort();
    errors
}

/// Asserts that `spec` breaks exactly the `expected` rules, at the given paths.
#[track_caller]
fn check(kind: &str, spec: &str, expected: &[(&str, &str)]) {
    check_named(kind, "x", spec, expected);
}

#[track_caller]
fn check_named(kind: &str, name: &str, spec: &str, expected: &[(&str, &str)]) {
    let mut expected: Vec<(String, String)> =
        expected.iter().map(|(p, m)| ((*p).to_owned(), (*m).to_owned())).collect();
    expected.sort();
    assert_eq!(validation_errors(kind, name, spec), expected, "{kind} {spec}");
}

/// The load error of a document whose spec does not decode.
fn decode_error(kind: &str, spec: &str) -> String {
    let text =
        format!("apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata: {{name: x}}\nspec: {spec}\n");
    let loaded = load_text(&text);
    assert_eq!(loaded.errors.len(), 1, "{spec}: {:?}", loaded.errors);
    loaded.errors[0].to_string()
}

fn load_text(text: &str) -> Loaded {
    let mut loaded = Loaded::default();
    load::load_bytes(Arc::from(Path::new("t.yaml")), text.as_bytes(), &mut loaded);
    loaded
}

#[test]
fn unknown_field_is_reported_at_its_line() {
    let loaded = load_text(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
    timeot: 5s
",
    );
    assert_eq!(loaded.errors.len(), 1, "{:?}", loaded.errors);
    let message = loaded.errors[0].to_string();
    assert!(
        message.starts_with(
            "t.yaml:11: VirtualService reviews: spec.http[0].timeot: unknown field `timeot`, expected one of `name`, `match`,"
        ),
        "{message}"
    );
}

#[test]
fn validation_errors_point_at_their_line() {
    let loaded = load_text(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: -5
    - destination:
        host: reviews
        subset: v2
      weight: 105
",
    );
    let resource = &loaded.resources[0];
    let errors = validate(resource);
    let found: Vec<(u32, String)> =
        errors.iter().map(|e| (resource.origin.field(&e.path).line, e.to_string())).collect();
    assert_eq!(found, [(12, "spec.http[0].route[0].weight: weight -5 < 0".to_owned())]);
}

#[test]
fn a_regex_the_proxy_cannot_compile_is_reported_at_its_line() {
    let loaded = load_text(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        x-user:
          regex: '(admin|ops'
    route:
    - destination:
        host: reviews
",
    );
    let resource = &loaded.resources[0];
    let found: Vec<(u32, String)> =
        validate(resource).iter().map(|e| (resource.origin.field(&e.path).line, e.to_string())).collect();
    assert_eq!(
        found,
        [(
            11,
            r#"spec.http[0].match[0].headers.x-user.regex: "headers": error parsing regexp: unclosed group; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"#
                .to_owned()
        )]
    );
}

#[test]
fn wrong_type_is_reported_at_its_line() {
    let loaded = load_text(
        "apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: reviews
  namespace: prod
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: lots
",
    );
    assert_eq!(
        loaded.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "t.yaml:11: DestinationRule prod/reviews: spec.trafficPolicy.connectionPool.tcp.maxConnections: invalid type: string \"lots\", expected i32"
        ]
    );
}

#[test]
fn oneof_with_two_alternatives_is_rejected_at_its_line() {
    let loaded = load_text(
        "apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: r}
spec:
  host: r
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      consistentHash: {useSourceIp: true}
",
    );
    assert_eq!(
        loaded.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "t.yaml:7: DestinationRule r: spec.trafficPolicy.loadBalancer: only one of simple, consistentHash, backendUtilization may be set, found simple and consistentHash"
        ]
    );
}

/// A missing spec loads (istioctl analyze still reports on the resource) and fails validation.
#[test]
fn missing_spec_loads_and_fails_validation() {
    let loaded = load_text("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se}\n");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let errors: Vec<String> = validate(&loaded.resources[0]).iter().map(ToString::to_string).collect();
    assert_eq!(errors, ["spec.hosts: service entry must have at least one host"]);
}

/// A value of the right shape for a schema node (strings `1s` so durations parse too).
fn sample_value(schema: &Value) -> Value {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values[values.len() - 1].clone();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => json!("1s"),
        Some("integer") => json!(1),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some("array") => json!([]),
        _ => json!({}),
    }
}

/// An object holding `schema`'s required fields (filled recursively).
fn required_fields(schema: &Value) -> Map<String, Value> {
    let mut object = Map::new();
    for name in
        schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
    {
        if let Some(field) = schema.get("properties").and_then(|p| p.get(name)) {
            object.insert(name.to_owned(), filled(field));
        }
    }
    object
}

fn filled(schema: &Value) -> Value {
    match schema.get("type").and_then(Value::as_str) {
        Some("object") if schema.get("properties").is_some() => Value::Object(required_fields(schema)),
        _ => sample_value(schema),
    }
}

/// One document per schema path, each setting that one field (and what it requires).
fn documents_for(schema: &Value, out: &mut Vec<(String, Value)>, path: &str) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, field) in properties {
        let here = format!("{path}.{name}");
        let mut children = Vec::new();
        let item = match field.get("type").and_then(Value::as_str) {
            Some("array") => field.get("items").cloned().unwrap_or(Value::Null),
            Some("object") if field.get("properties").is_none() => {
                field.get("additionalProperties").cloned().unwrap_or(Value::Null)
            }
            _ => field.clone(),
        };
        documents_for(&item, &mut children, &here);
        let wrap = |value: Value| -> Value {
            let value = match field.get("type").and_then(Value::as_str) {
                Some("array") => json!([value]),
                Some("object") if field.get("properties").is_none() => json!({ "k": value }),
                _ => value,
            };
            let mut object = required_fields(schema);
            object.insert(name.clone(), value);
            Value::Object(object)
        };
        out.push((here.clone(), wrap(filled(&item))));
        out.extend(children.into_iter().map(|(p, v)| (p, wrap(v))));
    }
}

/// Every field of every version of the five CRDs decodes, so none is unknown to paymesh.
#[test]
fn every_crd_field_decodes() {
    let path = paymesh_test_util::istio_conformance().join("crds/crd-all.gen.yaml");
    let text = std::fs::read_to_string(&path).expect("CRDs");
    let mut checked = 0;
    for document in yaml::parse_stream(&text) {
        let crd = document.expect("CRD YAML").root.expect("document").to_json();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default().to_owned();
        if !KINDS.contains(&kind.as_str()) {
            continue;
        }
        for version in crd["spec"]["versions"].as_array().expect("versions") {
            let schema = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
            let mut documents = Vec::new();
            documents_for(schema, &mut documents, "spec");
            for (field, spec) in documents {
                let doc = json!({
                    "apiVersion": format!("networking.istio.io/{}", version["name"].as_str().unwrap_or_default()),
                    "kind": kind,
                    "metadata": {"name": "x"},
                    "spec": spec,
                });
                let text = serde_json::to_string(&doc).expect("json");
                let loaded = load_text(&text);
                assert!(loaded.errors.is_empty(), "{kind} {field}: {:?}\n{text}", loaded.errors);
                checked += 1;
            }
        }
    }
    assert!(checked > 1000, "only {checked} fields checked");
}
