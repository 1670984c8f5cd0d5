//! `when` conditions of an AuthorizationPolicy rule: an Istio attribute (`source.ip`,
//! `request.headers[x-tenant-id]`, `request.auth.claims[iss]`, …) and the values it must or
//! must not have.
//!
//! The key decides how values parse (IP blocks, ports or wildcard patterns), so a condition
//! is one enum variant per value type and a port can never sit where an address belongs.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use crate::security::pattern::{IpBlock, Pattern, Port, ValueError};

/// A `when` condition, typed by what its attribute holds.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawCondition")]
pub enum Condition {
    Address(AddressAttribute, Values<IpBlock>),
    Port(Values<Port>),
    Text(TextAttribute, Values<Pattern>),
}

/// The values an attribute must match (`values`, any of) and must not match (`notValues`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Values<T> {
    pub values: Vec<T>,
    pub not_values: Vec<T>,
}

impl<T> Values<T> {
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.not_values.is_empty()
    }
}

/// Attributes holding an IP address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressAttribute {
    /// `source.ip`: the peer address of the connection.
    SourceIp,
    /// `remote.ip`: the original client, from `X-Forwarded-For` or the PROXY protocol.
    RemoteIp,
    /// `destination.ip`
    DestinationIp,
}

/// Attributes holding a string, matched with wildcard [`Pattern`]s.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TextAttribute {
    /// `request.headers[NAME]`
    RequestHeader(String),
    SourceNamespace,
    SourcePrincipal,
    SourceServiceAccount,
    SourceTrustDomain,
    /// `request.auth.principal`: the JWT's `iss/sub`.
    RequestPrincipal,
    RequestAudiences,
    RequestPresenter,
    /// `request.auth.claims[a][b]`: a (possibly nested) JWT claim.
    RequestClaim(Vec<String>),
    /// `connection.sni`
    ConnectionSni,
    /// `experimental.envoy.filters.…[…]`, kept as written.
    Experimental(String),
}

impl Condition {
    /// The attribute as written in `key`.
    pub fn key(&self) -> String {
        match self {
            Condition::Address(attribute, _) => attribute.to_string(),
            Condition::Port(_) => "destination.port".to_owned(),
            Condition::Text(attribute, _) => attribute.to_string(),
        }
    }

    /// Whether neither `values` nor `notValues` is set.
    pub fn is_empty(&self) -> bool {
        match self {
            Condition::Address(_, v) => v.is_empty(),
            Condition::Port(v) => v.is_empty(),
            Condition::Text(_, v) => v.is_empty(),
        }
    }
}

impl fmt::Display for AddressAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressAttribute::SourceIp => "source.ip",
            AddressAttribute::RemoteIp => "remote.ip",
            AddressAttribute::DestinationIp => "destination.ip",
        })
    }
}

impl fmt::Display for TextAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextAttribute::RequestHeader(name) => write!(f, "request.headers[{name}]"),
            TextAttribute::SourceNamespace => f.write_str("source.namespace"),
            TextAttribute::SourcePrincipal => f.write_str("source.principal"),
            TextAttribute::SourceServiceAccount => f.write_str("source.serviceAccount"),
            TextAttribute::SourceTrustDomain => f.write_str("source.trustDomain"),
            TextAttribute::RequestPrincipal => f.write_str("request.auth.principal"),
            TextAttribute::RequestAudiences => f.write_str("request.auth.audiences"),
            TextAttribute::RequestPresenter => f.write_str("request.auth.presenter"),
            TextAttribute::RequestClaim(path) => write!(f, "request.auth.claims[{}]", path.join("][")),
            TextAttribute::ConnectionSni => f.write_str("connection.sni"),
            TextAttribute::Experimental(key) => f.write_str(key),
        }
    }
}

/// What a key names, before its values are parsed.
enum Attribute {
    Address(AddressAttribute),
    Port,
    Text(TextAttribute),
}

/// Istio's `validateMapKey`: `name[key]` with a non-empty name and key.
fn map_key(key: &str) -> Result<&str, String> {
    match key.find('[') {
        Some(open) if key.ends_with(']') && open > 0 && open + 2 < key.len() => {
            Ok(&key[open + 1..key.len() - 1])
        }
        _ => Err(format!("bad key ({key}): should have format a[b]")),
    }
}

impl FromStr for Attribute {
    type Err = String;

    /// Istio's `ValidateAttribute` key rules, in its order and with its messages.
    fn from_str(key: &str) -> Result<Self, String> {
        use TextAttribute as T;
        Ok(match key {
            k if k.starts_with("request.headers") => {
                Attribute::Text(T::RequestHeader(map_key(k)?.to_owned()))
            }
            "source.ip" => Attribute::Address(AddressAttribute::SourceIp),
            "remote.ip" => Attribute::Address(AddressAttribute::RemoteIp),
            "source.namespace" => Attribute::Text(T::SourceNamespace),
            "source.principal" => Attribute::Text(T::SourcePrincipal),
            "source.serviceAccount" => Attribute::Text(T::SourceServiceAccount),
            "source.trustDomain" => Attribute::Text(T::SourceTrustDomain),
            "request.auth.principal" => Attribute::Text(T::RequestPrincipal),
            "request.auth.audiences" => Attribute::Text(T::RequestAudiences),
            "request.auth.presenter" => Attribute::Text(T::RequestPresenter),
            k if k.starts_with("request.auth.claims") => {
                let claims = map_key(k)?;
                Attribute::Text(T::RequestClaim(claims.split("][").map(str::to_owned).collect()))
            }
            "destination.ip" => Attribute::Address(AddressAttribute::DestinationIp),
            "destination.port" => Attribute::Port,
            "connection.sni" => Attribute::Text(T::ConnectionSni),
            k if k.starts_with("experimental.envoy.filters.") => {
                map_key(k)?;
                Attribute::Text(T::Experimental(k.to_owned()))
            }
            "destination.namespace" => {
                return Err(format!("attribute {key} is replaced by the metadata.namespace"));
            }
            k if k.starts_with("destination.labels") => {
                return Err(format!("attribute {key} is replaced by the workload selector"));
            }
            "destination.name" | "destination.user" => {
                return Err(format!("deprecated attribute {key}: only supported in v1alpha1"));
            }
            _ => return Err(format!("unknown attribute: {key}")),
        })
    }
}

/// A condition as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCondition {
    key: String,
    #[serde(default)]
    values: Vec<String>,
    #[serde(default)]
    not_values: Vec<String>,
}

impl TryFrom<RawCondition> for Condition {
    type Error = String;

    fn try_from(raw: RawCondition) -> Result<Self, String> {
        let key = raw.key.as_str();
        if key.is_empty() {
            return Err("`key` must not be empty".to_owned());
        }
        let attribute: Attribute = key.parse()?;
        Ok(match attribute {
            Attribute::Address(a) => Condition::Address(a, parse_values(key, &raw)?),
            Attribute::Port => Condition::Port(parse_values(key, &raw)?),
            Attribute::Text(t) => Condition::Text(t, parse_values(key, &raw)?),
        })
    }
}

fn parse_values<T: FromStr<Err = ValueError>>(key: &str, raw: &RawCondition) -> Result<Values<T>, String> {
    let parse = |list: &[String], field: &str| -> Result<Vec<T>, String> {
        list.iter()
            .map(|v| v.parse().map_err(|e| format!("invalid `{field}` for `key` {key}: {e}")))
            .collect()
    };
    Ok(Values { values: parse(&raw.values, "value")?, not_values: parse(&raw.not_values, "notValue")? })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn condition(key: &str, values: &[&str]) -> Result<Condition, String> {
        serde_json::from_value(json!({"key": key, "values": values})).map_err(|e| e.to_string())
    }

    #[test]
    fn keys_decide_the_value_type() {
        let ip = condition("source.ip", &["10.10.10.10", "192.168.10.0/24"]).expect("ip");
        let Condition::Address(AddressAttribute::SourceIp, values) = &ip else { panic!("{ip:?}") };
        assert_eq!(values.values[1].to_string(), "192.168.10.0/24");
        assert_eq!(
            condition("destination.port", &["91"]),
            Ok(Condition::Port(Values { values: vec![Port(91)], not_values: vec![] }))
        );
        let header = condition("request.headers[X-header]", &["a*"]).expect("header");
        assert_eq!(header.key(), "request.headers[X-header]");
        let nested = condition("request.auth.claims[nested1][nested2]", &["x"]).expect("claims");
        let Condition::Text(TextAttribute::RequestClaim(path), _) = &nested else { panic!("{nested:?}") };
        assert_eq!(path, &["nested1", "nested2"]);
        assert_eq!(nested.key(), "request.auth.claims[nested1][nested2]");
        assert!(condition("experimental.envoy.filters.a.b[c]", &["x"]).is_ok());
        assert!(condition("source.trustDomain", &["cluster.local"]).is_ok());
    }

    #[test]
    fn bad_keys_and_values_use_istio_messages() {
        let cases = [
            (
                condition("source.ip", &["1.2.3"]),
                "invalid `value` for `key` source.ip: bad IP address (1.2.3)",
            ),
            (
                condition("destination.port", &["http"]),
                "invalid `value` for `key` destination.port: bad port (http)",
            ),
            (condition("request.headers", &["a"]), "bad key (request.headers): should have format a[b]"),
            (
                condition("request.auth.claims[]", &["a"]),
                "bad key (request.auth.claims[]): should have format a[b]",
            ),
            (condition("source.name", &["a"]), "unknown attribute: source.name"),
            (
                condition("destination.namespace", &["a"]),
                "attribute destination.namespace is replaced by the metadata.namespace",
            ),
            (
                condition("destination.labels[app]", &["a"]),
                "attribute destination.labels[app] is replaced by the workload selector",
            ),
            (
                condition("destination.user", &["a"]),
                "deprecated attribute destination.user: only supported in v1alpha1",
            ),
            (condition("", &["a"]), "`key` must not be empty"),
            (
                condition("source.namespace", &[""]),
                "invalid `value` for `key` source.namespace: empty value not allowed",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, Err(want.to_owned()));
        }
        let not_value: Result<Condition, _> =
            serde_json::from_value(json!({"key": "remote.ip", "notValues": ["x"]}));
        assert_eq!(
            not_value.map_err(|e| e.to_string()),
            Err("invalid `notValue` for `key` remote.ip: bad IP address (x)".to_owned())
        );
    }
}
