//! Istio's sample manifests (`samples/`): they load, and every Istio resource in them fits
//! its CRD schema, as it does on a real cluster.

use std::path::{Path, PathBuf};

use paymesh_config::load;
use paymesh_config::resource::ApiVersion;
use paymesh_config::{schema, yaml};
use serde_json::Value;

fn samples_dir() -> PathBuf {
    paymesh_test_util::istio_conformance().join("samples")
}

/// Every manifest under `dir` (not the `index.json` written beside them).
fn manifests(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(next) = todo.pop() {
        for entry in std::fs::read_dir(&next).unwrap_or_else(|e| panic!("{}: {e}", next.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn has_crd(api_version: &ApiVersion, kind: &str) -> bool {
    schema::registry()
        .kinds()
        .any(|(g, v, k)| g == api_version.group && v == api_version.version && k == kind)
}

#[test]
fn samples_load_and_their_istio_resources_fit_the_crds() {
    let dir = samples_dir();
    let files = manifests(&dir);
    assert!(files.len() > 100, "{} manifests", files.len());
    let loaded = load::load_paths(&files);

    // Every sample loads: IstioOperator files without metadata (istioctl install input) get
    // istioctl's default name, and go-yaml's lenient flow closers are read as go-yaml reads them.
    let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "load errors:\n{}", errors.join("\n"));
    println!("{} resources loaded", loaded.resources.len());

    let mut validated = 0;
    for resource in loaded.resources.iter().filter(|r| has_crd(&r.api_version, &r.kind)) {
        let errors = schema::validate(resource);
        assert!(
            errors.is_empty(),
            "{} at {}: {errors:?}",
            resource.friendly_name(),
            resource.origin.location
        );
        validated += 1;
    }
    println!("{validated} loaded Istio resources fit their CRDs");
    assert!(validated > 0);
}

#[test]
fn every_istio_document_in_the_samples_fits_its_crd() {
    // Straight from the YAML, so every kind is covered whether or not it has a typed model.
    let dir = samples_dir();
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).expect("index.json"))
            .expect("index.json parses");
    let expected = index["items"]
        .as_array()
        .expect("items")
        .iter()
        .flat_map(|file| file["resources"].as_array().into_iter().flatten())
        .filter(|item| {
            let api_version = ApiVersion::parse(item["apiVersion"].as_str().unwrap_or(""));
            has_crd(&api_version, item["kind"].as_str().unwrap_or(""))
        })
        .count();

    let mut validated = 0;
    for file in manifests(&dir) {
        let text = std::fs::read_to_string(&file).expect("readable");
        for document in yaml::parse_stream(&text).into_iter().filter_map(|d| d.ok()?.root) {
            let doc = document.to_json();
            let api_version = ApiVersion::parse(doc["apiVersion"].as_str().unwrap_or(""));
            let kind = doc["kind"].as_str().unwrap_or("");
            if let Some(errors) = schema::registry().validate(&api_version, kind, &doc) {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                assert!(
                    errors.is_empty(),
                    "{}: {kind} {}: {errors:#?}",
                    file.display(),
                    doc["metadata"]["name"]
                );
                validated += 1;
            }
        }
    }
    println!("{validated} Istio documents fit their CRDs");
    assert_eq!(
        validated, 67,
        "VirtualService 31, DestinationRule 13, Gateway 9, ServiceEntry 9, EnvoyFilter 3, Telemetry 2"
    );
    assert_eq!(validated, expected, "every Istio resource listed in samples/index.json");
}
