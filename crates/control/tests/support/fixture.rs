//! Compiler test fixtures: YAML into a `Store`, and one proxy's compiled config from it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use paymesh_api::model::{ProxyConfig, ProxyKind};
use paymesh_config::{Loaded, Store};
use paymesh_control::compile::{self, Settings};
use paymesh_control::registry::{Registry, WorkloadSource};

/// `yaml` as a store; the fixture must load cleanly.
pub fn load(yaml: &str) -> Store {
    let mut loaded = Loaded::default();
    paymesh_config::load::load_bytes(Arc::from(Path::new("fixture.yaml")), yaml.as_bytes(), &mut loaded);
    assert!(loaded.errors.is_empty(), "fixture loads: {:?}", loaded.errors);
    let (store, duplicates) = Store::new(loaded.resources);
    assert!(duplicates.is_empty(), "{duplicates:?}");
    store
}

/// The compiler's settings in every fixture.
pub fn settings() -> Settings {
    Settings {
        trust_domain: "cluster.local".into(),
        cert_ttl_secs: 60,
        gateway_port_offset: 8000,
        credentials_dir: PathBuf::from("/state/credentials"),
        root_namespace: "istio-system".into(),
    }
}

/// The config of proxy `namespace/pod` compiled from `store` at version `version`.
pub fn compile_store(
    store: &Store,
    namespace: &str,
    pod: &str,
    kind: ProxyKind,
    version: u64,
) -> ProxyConfig {
    let registry = Registry::new(store, "cluster.local", WorkloadSource::Pods);
    compile::compile(store, &registry, &settings(), namespace, pod, kind, version).expect("compiles")
}
