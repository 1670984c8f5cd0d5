//! `paymesh tls-check`: offline, from config files, whether clients and servers agree on
//! mutual TLS for every service port, as istioctl's old `authn tls-check` printed it.
//!
//! Server side: the PeerAuthentication mode of each workload behind the port (Deployment pod
//! templates; the container port the Service targets), resolved by the control plane's own
//! [`peer_authn::resolve`]. Client side: the DestinationRule's `tls.mode` (from the service's
//! namespace), or auto mTLS, decided per endpoint by the compiler's own [`endpoint_mtls`]:
//! mutual TLS to an endpoint with a sidecar whose PeerAuthentication is not DISABLE. STRICT
//! against a plaintext client, or DISABLE against an mTLS client, is a CONFLICT. `SIMPLE` and
//! `MUTUAL` (TLS origination) are shown as not implemented. A config that does not load
//! completely is exit code 2: a partial check would pass things it never saw.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use paymesh_api::model::MtlsMode;
use paymesh_config::{Loaded, Store, load};
use paymesh_control::compile::cluster::{client_mode_name, client_tls, endpoint_mtls};
use paymesh_control::compile::peer_authn::{self, mode_name};
use paymesh_control::config_store::ISTIO_NAMESPACE;
use paymesh_control::registry::{Registry, Service, ServicePort, WorkloadSource};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this service: `name`, `name.namespace` or its FQDN, optionally `:port`.
    #[arg(value_name = "SERVICE")]
    service: Option<String>,
    /// Config files or directories (recursively: .yaml, .yml, .json).
    #[arg(short = 'f', long = "filename", value_name = "PATH", default_value = "k8s")]
    files: Vec<PathBuf>,
}

/// One row of the table.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    host_port: String,
    status: &'static str,
    server: String,
    client: String,
    authn: String,
    rule: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Loaded { resources, errors } = load::load_paths(&args.files);
    if !errors.is_empty() {
        for error in &errors {
            eprintln!("error: {error}");
        }
        eprintln!("{} load error(s): fix them first; no check was made.", errors.len());
        return Ok(ExitCode::from(2));
    }
    let (store, _) = Store::new(resources);
    let rows = check(&store, args.service.as_deref());
    if rows.is_empty() {
        bail!("no service matches {}", args.service.as_deref().unwrap_or("the config"));
    }
    print!("{}", table(&rows));
    let conflicts = rows.iter().filter(|r| r.status == "CONFLICT").count();
    if conflicts > 0 {
        eprintln!("{conflicts} service port(s) with conflicting mTLS settings.");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The rows for every service port (or those `filter` names), sorted by host and port.
fn check(store: &Store, filter: Option<&str>) -> Vec<Row> {
    let registry =
        Registry::new(store, paymesh_tls::DEFAULT_TRUST_DOMAIN, WorkloadSource::DeploymentTemplates);
    let mut services: Vec<&Service> = registry.services().iter().collect();
    services.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    let mut rows = Vec::new();
    for service in services {
        for port in &service.ports {
            if filter.is_none_or(|f| selected(f, service, port.port)) {
                rows.push(row(store, &registry, service, port));
            }
        }
    }
    rows
}

fn selected(filter: &str, service: &Service, port: u16) -> bool {
    let (name, wanted_port) = match filter.rsplit_once(':') {
        Some((name, p)) => (name, p.parse::<u16>().ok()),
        None => (filter, None),
    };
    let names =
        [service.name.clone(), format!("{}.{}", service.name, service.namespace), service.hostname.clone()];
    names.iter().any(|n| n == name) && wanted_port.is_none_or(|p| p == port)
}

fn row(store: &Store, registry: &Registry, service: &Service, port: &ServicePort) -> Row {
    let endpoints = registry.endpoints(service, port);
    let tls = client_tls(store, ISTIO_NAMESPACE, &service.namespace, service, port.port, None);
    let mut decisions: Vec<(&'static str, MtlsMode, String)> = Vec::new();
    let mut client_modes: Vec<&'static str> = Vec::new();
    let mut conflict = false;
    for e in &endpoints {
        let w = e.workload;
        let d = peer_authn::resolve(store, ISTIO_NAMESPACE, &w.namespace, &w.labels, e.target_port);
        let client_mtls = endpoint_mtls(tls.mode, w.sidecar, d.mode);
        conflict |= match d.mode {
            MtlsMode::Strict => !client_mtls,
            MtlsMode::Disable => client_mtls,
            MtlsMode::Permissive => false,
        };
        let client = if client_mtls { "ISTIO_MUTUAL" } else { "DISABLE" };
        if !client_modes.contains(&client) {
            client_modes.push(client);
        }
        let decision = (mode_name(d.mode), d.mode, d.policy);
        if !decisions.contains(&decision) {
            decisions.push(decision);
        }
    }
    let auto = if client_modes.is_empty() { "DISABLE".to_owned() } else { client_modes.join("|") };
    let client = client_mode_name(tls.mode, &auto);
    let join = |parts: Vec<String>| if parts.is_empty() { "-".to_owned() } else { parts.join("|") };
    Row {
        host_port: format!("{}:{}", service.hostname, port.port),
        status: if conflict { "CONFLICT" } else { "OK" },
        server: join(decisions.iter().map(|(name, _, _)| (*name).to_owned()).collect()),
        client,
        authn: join(decisions.iter().map(|(_, _, policy)| policy.clone()).collect()),
        rule: tls.rule.unwrap_or_else(|| "-".to_owned()),
    }
}

fn table(rows: &[Row]) -> String {
    let header = ["HOST:PORT", "STATUS", "SERVER", "CLIENT", "AUTHN POLICY", "DESTINATION RULE"];
    let cells: Vec<[&str; 6]> = std::iter::once(header)
        .chain(rows.iter().map(|r| {
            [
                r.host_port.as_str(),
                r.status,
                r.server.as_str(),
                r.client.as_str(),
                r.authn.as_str(),
                r.rule.as_str(),
            ]
        }))
        .collect();
    let mut widths = [0usize; 6];
    for line in &cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for line in &cells {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            if i + 1 == line.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;

    fn store(yaml: &str) -> Store {
        let mut loaded = Loaded::default();
        load::load_bytes(Arc::from(Path::new("t.yaml")), yaml.as_bytes(), &mut loaded);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        Store::new(loaded.resources).0
    }

    const APP: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {istio-injection: enabled}}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: a}\nspec: {selector: {app: s}, ports: [{name: http, port: 80, targetPort: 8080}]}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: s, namespace: a}\nspec:\n  selector: {matchLabels: {app: s}}\n  template:\n    metadata: {labels: {app: s}}\n    spec: {containers: [{name: s, image: s, ports: [{containerPort: 8080}]}]}\n";

    #[test]
    fn strict_server_with_disabled_client_conflicts() {
        let yaml = format!(
            "{APP}---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: a}}\nspec: {{mtls: {{mode: STRICT}}}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: s, namespace: a}}\nspec: {{host: s, trafficPolicy: {{tls: {{mode: DISABLE}}}}}}\n"
        );
        let rows = check(&store(&yaml), Some("s.a:80"));
        assert_eq!(
            rows,
            [Row {
                host_port: "s.a.svc.cluster.local:80".into(),
                status: "CONFLICT",
                server: "STRICT".into(),
                client: "DISABLE".into(),
                authn: "a/default".into(),
                rule: "a/s".into(),
            }]
        );
    }

    #[test]
    fn auto_mtls_is_plaintext_to_a_disabled_sidecar_and_tls_origination_is_not_implemented() {
        let disabled = format!(
            "{APP}---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: a}}\nspec: {{mtls: {{mode: DISABLE}}}}\n"
        );
        let rows = check(&store(&disabled), None);
        assert_eq!(
            (rows[0].status, rows[0].server.as_str(), rows[0].client.as_str()),
            ("OK", "DISABLE", "AUTO (DISABLE)")
        );
        let simple = format!(
            "{APP}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: s, namespace: a}}\nspec: {{host: s, trafficPolicy: {{tls: {{mode: SIMPLE}}}}}}\n"
        );
        let rows = check(&store(&simple), None);
        assert_eq!((rows[0].status, rows[0].client.as_str()), ("OK", "SIMPLE (not implemented)"));
    }

    #[test]
    fn load_errors_exit_2_without_a_partial_check() {
        let dir = std::env::temp_dir().join(format!("paymesh-tls-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("good.yaml"), APP).expect("good");
        std::fs::write(dir.join("bad.yaml"), "kind: [unclosed\n").expect("bad");
        let code = run(Args { service: None, files: vec![dir.clone()] }).expect("runs");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(code, ExitCode::from(2));
    }

    #[test]
    fn auto_mtls_against_the_mesh_default_is_ok() {
        let rows = check(&store(APP), None);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].status, rows[0].server.as_str(), rows[0].client.as_str(), rows[0].authn.as_str()),
            ("OK", "PERMISSIVE", "AUTO (ISTIO_MUTUAL)", "mesh default")
        );
        assert!(check(&store(APP), Some("other")).is_empty());
    }

    #[test]
    fn the_repository_k8s_config_is_strict_and_consistent() {
        let k8s = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../k8s");
        let Loaded { resources, errors } = load::load_paths(&[k8s]);
        assert!(errors.is_empty(), "{errors:?}");
        let rows = check(&Store::new(resources).0, None);
        let hosts: Vec<&str> = rows.iter().map(|r| r.host_port.as_str()).collect();
        assert_eq!(
            hosts,
            [
                "account-service.payments.svc.cluster.local:8083",
                "payment-service.payments.svc.cluster.local:8081",
                "saga-service.payments.svc.cluster.local:8084",
                "validation-service.payments.svc.cluster.local:8082"
            ]
        );
        for row in &rows {
            assert_eq!(
                (row.status, row.server.as_str(), row.client.as_str(), row.authn.as_str()),
                ("OK", "STRICT", "ISTIO_MUTUAL", "payments/default"),
                "{}",
                row.host_port
            );
        }
        assert_eq!(rows[0].rule, "payments/account-service");
        assert!(table(&rows).starts_with("HOST:PORT    "));
    }
}
