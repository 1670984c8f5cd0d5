//! Value types shared by Istio's resources, parsed as Istio parses them: durations
//! (`1s`, `500ms`, `1m30s`, `1h`), workload selectors, port selectors, string matches.
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
                nanos += u128::from(digit - b'0') * scale;
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
        for bad in ["", "1", "-1s", "1x", "s", "1..5s", "99999999999999999999h"] {
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
}
