//! The ledger's rules, free of storage: the transfer state machine, which step may apply in
//! which state, the double-entry legs each step posts, and the errors a step can end in.
//!
//! A transfer moves money in two hops through a per-currency clearing account, so the money
//! is never in two places and never in none:
//!
//! ```text
//! reserve:  source  ──X──▶ clearing:CUR      (state: reserved)
//! credit:   clearing:CUR ──X──▶ destination  (state: credited)
//! commit:   no money moves                   (state: committed, final)
//! release:  clearing:CUR ──X──▶ source       (state: released, final; compensation)
//! ```
//!
//! Every step is idempotent by transfer id, and the two moves that would apply money twice
//! are refused: `credit` after `release`, and `release` after `credit`. `release` of a
//! transfer never seen records it as released, so a `reserve` that arrives late (a retry
//! still in the network) can no longer take money the saga has given up on.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::money::{AccountId, Amount, Currency, TenantId};

/// The money of a transfer, sent with every step so a step can never apply to a different
/// transfer than the one the caller means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferSpec {
    /// The tenant owning both accounts.
    pub tenant_id: TenantId,
    /// Debited account.
    pub from_account: AccountId,
    /// Credited account.
    pub to_account: AccountId,
    /// Amount in minor units.
    pub amount_minor: Amount,
    /// Currency of the amount (and of both accounts).
    pub currency: Currency,
}

/// Where a transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    /// The amount left the source and sits in clearing.
    Reserved,
    /// The amount reached the destination.
    Credited,
    /// Final: the transfer is complete.
    Committed,
    /// Final: the reservation went back to the source, or never happened.
    Released,
}

impl TransferState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Credited => "credited",
            Self::Committed => "committed",
            Self::Released => "released",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reserved" => Some(Self::Reserved),
            "credited" => Some(Self::Credited),
            "committed" => Some(Self::Committed),
            "released" => Some(Self::Released),
            _ => None,
        }
    }
}

/// A saga step on a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Take the amount from the source into clearing.
    Reserve,
    /// Move the amount from clearing to the destination.
    Credit,
    /// Mark the transfer complete.
    Commit,
    /// Give a reservation back to the source (compensation).
    Release,
}

impl Step {
    /// The step's name (URL segment and entry id part).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::Credit => "credit",
            Self::Commit => "commit",
            Self::Release => "release",
        }
    }

    /// The state a transfer is in once this step applied.
    pub fn target(self) -> TransferState {
        match self {
            Self::Reserve => TransferState::Reserved,
            Self::Credit => TransferState::Credited,
            Self::Commit => TransferState::Committed,
            Self::Release => TransferState::Released,
        }
    }
}

/// What to do with a step, given the transfer's current state (`None`: never seen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Apply the step: move the money and change state.
    Apply,
    /// Release of a transfer never seen: record it as released, move nothing.
    Tombstone,
    /// The step already applied: answer success, change nothing.
    AlreadyDone,
    /// The step must not apply.
    Refuse(LedgerError),
}

/// The state machine: which step applies in which state.
pub fn decide(step: Step, current: Option<TransferState>) -> Decision {
    use TransferState::*;
    match (step, current) {
        (Step::Reserve, None) => Decision::Apply,
        (Step::Reserve, Some(Reserved | Credited | Committed)) => Decision::AlreadyDone,
        (Step::Credit, Some(Reserved)) => Decision::Apply,
        (Step::Credit, Some(Credited | Committed)) => Decision::AlreadyDone,
        (Step::Commit, Some(Credited)) => Decision::Apply,
        (Step::Commit, Some(Committed)) => Decision::AlreadyDone,
        (Step::Commit, Some(Reserved)) => Decision::Refuse(LedgerError::TransferNotCredited),
        (Step::Release, None) => Decision::Tombstone,
        (Step::Release, Some(Reserved)) => Decision::Apply,
        (Step::Release, Some(Released)) => Decision::AlreadyDone,
        (Step::Release, Some(Credited | Committed)) => Decision::Refuse(LedgerError::TransferAlreadyCredited),
        (Step::Reserve | Step::Credit | Step::Commit, Some(Released)) => {
            Decision::Refuse(LedgerError::TransferReleased)
        }
        (Step::Credit | Step::Commit, None) => Decision::Refuse(LedgerError::TransferNotFound),
    }
}

/// One leg of a double-entry posting: a signed amount on an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    /// `customer id`, `clearing:CUR` or `external:CUR`.
    pub account: String,
    /// Signed minor units: negative debits, positive credits.
    pub amount_minor: i64,
}

/// The clearing account of a currency (holds reserved money).
pub fn clearing(currency: Currency) -> String {
    format!("clearing:{currency}")
}

/// The external account of a currency (the other side of opening balances).
pub fn external(currency: Currency) -> String {
    format!("external:{currency}")
}

/// The two legs a step posts (none for `commit`); they always sum to zero.
pub fn legs(step: Step, spec: &TransferSpec) -> Vec<Leg> {
    let x = spec.amount_minor.minor();
    let clearing = clearing(spec.currency);
    let pair = |from: String, to: String| {
        vec![Leg { account: from, amount_minor: -x }, Leg { account: to, amount_minor: x }]
    };
    match step {
        Step::Reserve => pair(spec.from_account.to_string(), clearing),
        Step::Credit => pair(clearing, spec.to_account.to_string()),
        Step::Release => pair(clearing, spec.from_account.to_string()),
        Step::Commit => Vec::new(),
    }
}

/// Why a ledger operation did not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// No such account for this tenant.
    #[error("account {0} not found")]
    AccountNotFound(String),
    /// The account exists already.
    #[error("account {0} already exists")]
    AccountExists(String),
    /// The account is closed.
    #[error("account {0} is closed")]
    AccountClosed(String),
    /// A closing account still holds money.
    #[error("account {0} still holds money")]
    AccountNotEmpty(String),
    /// The account holds another currency.
    #[error("account {account} holds {account_currency}, not {currency}")]
    CurrencyMismatch {
        /// The account.
        account: String,
        /// Its currency.
        account_currency: String,
        /// The transfer's currency.
        currency: String,
    },
    /// The source balance is smaller than the amount.
    #[error("account {0} has insufficient funds")]
    InsufficientFunds(String),
    /// The destination balance would overflow.
    #[error("account {0} balance would overflow")]
    BalanceOverflow(String),
    /// No such transfer.
    #[error("transfer not found")]
    TransferNotFound,
    /// The transfer was released (compensated); it can no longer move forward.
    #[error("transfer was released")]
    TransferReleased,
    /// Commit before credit.
    #[error("transfer is not credited yet")]
    TransferNotCredited,
    /// Release after credit: the money reached the destination.
    #[error("transfer was already credited")]
    TransferAlreadyCredited,
    /// The transfer id exists with other accounts, amount or currency.
    #[error("transfer id already used for a different transfer")]
    TransferConflict,
}

impl LedgerError {
    /// The HTTP answer for this error.
    pub fn to_api(&self) -> ApiError {
        let (status, code) = match self {
            Self::AccountNotFound(_) => (StatusCode::NOT_FOUND, "account_not_found"),
            Self::AccountExists(_) => (StatusCode::CONFLICT, "account_exists"),
            Self::AccountClosed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "account_closed"),
            Self::AccountNotEmpty(_) => (StatusCode::CONFLICT, "account_not_empty"),
            Self::CurrencyMismatch { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "currency_mismatch"),
            Self::InsufficientFunds(_) => (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds"),
            Self::BalanceOverflow(_) => (StatusCode::UNPROCESSABLE_ENTITY, "balance_overflow"),
            Self::TransferNotFound => (StatusCode::NOT_FOUND, "transfer_not_found"),
            Self::TransferReleased => (StatusCode::CONFLICT, "transfer_released"),
            Self::TransferNotCredited => (StatusCode::CONFLICT, "transfer_not_credited"),
            Self::TransferAlreadyCredited => (StatusCode::CONFLICT, "transfer_already_credited"),
            Self::TransferConflict => (StatusCode::CONFLICT, "transfer_conflict"),
        };
        ApiError::new(status, code, self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransferState::*;

    fn spec() -> TransferSpec {
        TransferSpec {
            tenant_id: "acme".parse().expect("valid in test"),
            from_account: "a".parse().expect("valid in test"),
            to_account: "b".parse().expect("valid in test"),
            amount_minor: Amount::new(250).expect("valid in test"),
            currency: "EUR".parse().expect("valid in test"),
        }
    }

    #[test]
    fn money_is_never_applied_twice() {
        assert_eq!(decide(Step::Credit, Some(Released)), Decision::Refuse(LedgerError::TransferReleased));
        assert_eq!(
            decide(Step::Release, Some(Credited)),
            Decision::Refuse(LedgerError::TransferAlreadyCredited)
        );
        assert_eq!(
            decide(Step::Release, Some(Committed)),
            Decision::Refuse(LedgerError::TransferAlreadyCredited)
        );
        assert_eq!(decide(Step::Reserve, Some(Released)), Decision::Refuse(LedgerError::TransferReleased));
        for state in [Reserved, Credited, Committed] {
            assert_eq!(decide(Step::Reserve, Some(state)), Decision::AlreadyDone);
        }
    }

    #[test]
    fn the_happy_path_and_compensation_apply_once() {
        assert_eq!(decide(Step::Reserve, None), Decision::Apply);
        assert_eq!(decide(Step::Credit, Some(Reserved)), Decision::Apply);
        assert_eq!(decide(Step::Credit, Some(Credited)), Decision::AlreadyDone);
        assert_eq!(decide(Step::Commit, Some(Credited)), Decision::Apply);
        assert_eq!(decide(Step::Commit, Some(Committed)), Decision::AlreadyDone);
        assert_eq!(decide(Step::Commit, Some(Reserved)), Decision::Refuse(LedgerError::TransferNotCredited));
        assert_eq!(decide(Step::Release, Some(Reserved)), Decision::Apply);
        assert_eq!(decide(Step::Release, Some(Released)), Decision::AlreadyDone);
        assert_eq!(decide(Step::Release, None), Decision::Tombstone);
        assert_eq!(decide(Step::Credit, None), Decision::Refuse(LedgerError::TransferNotFound));
    }

    #[test]
    fn legs_balance_and_route_through_clearing() {
        let s = spec();
        for step in [Step::Reserve, Step::Credit, Step::Release] {
            let legs = legs(step, &s);
            assert_eq!(legs.len(), 2);
            assert_eq!(legs.iter().map(|l| l.amount_minor).sum::<i64>(), 0);
        }
        assert_eq!(
            legs(Step::Reserve, &s),
            vec![
                Leg { account: "a".into(), amount_minor: -250 },
                Leg { account: "clearing:EUR".into(), amount_minor: 250 }
            ]
        );
        assert_eq!(legs(Step::Credit, &s)[1], Leg { account: "b".into(), amount_minor: 250 });
        assert_eq!(legs(Step::Release, &s)[1], Leg { account: "a".into(), amount_minor: 250 });
        assert!(legs(Step::Commit, &s).is_empty());
    }

    #[test]
    fn errors_map_to_stable_codes() {
        assert_eq!(LedgerError::InsufficientFunds("a".into()).to_api().code, "insufficient_funds");
        assert_eq!(LedgerError::TransferReleased.to_api().status, StatusCode::CONFLICT);
        assert_eq!(LedgerError::AccountNotFound("x".into()).to_api().status, StatusCode::NOT_FOUND);
    }
}
