//! `paymesh`: the command line of the paymesh service mesh (the role of `istioctl`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod analyze;
mod exec;
mod logs;
mod mesh_http;
mod proxy_config;
mod proxy_status;
mod state;
mod table;
mod tls_check;
mod up;
mod x_route;

/// Loading a large configuration is allocation-bound (a quarter of `paymesh analyze`'s time
/// went to glibc's malloc/free, see bench/RESULTS.md); mimalloc cuts that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// paymesh: a small, fast service mesh that reads Istio's configuration unchanged.
#[derive(Debug, Parser)]
#[command(name = "paymesh", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check Istio configuration files the way `istioctl analyze` does.
    Analyze(analyze::Args),
    /// Check, offline from config, that clients and servers agree on mutual TLS per service port.
    TlsCheck(tls_check::Args),
    /// Run the mesh on this machine: control plane, sidecars, apps, ingress gateway.
    Up(up::Args),
    /// Print a pod's app or proxy log.
    Logs(logs::Args),
    /// Run a command with a pod's environment (its sidecar as HTTP proxy).
    Exec(exec::Args),
    /// Show whether every proxy runs the config last sent to it.
    ProxyStatus(proxy_status::Args),
    /// Show a proxy's listeners, routes, clusters, endpoints or certificate.
    ProxyConfig(proxy_config::Args),
    /// Experimental commands.
    #[command(subcommand)]
    X(Experimental),
}

/// `paymesh x ...`: commands whose output may still change.
#[derive(Debug, Subcommand)]
enum Experimental {
    /// Simulate, offline, where a request goes: route, cluster, endpoints and policies.
    Route(x_route::Args),
}

/// sysexits' EX_USAGE, which istioctl returns for a command line it cannot parse.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage_error = e.use_stderr();
            let _ = e.print();
            return if usage_error { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    let result = match cli.command {
        Command::Analyze(args) => analyze::run(args),
        Command::TlsCheck(args) => tls_check::run(args),
        Command::Up(args) => up::run(args),
        Command::Logs(args) => logs::run(args),
        Command::Exec(args) => exec::run(args),
        Command::ProxyStatus(args) => proxy_status::run(args),
        Command::ProxyConfig(args) => proxy_config::run(args),
        Command::X(Experimental::Route(args)) => x_route::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
