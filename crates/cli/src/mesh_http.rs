//! HTTP to the mesh's own debug endpoints: the control plane's monitoring port
//! (`/ready`, `/debug/syncz`, `/debug/bootstrap-token`) and a proxy's admin and readiness ports
//! (`/config_dump`, `/healthz/ready`), as docs/processes.md defines them.
//!
//! The client ignores `HTTP_PROXY`: these are direct loopback calls, and `paymesh exec` runs
//! with a pod's proxy settings in its environment.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use paymesh_api::ports;
use serde::{Deserialize, Serialize};

/// Per-request deadline: these endpoints answer from memory.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed call to a mesh endpoint.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connection, timeout or body error.
    #[error("{url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    /// The endpoint answered with an unexpected status.
    #[error("{url}: HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },
    /// The answer was not the JSON the contract describes.
    #[error("{url}: unexpected answer: {source}")]
    Decode { url: String, source: serde_json::Error },
}

/// One proxy's sync state as the control plane reports it (`GET /debug/syncz`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    pub pod: String,
    pub namespace: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub connected: bool,
    #[serde(default)]
    pub sent_version: Option<String>,
    #[serde(default)]
    pub acked_version: Option<String>,
    #[serde(default)]
    pub nacked_version: Option<String>,
    #[serde(default)]
    pub nack_reason: Option<String>,
    #[serde(default)]
    pub cert_serial: Option<String>,
    #[serde(default)]
    pub cert_expiry: Option<String>,
}

/// Whether a proxy runs the config last sent to it, as `istioctl proxy-status` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigStatus {
    /// Nothing sent yet.
    NotSent,
    /// The proxy acknowledged the version sent.
    Synced,
    /// The proxy rejected the version sent, with its reason.
    Nacked(String),
    /// Sent, not yet acknowledged.
    Stale,
}

impl SyncStatus {
    /// SYNCED when acked == sent, NACKED when the sent version was rejected, STALE otherwise.
    pub fn config_status(&self) -> ConfigStatus {
        match &self.sent_version {
            None => ConfigStatus::NotSent,
            Some(sent) if self.acked_version.as_ref() == Some(sent) => ConfigStatus::Synced,
            Some(sent) if self.nacked_version.as_ref() == Some(sent) => {
                ConfigStatus::Nacked(self.nack_reason.clone().unwrap_or_default())
            }
            Some(_) => ConfigStatus::Stale,
        }
    }
}

impl std::fmt::Display for ConfigStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigStatus::NotSent => f.write_str("NOT SENT"),
            ConfigStatus::Synced => f.write_str("SYNCED"),
            ConfigStatus::Stale => f.write_str("STALE"),
            ConfigStatus::Nacked(reason) if reason.is_empty() => f.write_str("NACKED"),
            ConfigStatus::Nacked(reason) => write!(f, "NACKED ({reason})"),
        }
    }
}

/// The client (no proxy, short timeouts).
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    pub fn new() -> Result<Self, HttpError> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|source| HttpError::Transport { url: String::new(), source })?;
        Ok(Self { client })
    }

    /// The status code of `GET url`.
    pub async fn status(&self, url: &str) -> Result<u16, HttpError> {
        let response = self.client.get(url).send().await.map_err(|source| transport(url, source))?;
        Ok(response.status().as_u16())
    }

    async fn json(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<serde_json::Value, HttpError> {
        let response = request.send().await.map_err(|source| transport(url, source))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|source| transport(url, source))?;
        if status != 200 {
            return Err(HttpError::Status {
                url: url.to_owned(),
                status,
                body: String::from_utf8_lossy(&body).trim().to_owned(),
            });
        }
        serde_json::from_slice(&body).map_err(|source| HttpError::Decode { url: url.to_owned(), source })
    }

    /// `GET /ready` on the control plane answers 200.
    pub async fn control_ready(&self, monitoring: SocketAddr) -> bool {
        self.status(&format!("http://{monitoring}/ready")).await.is_ok_and(|s| s == 200)
    }

    /// `GET /debug/syncz`.
    pub async fn syncz(&self, monitoring: SocketAddr) -> Result<Vec<SyncStatus>, HttpError> {
        let url = format!("http://{monitoring}/debug/syncz");
        let value = self.json(self.client.get(&url), &url).await?;
        serde_json::from_value(value).map_err(|source| HttpError::Decode { url, source })
    }

    /// `POST /debug/bootstrap-token`: a single-use token for one pod's first certificate.
    pub async fn bootstrap_token(
        &self,
        monitoring: SocketAddr,
        admin_token: &str,
        namespace: &str,
        service_account: &str,
        pod: &str,
    ) -> Result<String, HttpError> {
        let url = format!("http://{monitoring}/debug/bootstrap-token");
        let body =
            serde_json::json!({ "namespace": namespace, "serviceAccount": service_account, "pod": pod });
        let request = self.client.post(&url).bearer_auth(admin_token).json(&body);
        let value = self.json(request, &url).await?;
        match value.get("token").and_then(serde_json::Value::as_str) {
            Some(token) => Ok(token.to_owned()),
            None => Err(HttpError::Decode {
                url,
                source: serde::de::Error::custom("no \"token\" string in the answer"),
            }),
        }
    }

    /// `GET POD_IP:15021/healthz/ready` answers 200.
    pub async fn proxy_ready(&self, ip: IpAddr) -> bool {
        let url = format!("http://{}/healthz/ready", SocketAddr::new(ip, ports::PROXY_READINESS));
        self.status(&url).await.is_ok_and(|s| s == 200)
    }

    /// `GET POD_IP:15000/config_dump`, as JSON.
    pub async fn config_dump(&self, ip: IpAddr) -> Result<serde_json::Value, HttpError> {
        let url = format!("http://{}/config_dump", SocketAddr::new(ip, ports::PROXY_ADMIN));
        self.json(self.client.get(&url), &url).await
    }
}

fn transport(url: &str, source: reqwest::Error) -> HttpError {
    HttpError::Transport { url: url.to_owned(), source }
}

/// A small runtime for the one-shot commands (`proxy-status`, `proxy-config`).
pub fn block_on<F: Future>(future: F) -> std::io::Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(future))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(sent: Option<&str>, acked: Option<&str>, nacked: Option<&str>) -> ConfigStatus {
        SyncStatus {
            pod: "p".into(),
            namespace: "n".into(),
            kind: "sidecar".into(),
            connected: true,
            sent_version: sent.map(Into::into),
            acked_version: acked.map(Into::into),
            nacked_version: nacked.map(Into::into),
            nack_reason: nacked.map(|_| "bad route".into()),
            cert_serial: None,
            cert_expiry: None,
        }
        .config_status()
    }

    #[test]
    fn classifies_sync_state() {
        assert_eq!(status(None, None, None).to_string(), "NOT SENT");
        assert_eq!(status(Some("3"), Some("3"), None).to_string(), "SYNCED");
        assert_eq!(status(Some("4"), Some("3"), None).to_string(), "STALE");
        assert_eq!(status(Some("4"), Some("3"), Some("4")).to_string(), "NACKED (bad route)");
    }

    #[test]
    fn syncz_parses_the_contract_shape() {
        let json = r#"[{"pod":"a","namespace":"n","kind":"sidecar","connected":true,"sentVersion":"2",
            "ackedVersion":"2","nackedVersion":null,"nackReason":null,"certSerial":"0a","certExpiry":"2030-01-01T00:00:00Z"}]"#;
        let parsed: Vec<SyncStatus> = serde_json::from_str(json).expect("parse");
        assert_eq!(parsed[0].config_status(), ConfigStatus::Synced);
        assert_eq!(parsed[0].cert_serial.as_deref(), Some("0a"));
    }
}
