//! Traffic mirroring (Istio `mirror`, `mirrors`): a copy of a request, on each mirror's share of
//! requests, sent to the mirror's cluster with the authority's host suffixed `-shadow` (as Envoy
//! marks shadowed traffic), fire and forget: the copy's answer is drained and dropped, and its
//! failures are only logged, so nothing of it reaches the client.
//!
//! The copy is made from the request's kept head and body ([`crate::replay`]) once the original
//! has been answered: a request whose body was larger than the replay bound, or still streaming
//! then, is not mirrored. A copy gets the route's timeout (else [`MIRROR_TIMEOUT`]) to be sent and
//! answered, so a mirror that hangs holds no task or socket for longer.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority as UriAuthority;
use http::{HeaderMap, Request};
use http_body_util::BodyExt;
use paymesh_api::model::PER_MILLION;
use tracing::debug;

use crate::balance::{HashInput, Tried};
use crate::http::Body;
use crate::index::ClusterEntry;
use crate::transport;

/// How long a copy may take when its route has no timeout (Envoy's default route timeout).
pub const MIRROR_TIMEOUT: Duration = Duration::from_secs(15);

/// The mirror clusters this request is copied to, each drawn on its own share.
pub fn drawn(mirrors: &[(Arc<ClusterEntry>, u32)]) -> Vec<Arc<ClusterEntry>> {
    mirrors
        .iter()
        .filter(|(_, per_million)| {
            *per_million >= PER_MILLION || fastrand::u32(0..PER_MILLION) < *per_million
        })
        .map(|(cluster, _)| Arc::clone(cluster))
        .collect()
}

/// `authority` with `-shadow` after its host.
pub fn shadow(authority: &UriAuthority) -> Option<UriAuthority> {
    let shadowed = match authority.port() {
        Some(port) => format!("{}-shadow:{port}", authority.host()),
        None => format!("{}-shadow", authority.host()),
    };
    shadowed.parse().ok()
}

/// Sends `copy` to `cluster` with `authority`'s shadow, in the background, for at most `limit`.
pub fn send(
    cluster: Arc<ClusterEntry>,
    authority: &UriAuthority,
    copy: Request<Body>,
    source: IpAddr,
    limit: Duration,
) {
    let Some(authority) = shadow(authority) else { return };
    let name = cluster.name.clone();
    let copy = async move {
        let headers = HeaderMap::new();
        let input = HashInput { headers: &headers, query: None, source, generated_cookie: None };
        let Some(endpoint) = cluster.pick(&input, Tried::default()).and_then(|i| cluster.endpoint(i)) else {
            return debug!(cluster = %cluster.name, "mirror: no endpoint");
        };
        match transport::send(&endpoint.transport, endpoint.address, &authority, copy).await {
            Ok(sent) => {
                let _ = sent.response.into_body().collect().await;
            }
            Err(failed) => debug!(cluster = %cluster.name, error = %failed.error, "mirror failed"),
        }
    };
    tokio::spawn(async move {
        if tokio::time::timeout(limit, copy).await.is_err() {
            debug!(cluster = %name, ?limit, "mirror timed out");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shadow_authority_suffixes_the_host_and_keeps_the_port() {
        let with_port: UriAuthority = "account-service:8083".parse().expect("authority");
        assert_eq!(shadow(&with_port).map(|a| a.to_string()).as_deref(), Some("account-service-shadow:8083"));
        let bare: UriAuthority = "payments.example.com".parse().expect("authority");
        assert_eq!(shadow(&bare).map(|a| a.to_string()).as_deref(), Some("payments.example.com-shadow"));
    }
}
