//! Before anything starts: every address the plan will bind must be free, or `paymesh up`
//! fails naming the address and who needed it (another `paymesh up`, a stray app).

use std::net::{SocketAddr, TcpListener};

use paymesh_api::ports;

use crate::state::State;

/// An address the plan needs is taken.
#[derive(Debug, thiserror::Error)]
#[error(
    "{addr} ({what}) is not free: {source}; stop what uses it or choose another --ip-base/--ingress-addr"
)]
pub struct Busy {
    pub addr: SocketAddr,
    pub what: String,
    #[source]
    pub source: std::io::Error,
}

/// Binds and releases every address of the plan; the first that fails is the error.
pub fn check_free(state: &State) -> Result<(), Busy> {
    let mut wanted: Vec<(SocketAddr, String)> = Vec::new();
    if let Some(control) = &state.control {
        wanted.push((control.grpc_addr, "control plane gRPC".into()));
        wanted.push((control.monitoring_addr, "control plane monitoring".into()));
    }
    for pod in &state.pods {
        for &port in &pod.ports {
            wanted.push((SocketAddr::from((pod.ip, port)), format!("pod {} app port", pod.qualified_name())));
        }
        if pod.has_proxy() {
            for port in
                [ports::PROXY_ADMIN, ports::PROXY_OUTBOUND, ports::PROXY_INBOUND, ports::PROXY_READINESS]
            {
                wanted.push((
                    SocketAddr::from((pod.ip, port)),
                    format!("pod {} proxy port", pod.qualified_name()),
                ));
            }
        }
        if pod.kind == crate::state::PodKind::Gateway {
            wanted.push((SocketAddr::from((pod.ip, ports::GATEWAY_HTTP)), "ingress gateway".into()));
        }
    }
    for (addr, what) in wanted {
        TcpListener::bind(addr).map_err(|source| Busy { addr, what, source })?;
    }
    Ok(())
}
