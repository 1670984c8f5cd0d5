//! Value types shared by Istio's resources, parsed as Istio parses them: durations
//! (`1s`, `500ms`, `1m30s`, `1h`), workload selectors, port selectors, string matches,
//! percentages, oneOf decoding, and the DNS-1123 / label-map checks every kind uses.
//!
//! Each type deserializes from the YAML spelling and rejects what Istio rejects, so a typo
//! is an error at its field, not a silently different behaviour.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as Go's `time.ParseDuration` accepts it (`1.5s`, `1m30s`, `300ms`),
/// which is what Istio accepts for its `google.protobuf.Duration` fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub StdDuration);

/// Why a duration did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (expected e.g. \"500ms\", \"1s\", \"1m30s\", \"1h\")")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

impl Duration {
    pub fn as_std(self) -> StdDuration {
        self.0
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| DurationError { input: input.to_owned(), reason };
        if input == "0" {
            return Ok(Self(StdDuration::ZERO));
        }
        if input.starts_with('-') {
            return Err(err("negative"));
        }
        let mut rest = input.strip_prefix('+').unwrap_or(input);
        if rest.is_empty() {
            return Err(err("empty"));
        }
        let mut total_nanos: u128 = 0;
        while !rest.is_empty() {
            let number_len =
                rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or(err("missing unit"))?;
            if number_len == 0 {
                return Err(err("expected a number"));
            }
            let (number, tail) = rest.split_at(number_len);
            let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let unit_nanos: u128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60 * 1_000_000_000,
                "h" => 3_600 * 1_000_000_000,
                _ => return Err(err("unknown unit")),
            };
            let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
            if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
                return Err(err("expected a number"));
            }
            let whole: u128 =
                if whole.is_empty() { 0 } else { whole.parse().map_err(|_| err("number too large"))? };
            let mut nanos = whole.checked_mul(unit_nanos).ok_or(err("number too large"))?;
            let mut scale = unit_nanos;
            for digit in fraction.bytes().take(18) {
                scale /= 10;
                nanos = nanos.checked_add(u128::from(digit - b'0') * scale).ok_or(err("number too large"))?;
            }
            total_nanos = total_nanos.checked_add(nanos).ok_or(err("number too large"))?;
            rest = tail;
        }
        let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| err("number too large"))?;
        Ok(Self(StdDuration::new(secs, (total_nanos % 1_000_000_000) as u32)))
    }
}

impl fmt::Display for Duration {
    /// Prints the shortest exact Go-style spelling (`1m30s`, `250ms`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos % 1_000_000_000 != 0 {
            return match nanos {
                n if n % 1_000_000 == 0 => write!(f, "{}ms", n / 1_000_000),
                n if n % 1_000 == 0 => write!(f, "{}us", n / 1_000),
                n => write!(f, "{n}ns"),
            };
        }
        let secs = self.0.as_secs();
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `selector:` of a policy: the labels a workload must carry for the policy to apply.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    /// Whether a workload with `labels` is selected (every listed label must match).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// A port named by number (`port: {number: 8080}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortSelector {
    #[serde(default)]
    pub number: u32,
}

/// How a string is matched: exactly one of `exact`, `prefix` or `regex` (RE2 syntax).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

impl StringMatch {
    /// The string matched against, whatever the form.
    pub fn value(&self) -> &str {
        match self {
            Self::Exact(s) | Self::Prefix(s) | Self::Regex(s) => s,
        }
    }
}

/// A `StringMatch` field that may also be written `{}`: no condition, which Istio reads as
/// "anything" (for a header: "present with any value").
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "StringMatchFields")]
pub enum StringCondition {
    Any,
    Match(StringMatch),
}

impl StringCondition {
    /// The match, when one is given.
    pub fn as_match(&self) -> Option<&StringMatch> {
        match self {
            Self::Any => None,
            Self::Match(m) => Some(m),
        }
    }
}

/// The wire form of a string match: at most one of the three may be set.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StringMatchFields {
    exact: Option<String>,
    prefix: Option<String>,
    regex: Option<String>,
}

impl TryFrom<StringMatchFields> for StringCondition {
    type Error = OneOfError;

    fn try_from(f: StringMatchFields) -> Result<Self, Self::Error> {
        let picked = one_of([
            ("exact", f.exact.map(StringMatch::Exact)),
            ("prefix", f.prefix.map(StringMatch::Prefix)),
            ("regex", f.regex.map(StringMatch::Regex)),
        ])?;
        Ok(picked.map_or(Self::Any, Self::Match))
    }
}

/// More than one alternative of a oneOf (a protobuf `oneof`) was set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("only one of {} may be set, found {}", .allowed.join(", "), .found.join(" and "))]
pub struct OneOfError {
    allowed: Vec<&'static str>,
    found: Vec<&'static str>,
}

/// The one alternative of a oneOf that is set (`None` when none is), as a protobuf `oneof`
/// decodes; several set is an error naming them.
pub fn one_of<T, const N: usize>(
    alternatives: [(&'static str, Option<T>); N],
) -> Result<Option<T>, OneOfError> {
    let allowed: Vec<_> = alternatives.iter().map(|(name, _)| *name).collect();
    let found: Vec<_> = alternatives.iter().filter(|(_, v)| v.is_some()).map(|(name, _)| *name).collect();
    if found.len() > 1 {
        return Err(OneOfError { allowed, found });
    }
    Ok(alternatives.into_iter().find_map(|(_, v)| v))
}

/// A percentage as Istio writes it (`{value: 12.5}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

/// Longest DNS-1123 label (RFC 1123): 63 characters.
pub const DNS1123_LABEL_MAX: usize = 63;

/// Whether `value` is a DNS-1123 label as Istio checks it: 1..=63 letters, digits or `-`,
/// starting and ending with a letter or digit (Istio accepts upper case too).
pub fn is_dns1123_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            value.len() <= DNS1123_LABEL_MAX
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

/// Whether `value` is a DNS-1123 label that may start with a wildcard: `*`, `*foo`, `*-foo` or
/// a plain label.
pub fn is_wildcard_dns1123_label(value: &str) -> bool {
    value.len() <= DNS1123_LABEL_MAX
        && (value == "*"
            || is_dns1123_label(value)
            || value.strip_prefix('*').is_some_and(is_dns1123_label)
            || value.strip_prefix("*-").is_some_and(is_dns1123_label))
}

/// Why a label map (workload labels, subset labels, source labels) is not valid, as Istio's
/// `labels.Instance.Validate` says it: one message per bad key or value.
pub fn label_problems(labels: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, value) in labels {
        if let Some(problem) = label_key_problem(key) {
            problems.push(problem);
        }
        if !(value.is_empty() || is_qualified_name(value)) {
            problems.push(format!("invalid tag value: {value:?}"));
        }
    }
    problems
}

/// A Kubernetes label key: an optional DNS-name prefix and `/`, then a qualified name.
fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| p.split('.').all(is_dns1123_label));
    if !prefix_ok || !is_qualified_name(name) {
        return Some(format!("invalid tag key: {key:?}"));
    }
    if prefix.is_some_and(|p| p.len() > 253) {
        return Some(format!("invalid tag key: {key:?} (DNS prefix is too long)"));
    }
    if name.len() > DNS1123_LABEL_MAX {
        return Some(format!("invalid tag key: {key:?} (name is too long)"));
    }
    None
}

/// Letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit.
fn is_qualified_name(value: &str) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> StdDuration {
        s.parse::<Duration>().expect(s).0
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(d("1s"), StdDuration::from_secs(1));
        assert_eq!(d("500ms"), StdDuration::from_millis(500));
        assert_eq!(d("1m30s"), StdDuration::from_secs(90));
        assert_eq!(d("1h"), StdDuration::from_secs(3600));
        assert_eq!(d("1.5s"), StdDuration::from_millis(1500));
        assert_eq!(d(".5s"), StdDuration::from_millis(500));
        assert_eq!(d("0"), StdDuration::ZERO);
        for bad in [
            "",
            "1",
            "-1s",
            "1x",
            "s",
            "1..5s",
            "99999999999999999999h",
            "340282366920938463463374607431768211.999us",
        ] {
            assert!(bad.parse::<Duration>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn durations_print_back() {
        for s in ["1m30s", "250ms", "1h", "2h0m5s".replace("0m", "").as_str(), "0s"] {
            assert_eq!(s.parse::<Duration>().expect(s).to_string(), s);
        }
    }

    #[test]
    fn string_match_takes_exactly_one_form() {
        let m: StringMatch = serde_json::from_value(serde_json::json!({"prefix": "/v1"})).expect("prefix");
        assert_eq!(m, StringMatch::Prefix("/v1".into()));
        assert!(
            serde_json::from_value::<StringMatch>(serde_json::json!({"exact": "a", "prefix": "b"})).is_err()
        );
    }

    #[test]
    fn string_condition_allows_empty() {
        let any: StringCondition = serde_json::from_value(serde_json::json!({})).expect("empty");
        assert_eq!(any, StringCondition::Any);
        let m: StringCondition = serde_json::from_value(serde_json::json!({"regex": "a.*"})).expect("regex");
        assert_eq!(m.as_match(), Some(&StringMatch::Regex("a.*".into())));
        let both =
            serde_json::from_value::<StringCondition>(serde_json::json!({"exact": "a", "prefix": "b"}));
        assert_eq!(
            both.map_err(|e| e.to_string()).expect_err("two forms"),
            "only one of exact, prefix, regex may be set, found exact and prefix"
        );
    }

    #[test]
    fn dns1123_labels() {
        for good in ["a", "a-b", "A1", &"x".repeat(63)] {
            assert!(is_dns1123_label(good), "{good}");
        }
        for bad in ["", "-a", "a-", "a.b", "a_b", &"x".repeat(64), "*"] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
        for good in ["*", "*a", "*-a", "a"] {
            assert!(is_wildcard_dns1123_label(good), "{good}");
        }
        for bad in ["**", "a*", "*-", "*.a"] {
            assert!(!is_wildcard_dns1123_label(bad), "{bad}");
        }
    }

    #[test]
    fn label_maps_are_checked_like_kubernetes() {
        let labels: BTreeMap<String, String> = [
            ("app".to_owned(), "reviews".to_owned()),
            ("example.com/tier".to_owned(), "".to_owned()),
            ("bad key".to_owned(), "ok".to_owned()),
            ("k".to_owned(), "-bad".to_owned()),
        ]
        .into_iter()
        .collect();
        assert_eq!(label_problems(&labels), ["invalid tag key: \"bad key\"", "invalid tag value: \"-bad\""]);
    }
}
