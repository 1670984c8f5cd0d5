//! Consistent hashing: a request key onto a ketama ring or a Maglev table of the cluster's
//! endpoints, built once per config. Endpoints are placed by their address, so every proxy of
//! the mesh, and every config that keeps an endpoint, sends a key to the same one; an endpoint
//! that leaves moves only the keys it had.

use paymesh_api::model::{self, ConsistentHash, Endpoint, HashKey};

use super::HashInput;
use crate::http::{cookie, query};

/// The largest ring built, whatever the minimum asked: 16 MiB of points.
const MAX_RING: u64 = 1024 * 1024;

/// How many other slots a Maglev lookup tries when the first one's endpoint can't be used.
const MAGLEV_RETRIES: u64 = 64;

/// A cluster's hash table and the key it reads.
#[derive(Debug)]
pub struct HashTable {
    key: HashKey,
    table: Table,
}

#[derive(Debug)]
enum Table {
    /// `(point, endpoint)` sorted by point.
    Ring(Vec<(u64, u32)>),
    /// Slot → endpoint; the length is prime.
    Maglev(Vec<u32>),
}

impl HashTable {
    /// The table of `endpoints` for `spec`.
    pub fn new(spec: &ConsistentHash, endpoints: &[Endpoint]) -> Self {
        let table = match spec.table {
            model::HashTable::RingHash { minimum_ring_size } => {
                Table::Ring(ring(endpoints, minimum_ring_size))
            }
            model::HashTable::Maglev { table_size } => Table::Maglev(maglev(endpoints, table_size)),
        };
        HashTable { key: spec.key.clone(), table }
    }

    /// The generated cookie's name, path and lifetime, when the key is a cookie with a TTL.
    pub fn cookie_to_generate(&self) -> Option<(&str, &str, u64)> {
        match &self.key {
            HashKey::Cookie { name, path, ttl_secs: Some(ttl) } => Some((name, path, *ttl)),
            _ => None,
        }
    }

    /// The hash of the request's key; `None` when the request has none.
    pub fn key_hash(&self, input: &HashInput<'_>) -> Option<u64> {
        match &self.key {
            HashKey::Header(name) => input.headers.get(name).map(|value| hash(value.as_bytes())),
            HashKey::Cookie { name, .. } => input
                .generated_cookie
                .or_else(|| cookie(input.headers, name))
                .map(|value| hash(value.as_bytes())),
            HashKey::SourceIp => Some(hash(input.source.to_string().as_bytes())),
            HashKey::QueryParameter(name) => {
                query::param(input.query?, name).map(|value| hash(value.as_bytes()))
            }
        }
    }

    /// The endpoint `hash` falls on, walking on past endpoints `allows` refuses.
    pub fn lookup(&self, hash: u64, allows: impl Fn(usize) -> bool) -> Option<usize> {
        match &self.table {
            Table::Ring(ring) if !ring.is_empty() => {
                let start = ring.partition_point(|(point, _)| *point < hash);
                (0..ring.len()).map(|k| ring[(start + k) % ring.len()].1 as usize).find(|i| allows(*i))
            }
            Table::Maglev(table) if !table.is_empty() => (0..=MAGLEV_RETRIES)
                .map(|k| table[(mix(hash.wrapping_add(k)) % table.len() as u64) as usize] as usize)
                .find(|i| allows(*i))
                .or_else(|| {
                    let mut all: Vec<usize> = table.iter().map(|i| *i as usize).collect();
                    all.sort_unstable();
                    all.dedup();
                    all.into_iter().find(|i| allows(*i))
                }),
            Table::Ring(_) | Table::Maglev(_) => None,
        }
    }
}

/// Ketama: each endpoint at `minimum` points hashed from `address_k` (fewer when the ring would
/// outgrow [`MAX_RING`]). Envoy divides the minimum among the endpoints, so a leaving endpoint
/// also shifts keys between those that stay; a fixed count per endpoint moves only its own.
fn ring(endpoints: &[Endpoint], minimum: u64) -> Vec<(u64, u32)> {
    let n = endpoints.len() as u64;
    if n == 0 {
        return Vec::new();
    }
    let per_endpoint = minimum.min(MAX_RING / n).max(1);
    let mut ring = Vec::with_capacity((per_endpoint * n) as usize);
    for (i, endpoint) in endpoints.iter().enumerate() {
        for k in 0..per_endpoint {
            ring.push((hash(format!("{}_{k}", endpoint.address).as_bytes()), i as u32));
        }
    }
    ring.sort_unstable();
    ring
}

/// Maglev's population: each endpoint fills slots along its own permutation, in turn.
fn maglev(endpoints: &[Endpoint], size: u64) -> Vec<u32> {
    let n = endpoints.len();
    if n == 0 || size < 2 {
        return Vec::new();
    }
    let permutations: Vec<(u64, u64)> = endpoints
        .iter()
        .map(|endpoint| {
            let address = endpoint.address.to_string();
            let offset = hash(address.as_bytes()) % size;
            let skip = mix(hash(address.as_bytes()) ^ 0x9e37_79b9) % (size - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut table = vec![u32::MAX; size as usize];
    let mut next = vec![0u64; n];
    let mut filled = 0;
    while filled < table.len() {
        for (i, (offset, skip)) in permutations.iter().enumerate() {
            let mut slot = ((offset + next[i] * skip) % size) as usize;
            while table[slot] != u32::MAX {
                next[i] += 1;
                slot = ((offset + next[i] * skip) % size) as usize;
            }
            table[slot] = i as u32;
            next[i] += 1;
            filled += 1;
            if filled == table.len() {
                break;
            }
        }
    }
    table
}

/// FNV-1a, then a finalizer that spreads it over all 64 bits: stable across processes and
/// builds, so every proxy hashes alike.
pub fn hash(bytes: &[u8]) -> u64 {
    let fnv = bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    mix(fnv)
}

/// The splitmix64 finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};

    use http::{HeaderMap, HeaderValue};
    use model::HashTable as Kind;

    use super::*;

    fn endpoints(n: u8) -> Vec<Endpoint> {
        (1..=n)
            .map(|i| Endpoint {
                address: SocketAddr::new(IpAddr::from([127, 0, 2, i]), 8083),
                tunnel_port: None,
                identity: String::new(),
                pod: format!("pod-{i}"),
                labels: Default::default(),
            })
            .collect()
    }

    fn spec(table: Kind) -> ConsistentHash {
        ConsistentHash { key: HashKey::Header("x-tenant-id".to_owned()), table }
    }

    /// Where each of 1,000 tenants lands, by pod name.
    fn placement(table: &HashTable, endpoints: &[Endpoint]) -> Vec<String> {
        (0..1000)
            .map(|t| {
                let mut headers = HeaderMap::new();
                headers.insert("x-tenant-id", HeaderValue::from_str(&format!("tenant-{t}")).expect("value"));
                let input = HashInput {
                    headers: &headers,
                    query: None,
                    source: IpAddr::from([127, 0, 0, 1]),
                    generated_cookie: None,
                };
                let hash = table.key_hash(&input).expect("the header is there");
                endpoints[table.lookup(hash, |_| true).expect("an endpoint")].pod.clone()
            })
            .collect()
    }

    #[test]
    fn an_endpoint_leaving_moves_only_its_tenants_on_either_table() {
        for kind in [Kind::RingHash { minimum_ring_size: 1024 }, Kind::Maglev { table_size: 65_537 }] {
            let (four, three) = (endpoints(4), endpoints(3));
            let before = placement(&HashTable::new(&spec(kind), &four), &four);
            let after = placement(&HashTable::new(&spec(kind), &three), &three);
            let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
            let had = before.iter().filter(|pod| *pod == "pod-4").count();
            assert!(had > 150, "{kind:?}: pod-4 had {had} of 1000 tenants");
            // Maglev may move a few more than the leaver's own (its tables are near-minimal).
            assert!(moved <= had + 20, "{kind:?}: {moved} moved, pod-4 had {had}");
            assert!(
                before
                    .iter()
                    .zip(&after)
                    .all(|(b, a)| b == a || b == "pod-4" || matches!(kind, Kind::Maglev { .. }))
            );
        }
    }

    #[test]
    fn keys_come_from_headers_cookies_query_and_source() {
        let mut headers = HeaderMap::new();
        headers.insert("cookie", HeaderValue::from_static("a=1; session=abc; b=2"));
        assert_eq!(cookie(&headers, "session"), Some("abc"));
        assert_eq!(cookie(&headers, "missing"), None);
        assert_eq!(hash(b"tenant-gold"), hash(b"tenant-gold"));
        assert_ne!(hash(b"tenant-gold"), hash(b"tenant-platinum"));
    }
}
