//! The ledger's SQL inside a caller's transaction: the account lock, entries (looked up by
//! idempotency key, posted with the materialised totals), and holds (placed, extended, charged,
//! settled). The rules are checked by [`super::invariants`] before anything is written; the
//! runtime leases ([`crate::db::leases`]) call these in their own transactions.

use atelier_protocol::ids::{AccountId, LeaseId};
use sqlx::AnyConnection;

use super::invariants::{self, replay_of};
use super::{Balance, EntryKind, Hold, HoldId, HoldSettlement, HoldStatus, LedgerEntry, Posted};
use crate::db::now_ms;
use crate::error::{Error, Result};

/// An entry about to be posted.
pub(crate) struct NewEntry<'a> {
    pub account: AccountId,
    pub kind: EntryKind,
    pub amount: i64,
    pub held_delta: i64,
    pub key: &'a str,
    pub hold_id: Option<HoldId>,
    pub lease_id: Option<LeaseId>,
    pub reference: Option<&'a str>,
    pub usage_ms: Option<i64>,
    /// Who made it and why, for an admin's grant or adjustment.
    pub by_admin: Option<(Option<AccountId>, &'a str)>,
}

pub(super) const ENTRY_COLUMNS: &str =
    "id, account_id, kind, amount, held_delta, balance_after, held_after, \
     idempotency_key, hold_id, lease_id, reference, usage_ms, admin_id, note, created_at";

fn is_fk_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

/// Takes the account's ledger lock (see the module docs) and returns its current totals.
/// Must be the first statement of the transaction.
pub(crate) async fn lock_account(conn: &mut AnyConnection, account: AccountId) -> Result<Balance> {
    let now = now_ms();
    let row: Result<(i64, i64), _> = sqlx::query_as(
        "INSERT INTO account_balances (account_id, balance, held, updated_at) \
         VALUES ($1, 0, 0, $2) \
         ON CONFLICT (account_id) DO UPDATE SET updated_at = $2 \
         RETURNING balance, held",
    )
    .bind(account.to_string())
    .bind(now)
    .fetch_one(&mut *conn)
    .await;
    match row {
        Ok((balance, held)) => Ok(Balance::new(balance, held)),
        Err(e) if is_fk_violation(&e) => Err(Error::NotFound("account")),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn entry_by_key(
    conn: &mut AnyConnection,
    key: &str,
) -> Result<Option<LedgerEntry>> {
    let sql = format!("SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE idempotency_key = $1");
    let row: Option<LedgerEntry> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row)
}

/// Appends an entry and updates the materialised totals. The caller holds the account's lock
/// (`bal` came from [`lock_account`] in this transaction) and has checked its business rules;
/// this re-checks the invariants as a last line of defence.
pub(crate) async fn post(
    conn: &mut AnyConnection,
    bal: &mut Balance,
    e: NewEntry<'_>,
) -> Result<LedgerEntry> {
    let after = invariants::balance_after_posting(bal, e.kind, e.amount, e.held_delta, e.key)?;
    let (balance_after, held_after) = (after.balance, after.held);
    let now = now_ms();
    let (admin_id, note) = match e.by_admin {
        Some((admin, note)) => (admin, Some(note)),
        None => (None, None),
    };
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO ledger_entries (account_id, kind, amount, held_delta, balance_after, \
         held_after, idempotency_key, hold_id, lease_id, reference, usage_ms, admin_id, note, \
         created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
    )
    .bind(e.account.to_string())
    .bind(e.kind.as_str())
    .bind(e.amount)
    .bind(e.held_delta)
    .bind(balance_after)
    .bind(held_after)
    .bind(e.key)
    .bind(e.hold_id.map(|h| h.to_string()))
    .bind(e.lease_id.map(|l| l.to_string()))
    .bind(e.reference)
    .bind(e.usage_ms)
    .bind(admin_id.map(|a| a.to_string()))
    .bind(note)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE account_balances SET balance = $1, held = $2, updated_at = $3 \
         WHERE account_id = $4",
    )
    .bind(balance_after)
    .bind(held_after)
    .bind(now)
    .bind(e.account.to_string())
    .execute(&mut *conn)
    .await?;
    *bal = after;
    Ok(LedgerEntry {
        id,
        account_id: e.account,
        kind: e.kind,
        amount: e.amount,
        held_delta: e.held_delta,
        balance_after,
        held_after,
        idempotency_key: e.key.to_string(),
        hold_id: e.hold_id,
        lease_id: e.lease_id,
        reference: e.reference.map(str::to_string),
        usage_ms: e.usage_ms,
        admin_id,
        note: note.map(str::to_string),
        created_at: now,
    })
}

pub(crate) async fn hold_in(conn: &mut AnyConnection, id: HoldId) -> Result<Option<Hold>> {
    let row: Option<Hold> = sqlx::query_as(
        "SELECT id, account_id, amount, charged, released, status, created_at, settled_at \
         FROM credit_holds WHERE id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row)
}

/// Reserves `amount` for a new hold. The caller holds the account's lock.
pub(crate) async fn place_hold_in(
    conn: &mut AnyConnection,
    bal: &mut Balance,
    account: AccountId,
    hold_id: HoldId,
    amount: i64,
    key: &str,
    lease_id: Option<LeaseId>,
) -> Result<Posted> {
    invariants::check_hold_amount(amount)?;
    if let Some(existing) = entry_by_key(conn, key).await? {
        return replay_of(existing, account, EntryKind::Hold, Some((0, amount)));
    }
    invariants::check_hold_covered(bal, amount)?;
    sqlx::query(
        "INSERT INTO credit_holds (id, account_id, amount, charged, released, status, created_at) \
         VALUES ($1, $2, $3, 0, 0, 'open', $4)",
    )
    .bind(hold_id.to_string())
    .bind(account.to_string())
    .bind(amount)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    let entry = post(
        conn,
        bal,
        NewEntry {
            account,
            kind: EntryKind::Hold,
            amount: 0,
            held_delta: amount,
            key,
            hold_id: Some(hold_id),
            lease_id,
            reference: None,
            usage_ms: None,
            by_admin: None,
        },
    )
    .await?;
    Ok(Posted::Applied(entry))
}

/// Adds `extra` (> 0) to an open hold: a further `hold` entry on the same hold, so its charges
/// and its one settlement cover the whole. The caller holds the account lock and read `hold`
/// after taking it.
pub(crate) async fn extend_hold_in(
    conn: &mut AnyConnection,
    bal: &mut Balance,
    hold: &mut Hold,
    extra: i64,
    key: &str,
    lease_id: Option<LeaseId>,
) -> Result<Posted> {
    if let Some(existing) = entry_by_key(conn, key).await? {
        return replay_of(existing, hold.account_id, EntryKind::Hold, Some((0, extra)));
    }
    invariants::check_extension(bal, hold, extra)?;
    let entry = post(
        conn,
        bal,
        NewEntry {
            account: hold.account_id,
            kind: EntryKind::Hold,
            amount: 0,
            held_delta: extra,
            key,
            hold_id: Some(hold.id),
            lease_id,
            reference: None,
            usage_ms: None,
            by_admin: None,
        },
    )
    .await?;
    hold.amount += extra;
    sqlx::query("UPDATE credit_holds SET amount = $1 WHERE id = $2")
        .bind(hold.amount)
        .bind(hold.id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(Posted::Applied(entry))
}

/// Charges `amount` (> 0) from an open hold. The caller holds the hold's account lock and
/// read `hold` after taking it.
pub(crate) async fn charge_hold_in(
    conn: &mut AnyConnection,
    bal: &mut Balance,
    hold: &mut Hold,
    amount: i64,
    key: &str,
    lease_id: Option<LeaseId>,
    usage_ms: Option<i64>,
) -> Result<Posted> {
    if let Some(existing) = entry_by_key(conn, key).await? {
        return replay_of(
            existing,
            hold.account_id,
            EntryKind::Charge,
            Some((-amount, -amount)),
        );
    }
    invariants::check_charge(hold, amount)?;
    let entry = post(
        conn,
        bal,
        NewEntry {
            account: hold.account_id,
            kind: EntryKind::Charge,
            amount: -amount,
            held_delta: -amount,
            key,
            hold_id: Some(hold.id),
            lease_id,
            reference: None,
            usage_ms,
            by_admin: None,
        },
    )
    .await?;
    hold.charged += amount;
    sqlx::query("UPDATE credit_holds SET charged = $1 WHERE id = $2")
        .bind(hold.charged)
        .bind(hold.id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(Posted::Applied(entry))
}

/// Settles an open hold once: charges `final_charge` more (if > 0) and releases the rest.
/// The caller holds the account lock and read `hold` after taking it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn settle_hold_in(
    conn: &mut AnyConnection,
    bal: &mut Balance,
    hold: &mut Hold,
    final_charge: i64,
    charge_key: &str,
    release_key: &str,
    lease_id: Option<LeaseId>,
    usage_ms: Option<i64>,
) -> Result<HoldSettlement> {
    if hold.status == HoldStatus::Settled {
        return Ok(HoldSettlement {
            hold: hold.clone(),
            replayed: true,
        });
    }
    invariants::check_final_charge(hold, final_charge)?;
    if final_charge > 0 {
        charge_hold_in(
            conn,
            bal,
            hold,
            final_charge,
            charge_key,
            lease_id,
            usage_ms,
        )
        .await?;
    }
    let released = hold.amount - hold.charged;
    if released > 0 {
        post(
            conn,
            bal,
            NewEntry {
                account: hold.account_id,
                kind: EntryKind::Release,
                amount: 0,
                held_delta: -released,
                key: release_key,
                hold_id: Some(hold.id),
                lease_id,
                reference: None,
                usage_ms: None,
                by_admin: None,
            },
        )
        .await?;
    }
    let now = now_ms();
    sqlx::query(
        "UPDATE credit_holds SET status = 'settled', released = $1, settled_at = $2 \
         WHERE id = $3",
    )
    .bind(released)
    .bind(now)
    .bind(hold.id.to_string())
    .execute(&mut *conn)
    .await?;
    hold.released = released;
    hold.status = HoldStatus::Settled;
    hold.settled_at = Some(now);
    Ok(HoldSettlement {
        hold: hold.clone(),
        replayed: false,
    })
}
