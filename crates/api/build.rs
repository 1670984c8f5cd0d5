//! Compiles the discovery protocol (`proto/paymesh/discovery/v1/discovery.proto`) with protox,
//! a pure-Rust protobuf compiler, so building paymesh never needs `protoc`.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let proto = "proto/paymesh/discovery/v1/discovery.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
