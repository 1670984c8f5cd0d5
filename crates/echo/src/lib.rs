//! paymesh-echo as a library: the gRPC echo service (generated from
//! `proto/paymesh/echo/v1/echo.proto`) and its server, so tests can build clients from the very
//! same definitions the workload serves.

pub mod grpc;

/// Generated messages, client and server of `paymesh.echo.v1.Echo`.
#[allow(unused_qualifications, clippy::all)]
pub mod proto {
    tonic::include_proto!("paymesh.echo.v1");
}
