//! The ledger's rules, checked before anything is written (see the module docs of
//! [`super`]): no entry may make `available` negative except a payment reversal, `held` never
//! goes below zero, a hold is charged at most what it reserved, a settled hold takes no more
//! charges, and a repeated idempotency key is a replay only when it asks for the same thing.
//! Pure functions over the values read in the caller's transaction; the SQL is in
//! [`super::postings`].

use atelier_protocol::ids::AccountId;

use super::{Balance, EntryKind, Hold, HoldStatus, LedgerEntry, Posted};
use crate::error::{Error, Result};

fn overflow() -> Error {
    Error::invalid("amount out of range")
}

/// A repeated key is a replay only when it asks for the same thing.
/// `effect` is the `(amount, held_delta)` the caller meant to post, when it is known up front.
pub(super) fn replay_of(
    existing: LedgerEntry,
    account: AccountId,
    kind: EntryKind,
    effect: Option<(i64, i64)>,
) -> Result<Posted> {
    let same_effect = effect.is_none_or(|e| e == (existing.amount, existing.held_delta));
    if existing.account_id == account && existing.kind == kind && same_effect {
        Ok(Posted::Replayed(existing))
    } else {
        Err(Error::Conflict(format!(
            "idempotency key {:?} was already used for a different entry",
            existing.idempotency_key
        )))
    }
}

/// The account's totals after an entry of `kind` with these effects; an error when the entry
/// would break an invariant. `key` names the entry in the error.
pub(super) fn balance_after_posting(
    bal: &Balance,
    kind: EntryKind,
    amount: i64,
    held_delta: i64,
    key: &str,
) -> Result<Balance> {
    let balance_after = bal.balance.checked_add(amount).ok_or_else(overflow)?;
    let held_after = bal.held.checked_add(held_delta).ok_or_else(overflow)?;
    let after = Balance::new(balance_after, held_after);
    if held_after < 0 {
        return Err(Error::Internal(format!(
            "ledger entry {key} would make held credits negative"
        )));
    }
    if after.available < 0 && after.available < bal.available && !kind.is_reversal() {
        return Err(Error::InsufficientCredits(format!(
            "this needs {} millicredits; {} are available",
            bal.available - after.available,
            bal.available.max(0)
        )));
    }
    Ok(after)
}

/// A new hold reserves a positive amount.
pub(super) fn check_hold_amount(amount: i64) -> Result<()> {
    if amount <= 0 {
        return Err(Error::invalid("a hold must reserve a positive amount"));
    }
    Ok(())
}

/// A new hold needs `amount` available (none at all while the balance is negative after a
/// payment reversal).
pub(super) fn check_hold_covered(bal: &Balance, amount: i64) -> Result<()> {
    if bal.available < amount {
        return Err(Error::InsufficientCredits(if bal.available < 0 {
            format!(
                "the account's balance is negative ({} millicredits available) after a payment \
                 reversal; buy credits to start a runtime",
                bal.available
            )
        } else {
            format!(
                "this needs {amount} millicredits; {} are available",
                bal.available
            )
        }));
    }
    Ok(())
}

/// An extension adds a positive amount to an open hold, and needs it available.
pub(super) fn check_extension(bal: &Balance, hold: &Hold, extra: i64) -> Result<()> {
    if extra <= 0 {
        return Err(Error::invalid(
            "an extension must reserve a positive amount",
        ));
    }
    if hold.status != HoldStatus::Open {
        return Err(Error::Conflict("the hold is already settled".into()));
    }
    if bal.available < extra {
        return Err(Error::InsufficientCredits(format!(
            "this needs {extra} millicredits; {} are available",
            bal.available.max(0)
        )));
    }
    Ok(())
}

/// A charge takes a positive amount, at most what is left, from an open hold.
pub(super) fn check_charge(hold: &Hold, amount: i64) -> Result<()> {
    if amount <= 0 {
        return Err(Error::invalid("a charge must be positive"));
    }
    if hold.status != HoldStatus::Open {
        return Err(Error::Conflict("the hold is already settled".into()));
    }
    if amount > hold.remaining() {
        return Err(Error::Conflict(format!(
            "a charge of {amount} exceeds the {} millicredits left on the hold",
            hold.remaining()
        )));
    }
    Ok(())
}

/// A settlement's final charge fits what is left on the hold (zero charges nothing).
pub(super) fn check_final_charge(hold: &Hold, final_charge: i64) -> Result<()> {
    if final_charge < 0 || final_charge > hold.remaining() {
        return Err(Error::Conflict(format!(
            "a final charge of {final_charge} does not fit the {} millicredits left on the hold",
            hold.remaining()
        )));
    }
    Ok(())
}
