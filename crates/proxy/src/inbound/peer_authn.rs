//! The peer authentication stage (Istio `PeerAuthentication`): whether a request may reach a
//! workload port given how it arrived. STRICT needs mutual TLS, DISABLE needs plaintext,
//! PERMISSIVE takes both. Envoy has no filter chain for a refused combination, so the refusal
//! carries its flag, `NR`, and details, `filter_chain_not_found`.

use paymesh_api::model::MtlsMode;

use crate::context::Peer;
use crate::error::ProxyError;
use crate::index::ChainEntry;

/// Checks `peer` against `chain`'s mode.
pub fn check(chain: &ChainEntry, peer: &Peer) -> Result<(), ProxyError> {
    let required = match (chain.chain.mtls, peer) {
        (MtlsMode::Strict, Peer::Plaintext | Peer::Tls) => "mutual TLS",
        (MtlsMode::Disable, Peer::Mtls(_)) => "plaintext",
        _ => return Ok(()),
    };
    Err(ProxyError::PeerAuthentication {
        port: chain.chain.target_port,
        required,
        mode: chain.chain.mtls,
        policy: chain.chain.mtls_policy.clone(),
    })
}
