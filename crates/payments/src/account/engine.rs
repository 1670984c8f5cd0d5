//! The ledger engine: applies a batch of transfer steps to an in-memory snapshot of the rows
//! they touch, in order, and returns each step's answer plus the rows to write back. Pure: no
//! I/O, so every money rule is unit-tested here.
//!
//! The store loads the snapshot (the batch's transfers and accounts, locked), runs
//! [`apply_batch`], and writes [`Writes`] in a handful of set-based statements inside the same
//! transaction. Steps are applied one after the other exactly as if each were its own
//! transaction (a later step in the batch sees the earlier ones' effects); a step that is
//! refused changes nothing. Batching is what lets one SQLite writer keep up: the cost of a
//! transaction is paid per batch, not per step.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::ledger::{self, Decision, LedgerError, Step, TransferSpec, TransferState};
use crate::money::{Balance, TransferId};

/// One step to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The transfer.
    pub id: TransferId,
    /// The step.
    pub step: Step,
    /// The transfer's money, as the caller sees it.
    pub spec: TransferSpec,
}

/// A transfer and its state (a step's answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transfer {
    /// Transfer id.
    pub id: String,
    /// Accounts, amount and currency.
    #[serde(flatten)]
    pub spec: TransferSpec,
    /// Current state.
    pub state: TransferState,
}

/// A customer account as the engine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// Owning tenant.
    pub tenant_id: String,
    /// Currency of the balance.
    pub currency: String,
    /// Balance in minor units.
    pub balance_minor: i64,
    /// `open` or `closed`.
    pub status: String,
}

/// The rows a batch may touch, as loaded (and then as changed).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Existing transfers by id.
    pub transfers: HashMap<String, (TransferSpec, TransferState)>,
    /// Existing accounts by id.
    pub accounts: HashMap<String, AccountRow>,
}

/// One journal leg to insert: `(entry id, transfer id, account, signed amount, currency)`.
pub type EntryRow = (String, String, String, i64, String);

/// What a batch changed, ready to write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writes {
    /// Transfers first seen in this batch, with their final state.
    pub new_transfers: Vec<(String, TransferSpec, TransferState)>,
    /// Existing transfers whose state changed: final state by id.
    pub states: BTreeMap<String, TransferState>,
    /// Accounts whose balance changed: final balance by id.
    pub balances: BTreeMap<String, i64>,
    /// Journal legs, in posting order.
    pub entries: Vec<EntryRow>,
}

impl Writes {
    /// True when nothing is to be written.
    pub fn is_empty(&self) -> bool {
        self.new_transfers.is_empty()
            && self.states.is_empty()
            && self.balances.is_empty()
            && self.entries.is_empty()
    }
}

/// Ids touched by a batch, in first-touch order.
#[derive(Default)]
struct Touched {
    new_transfers: Vec<String>,
    changed_transfers: Vec<String>,
    accounts: Vec<String>,
    entries: Vec<EntryRow>,
}

fn push_once(list: &mut Vec<String>, id: &str) {
    if !list.iter().any(|x| x == id) {
        list.push(id.to_owned());
    }
}

/// Applies `ops` in order to `snapshot`; returns each op's answer and the writes.
pub fn apply_batch(snapshot: &mut Snapshot, ops: &[Op]) -> (Vec<Result<Transfer, LedgerError>>, Writes) {
    let mut touched = Touched::default();
    let results = ops.iter().map(|op| apply_one(snapshot, op, &mut touched)).collect();
    let mut writes = Writes { entries: touched.entries, ..Writes::default() };
    for id in touched.new_transfers {
        if let Some((spec, state)) = snapshot.transfers.get(&id) {
            writes.new_transfers.push((id, spec.clone(), *state));
        }
    }
    for id in touched.changed_transfers {
        if let Some((_, state)) = snapshot.transfers.get(&id) {
            writes.states.insert(id, *state);
        }
    }
    for id in touched.accounts {
        if let Some(account) = snapshot.accounts.get(&id) {
            writes.balances.insert(id, account.balance_minor);
        }
    }
    (results, writes)
}

fn apply_one(snapshot: &mut Snapshot, op: &Op, touched: &mut Touched) -> Result<Transfer, LedgerError> {
    let id = op.id.as_str();
    let current = match snapshot.transfers.get(id) {
        Some((spec, _)) if *spec != op.spec => return Err(LedgerError::TransferConflict),
        Some((_, state)) => Some(*state),
        None => None,
    };
    let answer = |state| Transfer { id: id.to_owned(), spec: op.spec.clone(), state };
    let target = op.step.target();
    match ledger::decide(op.step, current) {
        Decision::Refuse(e) => return Err(e),
        Decision::AlreadyDone => return Ok(answer(current.unwrap_or(target))),
        Decision::Tombstone => {}
        Decision::Apply => {
            if let Some((account, balance)) = move_money(snapshot, op)? {
                if let Some(row) = snapshot.accounts.get_mut(&account) {
                    row.balance_minor = balance.minor();
                }
                push_once(&mut touched.accounts, &account);
            }
            for (i, leg) in ledger::legs(op.step, &op.spec).into_iter().enumerate() {
                let entry_id = format!("{id}/{}/{i}", op.step.as_str());
                touched.entries.push((
                    entry_id,
                    id.to_owned(),
                    leg.account,
                    leg.amount_minor,
                    op.spec.currency.to_string(),
                ));
            }
        }
    }
    // A transfer first seen in this batch is inserted with its final state; one that existed
    // before is updated (a transfer created earlier in the batch stays an insert).
    if current.is_none() {
        push_once(&mut touched.new_transfers, id);
    } else if !touched.new_transfers.iter().any(|x| x == id) {
        push_once(&mut touched.changed_transfers, id);
    }
    snapshot.transfers.insert(id.to_owned(), (op.spec.clone(), target));
    Ok(answer(target))
}

/// Checks the one customer account a step changes and computes its new balance (checked
/// arithmetic); `None` for `commit`, which moves no money.
fn move_money(snapshot: &Snapshot, op: &Op) -> Result<Option<(String, Balance)>, LedgerError> {
    let spec = &op.spec;
    let (account, credit, require_open) = match op.step {
        Step::Reserve => (&spec.from_account, false, true),
        Step::Credit => (&spec.to_account, true, true),
        // Money held for a source goes back even if the source closed meanwhile.
        Step::Release => (&spec.from_account, true, false),
        Step::Commit => return Ok(None),
    };
    let not_found = || LedgerError::AccountNotFound(account.to_string());
    let row = snapshot.accounts.get(account.as_str()).ok_or_else(not_found)?;
    if row.tenant_id != spec.tenant_id.as_str() {
        return Err(not_found());
    }
    if require_open && row.status != "open" {
        return Err(LedgerError::AccountClosed(account.to_string()));
    }
    if row.currency != spec.currency.as_str() {
        return Err(LedgerError::CurrencyMismatch {
            account: account.to_string(),
            account_currency: row.currency.clone(),
            currency: spec.currency.to_string(),
        });
    }
    let balance = Balance::new(row.balance_minor);
    let next = if credit {
        balance.credit(spec.amount_minor).map_err(|_| LedgerError::BalanceOverflow(account.to_string()))?
    } else {
        balance.debit(spec.amount_minor).ok_or_else(|| LedgerError::InsufficientFunds(account.to_string()))?
    };
    Ok(Some((account.to_string(), next)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Amount;

    fn spec(from: &str, to: &str, amount: i64) -> TransferSpec {
        TransferSpec {
            tenant_id: "acme".parse().expect("valid in test"),
            from_account: from.parse().expect("valid in test"),
            to_account: to.parse().expect("valid in test"),
            amount_minor: Amount::new(amount).expect("valid in test"),
            currency: "EUR".parse().expect("valid in test"),
        }
    }

    fn op(id: &str, step: Step, spec: &TransferSpec) -> Op {
        Op { id: id.parse().expect("valid in test"), step, spec: spec.clone() }
    }

    fn account(balance: i64, status: &str) -> AccountRow {
        AccountRow {
            tenant_id: "acme".into(),
            currency: "EUR".into(),
            balance_minor: balance,
            status: status.into(),
        }
    }

    fn snapshot(accounts: &[(&str, i64)]) -> Snapshot {
        Snapshot {
            transfers: HashMap::new(),
            accounts: accounts.iter().map(|(id, b)| ((*id).to_owned(), account(*b, "open"))).collect(),
        }
    }

    fn states(results: &[Result<Transfer, LedgerError>]) -> Vec<Result<TransferState, LedgerError>> {
        results.iter().map(|r| r.clone().map(|t| t.state)).collect()
    }

    #[test]
    fn a_whole_transfer_in_one_batch_moves_money_once() {
        let mut snap = snapshot(&[("a", 100), ("b", 0)]);
        let s = spec("a", "b", 30);
        let ops = [
            op("t1", Step::Reserve, &s),
            op("t1", Step::Reserve, &s),
            op("t1", Step::Credit, &s),
            op("t1", Step::Commit, &s),
        ];
        let (results, writes) = apply_batch(&mut snap, &ops);
        use TransferState::*;
        assert_eq!(states(&results), [Ok(Reserved), Ok(Reserved), Ok(Credited), Ok(Committed)]);
        assert_eq!(writes.new_transfers, [("t1".to_owned(), s.clone(), Committed)]);
        assert!(writes.states.is_empty());
        assert_eq!(writes.balances, BTreeMap::from([("a".to_owned(), 70), ("b".to_owned(), 30)]));
        let legs: Vec<(&str, i64)> = writes.entries.iter().map(|e| (e.2.as_str(), e.3)).collect();
        assert_eq!(legs, [("a", -30), ("clearing:EUR", 30), ("clearing:EUR", -30), ("b", 30)]);
        assert_eq!(writes.entries[0].0, "t1/reserve/0");
    }

    #[test]
    fn concurrent_reserves_never_overdraw() {
        let mut snap = snapshot(&[("a", 100), ("b", 0)]);
        let ops: Vec<Op> = (0..5).map(|i| op(&format!("t{i}"), Step::Reserve, &spec("a", "b", 30))).collect();
        let (results, writes) = apply_batch(&mut snap, &ops);
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 3);
        assert_eq!(results[3], Err(LedgerError::InsufficientFunds("a".into())));
        assert_eq!(writes.balances["a"], 10);
        // Refused reserves leave no transfer behind.
        assert_eq!(writes.new_transfers.len(), 3);
        assert_eq!(writes.entries.len(), 6);
    }

    #[test]
    fn refused_steps_change_nothing() {
        let mut snap = snapshot(&[("a", 100)]);
        snap.accounts.insert("shut".into(), account(0, "closed"));
        let s = spec("a", "shut", 10);
        let ops = [op("t1", Step::Reserve, &s), op("t1", Step::Credit, &s), op("t1", Step::Release, &s)];
        let (results, writes) = apply_batch(&mut snap, &ops);
        assert_eq!(results[1], Err(LedgerError::AccountClosed("shut".into())));
        assert_eq!(results[2].as_ref().map(|t| t.state), Ok(TransferState::Released));
        assert_eq!(writes.balances, BTreeMap::from([("a".to_owned(), 100)]));
        assert_eq!(writes.entries.iter().map(|e| e.3).sum::<i64>(), 0);
        assert_eq!(writes.new_transfers[0].2, TransferState::Released);
    }

    #[test]
    fn release_of_an_unknown_transfer_tombstones_it_and_blocks_a_late_reserve() {
        let mut snap = snapshot(&[("a", 100), ("b", 0)]);
        let s = spec("a", "b", 10);
        let (results, writes) =
            apply_batch(&mut snap, &[op("t1", Step::Release, &s), op("t1", Step::Reserve, &s)]);
        assert_eq!(results[0].as_ref().map(|t| t.state), Ok(TransferState::Released));
        assert_eq!(results[1], Err(LedgerError::TransferReleased));
        assert!(writes.balances.is_empty() && writes.entries.is_empty());
        assert_eq!(writes.new_transfers, [("t1".to_owned(), s, TransferState::Released)]);
    }

    #[test]
    fn existing_transfers_are_updated_and_checked_against_their_spec() {
        let mut snap = snapshot(&[("a", 70), ("b", 0)]);
        let s = spec("a", "b", 30);
        snap.transfers.insert("t1".into(), (s.clone(), TransferState::Reserved));
        let other = spec("a", "b", 31);
        let (results, writes) =
            apply_batch(&mut snap, &[op("t1", Step::Credit, &other), op("t1", Step::Credit, &s)]);
        assert_eq!(results[0], Err(LedgerError::TransferConflict));
        assert_eq!(results[1].as_ref().map(|t| t.state), Ok(TransferState::Credited));
        assert_eq!(writes.states, BTreeMap::from([("t1".to_owned(), TransferState::Credited)]));
        assert!(writes.new_transfers.is_empty());
        assert_eq!(writes.balances, BTreeMap::from([("b".to_owned(), 30)]));
    }

    #[test]
    fn tenants_currencies_and_overflow_are_checked() {
        let mut snap = snapshot(&[("a", 100)]);
        snap.accounts.insert("rich".into(), account(i64::MAX - 5, "open"));
        snap.accounts
            .insert("other".into(), AccountRow { tenant_id: "globex".into(), ..account(100, "open") });
        snap.accounts.insert("usd".into(), AccountRow { currency: "USD".into(), ..account(100, "open") });
        let overflow = spec("a", "rich", 10);
        let (results, writes) = apply_batch(
            &mut snap,
            &[
                op("t1", Step::Reserve, &overflow),
                op("t1", Step::Credit, &overflow),
                op("t2", Step::Reserve, &spec("other", "a", 1)),
                op("t3", Step::Reserve, &spec("usd", "a", 1)),
                op("t4", Step::Credit, &spec("a", "b", 1)),
            ],
        );
        assert_eq!(results[1], Err(LedgerError::BalanceOverflow("rich".into())));
        assert_eq!(results[2], Err(LedgerError::AccountNotFound("other".into())));
        assert!(matches!(results[3], Err(LedgerError::CurrencyMismatch { .. })));
        assert_eq!(results[4], Err(LedgerError::TransferNotFound));
        assert_eq!(writes.balances, BTreeMap::from([("a".to_owned(), 90)]));
    }
}
