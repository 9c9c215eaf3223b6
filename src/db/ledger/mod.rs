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

use std::fmt;
use std::str::FromStr;

use atelier_protocol::ids::{AccountId, LeaseId};
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::columns::{ids_from_uuid_text, OptUuidText, UuidText};
use super::with_retrying_tx;
use super::{now_ms, Db};
use crate::error::{Error, Result};

/// A reservation of credits (for now, one per runtime lease).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, format = Uuid)]
pub struct HoldId(pub Uuid);

impl HoldId {
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl fmt::Display for HoldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl From<Uuid> for HoldId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

ids_from_uuid_text!(HoldId);

impl FromStr for HoldId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Free credits: the signup grant, or an admin's grant (with the admin and a reason).
    Grant,
    /// An admin's correction, up or down (with the admin and a reason).
    Adjustment,
    /// Credits bought through the payment provider.
    Purchase,
    /// Credits reserved for a runtime lease (`held_delta` > 0, `amount` 0).
    Hold,
    /// Used credits, taken from a hold (`amount` = `held_delta` < 0).
    Charge,
    /// The unused rest of a hold, given back when it settles (`held_delta` < 0, `amount` 0).
    Release,
    /// The payment provider refunded a purchase: its credits are taken back.
    PurchaseRefund,
    /// The payer disputed a purchase with their bank: its credits are taken back.
    Chargeback,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Grant => "grant",
            EntryKind::Adjustment => "adjustment",
            EntryKind::Purchase => "purchase",
            EntryKind::Hold => "hold",
            EntryKind::Charge => "charge",
            EntryKind::Release => "release",
            EntryKind::PurchaseRefund => "purchase_refund",
            EntryKind::Chargeback => "chargeback",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "grant" => EntryKind::Grant,
            "adjustment" => EntryKind::Adjustment,
            "purchase" => EntryKind::Purchase,
            "hold" => EntryKind::Hold,
            "charge" => EntryKind::Charge,
            "release" => EntryKind::Release,
            "purchase_refund" => EntryKind::PurchaseRefund,
            "chargeback" => EntryKind::Chargeback,
            _ => return None,
        })
    }

    /// Payment reversals are the only entries allowed to leave `available` below zero.
    pub fn is_reversal(self) -> bool {
        matches!(self, EntryKind::PurchaseRefund | EntryKind::Chargeback)
    }
}

impl TryFrom<String> for EntryKind {
    type Error = String;

    fn try_from(stored: String) -> Result<Self, String> {
        EntryKind::parse(&stored).ok_or_else(|| format!("unknown ledger entry kind {stored:?}"))
    }
}

/// An account's credits, in millicredits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, ToSchema)]
pub struct Balance {
    /// Credits the account owns: the sum of its entries' `amount`.
    pub balance: i64,
    /// Credits reserved by open holds (running leases): the sum of `held_delta`.
    pub held: i64,
    /// `balance - held`: what a new lease may reserve. Negative only after a payment reversal.
    pub available: i64,
}

impl Balance {
    fn new(balance: i64, held: i64) -> Self {
        Balance {
            balance,
            held,
            available: balance.saturating_sub(held),
        }
    }
}

/// One immutable ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
pub struct LedgerEntry {
    /// Increases with every entry; the ledger's page cursor.
    pub id: i64,
    #[sqlx(try_from = "UuidText")]
    pub account_id: AccountId,
    #[sqlx(try_from = "String")]
    pub kind: EntryKind,
    /// Effect on the balance (millicredits).
    pub amount: i64,
    /// Effect on the held credits (millicredits).
    pub held_delta: i64,
    pub balance_after: i64,
    pub held_after: i64,
    pub idempotency_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[sqlx(try_from = "OptUuidText")]
    pub hold_id: Option<HoldId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[sqlx(try_from = "OptUuidText")]
    pub lease_id: Option<LeaseId>,
    /// The payment provider's object (checkout, payment intent) for purchases and reversals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// For charges: the runtime (ms) this charge pays for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_ms: Option<i64>,
    /// For an admin's grant or adjustment: the admin who made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[sqlx(try_from = "OptUuidText")]
    pub admin_id: Option<AccountId>,
    /// For an admin's grant or adjustment: their reason, shown to the account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub created_at: i64,
}

/// The outcome of a posting: a new entry, or the existing one when its key was used before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    Applied(LedgerEntry),
    Replayed(LedgerEntry),
}

impl Posted {
    pub fn entry(&self) -> &LedgerEntry {
        match self {
            Posted::Applied(e) | Posted::Replayed(e) => e,
        }
    }

    pub fn is_replay(&self) -> bool {
        matches!(self, Posted::Replayed(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldStatus {
    Open,
    Settled,
}

impl TryFrom<String> for HoldStatus {
    type Error = String;

    fn try_from(stored: String) -> Result<Self, String> {
        match stored.as_str() {
            "open" => Ok(HoldStatus::Open),
            "settled" => Ok(HoldStatus::Settled),
            other => Err(format!("unknown hold status {other:?}")),
        }
    }
}

/// A two-phase reservation: `amount` reserved, `charged` used so far, `released` once settled.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Hold {
    #[sqlx(try_from = "UuidText")]
    pub id: HoldId,
    #[sqlx(try_from = "UuidText")]
    pub account_id: AccountId,
    pub amount: i64,
    pub charged: i64,
    pub released: i64,
    #[sqlx(try_from = "String")]
    pub status: HoldStatus,
    pub created_at: i64,
    pub settled_at: Option<i64>,
}

impl Hold {
    /// Reserved credits not yet charged.
    pub fn remaining(&self) -> i64 {
        match self.status {
            HoldStatus::Open => self.amount - self.charged,
            HoldStatus::Settled => 0,
        }
    }
}

/// A settled hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldSettlement {
    pub hold: Hold,
    /// True when the hold was already settled (nothing was posted by this call).
    pub replayed: bool,
}

/// What [`Db::verify_balance`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceCheck {
    pub materialised: Balance,
    pub summed: Balance,
}

impl BalanceCheck {
    pub fn agrees(&self) -> bool {
        self.materialised == self.summed
    }
}

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

const ENTRY_COLUMNS: &str = "id, account_id, kind, amount, held_delta, balance_after, held_after, \
     idempotency_key, hold_id, lease_id, reference, usage_ms, admin_id, note, created_at";

fn overflow() -> Error {
    Error::invalid("amount out of range")
}

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

/// A repeated key is a replay only when it asks for the same thing.
/// `effect` is the `(amount, held_delta)` the caller meant to post, when it is known up front.
fn replay_of(
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

/// Appends an entry and updates the materialised totals. The caller holds the account's lock
/// (`bal` came from [`lock_account`] in this transaction) and has checked its business rules;
/// this re-checks the invariants as a last line of defence.
pub(crate) async fn post(
    conn: &mut AnyConnection,
    bal: &mut Balance,
    e: NewEntry<'_>,
) -> Result<LedgerEntry> {
    let balance_after = bal.balance.checked_add(e.amount).ok_or_else(overflow)?;
    let held_after = bal.held.checked_add(e.held_delta).ok_or_else(overflow)?;
    let after = Balance::new(balance_after, held_after);
    if held_after < 0 {
        return Err(Error::Internal(format!(
            "ledger entry {} would make held credits negative",
            e.key
        )));
    }
    if after.available < 0 && after.available < bal.available && !e.kind.is_reversal() {
        return Err(Error::InsufficientCredits(format!(
            "this needs {} millicredits; {} are available",
            bal.available - after.available,
            bal.available.max(0)
        )));
    }
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
    if amount <= 0 {
        return Err(Error::invalid("a hold must reserve a positive amount"));
    }
    if let Some(existing) = entry_by_key(conn, key).await? {
        return replay_of(existing, account, EntryKind::Hold, Some((0, amount)));
    }
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
    if final_charge < 0 || final_charge > hold.remaining() {
        return Err(Error::Conflict(format!(
            "a final charge of {final_charge} does not fit the {} millicredits left on the hold",
            hold.remaining()
        )));
    }
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

/// How much of a purchase a reversal takes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReversalTarget {
    /// Everything not taken back yet (a chargeback).
    All,
    /// Reversals of this purchase should add up to `refunded / of` of it, rounded down (a
    /// partial refund, which the provider reports cumulatively: `refunded` of `of` paid).
    Fraction { refunded: i64, of: i64 },
}

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

#[cfg(test)]
pub(crate) mod tests;
