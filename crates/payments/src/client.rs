//! Outbound HTTP: how one service calls another.
//!
//! Services call each other by name (`http://account-service:8083`). When `HTTP_PROXY` is
//! set (the sidecar), every call goes to it in absolute form (`POST http://account-service:8083/v1/... HTTP/1.1`)
//! and the proxy resolves the name; without it the name is resolved directly. Plain HTTP
//! only: the mesh adds TLS. Every call has a connect timeout and a total timeout, carries the
//! caller's [`Propagation`] headers, and ends in one of three classes ([`CallError`]) that
//! decide what a saga may do next: a definitive answer, an error answer, or no answer.

use std::time::Duration;

use axum::http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::propagation::Propagation;

/// Outbound settings shared by every service (clap args, read from the environment).
#[derive(Debug, Clone, clap::Args)]
pub struct ClientConfig {
    /// Proxy for all outbound calls (the sidecar's outbound listener), e.g. `http://127.0.0.2:15001`.
    #[arg(long, env = "HTTP_PROXY")]
    pub http_proxy: Option<String>,
    /// Comma-separated hosts to reach without the proxy.
    #[arg(long, env = "NO_PROXY")]
    pub no_proxy: Option<String>,
    /// Total time allowed for one outbound call.
    #[arg(long, env = "OUTBOUND_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub outbound_timeout: Duration,
    /// Time allowed to open a connection.
    #[arg(long, env = "CONNECT_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("invalid HTTP_PROXY {proxy:?}")]
pub struct ProxyError {
    proxy: String,
    #[source]
    source: reqwest::Error,
}

/// How a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The peer answered with a non-2xx status (its `{code, message}` when it sent one).
    #[error("{url} answered {status}: {code}: {message}")]
    Status {
        /// The called URL.
        url: String,
        /// The answer's status.
        status: StatusCode,
        /// The answer's `code`, or `http_<status>`.
        code: String,
        /// The answer's `message`, or the start of its body.
        message: String,
    },
    /// No usable answer: connection refused, reset or timed out. The outcome is unknown.
    #[error("{url}: no answer")]
    Transport {
        /// The called URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// A 2xx answer whose body is not the expected JSON.
    #[error("{url}: unreadable answer")]
    Decode {
        /// The called URL.
        url: String,
        /// The decoding error.
        #[source]
        source: reqwest::Error,
    },
}

impl CallError {
    /// True when the peer definitely did not apply the request and retrying the same request
    /// cannot change that: a 4xx other than 408 (timeout) and 429 (rate limited).
    pub fn is_definitive(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                status.is_client_error()
                    && *status != StatusCode::REQUEST_TIMEOUT
                    && *status != StatusCode::TOO_MANY_REQUESTS
            }
            Self::Transport { .. } | Self::Decode { .. } => false,
        }
    }

    /// The peer's error code, when it answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Status { code, .. } => Some(code),
            Self::Transport { .. } | Self::Decode { .. } => None,
        }
    }

    /// What a service tells its own caller: a definitive peer error keeps its status, code
    /// and message; anything else becomes 502 `upstream_error` / 503 `upstream_unavailable`.
    pub fn into_api_error(self, service: &str) -> ApiError {
        let definitive = self.is_definitive();
        match self {
            Self::Status { status, code, message, .. } if definitive => ApiError::new(status, code, message),
            Self::Status { status, code, .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                format!("{service} failed: {} {code}", status.as_u16()),
            ),
            Self::Transport { .. } | Self::Decode { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_unavailable",
                format!("{service} did not answer"),
            ),
        }
    }
}

/// A successful answer: its status and decoded body.
#[derive(Debug)]
pub struct Reply<T> {
    /// The 2xx status.
    pub status: StatusCode,
    /// The decoded body.
    pub body: T,
}

/// An HTTP client for calls between services.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Client {
    /// Builds the client: explicit proxy from the config (the process environment is not read
    /// behind the config's back), connection pooling, timeouts.
    pub fn new(config: &ClientConfig) -> Result<Self, ProxyError> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .timeout(config.outbound_timeout)
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true);
        if let Some(proxy) = config.http_proxy.as_deref().filter(|p| !p.is_empty()) {
            let no_proxy = config.no_proxy.as_deref().and_then(reqwest::NoProxy::from_string);
            let p = reqwest::Proxy::http(proxy)
                .map_err(|source| ProxyError { proxy: proxy.to_owned(), source })?
                .no_proxy(no_proxy);
            builder = builder.proxy(p);
        }
        let http = builder.build().map_err(|source| ProxyError { proxy: String::new(), source })?;
        Ok(Self { http })
    }

    /// `POST url` with a JSON body.
    pub async fn post<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        url: &str,
        ctx: &Propagation,
        body: &B,
    ) -> Result<Reply<R>, CallError> {
        self.send(url, self.http.post(url).headers(ctx.headers()).json(body)).await
    }

    /// `GET url`.
    pub async fn get<R: DeserializeOwned>(
        &self,
        url: &str,
        ctx: &Propagation,
    ) -> Result<Reply<R>, CallError> {
        self.send(url, self.http.get(url).headers(ctx.headers())).await
    }

    async fn send<R: DeserializeOwned>(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Reply<R>, CallError> {
        let response =
            request.send().await.map_err(|source| CallError::Transport { url: url.to_owned(), source })?;
        let status = response.status();
        if status.is_success() {
            let body =
                response.json().await.map_err(|source| CallError::Decode { url: url.to_owned(), source })?;
            return Ok(Reply { status, body });
        }
        let text = response.text().await.unwrap_or_default();
        let (code, message) = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => (
                v["code"].as_str().map(str::to_owned).unwrap_or_else(|| format!("http_{}", status.as_u16())),
                v["message"].as_str().unwrap_or_default().to_owned(),
            ),
            Err(_) => (format!("http_{}", status.as_u16()), text.chars().take(200).collect()),
        };
        Err(CallError::Status { url: url.to_owned(), status, code, message })
    }
}

/// Joins a base URL (`http://account-service:8083`, with or without a trailing `/`) and a path.
pub fn join(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16) -> CallError {
        CallError::Status {
            url: "u".into(),
            status: StatusCode::from_u16(s).expect("valid in test"),
            code: "c".into(),
            message: "m".into(),
        }
    }

    #[test]
    fn only_plain_4xx_is_definitive() {
        assert!(status(404).is_definitive());
        assert!(status(422).is_definitive());
        assert!(!status(408).is_definitive());
        assert!(!status(429).is_definitive());
        assert!(!status(503).is_definitive());
        assert_eq!(status(503).into_api_error("x").status, StatusCode::BAD_GATEWAY);
        assert_eq!(status(409).into_api_error("x").code, "c");
    }

    #[test]
    fn joins_urls() {
        assert_eq!(join("http://a:1/", "/v1/x"), "http://a:1/v1/x");
        assert_eq!(join("http://a:1", "/v1/x"), "http://a:1/v1/x");
    }
}
