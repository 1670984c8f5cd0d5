//! Compiles the gRPC echo service (`proto/paymesh/echo/v1/echo.proto`) with protox, a pure-Rust
//! protobuf compiler, so building paymesh-echo never needs `protoc`.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let proto = "proto/paymesh/echo/v1/echo.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
