//! Value checks for the annotations the injector reads (`inject.AnnotationValidation`),
//! with Go's error texts so messages read as istioctl's do.

use std::net::IpAddr;

/// A value check: `Err` carries the problem, worded as Istio words it.
pub type Check = fn(&str) -> Result<(), String>;

/// The check for annotation `name`, if Istio validates its value.
pub fn validator(name: &str) -> Option<Check> {
    Some(match name {
        "sidecar.istio.io/interceptionMode" => interception_mode,
        "status.sidecar.istio.io/port" => status_port,
        "readiness.status.sidecar.istio.io/initialDelaySeconds"
        | "readiness.status.sidecar.istio.io/periodSeconds"
        | "readiness.status.sidecar.istio.io/failureThreshold" => |v| parse_uint(v, 32).map(drop),
        "traffic.sidecar.istio.io/includeOutboundIPRanges" => include_ip_ranges,
        "traffic.sidecar.istio.io/excludeOutboundIPRanges" => {
            |v| cidr_list(v).map_err(|e| format!("excludeIPRanges invalid: {e}"))
        }
        "traffic.sidecar.istio.io/includeInboundPorts" => include_inbound_ports,
        "traffic.sidecar.istio.io/excludeInboundPorts" => |v| port_list("excludeInboundPorts", v),
        "traffic.sidecar.istio.io/excludeOutboundPorts" => |v| port_list("excludeOutboundPorts", v),
        "prometheus.istio.io/merge-metrics" => parse_bool,
        "proxy.istio.io/config" => proxy_config,
        _ => return None,
    })
}

fn interception_mode(mode: &str) -> Result<(), String> {
    match mode {
        "REDIRECT" | "TPROXY" | "NONE" => Ok(()),
        _ => Err(format!("interceptionMode invalid, use REDIRECT,TPROXY,NONE: {mode}")),
    }
}

fn status_port(port: &str) -> Result<(), String> {
    parse_port(port).map(drop).map_err(|e| format!("excludeInboundPorts invalid: {e}"))
}

fn include_ip_ranges(ranges: &str) -> Result<(), String> {
    if ranges == "*" {
        return Ok(());
    }
    cidr_list(ranges).map_err(|e| format!("includeIPRanges invalid: {e}"))
}

fn include_inbound_ports(ports: &str) -> Result<(), String> {
    if ports == "*" { Ok(()) } else { port_list("includeInboundPorts", ports) }
}

/// Go's `strconv.ParseUint(value, 10, bits)`.
fn parse_uint(value: &str, bits: u32) -> Result<u64, String> {
    let n: u64 =
        value.parse().map_err(|_| format!("strconv.ParseUint: parsing {value:?}: invalid syntax"))?;
    if value.starts_with('+') || n >= 1u64 << bits {
        return Err(format!("strconv.ParseUint: parsing {value:?}: value out of range"));
    }
    Ok(n)
}

fn parse_port(port: &str) -> Result<u64, String> {
    parse_uint(port.trim(), 16).map_err(|e| format!("failed parsing port '{port}': {e}"))
}

fn port_list(parameter: &str, ports: &str) -> Result<(), String> {
    let ports = ports.trim();
    if ports.is_empty() {
        return Ok(());
    }
    for port in ports.split(',') {
        parse_port(port).map_err(|e| format!("{parameter} invalid: failed parsing port '{port}': {e}"))?;
    }
    Ok(())
}

/// A comma-separated list of CIDRs (`netip.ParsePrefix` each); empty is fine.
fn cidr_list(cidrs: &str) -> Result<(), String> {
    if cidrs.is_empty() {
        return Ok(());
    }
    for cidr in cidrs.split(',') {
        let valid = cidr.split_once('/').is_some_and(|(ip, bits)| {
            let max = match ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return false,
            };
            !bits.is_empty()
                && bits.bytes().all(|b| b.is_ascii_digit())
                && bits.parse::<u32>().is_ok_and(|b| b <= max)
        });
        if !valid {
            return Err(format!("failed parsing cidr '{cidr}': netip.ParsePrefix({cidr:?}): invalid prefix"));
        }
    }
    Ok(())
}

/// Go's `strconv.ParseBool`.
fn parse_bool(value: &str) -> Result<(), String> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" | "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(()),
        _ => Err(format!("strconv.ParseBool: parsing {value:?}: invalid syntax")),
    }
}

/// `proxy.istio.io/config` must be a ProxyConfig document: paymesh checks it is a YAML
/// mapping (or empty); Istio also validates each ProxyConfig field.
fn proxy_config(value: &str) -> Result<(), String> {
    match crate::yaml::parse_stream(value).into_iter().next() {
        None | Some(Ok(crate::yaml::Document { root: None, .. })) => Ok(()),
        Some(Ok(crate::yaml::Document { root: Some(root), .. })) if root.to_json().is_object() => Ok(()),
        Some(Ok(_)) => Err("failed to convert to apply proxy config: not a ProxyConfig mapping".to_owned()),
        Some(Err(e)) => Err(format!("failed to convert to apply proxy config: {}", e.message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, value: &str) -> Result<(), String> {
        validator(name).expect("validated annotation")(value)
    }

    #[test]
    fn values_are_checked_as_the_injector_does() {
        assert!(check("readiness.status.sidecar.istio.io/periodSeconds", "10").is_ok());
        assert_eq!(
            check("readiness.status.sidecar.istio.io/initialDelaySeconds", "bar"),
            Err("strconv.ParseUint: parsing \"bar\": invalid syntax".to_owned())
        );
        assert!(check("traffic.sidecar.istio.io/includeOutboundIPRanges", "*").is_ok());
        assert!(check("traffic.sidecar.istio.io/includeOutboundIPRanges", "10.0.0.0/8,fd00::/8").is_ok());
        assert!(check("traffic.sidecar.istio.io/excludeOutboundIPRanges", "10.0.0.1").is_err());
        assert!(check("traffic.sidecar.istio.io/excludeInboundPorts", "15020, 15021").is_ok());
        assert!(check("traffic.sidecar.istio.io/excludeOutboundPorts", "70000").is_err());
        assert!(check("sidecar.istio.io/interceptionMode", "REDIRECT").is_ok());
        assert!(check("sidecar.istio.io/interceptionMode", "redirect").is_err());
        assert!(check("prometheus.istio.io/merge-metrics", "yes").is_err());
        assert!(check("proxy.istio.io/config", "{}").is_ok());
        assert!(check("proxy.istio.io/config", "[1]").is_err());
        assert!(validator("sidecar.istio.io/proxyImage").is_none());
    }
}
