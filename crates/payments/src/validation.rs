//! validation-service (port 8082): checks a payment against the rules before any money moves.
//!
//! ```text
//! POST /v1/validate  (x-tenant-id)  {from_account, to_account, amount_minor, currency}
//!   → 200 {"valid": bool, "violations": [{"rule", "reason"}, ...]}
//! ```
//!
//! The policy (per-tenant single-payment limits, blocked accounts from a file) is loaded at
//! start; a broken policy stops the service from starting rather than letting it approve
//! everything. Stateless otherwise, so it scales by replicas.

pub mod rules;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use self::rules::{PaymentCheck, Policy, Violation};
use crate::error::{ApiError, ApiJson};
use crate::propagation::require_tenant;
use crate::server::{self, ListenConfig, Readiness, Service, Shutdown};

/// The service's default port.
pub const DEFAULT_PORT: u16 = 8082;

/// validation-service settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Where to listen.
    #[command(flatten)]
    pub listen: ListenConfig,
    /// File of blocked account ids, one per line (`#` starts a comment).
    #[arg(long, env = "BLOCKED_ACCOUNTS_FILE")]
    pub blocked_accounts_file: Option<PathBuf>,
    /// Per-tenant single-payment limits in minor units: `acme=100000,globex=5000000`.
    #[arg(long, env = "TENANT_LIMITS", default_value = "")]
    pub tenant_limits: String,
    /// Single-payment limit for tenants not in TENANT_LIMITS, in minor units (0: unlimited).
    #[arg(long, env = "DEFAULT_TENANT_LIMIT", default_value_t = 100_000_000)]
    pub default_tenant_limit: i64,
}

impl Config {
    /// Builds the policy: parses the limits and reads the blocked-accounts file.
    pub fn policy(&self) -> anyhow::Result<Policy> {
        let tenant_limits =
            rules::parse_limits(&self.tenant_limits).map_err(|e| anyhow::anyhow!("TENANT_LIMITS: {e}"))?;
        let blocked = match &self.blocked_accounts_file {
            Some(path) => rules::parse_blocked(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("read BLOCKED_ACCOUNTS_FILE {}", path.display()))?,
            ),
            None => Default::default(),
        };
        let default_limit = (self.default_tenant_limit > 0).then_some(self.default_tenant_limit);
        Ok(Policy { tenant_limits, default_limit, blocked })
    }
}

/// The answer to `POST /v1/validate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// True when no rule is broken.
    pub valid: bool,
    /// Every broken rule.
    pub violations: Vec<Violation>,
}

/// Loads the policy and serves until shutdown.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let policy = config.policy()?;
    tracing::info!(
        blocked_accounts = policy.blocked.len(),
        tenant_limits = policy.tenant_limits.len(),
        default_limit = ?policy.default_limit,
        "policy loaded"
    );
    let service =
        Service { name: "validation-service", router: router(policy), readiness: Readiness::always() };
    server::serve(service, config.listen.addr(DEFAULT_PORT)?, shutdown, config.listen.shutdown_grace).await
}

/// The service's routes.
pub fn router(policy: Policy) -> Router {
    Router::new().route("/v1/validate", post(validate)).with_state(Arc::new(policy))
}

async fn validate(
    State(policy): State<Arc<Policy>>,
    headers: HeaderMap,
    ApiJson(payment): ApiJson<PaymentCheck>,
) -> Result<Json<Verdict>, ApiError> {
    let tenant = require_tenant(&headers)?;
    let violations = rules::check(tenant.as_str(), &payment, &policy);
    if !violations.is_empty() {
        tracing::info!(rules = ?violations.iter().map(|v| v.rule.as_str()).collect::<Vec<_>>(), "payment invalid");
    }
    Ok(Json(Verdict { valid: violations.is_empty(), violations }))
}
