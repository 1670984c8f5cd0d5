//! `externalcontrolplane.ExternalControlPlaneAnalyzer`: Istio's webhooks (the
//! `istio-validator*` / `istiod-default-validator` validating and `istio-sidecar-injector*`
//! mutating configurations) must reach istiod through a service or a URL naming a host.
//!
//! Deliberate difference: upstream also resolves the URL's host through DNS and reports
//! hosts that do not resolve; paymesh analyzes offline and deterministically, so it only
//! reports URLs that cannot name a host at all (malformed, or no host).

use std::net::IpAddr;

use serde_json::Value;

use super::{Analyzer, Context, Report, kube, messages};
use crate::path::FieldPath;
use crate::resource::Resource;

/// `externalcontrolplane.ExternalControlPlaneAnalyzer`.
pub struct ExternalControlPlaneAnalyzer;

impl Analyzer for ExternalControlPlaneAnalyzer {
    fn name(&self) -> &'static str {
        "externalcontrolplane.ExternalControlPlaneAnalyzer"
    }

    fn analyze(&self, ctx: &Context<'_>, report: &mut Report) {
        let validating = kube::analyzed(ctx.store, "ValidatingWebhookConfiguration").filter(|r| {
            let name = r.meta.name.as_str();
            name == "istiod-default-validator" || name.starts_with("istio-validator")
        });
        let mutating = kube::analyzed(ctx.store, "MutatingWebhookConfiguration")
            .filter(|r| r.meta.name.starts_with("istio-sidecar-injector"));
        for config in validating.chain(mutating) {
            check_webhooks(config, report);
        }
    }
}

fn check_webhooks(config: &Resource, report: &mut Report) {
    let webhooks =
        config.raw.get("webhooks").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for (i, hook) in webhooks.iter().enumerate() {
        let name = hook.get("name").and_then(Value::as_str).unwrap_or_default();
        let client = hook.get("clientConfig");
        let url = client.and_then(|c| c.get("url")).and_then(Value::as_str);
        let service = client.and_then(|c| c.get("service")).filter(|s| !s.is_null());
        let at = FieldPath::root().key("webhooks").index(i).key("clientConfig");
        let message = match (url, service) {
            (Some(url), _) => match webhook_host(url) {
                Err(problem) => Some(messages::invalid_external_control_plane_config(url, name, problem)),
                Ok(Host::Ip) => Some(messages::external_control_plane_address_is_not_a_hostname(url, name)),
                Ok(Host::Name) => None,
            },
            (None, None) => Some(messages::invalid_external_control_plane_config("", name, "is blank")),
            (None, Some(_)) => None,
        };
        if let Some(message) = message {
            report.add(config, Some(&at), message);
        }
    }
}

/// What a webhook URL points at.
#[derive(Debug, PartialEq, Eq)]
enum Host {
    Ip,
    Name,
}

/// The host of `url` as Go's `url.Parse(url).Hostname()` finds it, or upstream's complaint.
fn webhook_host(url: &str) -> Result<Host, &'static str> {
    const INVALID: &str = "was provided in an invalid format";
    const UNRESOLVABLE: &str = "cannot be resolved via a DNS lookup";
    if url.chars().any(|c| c.is_ascii_control()) || url.starts_with(':') {
        return Err(INVALID);
    }
    let Some((_, rest)) = url.split_once("://") else { return Err(UNRESOLVABLE) };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.strip_prefix('[') {
        Some(bracketed) => {
            let (host, tail) = bracketed.split_once(']').ok_or(INVALID)?;
            (host, tail.strip_prefix(':'))
        }
        None => match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if port.is_some_and(|p| !p.bytes().all(|b| b.is_ascii_digit())) || host.contains(' ') {
        return Err(INVALID);
    }
    match host {
        "" => Err(UNRESOLVABLE),
        h if h.parse::<IpAddr>().is_ok() => Ok(Host::Ip),
        _ => Ok(Host::Name),
    }
}

#[cfg(test)]
mod tests {
    use super::super::kube::testing::analyze;
    use super::*;

    fn webhook(kind: &str, name: &str, client: &str) -> String {
        format!(
            "---\napiVersion: admissionregistration.k8s.io/v1\nkind: {kind}\nmetadata: {{name: {name}}}\nwebhooks: [{{name: hook.istio.io, clientConfig: {client}}}]\n"
        )
    }

    #[test]
    fn blank_and_ip_webhooks_are_reported() {
        let yaml = webhook("ValidatingWebhookConfiguration", "istio-validator-x", "{url: null}")
            + &webhook(
                "MutatingWebhookConfiguration",
                "istio-sidecar-injector-x",
                "{url: 'https://10.0.0.1/inject'}",
            )
            + &webhook("MutatingWebhookConfiguration", "other", "{}");
        assert_eq!(
            analyze(&ExternalControlPlaneAnalyzer, &yaml),
            [
                "IST0163 ValidatingWebhookConfiguration istio-validator-x",
                "IST0164 MutatingWebhookConfiguration istio-sidecar-injector-x"
            ]
        );
    }

    #[test]
    fn hostnames_and_services_are_clean() {
        let yaml = webhook(
            "ValidatingWebhookConfiguration",
            "istiod-default-validator",
            "{url: 'https://istiod.example:15017/v'}",
        ) + &webhook(
            "MutatingWebhookConfiguration",
            "istio-sidecar-injector",
            "{service: {name: istiod}}",
        );
        assert!(analyze(&ExternalControlPlaneAnalyzer, &yaml).is_empty());
    }

    #[test]
    fn hosts_are_read_like_go_url_parse() {
        assert_eq!(webhook_host("https://istiod.example.com:15017/inject"), Ok(Host::Name));
        assert_eq!(webhook_host("https://1.1.1.1:5100/inject"), Ok(Host::Ip));
        assert_eq!(webhook_host("https://[::1]:15017/validate"), Ok(Host::Ip));
        assert_eq!(webhook_host("https://user@host/x"), Ok(Host::Name));
        assert_eq!(webhook_host("https://host:port/x"), Err("was provided in an invalid format"));
        assert_eq!(webhook_host("https:///path"), Err("cannot be resolved via a DNS lookup"));
        assert_eq!(webhook_host("host.example.com"), Err("cannot be resolved via a DNS lookup"));
    }
}
