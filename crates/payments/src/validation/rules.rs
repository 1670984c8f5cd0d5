//! The validation rules, pure: a payment request and a policy in, every broken rule out.
//!
//! All rules run on every request (no early exit), so a client learns everything that is
//! wrong with its payment at once.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::money::{AccountId, Currency};

/// What is validated: the payment as the client sent it (raw values, so that a bad one is
/// reported as a broken rule rather than a parse failure).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCheck {
    /// Debited account.
    pub from_account: String,
    /// Credited account.
    pub to_account: String,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// The policy the rules apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Largest single payment per tenant, in minor units.
    pub tenant_limits: HashMap<String, i64>,
    /// Limit for tenants without their own (`None`: unlimited).
    pub default_limit: Option<i64>,
    /// Accounts that may neither pay nor be paid.
    pub blocked: HashSet<String>,
}

impl Policy {
    /// The single-payment limit of a tenant.
    pub fn limit(&self, tenant: &str) -> Option<i64> {
        self.tenant_limits.get(tenant).copied().or(self.default_limit)
    }
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Rule name: `currency`, `amount_positive`, `tenant_limit`, `account_format`,
    /// `accounts_differ`, `blocked_account`.
    pub rule: String,
    /// Why it is broken.
    pub reason: String,
}

fn violation(rule: &str, reason: String) -> Violation {
    Violation { rule: rule.to_owned(), reason }
}

/// Runs every rule; an empty list means valid.
pub fn check(tenant: &str, payment: &PaymentCheck, policy: &Policy) -> Vec<Violation> {
    let mut out = Vec::new();
    if let Err(e) = payment.currency.parse::<Currency>() {
        out.push(violation("currency", e.to_string()));
    }
    if payment.amount_minor <= 0 {
        out.push(violation(
            "amount_positive",
            format!("amount_minor must be positive, got {}", payment.amount_minor),
        ));
    }
    if let Some(limit) = policy.limit(tenant).filter(|limit| payment.amount_minor > *limit) {
        out.push(violation(
            "tenant_limit",
            format!(
                "amount_minor {} exceeds tenant {tenant}'s single-payment limit of {limit}",
                payment.amount_minor
            ),
        ));
    }
    for (field, value) in [("from_account", &payment.from_account), ("to_account", &payment.to_account)] {
        if let Err(e) = value.parse::<AccountId>() {
            out.push(violation("account_format", format!("{field}: {e}")));
        }
    }
    if payment.from_account == payment.to_account {
        out.push(violation("accounts_differ", "from_account and to_account must differ".to_owned()));
    }
    for (field, value) in [("from_account", &payment.from_account), ("to_account", &payment.to_account)] {
        if policy.blocked.contains(value.as_str()) {
            out.push(violation("blocked_account", format!("{field} {value} is blocked")));
        }
    }
    out
}

/// Parses a blocked-accounts file: one account id per line; blank lines and `#` comments
/// are ignored.
pub fn parse_blocked(text: &str) -> HashSet<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parses `TENANT_LIMITS`: `tenant=limit,tenant=limit` (minor units).
pub fn parse_limits(text: &str) -> Result<HashMap<String, i64>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (tenant, limit) =
                part.split_once('=').ok_or_else(|| format!("{part:?} is not tenant=limit"))?;
            let limit: i64 =
                limit.trim().parse().map_err(|_| format!("{part:?}: the limit is not an integer"))?;
            if limit <= 0 {
                return Err(format!("{part:?}: the limit must be positive"));
            }
            Ok((tenant.trim().to_owned(), limit))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(from: &str, to: &str, amount: i64, currency: &str) -> PaymentCheck {
        PaymentCheck {
            from_account: from.to_owned(),
            to_account: to.to_owned(),
            amount_minor: amount,
            currency: currency.to_owned(),
        }
    }

    fn rules(v: &[Violation]) -> Vec<&str> {
        v.iter().map(|v| v.rule.as_str()).collect()
    }

    #[test]
    fn a_valid_payment_breaks_no_rule() {
        let policy = Policy { default_limit: Some(1000), ..Policy::default() };
        assert_eq!(check("acme", &payment("a", "b", 1000, "EUR"), &policy), vec![]);
    }

    #[test]
    fn every_broken_rule_is_reported() {
        let policy = Policy {
            tenant_limits: HashMap::from([("acme".to_owned(), 10)]),
            default_limit: Some(1_000_000),
            blocked: HashSet::from(["bad".to_owned()]),
        };
        let v = check("acme", &payment("bad", "bad", 11, "EURO"), &policy);
        assert_eq!(
            rules(&v),
            ["currency", "tenant_limit", "accounts_differ", "blocked_account", "blocked_account"]
        );
        let v = check("other", &payment("a b", "c", -5, "EUR"), &policy);
        assert_eq!(rules(&v), ["amount_positive", "account_format"]);
        assert!(v[0].reason.contains("-5"));
        let v = check("other", &payment("a", "c", 0, "XXX"), &policy);
        assert_eq!(rules(&v), ["currency", "amount_positive"]);
    }

    #[test]
    fn tenant_limits_override_the_default() {
        let policy = Policy {
            tenant_limits: HashMap::from([("big".to_owned(), i64::MAX)]),
            default_limit: Some(100),
            blocked: HashSet::new(),
        };
        assert_eq!(rules(&check("big", &payment("a", "b", i64::MAX, "EUR"), &policy)), Vec::<&str>::new());
        assert_eq!(rules(&check("small", &payment("a", "b", 101, "EUR"), &policy)), ["tenant_limit"]);
        let unlimited = Policy::default();
        assert!(check("x", &payment("a", "b", i64::MAX, "EUR"), &unlimited).is_empty());
    }

    #[test]
    fn parses_blocked_files_and_limits() {
        let blocked = parse_blocked("# fraud list\nacct-1\n\n  acct-2  # since May\n");
        assert_eq!(blocked, HashSet::from(["acct-1".to_owned(), "acct-2".to_owned()]));
        assert_eq!(
            parse_limits("acme=100, globex = 5000").expect("valid limits"),
            HashMap::from([("acme".to_owned(), 100), ("globex".to_owned(), 5000)])
        );
        assert!(parse_limits("acme").is_err());
        assert!(parse_limits("acme=x").is_err());
        assert!(parse_limits("acme=0").is_err());
        assert_eq!(parse_limits("").expect("empty is fine"), HashMap::new());
    }
}
