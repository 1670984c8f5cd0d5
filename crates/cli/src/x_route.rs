//! `paymesh x route`: which VirtualService route, cluster, subset and endpoints a request would
//! take, and under which policies, offline — no mesh running.
//!
//! It runs what the mesh runs: the pods `paymesh up` would plan from the files, the control
//! plane's compiler for the calling proxy (`--from`), then the proxy's own index and matcher
//! ([`paymesh_proxy::simulate`]). Every route of the virtual host is listed in order with the
//! condition that refused the request, up to the one that took it. A config that does not load
//! completely is exit code 2 (a partial answer could be wrong); a request no route takes is exit
//! code 1 (the proxy would answer 404 `NR`).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::ValueEnum;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use paymesh_api::model::{
    AbortError, Cluster, LbPolicy, ProxyKind, RetryOn, RetryPolicy, RoutePolicy, UpstreamTls,
};
use paymesh_config::{Loaded, Store, load};
use paymesh_control::compile::{self, Settings};
use paymesh_control::config_store::ISTIO_NAMESPACE;
use paymesh_control::registry::{Registry, WorkloadSource};
use paymesh_proxy::simulate::{self, Outcome, Trace};

use crate::state::PodKind;
use crate::up::bins::Bins;
use crate::up::plan::{self, GATEWAY_PORT_OFFSET};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The request's URL (`http://account-service:8083/v1/transfers`).
    #[arg(value_name = "URL")]
    url: String,
    /// The calling proxy: `deploy/NAME`, or a pod name as `paymesh up` names them.
    #[arg(long, value_name = "WORKLOAD")]
    from: String,
    /// The caller's namespace.
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// The method.
    #[arg(short = 'X', long = "request", default_value = "GET")]
    method: String,
    /// A request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Config files or directories (recursively: .yaml, .yml, .json).
    #[arg(short = 'f', long = "filename", value_name = "PATH", default_value = "k8s")]
    files: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Table,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let request = request(&args)?;
    let Loaded { mut resources, errors } = load::load_paths(&args.files);
    if !errors.is_empty() {
        for error in &errors {
            eprintln!("error: {error}");
        }
        eprintln!("{} load error(s): fix them first; nothing was simulated.", errors.len());
        return Ok(ExitCode::from(2));
    }
    let (store, _) = Store::new(resources.clone());
    let bins = Bins::from_env();
    let state_dir = std::env::temp_dir().join("paymesh-x-route");
    let settings = plan::Settings {
        config_paths: &args.files,
        state_dir: &state_dir,
        ip_base: Ipv4Addr::new(127, 0, 10, 0),
        ingress_addr: Ipv4Addr::LOCALHOST,
        cert_ttl: "24h",
        bins: &bins,
    };
    let plan = plan::plan(&store, &settings)?;
    let from = plan.state.find_pod(&args.from, args.namespace.as_deref())?.clone();
    let pods = serde_json::to_vec(&plan.pods_manifest)?;
    let mut planned = Loaded::default();
    load::load_bytes(Arc::from(Path::new("(the pods paymesh up would run)")), &pods, &mut planned);
    resources.extend(planned.resources);
    let (store, _) = Store::new(resources);
    let trust_domain = paymesh_tls::DEFAULT_TRUST_DOMAIN;
    let registry = Registry::new(&store, trust_domain, WorkloadSource::Pods);
    let compile_settings = Settings {
        trust_domain: trust_domain.to_owned(),
        cert_ttl_secs: 86_400,
        gateway_port_offset: GATEWAY_PORT_OFFSET,
        credentials_dir: state_dir.join("credentials"),
        root_namespace: ISTIO_NAMESPACE.to_owned(),
    };
    let kind = match from.kind {
        PodKind::Gateway => ProxyKind::Gateway,
        PodKind::Workload if from.has_proxy() => ProxyKind::Sidecar,
        PodKind::Workload => {
            bail!("{} has no sidecar: its requests are not routed by the mesh", from.qualified_name())
        }
    };
    let config =
        compile::compile(&store, &registry, &compile_settings, &from.namespace, &from.name, kind, "x-route")
            .with_context(|| format!("compiling the config of {}", from.qualified_name()))?;
    let trace = simulate::route(config, &request)?;
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&trace)?),
        Format::Table => print!("{}", table(&trace)),
    }
    Ok(match trace.outcome {
        Outcome::NoRoute { .. } => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}

/// The request the arguments describe; a URL without a scheme is `http://`.
fn request(args: &Args) -> anyhow::Result<simulate::Request> {
    let url = if args.url.contains("://") { args.url.clone() } else { format!("http://{}", args.url) };
    let uri: Uri = url.parse().with_context(|| format!("{}: not a URL", args.url))?;
    let method = Method::from_bytes(args.method.as_bytes())
        .with_context(|| format!("{}: not a method", args.method))?;
    let mut headers = HeaderMap::new();
    for header in &args.headers {
        let (name, value) =
            header.split_once(':').with_context(|| format!("{header}: a header is `Name: value`"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("{header}: bad header name"))?;
        let value =
            HeaderValue::from_str(value.trim()).with_context(|| format!("{header}: bad header value"))?;
        headers.append(name, value);
    }
    Ok(simulate::Request { method, uri, headers })
}

/// The trace as text: the routes tried, then the destinations with their policies.
fn table(trace: &Trace) -> String {
    let mut out = String::new();
    let dash = |value: Option<&str>| value.unwrap_or("-").to_owned();
    let _ = writeln!(out, "PROXY          {}", trace.proxy);
    let _ = writeln!(out, "ROUTE TABLE    {}", dash(trace.route_table.as_deref()));
    let _ = writeln!(out, "VIRTUAL HOST   {}", dash(trace.virtual_host.as_deref()));
    let _ = writeln!(out, "\nROUTES TRIED");
    for route in &trace.routes {
        let verdict = match &route.refused {
            None => "MATCHED".to_owned(),
            Some(conditions) if conditions.is_empty() => "no match".to_owned(),
            Some(conditions) => format!("no match: {}", conditions.join(" / ")),
        };
        let _ =
            writeln!(out, "  {:<24} {:<40} {verdict}", route.name, dash(route.virtual_service.as_deref()));
    }
    match &trace.outcome {
        Outcome::NoRoute { reason } => {
            let _ = writeln!(out, "\n404 NR: {reason}");
        }
        Outcome::DirectResponse { status } => {
            let _ = writeln!(out, "\nDIRECT RESPONSE {status}");
        }
        Outcome::Forward { policy, destinations } => {
            let _ = writeln!(out, "\nPOLICY         {}", route_policy(policy));
            let _ = writeln!(out, "\nDESTINATIONS");
            for destination in destinations {
                let cluster = &destination.cluster;
                let _ = writeln!(out, "  {:>3}%  {}", destination.weight, cluster.name);
                let _ = writeln!(out, "        {}", cluster_policy(cluster));
                for endpoint in &destination.endpoints {
                    let _ = writeln!(out, "        {}  {}", endpoint.address, endpoint.pod);
                }
            }
        }
    }
    out
}

fn route_policy(policy: &RoutePolicy) -> String {
    let timeout = policy.timeout_ms.map_or("none".to_owned(), |ms| format!("{ms}ms"));
    let RetryPolicy { attempts, per_try_timeout_ms, retry_on, retriable_status_codes } = &policy.retries;
    let mut retries = if *attempts == 0 {
        "off".to_owned()
    } else {
        let on: Vec<&str> = retry_on.iter().map(|c| c.as_str()).collect();
        format!("{attempts} on {}", on.join(","))
    };
    if *attempts > 0 && retry_on.contains(&RetryOn::RetriableStatusCodes) {
        let codes: Vec<String> = retriable_status_codes.iter().map(u16::to_string).collect();
        let _ = write!(retries, " ({})", codes.join(","));
    }
    if let Some(ms) = per_try_timeout_ms {
        let _ = write!(retries, ", {ms}ms per try");
    }
    let fault = match &policy.fault {
        None => "none".to_owned(),
        Some(fault) => {
            let mut parts = Vec::new();
            if let Some(delay) = &fault.delay {
                parts.push(format!(
                    "delay {}ms on {}%",
                    delay.fixed_ms,
                    f64::from(delay.per_million) / 10_000.0
                ));
            }
            if let Some(abort) = &fault.abort {
                let error = match abort.error {
                    AbortError::HttpStatus(status) => format!("HTTP {status}"),
                    AbortError::GrpcStatus(code) => format!("gRPC {code}"),
                };
                parts.push(format!("abort {error} on {}%", f64::from(abort.per_million) / 10_000.0));
            }
            parts.join(", ")
        }
    };
    format!("timeout {timeout}; retries {retries}; fault {fault}")
}

fn cluster_policy(cluster: &Cluster) -> String {
    let lb = match &cluster.lb {
        LbPolicy::RoundRobin => "ROUND_ROBIN".to_owned(),
        LbPolicy::LeastRequest => "LEAST_REQUEST".to_owned(),
        LbPolicy::Random => "RANDOM".to_owned(),
        LbPolicy::Passthrough => "PASSTHROUGH".to_owned(),
        LbPolicy::ConsistentHash(hash) => format!("consistent hash on {:?}", hash.key),
    };
    let tls = match &cluster.tls {
        UpstreamTls::IstioMutual { .. } => "ISTIO_MUTUAL",
        UpstreamTls::Disable => "plaintext",
    };
    let pool = &cluster.connection_pool;
    let limit = |value: Option<u32>| value.map_or("-".to_owned(), |v| v.to_string());
    let outlier = cluster.outlier_detection.as_ref().map_or("off".to_owned(), |o| {
        format!(
            "5xx {} gateway {} every {}ms, eject {}ms, max {}%",
            limit(o.consecutive_5xx),
            limit(o.consecutive_gateway_errors),
            o.interval_ms,
            o.base_ejection_ms,
            o.max_ejection_percent
        )
    });
    format!(
        "lb {lb}; mTLS {tls}; pool: connections {}, pending {}, requests {}, retries {}, connect {}ms; outlier: {outlier}",
        limit(pool.max_connections),
        limit(pool.max_pending_requests),
        limit(pool.max_requests),
        limit(pool.max_retries),
        pool.connect_timeout_ms
    )
}
