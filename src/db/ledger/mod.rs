//! The credit ledger: immutable entries in integer millicredits, each with a unique idempotency
//! key; the materialised balance of every account; and two-phase holds.
//!
//! Every entry records two effects on its account:
//! - `amount`: on the **balance** (credits the account owns): grants and purchases add, charges
//!   and payment reversals subtract;
//! - `held_delta`: on the **held** credits (reserved by open holds): a hold adds, its charges and
//!   its release subtract.
//!
//! `available = balance - held` is what a new hold may reserve. `balance` and `held` are the sums
//! of the account's entries; `account_balances` keeps them materialised, updated in the same
//! transaction as each entry ([`Db::verify_balance`] recomputes the sums).
//!
//! Invariants: `held >= 0`; no entry may make `available` negative — except a payment reversal
//! (refund, chargeback), which is recorded in full because it already happened at the payment
//! provider; the account is then in debt and cannot place holds until a purchase covers it.
//! Every settled hold satisfies `amount = charged + released`.
//!
//! Concurrency: every change starts by upserting the account's `account_balances` row. That first
//! statement is a write, so SQLite takes its (database-wide) write lock before anything is read,
//! and PostgreSQL locks the row until commit; all ledger changes of one account are therefore
//! serialised, and the checks that follow read current values. [`with_retrying_tx!`](super::with_retrying_tx) reruns a
//! transaction that lost a race (busy, deadlock, a concurrent insert of the same key).
//!
//! Files: [`ids`] (the hold id), [`types`] (entries, balances, holds — what the API shows),
//! [`invariants`] (the rules above, as pure checks), [`postings`] (the SQL inside a caller's
//! transaction, also used by the runtime leases), [`operations`] (the ledger's operations on
//! [`Db`](super::Db)).

mod ids;
mod invariants;
mod operations;
mod postings;
mod types;

pub use ids::HoldId;
pub(crate) use postings::{
    charge_hold_in, extend_hold_in, hold_in, lock_account, place_hold_in, settle_hold_in,
};
pub use types::{
    Balance, BalanceCheck, EntryKind, Hold, HoldSettlement, HoldStatus, LedgerEntry, Posted,
    ReversalTarget,
};

#[cfg(test)]
pub(crate) mod tests;
