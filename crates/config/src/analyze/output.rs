//! Printing messages the way `istioctl analyze` does: `log` lines, or JSON/YAML objects with
//! `code`, `documentationUrl`, `level`, `message`, `origin` and `reference`.

use std::fmt::Write as _;

use serde::Serialize;

use super::Message;

/// Where Istio documents each of its message codes.
const DOCS: &str = "https://istio.io/latest/docs/reference/config/analysis";

/// Where paymesh documents its own (`PM`) codes: a page of the repository, as they have no site.
const PAYMESH_DOCS: &str = "docs/compat.md#paymeshs-own-messages";

/// The page about message `code`.
fn documentation_url(code: &str) -> String {
    if code.starts_with("IST") {
        format!("{DOCS}/{}/?ref=paymesh-analyze", code.to_ascii_lowercase())
    } else {
        PAYMESH_DOCS.to_owned()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    code: &'a str,
    documentation_url: String,
    level: String,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
}

fn entries(messages: &[Message]) -> Vec<Entry<'_>> {
    messages
        .iter()
        .map(|m| Entry {
            code: m.kind.code,
            documentation_url: documentation_url(m.kind.code),
            level: m.kind.level.to_string(),
            message: &m.text,
            origin: m.origin.as_ref().map(|o| o.resource.as_str()),
            reference: m.origin.as_ref().and_then(|o| o.location.as_ref()).map(ToString::to_string),
        })
        .collect()
}

/// `Error [IST0101] (VirtualService payments/payment k8s/istio/vs.yaml:12) Referenced ...`
pub fn log(messages: &[Message]) -> String {
    let mut out = String::new();
    for m in messages {
        let _ = write!(out, "{} [{}]", m.kind.level, m.kind.code);
        if let Some(origin) = &m.origin {
            let _ = match &origin.location {
                Some(at) => write!(out, " ({} {at})", origin.resource),
                None => write!(out, " ({})", origin.resource),
            };
        }
        let _ = writeln!(out, " {}", m.text);
    }
    out
}

pub fn json(messages: &[Message]) -> String {
    serde_json::to_string_pretty(&entries(messages)).unwrap_or_default() + "\n"
}

pub fn yaml(messages: &[Message]) -> String {
    let value = serde_json::to_value(entries(messages)).unwrap_or_default();
    crate::yaml::emit(&value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::messages;

    #[test]
    fn istio_codes_link_to_istio_and_paymesh_codes_to_the_repository() {
        let found = [messages::deprecated("x"), messages::unusable_delegate("ns/d", "does not exist")];
        let urls: Vec<String> = entries(&found).into_iter().map(|e| e.documentation_url).collect();
        assert_eq!(
            urls,
            [
                "https://istio.io/latest/docs/reference/config/analysis/ist0002/?ref=paymesh-analyze",
                "docs/compat.md#paymeshs-own-messages",
            ]
        );
    }
}
