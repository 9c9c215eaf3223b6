//! Credits that come from outside a lease: the signup grant and payment webhooks (purchases,
//! refunds and chargebacks, which stop the payer's leases when they leave the balance
//! negative).

use atelier_protocol::ids::AccountId;

use super::webhook::{PaymentAction, PaymentEvent};
use super::{reason, Billing, PaymentOutcome};
use crate::db::ledger::EntryKind;
use crate::error::Result;

impl Billing {
    /// Grants the signup credits (`ATELIER_SIGNUP_CREDITS`) once per account.
    pub async fn signup_grant(&self, account: AccountId) -> Result<()> {
        let credits = self.shared.settings.signup_credits;
        if credits > 0 {
            let key = format!("signup:{account}");
            self.db()
                .credit(account, EntryKind::Grant, credits, &key, None)
                .await?;
        }
        Ok(())
    }

    /// Applies a verified payment event to the ledger.
    pub async fn apply_payment(&self, event: &PaymentEvent) -> Result<PaymentOutcome> {
        match &event.action {
            PaymentAction::Purchase {
                account,
                credits,
                key,
                reference,
            } => {
                if self.db().account(*account).await?.is_none() {
                    tracing::error!(event = %event.id, %account, "payment for an unknown account ignored");
                    return Ok(PaymentOutcome::Ignored);
                }
                let posted = self
                    .db()
                    .credit(
                        *account,
                        EntryKind::Purchase,
                        *credits,
                        key,
                        Some(reference),
                    )
                    .await?;
                if posted.is_replay() {
                    return Ok(PaymentOutcome::Duplicate);
                }
                tracing::info!(event = %event.id, %account, credits, "credits purchased");
                Ok(PaymentOutcome::Credited)
            }
            PaymentAction::Reversal {
                chargeback,
                reference,
                target,
                key,
            } => {
                let kind = if *chargeback {
                    EntryKind::Chargeback
                } else {
                    EntryKind::PurchaseRefund
                };
                let Some(posted) = self
                    .db()
                    .reverse_purchase(reference, kind, *target, key)
                    .await?
                else {
                    return Ok(PaymentOutcome::Ignored);
                };
                if posted.is_replay() {
                    return Ok(PaymentOutcome::Duplicate);
                }
                let account = posted.entry().account_id;
                tracing::warn!(event = %event.id, %account, amount = posted.entry().amount, kind = kind.as_str(), "purchase reversed");
                if self.db().balance(account).await?.available < 0 {
                    self.stop_account_leases(account, reason::PAYMENT_REVERSED)
                        .await;
                }
                Ok(PaymentOutcome::Reversed)
            }
            PaymentAction::Ignore { why } => {
                tracing::debug!(event = %event.id, kind = %event.kind, why, "payment event ignored");
                Ok(PaymentOutcome::Ignored)
            }
        }
    }
}
