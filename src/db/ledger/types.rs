//! The ledger's values as the API and its callers see them: entries, balances, holds and what a
//! posting, settlement or reversal returns. The OpenAPI schemas are derived from these.

use atelier_protocol::ids::{AccountId, LeaseId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::HoldId;
use crate::db::columns::{OptUuidText, UuidText};

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
    pub(crate) fn new(balance: i64, held: i64) -> Self {
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

/// What [`Db::verify_balance`](crate::db::Db::verify_balance) found.
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

/// How much of a purchase a reversal takes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReversalTarget {
    /// Everything not taken back yet (a chargeback).
    All,
    /// Reversals of this purchase should add up to `refunded / of` of it, rounded down (a
    /// partial refund, which the provider reports cumulatively: `refunded` of `of` paid).
    Fraction { refunded: i64, of: i64 },
}
