//! The ledger's operations on [`Db`]: credits, admin grants and adjustments, payment
//! reversals, holds, and the balance and entries as read back. Each write is one transaction
//! under the account's lock ([`with_retrying_tx!`]).

use atelier_protocol::ids::{AccountId, LeaseId};

use super::invariants::replay_of;
use super::postings::{
    charge_hold_in, entry_by_key, hold_in, lock_account, place_hold_in, post, settle_hold_in,
    NewEntry, ENTRY_COLUMNS,
};
use super::{
    Balance, BalanceCheck, EntryKind, Hold, HoldId, HoldSettlement, LedgerEntry, Posted,
    ReversalTarget,
};
use crate::db::{with_retrying_tx, Db};
use crate::error::{Error, Result};

impl Db {
    /// Adds credits (a grant or a purchase). Replaying the key changes nothing.
    pub async fn credit(
        &self,
        account: AccountId,
        kind: EntryKind,
        amount: i64,
        key: &str,
        reference: Option<&str>,
    ) -> Result<Posted> {
        if !matches!(kind, EntryKind::Grant | EntryKind::Purchase) {
            return Err(Error::Internal(format!(
                "{} is not a credit",
                kind.as_str()
            )));
        }
        if amount <= 0 {
            return Err(Error::invalid("credits must be a positive amount"));
        }
        with_retrying_tx!(self, "ledger credit", |tx| {
            let mut bal = lock_account(tx, account).await?;
            if let Some(existing) = entry_by_key(tx, key).await? {
                return replay_of(existing, account, kind, Some((amount, 0)));
            }
            let entry = post(
                tx,
                &mut bal,
                NewEntry {
                    account,
                    kind,
                    amount,
                    held_delta: 0,
                    key,
                    hold_id: None,
                    lease_id: None,
                    reference,
                    usage_ms: None,
                    by_admin: None,
                },
            )
            .await?;
            Ok(Posted::Applied(entry))
        })
    }

    /// An admin's grant (`amount` > 0, kind `grant`) or adjustment (kind `adjustment`, either
    /// sign), recorded with the admin (`None` from the command line) and their reason. A
    /// deduction may not take `available` below zero. Replaying the key changes nothing.
    pub async fn admin_credit(
        &self,
        account: AccountId,
        kind: EntryKind,
        amount: i64,
        key: &str,
        admin: Option<AccountId>,
        reason: &str,
    ) -> Result<Posted> {
        match kind {
            EntryKind::Grant if amount > 0 => {}
            EntryKind::Grant => return Err(Error::invalid("a grant must be a positive amount")),
            EntryKind::Adjustment if amount != 0 => {}
            EntryKind::Adjustment => return Err(Error::invalid("an adjustment must not be 0")),
            other => {
                return Err(Error::Internal(format!(
                    "{} is not an admin entry",
                    other.as_str()
                )))
            }
        }
        with_retrying_tx!(self, "ledger admin credit", |tx| {
            let mut bal = lock_account(tx, account).await?;
            if let Some(existing) = entry_by_key(tx, key).await? {
                return replay_of(existing, account, kind, Some((amount, 0)));
            }
            let entry = post(
                tx,
                &mut bal,
                NewEntry {
                    account,
                    kind,
                    amount,
                    held_delta: 0,
                    key,
                    hold_id: None,
                    lease_id: None,
                    reference: None,
                    usage_ms: None,
                    by_admin: Some((admin, reason)),
                },
            )
            .await?;
            Ok(Posted::Applied(entry))
        })
    }

    /// Takes back (part of) the purchase recorded with `reference`. Returns `None` when there is
    /// no such purchase or nothing is left to take back. May leave the balance negative.
    pub async fn reverse_purchase(
        &self,
        reference: &str,
        kind: EntryKind,
        target: ReversalTarget,
        key: &str,
    ) -> Result<Option<Posted>> {
        if !kind.is_reversal() {
            return Err(Error::Internal(format!(
                "{} is not a reversal",
                kind.as_str()
            )));
        }
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE reference = $1 AND kind = 'purchase' \
             ORDER BY id LIMIT 1"
        );
        let purchase: Option<LedgerEntry> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(reference)
            .fetch_optional(self.pool())
            .await?;
        let Some(purchase) = purchase else {
            return Ok(None);
        };
        let account = purchase.account_id;
        let purchased = purchase.amount;
        with_retrying_tx!(self, "ledger reversal", |tx| {
            let mut bal = lock_account(tx, account).await?;
            if let Some(existing) = entry_by_key(tx, key).await? {
                return replay_of(existing, account, kind, None).map(Some);
            }
            let reversed: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) AS total FROM ledger_entries \
                 WHERE reference = $1 AND account_id = $2 \
                 AND kind IN ('purchase_refund', 'chargeback')",
            )
            .bind(reference)
            .bind(account.to_string())
            .fetch_one(&mut *tx)
            .await?;
            let already = -reversed;
            let wanted = match target {
                ReversalTarget::All => purchased,
                ReversalTarget::Fraction { refunded, of } if of > 0 => {
                    let part =
                        i128::from(purchased) * i128::from(refunded.clamp(0, of)) / i128::from(of);
                    i64::try_from(part).unwrap_or(purchased)
                }
                ReversalTarget::Fraction { .. } => 0,
            };
            let take = wanted - already;
            if take <= 0 {
                return Ok(None);
            }
            let entry = post(
                tx,
                &mut bal,
                NewEntry {
                    account,
                    kind,
                    amount: -take,
                    held_delta: 0,
                    key,
                    hold_id: None,
                    lease_id: None,
                    reference: Some(reference),
                    usage_ms: None,
                    by_admin: None,
                },
            )
            .await?;
            Ok(Some(Posted::Applied(entry)))
        })
    }

    /// Reserves credits in a new hold, or fails with `insufficient_credits`.
    pub async fn place_hold(
        &self,
        account: AccountId,
        hold_id: HoldId,
        amount: i64,
        key: &str,
    ) -> Result<Posted> {
        with_retrying_tx!(self, "ledger hold", |tx| {
            let mut bal = lock_account(tx, account).await?;
            let posted = place_hold_in(tx, &mut bal, account, hold_id, amount, key, None).await?;
            Ok(posted)
        })
    }

    /// Charges part of an open hold.
    pub async fn charge_hold(&self, hold_id: HoldId, amount: i64, key: &str) -> Result<Posted> {
        let account = self
            .hold(hold_id)
            .await?
            .ok_or(Error::NotFound("hold"))?
            .account_id;
        with_retrying_tx!(self, "ledger charge", |tx| {
            let mut bal = lock_account(tx, account).await?;
            let mut hold = hold_in(tx, hold_id).await?.ok_or(Error::NotFound("hold"))?;
            let posted = charge_hold_in(tx, &mut bal, &mut hold, amount, key, None, None).await?;
            Ok(posted)
        })
    }

    /// Settles a hold: a final charge, and the rest released. Settling twice changes nothing.
    pub async fn settle_hold(
        &self,
        hold_id: HoldId,
        final_charge: i64,
        charge_key: &str,
        release_key: &str,
    ) -> Result<HoldSettlement> {
        let account = self
            .hold(hold_id)
            .await?
            .ok_or(Error::NotFound("hold"))?
            .account_id;
        with_retrying_tx!(self, "ledger settle", |tx| {
            let mut bal = lock_account(tx, account).await?;
            let mut hold = hold_in(tx, hold_id).await?.ok_or(Error::NotFound("hold"))?;
            let settled = settle_hold_in(
                tx,
                &mut bal,
                &mut hold,
                final_charge,
                charge_key,
                release_key,
                None,
                None,
            )
            .await?;
            Ok(settled)
        })
    }

    pub async fn hold(&self, id: HoldId) -> Result<Option<Hold>> {
        let mut conn = self.pool().acquire().await?;
        hold_in(&mut conn, id).await
    }

    /// The account's materialised totals (zero for an account without entries).
    pub async fn balance(&self, account: AccountId) -> Result<Balance> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT balance, held FROM account_balances WHERE account_id = $1")
                .bind(account.to_string())
                .fetch_optional(self.pool())
                .await?;
        Ok(match row {
            Some((balance, held)) => Balance::new(balance, held),
            None => Balance::default(),
        })
    }

    /// Recomputes the totals from the entries, next to the materialised ones.
    pub async fn verify_balance(&self, account: AccountId) -> Result<BalanceCheck> {
        let materialised = self.balance(account).await?;
        let (balance, held): (i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) AS balance, \
             CAST(COALESCE(SUM(held_delta), 0) AS BIGINT) AS held \
             FROM ledger_entries WHERE account_id = $1",
        )
        .bind(account.to_string())
        .fetch_one(self.pool())
        .await?;
        let summed = Balance::new(balance, held);
        Ok(BalanceCheck {
            materialised,
            summed,
        })
    }

    /// A page of the account's entries, newest first, older than `before` (an entry id).
    pub async fn ledger_entries(
        &self,
        account: AccountId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE account_id = $1 AND id < $2 \
             ORDER BY id DESC LIMIT $3"
        );
        let rows: Vec<LedgerEntry> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(account.to_string())
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        Ok(rows)
    }

    /// Every entry of a lease (its hold, charges and release), oldest first.
    pub async fn lease_entries(&self, lease: LeaseId) -> Result<Vec<LedgerEntry>> {
        let sql =
            format!("SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE lease_id = $1 ORDER BY id");
        let rows: Vec<LedgerEntry> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(lease.to_string())
            .fetch_all(self.pool())
            .await?;
        Ok(rows)
    }
}
