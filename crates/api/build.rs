//! Compiles the discovery protocol (`proto/paymesh/discovery/v1/discovery.proto`) and the vendored
//! Istio CA protocol (`proto/security/v1alpha1/ca.proto`) with protox, a pure-Rust protobuf
//! compiler, so building paymesh never needs `protoc`.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let protos = ["proto/paymesh/discovery/v1/discovery.proto", "proto/security/v1alpha1/ca.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
