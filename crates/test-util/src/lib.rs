//! Helpers for paymesh's tests (a dev-dependency only).

use std::path::PathBuf;

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().and_then(|p| p.parent()).map(PathBuf::from).unwrap_or(manifest)
}

/// The read-only `shared/` folder (Istio conformance data, benchmark harness): `$PAYMESH_SHARED`,
/// or `shared/` beside the workspace. Panics with a clear message when neither exists, so a
/// conformance test can never pass by not running.
pub fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("PAYMESH_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared"));
    assert!(
        dir.join("conformance/istio").is_dir(),
        "shared data not found at {}: set PAYMESH_SHARED to the folder holding conformance/istio",
        dir.display()
    );
    dir
}

/// `shared/conformance/istio`.
pub fn istio_conformance() -> PathBuf {
    shared_dir().join("conformance/istio")
}
