//! Checks shared by the networking kinds (ports, durations, percentages, labels, exportTo,
//! header operations, regular expressions), each pushing Istio's message at a field path.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration as StdDuration;

use crate::path::FieldPath;
use crate::resource::FieldError;
use crate::types::{Duration, Percent, StringMatch, is_dns1123_label, label_problems};

pub(crate) fn push(errors: &mut Vec<FieldError>, at: &FieldPath, message: impl Into<String>) {
    errors.push(FieldError::new(at.clone(), message));
}

/// A port number in 1..=65535 (`ValidatePort`).
pub(crate) fn check_port(number: u32, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if !(1..=65535).contains(&number) {
        push(errors, at, format!("port number {number} must be in the range 1..65535"));
    }
}

/// A duration of at least 1ms, to ms precision (`ValidateDuration`).
pub(crate) fn check_duration(duration: &Duration, at: &FieldPath, errors: &mut Vec<FieldError>) {
    let d = duration.as_std();
    if d < StdDuration::from_millis(1) {
        push(errors, at, "duration must be greater than 1ms");
    } else if d.subsec_nanos() % 1_000_000 != 0 {
        push(errors, at, "only durations to ms precision are supported");
    }
}

pub(crate) fn check_optional_duration(
    duration: Option<&Duration>,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    if let Some(d) = duration {
        check_duration(d, at, errors);
    }
}

/// An integer percentage in 0..=100 (`ValidatePercent`).
pub(crate) fn check_percent(value: i32, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if !(0..=100).contains(&value) {
        push(errors, at, format!("percentage {value} is not in range 0..100"));
    }
}

/// A fractional percentage: 0, or within [0.0001, 100] (`validatePercentage`).
pub(crate) fn check_percentage(percent: Option<&Percent>, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if let Some(Percent { value }) = percent {
        let value = *value;
        if !(0.0..=100.0).contains(&value) || (value > 0.0 && value < 0.0001) {
            push(
                errors,
                &at.key("value"),
                format!("percentage {value} is neither 0.0, nor in range [0.0001, 100.0]"),
            );
        }
    }
}

/// Kubernetes-style label keys and values (`labels.Instance.Validate`).
pub(crate) fn check_labels(labels: &BTreeMap<String, String>, at: &FieldPath, errors: &mut Vec<FieldError>) {
    for problem in label_problems(labels) {
        push(errors, at, problem);
    }
}

/// Selector labels: no empty keys, no wildcards (`validateWorkloadSelector`).
pub(crate) fn check_selector_labels(
    labels: &BTreeMap<String, String>,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    for (key, value) in labels {
        if key.is_empty() {
            push(
                errors,
                at,
                format!("empty key is not supported in selector: {:?}", format!("{key}={value}")),
            );
        }
        if key.contains('*') || value.contains('*') {
            push(
                errors,
                &at.key(key.as_str()),
                format!("wildcard is not supported in selector: {:?}", format!("{key}={value}")),
            );
        }
    }
}

/// A subset name: a DNS-1123 label (`validateSubsetName`).
pub(crate) fn check_subset_name(name: &str, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if name.is_empty() {
        push(errors, at, "subset name cannot be empty");
    } else if !is_dns1123_label(name) {
        push(errors, at, format!("subset name is invalid: {name}"));
    }
}

/// A port name: a DNS-1123 label (`ValidatePortName`).
pub(crate) fn check_port_name(name: &str, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if !is_dns1123_label(name) {
        push(errors, at, format!("invalid port name: {name}"));
    }
}

/// The protocols Istio knows (`protocol.Parse`), case-insensitively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http,
    Http2,
    HttpProxy,
    Https,
    Grpc,
    GrpcWeb,
    Tcp,
    Tls,
    Udp,
    Mongo,
    Redis,
    Mysql,
}

impl Protocol {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "http" => Self::Http,
            "http2" => Self::Http2,
            "http_proxy" => Self::HttpProxy,
            "https" => Self::Https,
            "grpc" => Self::Grpc,
            "grpc-web" => Self::GrpcWeb,
            "tcp" => Self::Tcp,
            "tls" => Self::Tls,
            "udp" => Self::Udp,
            "mongo" => Self::Mongo,
            "redis" => Self::Redis,
            "mysql" => Self::Mysql,
            _ => return None,
        })
    }

    pub(crate) fn is_http(self) -> bool {
        matches!(self, Self::Http | Self::Http2 | Self::HttpProxy | Self::Grpc | Self::GrpcWeb)
    }

    pub(crate) fn is_tls(self) -> bool {
        matches!(self, Self::Https | Self::Tls)
    }
}

/// A protocol name, empty meaning "detect" (`ValidateProtocol`).
pub(crate) fn check_protocol(name: &str, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if !name.is_empty() && Protocol::parse(name).is_none() {
        push(errors, at, format!("unsupported protocol: {name}"));
    }
}

/// `exportTo`: `.`, `*`, namespace names (and `~` for ServiceEntries), without duplicates and
/// without mixing `*` or `~` with anything else (`validateExportTo`).
pub(crate) fn check_export_to(
    namespace: &str,
    export_to: &[String],
    is_service_entry: bool,
    selector_scoped: bool,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    let mut seen: HashSet<&str> = HashSet::new();
    for (i, entry) in export_to.iter().enumerate() {
        let at = at.index(i);
        let key = if entry == "." { namespace } else { entry.as_str() };
        if seen.contains(key) {
            if key != entry {
                push(
                    errors,
                    &at,
                    format!("duplicate entries in exportTo: . and current namespace {namespace}"),
                );
            } else {
                push(errors, &at, format!("duplicate entries in exportTo for entry {entry}"));
            }
            continue;
        }
        match key {
            "~" if is_service_entry => {}
            "~" => {
                push(errors, &at, "exportTo ~ (none) is not allowed for Istio configuration objects");
                continue;
            }
            "*" => {}
            _ if key == namespace || is_dns1123_label(key) => {}
            _ => {
                push(errors, &at, "only .,*,~, or a valid DNS 1123 label is allowed as exportTo entry");
                continue;
            }
        }
        seen.insert(key);
    }
    if selector_scoped && !seen.is_empty() {
        if !seen.contains(namespace) {
            push(
                errors,
                at,
                "destination rule with workload selector cannot have exportTo beyond current namespace",
            );
        } else if seen.len() > 1 {
            push(
                errors,
                at,
                "destination rule with workload selector cannot have multiple entries in exportTo",
            );
        }
    }
    if seen.contains("*") && export_to.len() > 1 {
        push(errors, at, "cannot have both public (*) and non-public exportTo values for a resource");
    }
    if seen.contains("~") && export_to.len() > 1 {
        push(errors, at, "cannot export service entry to no one (~) and someone");
    }
}

/// Prefix of a Unix domain socket address (`unix:///var/run/x.sock`, `unix://@abstract`).
pub(crate) const UNIX_ADDRESS_PREFIX: &str = "unix://";

/// The path of a Unix domain socket: absolute, not a directory, or an abstract `@name`
/// (`ValidateUnixAddress`).
pub(crate) fn check_unix_address(path: &str, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if path.is_empty() {
        push(errors, at, "unix address must not be empty");
    } else if !path.starts_with('@') && (!path.starts_with('/') || path.ends_with('/')) {
        push(errors, at, format!("{path} is not an absolute path to a file"));
    }
}

/// An IP address (`ValidateIPAddress`).
pub(crate) fn check_ip(address: &str, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if !super::host::is_ip(address) {
        push(errors, at, format!("{address} is not a valid IP"));
    }
}

/// Longest regular expression Istio accepts (Envoy's RE2 program-size limit, approximated).
const MAX_REGEX_LEN: usize = 1024;

/// The largest compiled regex the proxy accepts, in bytes of program: the value of
/// `REGEX_SIZE_LIMIT` in `crates/proxy/src/index/matching.rs`, which the two must share. A
/// pattern within Istio's 1024 characters can still exceed it (`\w{100}`: each Unicode class
/// compiles to kilobytes), and a regex validation accepts but the proxy refuses is a change
/// that is accepted, then NACKed.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// An RE2 regular expression (`validateStringRegexp`), compiled as the proxy compiles a
/// `StringMatch.regex`: the `regex` crate (RE2 syntax), anchored, within the proxy's size limit.
pub(crate) fn check_regex(re: &str, context: &str, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if re.len() > MAX_REGEX_LEN {
        push(errors, at, format!("{context:?}: regex is too large, max length allowed is {MAX_REGEX_LEN}"));
        return;
    }
    // On its own first: `a)|(.*` is not a regex, though wrapped it would parse.
    let compiled = regex::Regex::new(re)
        .and_then(|_| regex::RegexBuilder::new(&format!("^(?:{re})$")).size_limit(REGEX_SIZE_LIMIT).build());
    let reason = match compiled {
        Ok(_) => return,
        Err(regex::Error::CompiledTooBig(_)) => {
            return push(
                errors,
                at,
                format!(
                    "{context:?}: regex is too large: compiled, it exceeds the proxy's limit of {REGEX_SIZE_LIMIT} bytes"
                ),
            );
        }
        Err(regex::Error::Syntax(text)) => {
            let last = text.lines().last().unwrap_or_default().trim();
            last.strip_prefix("error: ").unwrap_or(last).to_owned()
        }
        Err(other) => other.to_string(),
    };
    push(
        errors,
        at,
        format!(
            "{context:?}: error parsing regexp: {reason}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
        ),
    );
}

/// A string match that must not be empty when it is a prefix or regex (`validateStringMatch`).
pub(crate) fn check_string_match(
    m: &StringMatch,
    context: &str,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    match m {
        StringMatch::Exact(_) => {}
        StringMatch::Prefix(p) if p.is_empty() => {
            push(errors, &at.key("prefix"), format!("{context:?}: prefix string match should not be empty"));
        }
        StringMatch::Prefix(_) => {}
        StringMatch::Regex(_) => check_string_match_regex(m, context, at, errors),
    }
}

/// Only the regex form is checked: it must be non-empty and compile (`validateStringMatchRegexp`).
pub(crate) fn check_string_match_regex(
    m: &StringMatch,
    context: &str,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) {
    if let StringMatch::Regex(re) = m {
        let at = at.key("regex");
        if re.is_empty() {
            push(errors, &at, format!("{context:?}: regex string match should not be empty"));
        } else {
            check_regex(re, context, &at, errors);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(f: impl FnOnce(&mut Vec<FieldError>)) -> Vec<String> {
        let mut errors = Vec::new();
        f(&mut errors);
        errors.into_iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn export_to_follows_istio() {
        let at = FieldPath::parse("spec.exportTo");
        let list = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(messages(|e| check_export_to("ns", &list(&[".", "other"]), false, false, &at, e)).is_empty());
        assert_eq!(
            messages(|e| check_export_to("ns", &list(&["ns", "."]), false, false, &at, e)),
            ["spec.exportTo[1]: duplicate entries in exportTo: . and current namespace ns"]
        );
        assert_eq!(
            messages(|e| check_export_to("ns", &list(&[".", "ns"]), false, false, &at, e)),
            ["spec.exportTo[1]: duplicate entries in exportTo for entry ns"]
        );
        assert_eq!(
            messages(|e| check_export_to("ns", &list(&["*", "a"]), false, false, &at, e)),
            ["spec.exportTo: cannot have both public (*) and non-public exportTo values for a resource"]
        );
        assert_eq!(
            messages(|e| check_export_to("ns", &list(&["~"]), false, false, &at, e)),
            ["spec.exportTo[0]: exportTo ~ (none) is not allowed for Istio configuration objects"]
        );
        assert!(messages(|e| check_export_to("ns", &list(&["~"]), true, false, &at, e)).is_empty());
        assert_eq!(
            messages(|e| check_export_to("ns", &list(&["Bad_NS"]), false, false, &at, e)),
            ["spec.exportTo[0]: only .,*,~, or a valid DNS 1123 label is allowed as exportTo entry"]
        );
    }

    #[test]
    fn durations_and_percentages() {
        let at = FieldPath::parse("spec.x");
        let d = |s: &str| s.parse::<Duration>().expect(s);
        assert_eq!(
            messages(|e| check_duration(&d("0s"), &at, e)),
            ["spec.x: duration must be greater than 1ms"]
        );
        assert_eq!(
            messages(|e| check_duration(&d("1.0005s"), &at, e)),
            ["spec.x: only durations to ms precision are supported"]
        );
        assert!(messages(|e| check_duration(&d("1ms"), &at, e)).is_empty());
        assert_eq!(
            messages(|e| check_percentage(Some(&Percent { value: 101.0 }), &at, e)),
            ["spec.x.value: percentage 101 is neither 0.0, nor in range [0.0001, 100.0]"]
        );
        assert_eq!(messages(|e| check_percent(-1, &at, e)), ["spec.x: percentage -1 is not in range 0..100"]);
    }

    #[test]
    fn regexes_compile_as_re2() {
        let at = FieldPath::parse("spec.r");
        assert!(messages(|e| check_regex("^/api/v[0-9]+", "uri", &at, e)).is_empty());
        let bad = messages(|e| check_regex("(", "uri", &at, e));
        assert_eq!(bad.len(), 1);
        assert!(bad[0].starts_with("spec.r: \"uri\": error parsing regexp: unclosed group;"), "{}", bad[0]);
        // Look-ahead is not RE2.
        assert_eq!(messages(|e| check_regex("a(?=b)", "uri", &at, e)).len(), 1);
        // Short, but too large a program for the proxy.
        assert_eq!(
            messages(|e| check_regex(r"\pL{100}", "uri", &at, e)),
            ["spec.r: \"uri\": regex is too large: compiled, it exceeds the proxy's limit of 1048576 bytes"]
        );
    }
}
