//! `paymesh proxy-config`: what one proxy runs, read from its admin port
//! (`POD_IP:15000/config_dump`), as `istioctl proxy-config` shows Envoy's.
//!
//! The dump is crates/api's `ProxyConfig` sections (`listeners`, `routes`, `clusters`,
//! `endpoints`) plus `certificate` (`identity`, `serial`, `notAfter`, `rotations`). Each section
//! is decoded on its own with the model's types, so one section the proxy shapes differently
//! fails alone and names itself; `-o json` prints the section exactly as the proxy sent it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::ValueEnum;
use paymesh_api::model::{
    Cluster, ClusterEndpoints, H2Upgrade, Listener, ListenerKind, Protocol, RouteAction, RouteConfig,
    RouteMatch, StringMatch, UpstreamTls,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::mesh_http::{self, Http};
use crate::state::{DEFAULT_STATE_DIR, State};
use crate::table;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which part of the config.
    #[arg(value_enum)]
    section: Section,
    /// A pod name, or `deploy/NAME` for a Deployment's first pod.
    target: String,
    /// Only look in this namespace.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// The state directory of `paymesh up`.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Section {
    Listeners,
    Routes,
    Clusters,
    Endpoints,
    Secret,
    All,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// The `certificate` section.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Certificate {
    identity: String,
    serial: String,
    not_after: String,
    #[serde(default)]
    rotations: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let state = State::read(&args.state_dir)?;
    let pod = state.find_pod(&args.target, args.namespace.as_deref())?;
    anyhow::ensure!(
        pod.has_proxy(),
        "{} has no sidecar: there is no proxy config to show",
        pod.qualified_name()
    );
    let http = Http::new()?;
    let dump = mesh_http::block_on(http.config_dump(pod.ip.into()))??;
    let sections = match args.section {
        Section::All => {
            vec![Section::Listeners, Section::Routes, Section::Clusters, Section::Endpoints, Section::Secret]
        }
        one => vec![one],
    };
    if let Format::Json = args.output {
        let value = if args.section == Section::All { dump.clone() } else { dump[key(sections[0])].clone() };
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    for (i, &section) in sections.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print!("{}", render(section, &dump)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn key(section: Section) -> &'static str {
    match section {
        Section::Listeners => "listeners",
        Section::Routes => "routes",
        Section::Clusters => "clusters",
        Section::Endpoints => "endpoints",
        Section::Secret => "certificate",
        Section::All => "",
    }
}

fn section<T: DeserializeOwned>(dump: &Value, name: &str) -> anyhow::Result<T> {
    T::deserialize(dump.get(name).unwrap_or(&Value::Null))
        .with_context(|| format!("the proxy's config_dump has no valid {name:?} section"))
}

/// One section as a table.
fn render(which: Section, dump: &Value) -> anyhow::Result<String> {
    Ok(match which {
        Section::Listeners => listeners(&section::<Vec<_>>(dump, "listeners")?),
        Section::Routes => routes(&section::<Vec<_>>(dump, "routes")?),
        Section::Clusters => {
            clusters(&section::<Vec<_>>(dump, "clusters")?, &section::<Vec<_>>(dump, "listeners")?)
        }
        Section::Endpoints => endpoints(&section::<Vec<_>>(dump, "endpoints")?),
        Section::Secret => secret(&section(dump, "certificate")?, SystemTime::now()),
        Section::All => String::new(),
    })
}

fn listeners(listeners: &[Listener]) -> String {
    let rows = listeners.iter().map(|l| {
        let kind = match &l.kind {
            ListenerKind::Outbound { .. } => "OUTBOUND (HTTP proxy)".to_owned(),
            ListenerKind::Inbound { chains } => {
                let ports: Vec<String> =
                    chains.iter().map(|c| format!("{}:{:?}", c.target_port, c.mtls)).collect();
                format!("INBOUND {}", ports.join(",")).to_uppercase()
            }
            ListenerKind::Gateway { servers } => {
                let tls = servers.iter().any(|s| s.tls.is_some());
                if tls { "GATEWAY HTTPS" } else { "GATEWAY HTTP" }.to_owned()
            }
        };
        vec![l.address.ip().to_string(), l.address.port().to_string(), kind]
    });
    table::render(&["ADDRESS", "PORT", "TYPE"], rows)
}

/// A route's conditions in one cell, istioctl-like: `/v1/payments*`, `x-canary=true`,
/// `!x-tenant-id~tenant-(gold|platinum)`; alternatives separated by ` | `.
fn route_match(matches: &[RouteMatch]) -> String {
    fn string(value: &StringMatch) -> String {
        match value {
            StringMatch::Exact(v) => v.clone(),
            StringMatch::Prefix(v) => format!("{v}*"),
            StringMatch::Regex(v) => format!("~{v}"),
        }
    }
    if matches.is_empty() {
        return "/*".to_owned();
    }
    let alternatives = matches.iter().map(|m| {
        let mut parts = vec![m.uri.as_ref().map_or_else(|| "/*".to_owned(), string)];
        parts.extend(m.method.as_ref().map(|method| format!("method={}", string(method))));
        for header in &m.headers {
            let negation = if header.invert { "!" } else { "" };
            let value = header.value.as_ref().map_or_else(String::new, |v| match v {
                StringMatch::Regex(_) => string(v),
                _ => format!("={}", string(v)),
            });
            parts.push(format!("{negation}{}{value}", header.name));
        }
        parts.join(" ")
    });
    alternatives.collect::<Vec<_>>().join(" | ")
}

fn routes(routes: &[RouteConfig]) -> String {
    let mut rows = Vec::new();
    for config in routes {
        for host in &config.virtual_hosts {
            for route in &host.routes {
                let virtual_service =
                    if route.name == "default" { "-".to_owned() } else { route.name.clone() };
                let target = match &route.action {
                    RouteAction::Forward { clusters } => clusters
                        .iter()
                        .map(|c| format!("{} {}%", c.cluster, c.weight))
                        .collect::<Vec<_>>()
                        .join(", "),
                    RouteAction::DirectResponse { status, .. } => format!("direct {status}"),
                    RouteAction::Redirect { redirect } => format!("redirect {}", redirect.status),
                };
                rows.push(vec![
                    config.name.clone(),
                    domains(&host.domains),
                    route_match(&route.matches),
                    virtual_service,
                    target,
                ]);
            }
        }
    }
    table::render(&["NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE", "DESTINATION"], rows)
}

/// istioctl's abbreviation: the first domain and how many more.
fn domains(domains: &[String]) -> String {
    match domains {
        [] => String::new(),
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first} +{} more", rest.len()),
    }
}

fn clusters(clusters: &[Cluster], listeners: &[Listener]) -> String {
    let mut rows: Vec<Vec<String>> = clusters
        .iter()
        .map(|c| {
            let tls = match &c.tls {
                UpstreamTls::IstioMutual { .. } => "ISTIO_MUTUAL",
                UpstreamTls::Disable => "DISABLE",
            };
            // How requests cross to a peer sidecar, so a DestinationRule's h2UpgradePolicy shows.
            let protocol = match (c.protocol, c.h2_upgrade) {
                (Protocol::Http, H2Upgrade::DoNotUpgrade) => "HTTP",
                (Protocol::Http, H2Upgrade::Upgrade) => "HTTP (UPGRADE)",
                (Protocol::Http2, _) => "HTTP2",
                (Protocol::Tcp, _) => "TCP",
            };
            vec![
                c.service.clone(),
                c.port.to_string(),
                c.subset.clone().unwrap_or_else(|| "-".into()),
                "outbound".into(),
                "EDS".into(),
                protocol.into(),
                tls.into(),
            ]
        })
        .collect();
    for listener in listeners {
        if let ListenerKind::Inbound { chains } = &listener.kind {
            for chain in chains {
                rows.push(vec![
                    "-".into(),
                    chain.target_port.to_string(),
                    "-".into(),
                    "inbound".into(),
                    "STATIC".into(),
                    "-".into(),
                    format!("{:?}", chain.mtls).to_uppercase(),
                ]);
            }
        }
    }
    table::render(&["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "PROTOCOL", "TLS"], rows)
}

fn endpoints(sets: &[ClusterEndpoints]) -> String {
    let rows = sets.iter().flat_map(|set| {
        set.endpoints
            .iter()
            .map(|e| vec![e.address.to_string(), "HEALTHY".into(), set.cluster.clone(), e.pod.clone()])
    });
    table::render(&["ENDPOINT", "STATUS", "CLUSTER", "POD"], rows)
}

fn secret(cert: &Certificate, now: SystemTime) -> String {
    let valid = humantime::parse_rfc3339_weak(&cert.not_after).is_ok_and(|not_after| not_after > now);
    let row = vec![
        "default".to_owned(),
        cert.identity.clone(),
        valid.to_string(),
        cert.serial.clone(),
        cert.not_after.clone(),
        cert.rotations.to_string(),
    ];
    table::render(
        &["RESOURCE NAME", "IDENTITY", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "ROTATIONS"],
        [row],
    )
}

/// The mTLS mode of a sidecar's inbound listener: STRICT, PERMISSIVE, DISABLE, MIXED when its
/// ports differ, `-` without inbound ports.
pub fn mtls_summary(dump: &Value) -> String {
    let Ok(listeners) = section::<Vec<Listener>>(dump, "listeners") else { return "?".into() };
    let mut modes: Vec<String> = listeners
        .iter()
        .filter_map(|l| match &l.kind {
            ListenerKind::Inbound { chains } => Some(chains),
            _ => None,
        })
        .flatten()
        .map(|c| format!("{:?}", c.mtls).to_uppercase())
        .collect();
    modes.sort();
    modes.dedup();
    match modes.as_slice() {
        [] => "-".into(),
        [one] => one.clone(),
        _ => "MIXED".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_conditions_read_like_the_virtual_service() {
        let matches: Vec<RouteMatch> = serde_json::from_value(serde_json::json!([
            {"uri": {"prefix": "/v1/payments"}, "headers": [
                {"name": "x-canary", "value": {"exact": "true"}, "invert": false},
                {"name": "x-tenant-id", "value": {"regex": "tenant-(gold|platinum)"}, "invert": true}]},
            {"method": {"exact": "GET"}, "headers": [{"name": "x-debug", "invert": false}]}
        ]))
        .expect("matches");
        assert_eq!(
            route_match(&matches),
            "/v1/payments* x-canary=true !x-tenant-id~tenant-(gold|platinum) | /* method=GET x-debug"
        );
        assert_eq!(route_match(&[]), "/*");
    }

    fn dump() -> Value {
        serde_json::json!({
            "version": "7",
            "listeners": [
                {"name": "virtualOutbound", "address": "127.0.10.3:15001", "kind": {"type": "outbound", "tcp": []}},
                {"name": "virtualInbound", "address": "127.0.10.3:15006", "kind": {"type": "inbound", "chains": [
                    {"targetPort": 8081, "servicePorts": [8081], "protocol": "http", "mtls": "STRICT",
                     "mtlsPolicy": "payments/default", "cluster": "inbound|8081||"}]}}
            ],
            "routes": [{"name": "8083", "virtualHosts": [{"name": "account-service.payments.svc.cluster.local:8083",
                "domains": ["account-service", "account-service.payments"],
                "routes": [{"name": "default", "action": {"type": "forward", "clusters": [
                    {"cluster": "outbound|8083||account-service.payments.svc.cluster.local", "weight": 100}]}}]}]}],
            "clusters": [{"name": "outbound|8083||account-service.payments.svc.cluster.local",
                "service": "account-service.payments.svc.cluster.local", "port": 8083, "subset": null,
                "protocol": "http", "tls": {"mode": "istioMutual", "subjectAltNames": []}, "lb": "ROUND_ROBIN"},
                {"name": "outbound|8083|v1|account-service.payments.svc.cluster.local",
                "service": "account-service.payments.svc.cluster.local", "port": 8083, "subset": "v1",
                "protocol": "http", "h2Upgrade": "UPGRADE",
                "tls": {"mode": "istioMutual", "subjectAltNames": []}, "lb": "ROUND_ROBIN"}],
            "endpoints": [{"cluster": "outbound|8083|v1|account-service.payments.svc.cluster.local", "endpoints": [
                {"address": "127.0.10.7:8083", "tunnelPort": 15006, "identity": "spiffe://cluster.local/ns/payments/sa/account-service",
                 "pod": "account-service-x-1", "labels": {}}]}],
            "certificate": {"identity": "spiffe://cluster.local/ns/payments/sa/payment-service", "serial": "1f",
                "notAfter": "2999-01-01T00:00:00Z", "rotations": 2}
        })
    }

    #[test]
    fn renders_each_section() {
        let dump = dump();
        assert_eq!(
            render(Section::Listeners, &dump).expect("listeners"),
            "ADDRESS     PORT   TYPE\n127.0.10.3  15001  OUTBOUND (HTTP proxy)\n127.0.10.3  15006  INBOUND 8081:STRICT\n"
        );
        assert_eq!(
            render(Section::Clusters, &dump).expect("clusters"),
            "SERVICE FQDN                                PORT  SUBSET  DIRECTION  TYPE    PROTOCOL        TLS\n\
             account-service.payments.svc.cluster.local  8083  -       outbound   EDS     HTTP            ISTIO_MUTUAL\n\
             account-service.payments.svc.cluster.local  8083  v1      outbound   EDS     HTTP (UPGRADE)  ISTIO_MUTUAL\n\
             -                                           8081  -       inbound    STATIC  -               STRICT\n"
        );
        assert_eq!(
            render(Section::Routes, &dump).expect("routes"),
            "NAME  DOMAINS                  MATCH  VIRTUAL SERVICE  DESTINATION\n\
             8083  account-service +1 more  /*     -                outbound|8083||account-service.payments.svc.cluster.local 100%\n"
        );
        assert_eq!(
            render(Section::Endpoints, &dump).expect("endpoints"),
            "ENDPOINT         STATUS   CLUSTER                                                      POD\n\
             127.0.10.7:8083  HEALTHY  outbound|8083|v1|account-service.payments.svc.cluster.local  account-service-x-1\n"
        );
        assert_eq!(
            render(Section::Secret, &dump).expect("secret"),
            "RESOURCE NAME  IDENTITY                                               VALID CERT  SERIAL NUMBER  NOT AFTER             ROTATIONS\n\
             default        spiffe://cluster.local/ns/payments/sa/payment-service  true        1f             2999-01-01T00:00:00Z  2\n"
        );
        assert_eq!(mtls_summary(&dump), "STRICT");
    }

    #[test]
    fn a_malformed_section_names_itself() {
        let dump = serde_json::json!({"listeners": [{"name": 3}]});
        let error = render(Section::Listeners, &dump).expect_err("malformed").to_string();
        assert_eq!(error, "the proxy's config_dump has no valid \"listeners\" section");
        assert_eq!(mtls_summary(&dump), "?");
        assert!(render(Section::Secret, &serde_json::json!({})).is_err());
    }
}
