//! Traffic-policy rules of Istio's webhook (`validateTrafficPolicy`, `validateLoadBalancer`,
//! `validateConnectionPool`, `validateOutlierDetection`, `ValidateTLS`,
//! `ValidateLocalityLbSetting`), plus the CRD's own bounds where the webhook has none.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, H2UpgradePolicy, HashAlgorithm, HashKey,
    LbPolicy, LoadBalancerSettings, LocalityLbSetting, OutlierDetection, PortTrafficPolicy, TrafficPolicy,
    TunnelSettings,
};
use crate::networking::host;
use crate::networking::rules::{self, push};
use crate::path::FieldPath;
use crate::resource::FieldError;
use crate::validate::Validate;

/// Maglev table sizes must stay below this prime (Envoy's limit).
const MAGLEV_TABLE_SIZE_LIMIT: u64 = 5_000_011;

/// Topology labels that `failoverPriority` may not use together with `failover`.
const TOPOLOGY_LABELS: &[&str] =
    &["topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone"];

impl Validate for TrafficPolicy {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        let empty = self.outlier_detection.is_none()
            && self.connection_pool.is_none()
            && self.load_balancer.is_none()
            && self.tls.is_none()
            && self.port_level_settings.is_empty()
            && self.tunnel.is_none()
            && self.proxy_protocol.is_none()
            && self.retry_budget.is_none();
        if empty {
            return push(errors, at, "traffic policy must have at least one field");
        }
        if self.tunnel.is_some() && self.proxy_protocol.is_some() {
            return push(errors, at, "tunnel and proxyProtocol must not be set together");
        }
        check_components(
            self.outlier_detection.as_ref(),
            self.connection_pool.as_ref(),
            self.load_balancer.as_ref(),
            self.tls.as_ref(),
            at,
            errors,
        );
        for (i, port_policy) in self.port_level_settings.iter().enumerate() {
            port_policy.validate(&at.key("portLevelSettings").index(i), errors);
        }
        if let Some(tunnel) = &self.tunnel {
            tunnel.validate(&at.key("tunnel"), errors);
        }
        if let Some(percent) = self.retry_budget.as_ref().and_then(|b| b.percent) {
            if !(0.0..=100.0).contains(&percent) {
                push(
                    errors,
                    &at.key("retryBudget").key("percent"),
                    format!("percentage {percent} is not in range 0..100"),
                );
            }
        }
    }
}

fn check_components(
    outlier: Option<&OutlierDetection>,
    pool: Option<&ConnectionPoolSettings>,
    lb: Option<&LoadBalancerSettings>,
    tls: Option<&ClientTlsSettings>,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    if let Some(outlier) = outlier {
        outlier.validate(&at.key("outlierDetection"), errors);
    }
    if let Some(pool) = pool {
        pool.validate(&at.key("connectionPool"), errors);
    }
    if let Some(lb) = lb {
        check_load_balancer(lb, &at.key("loadBalancer"), errors);
    }
    if let Some(tls) = tls {
        tls.validate(&at.key("tls"), errors);
    }
}

impl Validate for PortTrafficPolicy {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        match &self.port {
            None => push(errors, at, "portTrafficPolicy must have valid port"),
            Some(port) => rules::check_port(port.number, &at.key("port").key("number"), errors),
        }
        if self.outlier_detection.is_none()
            && self.connection_pool.is_none()
            && self.load_balancer.is_none()
            && self.tls.is_none()
        {
            return push(errors, at, "port traffic policy must have at least one field");
        }
        check_components(
            self.outlier_detection.as_ref(),
            self.connection_pool.as_ref(),
            self.load_balancer.as_ref(),
            self.tls.as_ref(),
            at,
            errors,
        );
    }
}

impl Validate for OutlierDetection {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        rules::check_optional_duration(self.base_ejection_time.as_ref(), &at.key("baseEjectionTime"), errors);
        if !self.split_external_local_origin_errors && self.consecutive_local_origin_failures.unwrap_or(0) > 0
        {
            push(
                errors,
                &at.key("consecutiveLocalOriginFailures"),
                "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
            );
        }
        rules::check_optional_duration(self.interval.as_ref(), &at.key("interval"), errors);
        rules::check_percent(self.max_ejection_percent, &at.key("maxEjectionPercent"), errors);
        rules::check_percent(self.min_health_percent, &at.key("minHealthPercent"), errors);
        for (i, code) in self.outlier_detection_http_error_codes.iter().enumerate() {
            if !(100..=599).contains(code) {
                push(
                    errors,
                    &at.key("outlierDetectionHttpErrorCodes").index(i),
                    format!("HTTP status {code} is not in range 100-599"),
                );
            }
        }
    }
}

impl Validate for ConnectionPoolSettings {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        if self.http.is_none() && self.tcp.is_none() {
            return push(errors, at, "connection pool must have at least one field");
        }
        if let Some(http) = &self.http {
            let at = at.key("http");
            let limits = [
                (http.http1_max_pending_requests, "http1MaxPendingRequests", "http1 max pending requests"),
                (http.http2_max_requests, "http2MaxRequests", "http2 max requests"),
                (http.max_requests_per_connection, "maxRequestsPerConnection", "max requests per connection"),
                (http.max_retries, "maxRetries", "max retries"),
                (http.max_concurrent_streams, "maxConcurrentStreams", "max concurrent streams"),
            ];
            for (value, field, what) in limits {
                if value < 0 {
                    push(errors, &at.key(field), format!("{what} must be non-negative"));
                }
            }
            rules::check_optional_duration(http.idle_timeout.as_ref(), &at.key("idleTimeout"), errors);
            if http.h2_upgrade_policy == H2UpgradePolicy::Upgrade && http.use_client_protocol {
                push(
                    errors,
                    &at.key("useClientProtocol"),
                    "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
                );
            }
            if let Some(keep_alive) = &http.http2_keep_alive {
                let at = at.key("http2KeepAlive");
                rules::check_optional_duration(keep_alive.interval.as_ref(), &at.key("interval"), errors);
                rules::check_optional_duration(keep_alive.timeout.as_ref(), &at.key("timeout"), errors);
            }
        }
        if let Some(tcp) = &self.tcp {
            let at = at.key("tcp");
            if tcp.max_connections < 0 {
                push(errors, &at.key("maxConnections"), "max connections must be non-negative");
            }
            rules::check_optional_duration(tcp.connect_timeout.as_ref(), &at.key("connectTimeout"), errors);
            rules::check_optional_duration(
                tcp.max_connection_duration.as_ref(),
                &at.key("maxConnectionDuration"),
                errors,
            );
            // `0s` turns the idle timeout off.
            if let Some(idle) = tcp.idle_timeout.filter(|d| d.as_std().as_millis() != 0) {
                rules::check_duration(&idle, &at.key("idleTimeout"), errors);
            }
            if let Some(keepalive) = &tcp.tcp_keepalive {
                let at = at.key("tcpKeepalive");
                rules::check_optional_duration(keepalive.time.as_ref(), &at.key("time"), errors);
                rules::check_optional_duration(keepalive.interval.as_ref(), &at.key("interval"), errors);
            }
        }
    }
}

fn check_load_balancer(lb: &LoadBalancerSettings, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if let Some(LbPolicy::ConsistentHash(hash)) = &lb.policy {
        let at = at.key("consistentHash");
        if let Some(HashKey::HttpCookie(cookie)) = &hash.hash_key {
            if cookie.name.is_empty() {
                push(errors, &at.key("httpCookie").key("name"), "name required for HttpCookie");
            }
        }
        if hash.minimum_ring_size != 0 && hash.hash_algorithm.is_some() {
            push(errors, &at, "only one of MinimumRingSize or Maglev/Ringhash can be specified");
        }
        if let Some(HashAlgorithm::Maglev(maglev)) = &hash.hash_algorithm {
            let at = at.key("maglev").key("tableSize");
            let size = maglev.table_size;
            if size == 0 {
                push(errors, &at, "tableSize must be set for maglev");
            }
            if size >= MAGLEV_TABLE_SIZE_LIMIT {
                push(
                    errors,
                    &at,
                    format!("tableSize must be less than {MAGLEV_TABLE_SIZE_LIMIT} for maglev"),
                );
            }
            if !is_prime(size) {
                push(errors, &at, "tableSize must be a prime number for maglev");
            }
        }
    }
    if let Some(locality) = &lb.locality_lb_setting {
        check_locality(locality, &at.key("localityLbSetting"), errors);
    }
    rules::check_optional_duration(lb.warmup_duration_secs.as_ref(), &at.key("warmupDurationSecs"), errors);
    if let Some(warmup) = &lb.warmup {
        let at = at.key("warmup");
        match &warmup.duration {
            Some(duration) => rules::check_duration(duration, &at.key("duration"), errors),
            None => push(errors, &at.key("duration"), "duration is required"),
        }
        match warmup.minimum_percent {
            Some(p) if p > 100.0 => {
                push(
                    errors,
                    &at.key("minimumPercent"),
                    "minimumPercent value should be less than or equal to 100",
                );
            }
            Some(p) if p < 0.0 => {
                push(
                    errors,
                    &at.key("minimumPercent"),
                    "minimumPercent value should be greater than or equal to 0",
                );
            }
            _ => {}
        }
        if warmup.aggression.is_some_and(|a| a < 1.0) {
            push(errors, &at.key("aggression"), "aggression should be greater than or equal to 1");
        }
    }
    if let Some(size) = lb.zone_aware_lb_setting.as_ref().and_then(|z| z.min_cluster_size) {
        if size < 1 {
            push(
                errors,
                &at.key("zoneAwareLbSetting").key("minClusterSize"),
                "minClusterSize must be at least 1",
            );
        }
    }
}

/// Envoy's primality test for Maglev table sizes (so the answers agree with Envoy's).
fn is_prime(x: u64) -> bool {
    // Deterministic Miller-Rabin: these bases decide every u64, in microseconds even for a
    // hostile 19-digit tableSize (trial division took seconds).
    const BASES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    if x < 2 {
        return x != 0 && x < 4;
    }
    if let Some(&small) = BASES.iter().find(|&&p| x % p == 0) {
        return x == small;
    }
    let mul = |a: u64, b: u64| (u128::from(a) * u128::from(b) % u128::from(x)) as u64;
    let pow = |mut base: u64, mut exp: u64| {
        let mut acc = 1;
        while exp > 0 {
            if exp & 1 == 1 {
                acc = mul(acc, base);
            }
            base = mul(base, base);
            exp >>= 1;
        }
        acc
    };
    let (mut d, mut r) = (x - 1, 0);
    while d % 2 == 0 {
        d /= 2;
        r += 1;
    }
    BASES.iter().all(|&a| {
        let mut y = pow(a, d);
        if y == 1 || y == x - 1 {
            return true;
        }
        (1..r).any(|_| {
            y = mul(y, y);
            y == x - 1
        })
    })
}

/// `ValidateLocalityLbSetting`: like Istio, stops at the first structural problem.
fn check_locality(lb: &LocalityLbSetting, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if !lb.distribute.is_empty() && !lb.failover.is_empty() {
        return push(errors, at, "can not simultaneously specify 'distribute' and 'failover'");
    }
    if !lb.failover.is_empty() {
        if let Some(label) = lb.failover_priority.iter().find(|l| TOPOLOGY_LABELS.contains(&l.as_str())) {
            return push(
                errors,
                &at.key("failoverPriority"),
                format!(
                    "can not simultaneously set 'failover' and topology label '{label}' in 'failover_priority'"
                ),
            );
        }
    }
    let mut sources = Vec::new();
    for (i, distribute) in lb.distribute.iter().enumerate() {
        let at = at.key("distribute").index(i);
        sources.push(distribute.from.as_str());
        if distribute.to.values().any(|w| !(1..=100).contains(w)) {
            return push(errors, &at.key("to"), "locality weight must be in range [1, 100]");
        }
        let total: u64 = distribute.to.values().map(|w| u64::from(*w)).sum();
        if total != 100 {
            return push(errors, &at.key("to"), format!("total locality weight {total} != 100"));
        }
        let targets: Vec<&str> = distribute.to.keys().map(String::as_str).collect();
        if let Err(e) = check_localities(&targets) {
            push(errors, &at.key("to"), e);
        }
    }
    if let Err(e) = check_localities(&sources) {
        push(errors, &at.key("distribute"), e);
    }
    for (i, failover) in lb.failover.iter().enumerate() {
        let at = at.key("failover").index(i);
        if failover.from == failover.to {
            push(errors, &at, "locality lb failover settings must specify different regions");
        }
        if failover.from.contains('/') || failover.to.contains('/') {
            push(errors, &at, "locality lb failover only specify region");
        }
        if failover.from.contains('*') || failover.to.contains('*') {
            push(errors, &at, "locality lb failover region should not contain '*' wildcard");
        }
    }
}

/// Localities (`region/zone/subzone`, optionally ending in `*`) must not overlap
/// (`validateLocalities`).
fn check_localities(localities: &[&str]) -> Result<(), String> {
    // region -> zone -> subzones; "*" entries stand for "all of them".
    let mut seen: BTreeMap<&str, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    for locality in localities {
        let overlap = || format!("locality {locality} overlap with previous specified ones");
        let stars = locality.matches('*').count();
        if stars > 1 || (stars == 1 && !locality.ends_with('*')) {
            return Err(format!(
                "locality {locality} wildcard '*' number can not exceed 1 and must be in the end"
            ));
        }
        if seen.contains_key("*") {
            return Err(overlap());
        }
        let items: Vec<&str> = locality.splitn(3, '/').collect();
        if items.iter().any(|i| i.is_empty()) {
            return Err(format!("locality {locality} must not contain empty region/zone/subzone info"));
        }
        match items[..] {
            [region] => {
                if seen.contains_key(region) {
                    return Err(overlap());
                }
                seen.insert(region, BTreeMap::from([("*", BTreeSet::from(["*"]))]));
            }
            [region, zone] => {
                let zones = seen.entry(region).or_default();
                if zones.contains_key("*") || zones.contains_key(zone) {
                    return Err(overlap());
                }
                zones.insert(zone, BTreeSet::from(["*"]));
            }
            [region, zone, subzone] => {
                let zones = seen.entry(region).or_default();
                if zones.contains_key("*") {
                    return Err(overlap());
                }
                let subzones = zones.entry(zone).or_default();
                if subzones.contains("*") || subzones.contains(subzone) {
                    return Err(overlap());
                }
                subzones.insert(subzone);
            }
            _ => {}
        }
    }
    Ok(())
}

impl Validate for ClientTlsSettings {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        let simple = self.mode == ClientTlsMode::Simple;
        let mutual = self.mode == ClientTlsMode::Mutual;
        if self.insecure_skip_verify == Some(true) {
            let sans = !self.subject_alt_names.is_empty();
            if simple && (!self.ca_certificates.is_empty() || !self.credential_name.is_empty() || sans) {
                push(
                    errors,
                    &at.key("insecureSkipVerify"),
                    "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true",
                );
            }
            if mutual && (!self.ca_certificates.is_empty() || sans) {
                push(
                    errors,
                    &at.key("insecureSkipVerify"),
                    "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true",
                );
            }
        }
        if (simple || mutual) && !self.credential_name.is_empty() {
            let files = [&self.client_certificate, &self.ca_certificates, &self.private_key, &self.ca_crl];
            if files.iter().any(|f| !f.is_empty()) {
                push(
                    errors,
                    &at.key("credentialName"),
                    "cannot specify client certificates or CA certificate or CA CRL If credentialName is set",
                );
            }
            return;
        }
        if mutual {
            if self.client_certificate.is_empty() {
                push(errors, &at.key("clientCertificate"), "client certificate required for mutual tls");
            }
            if self.private_key.is_empty() {
                push(errors, &at.key("privateKey"), "private key required for mutual tls");
            }
        }
    }
}

impl Validate for TunnelSettings {
    fn validate(&self, at: &FieldPath, errors: &mut Vec<FieldError>) {
        if !matches!(self.protocol.as_str(), "" | "CONNECT" | "POST") {
            push(errors, &at.key("protocol"), "tunnel protocol must be \"CONNECT\" or \"POST\"");
        }
        if let Err(fqdn) = host::validate_fqdn(&self.target_host) {
            if !host::is_ip(&self.target_host) {
                push(
                    errors,
                    &at.key("targetHost"),
                    format!(
                        "tunnel target host must be valid FQDN or IP address: {fqdn}; {} is not a valid IP",
                        self.target_host
                    ),
                );
            }
        }
        if !(1..=65535).contains(&self.target_port) {
            push(
                errors,
                &at.key("targetPort"),
                format!(
                    "tunnel target port is invalid: port number {} must be in the range 1..65535",
                    self.target_port
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes_like_envoy() {
        assert!(is_prime(65537));
        assert!(is_prime(2));
        assert!(!is_prime(0));
        assert!(!is_prime(65536));
        assert!(!is_prime(9));
        assert!(is_prime(4_294_967_291));
        assert!(is_prime(18_446_744_073_709_551_557), "the largest u64 prime, decided at once");
        assert!(!is_prime(18_446_744_073_709_551_555));
    }

    #[test]
    fn localities_must_not_overlap() {
        assert_eq!(check_localities(&["us-east", "us-west/zone1", "us-west/zone2/a"]), Ok(()));
        assert_eq!(
            check_localities(&["us-east", "us-east/zone1"]),
            Err("locality us-east/zone1 overlap with previous specified ones".to_owned())
        );
        assert_eq!(
            check_localities(&["*", "us-east"]),
            Err("locality us-east overlap with previous specified ones".to_owned())
        );
        assert_eq!(
            check_localities(&["us-*-1"]),
            Err("locality us-*-1 wildcard '*' number can not exceed 1 and must be in the end".to_owned())
        );
        assert_eq!(
            check_localities(&["us//a"]),
            Err("locality us//a must not contain empty region/zone/subzone info".to_owned())
        );
    }
}
