//! Istio's CRD validation fixtures against paymesh's schema validator alone.
//!
//! `validation/crds/*.yaml` are the documents of Istio's `TestCRDs` (a top-level `_err` key
//! marks an invalid one and holds a substring of the API server's error);
//! `validation/dataset/*.yaml` are one valid resource per group/version/kind. Both must come
//! out exactly as the API server's CRD validation says.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use paymesh_config::resource::ApiVersion;
use paymesh_config::schema::{self, RuleCount};
use paymesh_config::yaml;
use serde_json::Value;

/// Fixtures that agree: all of them (`serviceentry-valid.yaml` "full" has
/// `addresses: [1.2.3.4, 001:db8::]`, which the YAML reader takes as the string `001:db8::`,
/// as Kubernetes' go-yaml does).
const EXPECTED_AGREEMENT: usize = 112;

/// The documents of a YAML file, as JSON.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    yaml::parse_stream(&text)
        .into_iter()
        .filter_map(|doc| doc.unwrap_or_else(|e| panic!("{}: {e}", path.display())).root)
        .map(|root| root.to_json())
        .collect()
}

/// The schema errors of one document (which must be of an Istio kind with a CRD).
fn schema_errors(doc: &Value) -> Vec<String> {
    let api_version = ApiVersion::parse(doc["apiVersion"].as_str().expect("apiVersion"));
    let kind = doc["kind"].as_str().expect("kind");
    schema::registry()
        .validate(&api_version, kind, doc)
        .unwrap_or_else(|| panic!("no CRD for {kind} in {api_version}"))
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn every_cel_rule_compiles() {
    let registry = schema::registry();
    for problem in registry.problems() {
        println!("problem: {problem}");
    }
    let rules = registry.rules();
    println!("CEL rules compiled: {}/{}", rules.compiled, rules.total);
    assert_eq!(rules, RuleCount { total: 398, compiled: 398 });
    assert!(registry.problems().is_empty(), "{:#?}", registry.problems());
}

#[test]
fn validation_fixtures_agree_with_the_api_server() {
    let root = paymesh_test_util::istio_conformance().join("validation");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("expected.json")).expect("expected.json"))
            .expect("expected.json parses");
    let files = expected["files"].as_array().expect("files");
    assert_eq!(files.len(), 22);

    let mut agree = 0;
    let mut total = 0;
    let mut misses = Vec::new();
    for file in files {
        let name = file["file"].as_str().expect("file name");
        let mut docs = documents(&root.join(name));
        let entries = file["entries"].as_array().expect("entries");
        assert_eq!(docs.len(), entries.len(), "{name}: document count");
        let mut file_agree = 0;
        for (doc, entry) in docs.iter_mut().zip(entries) {
            let written = doc.as_object_mut().expect("a mapping").remove("_err");
            let want = entry["expected_error_substring"].as_str();
            assert_eq!(
                written.as_ref().and_then(Value::as_str),
                want,
                "{name}: expected.json matches the file"
            );
            let errors = schema_errors(doc);
            let joined = errors.join("\n");
            let ok = match want {
                None => errors.is_empty(),
                Some(substring) => joined.contains(substring),
            };
            if ok {
                file_agree += 1;
            } else {
                misses.push(format!(
                    "{name}[{}] {}: want {want:?}, got {errors:?}",
                    entry["index"], entry["name"]
                ));
            }
        }
        println!("{name}: {file_agree}/{} agree", entries.len());
        agree += file_agree;
        total += entries.len();
    }
    println!("total: {agree}/{total} agree");
    for miss in &misses {
        println!("miss: {miss}");
    }
    assert_eq!(total, 112);
    assert!(agree >= EXPECTED_AGREEMENT, "{agree}/{total} agree; misses:\n{}", misses.join("\n"));
}

#[test]
fn invalid_fixtures_name_the_field() {
    // Spot checks of the full message, not only the fixture's substring.
    let root = paymesh_test_util::istio_conformance().join("validation/crds");
    let mut docs = documents(&root.join("peerauth-invalid.yaml"));
    for doc in &mut docs {
        doc.as_object_mut().expect("a mapping").remove("_err");
    }
    assert_eq!(
        schema_errors(&docs[1]),
        [
            r#"spec.portLevelMtls: Invalid value: "object": type conversion error from 'string' to 'int' evaluating rule: port must be between 1-65535"#
        ]
    );
    assert_eq!(
        schema_errors(&docs[2]),
        [r#"spec: Invalid value: "object": portLevelMtls requires selector"#]
    );
    assert_eq!(
        schema_errors(&docs[3]),
        [
            r#"spec.portLevelMtls: Invalid value: 0: spec.portLevelMtls in body should have at least 1 properties"#
        ]
    );
}

#[test]
fn dataset_resources_are_valid() {
    let dir = paymesh_test_util::istio_conformance().join("validation/dataset");
    let mut kinds = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("dataset dir") {
        let path = entry.expect("entry").path();
        for doc in documents(&path) {
            let errors = schema_errors(&doc);
            assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
            *kinds.entry(format!("{} {}", doc["apiVersion"], doc["kind"])).or_insert(0) += 1;
        }
    }
    assert_eq!(kinds.len(), 33, "one resource per group/version/kind: {kinds:?}");
}

#[test]
fn ten_thousand_validations() {
    // Throughput check without a timing assertion (speed targets belong in benchmarks):
    // prints the time so a regression shows in the test log.
    let dir = paymesh_test_util::istio_conformance().join("validation/dataset");
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("dataset dir") {
        docs.extend(documents(&entry.expect("entry").path()));
    }
    let parsed: Vec<(ApiVersion, String, Value)> = docs
        .into_iter()
        .map(|d| {
            (
                ApiVersion::parse(d["apiVersion"].as_str().unwrap_or("")),
                d["kind"].as_str().unwrap_or("").to_owned(),
                d,
            )
        })
        .collect();
    let registry = schema::registry();
    let start = Instant::now();
    let mut clean = 0;
    for (api_version, kind, doc) in parsed.iter().cycle().take(10_000) {
        clean += usize::from(registry.validate(api_version, kind, doc).is_some_and(|e| e.is_empty()));
    }
    println!("10000 validations in {:?}", start.elapsed());
    assert_eq!(clean, 10_000);
}

#[test]
fn repository_istio_config_fits_the_crds() {
    // The mesh configuration shipped in this repository must apply to a real Istio cluster.
    let dir = paymesh_test_util::workspace_root().join("k8s/istio");
    assert!(dir.is_dir(), "{} is missing", dir.display());
    let loaded = paymesh_config::load::load_paths(&[&dir]);
    let load_errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
    assert!(load_errors.is_empty(), "{load_errors:#?}");
    let mut validated = 0;
    for resource in &loaded.resources {
        // Kinds without an Istio CRD (paymesh.io's RateLimitPolicy) have no schema to check.
        let Some(errors) = schema::registry().validate(&resource.api_version, &resource.kind, &resource.raw)
        else {
            continue;
        };
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            errors.is_empty(),
            "{} at {}: {errors:#?}",
            resource.friendly_name(),
            resource.origin.location
        );
        validated += 1;
    }
    println!("{validated} Istio resources under k8s/istio fit their CRDs");
    assert!(validated > 0, "no Istio resource under {}", dir.display());
}
