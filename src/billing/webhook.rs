//! Payment-provider webhooks, signed Stripe-style.
//!
//! The provider sends `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]` where each `v1`
//! is HMAC-SHA256 over `"{t}.{raw body}"` keyed with `ATELIER_PAYMENT_WEBHOOK_SECRET`. A request
//! is accepted when one `v1` matches (compared in constant time) and `t` is within
//! [`TOLERANCE_S`] of the server's clock, which bounds how long a captured request can be
//! replayed; replays inside the window are harmless because every event is idempotent.
//!
//! Events understood (anything else is acknowledged and ignored):
//! - `checkout.session.completed` / `checkout.session.async_payment_succeeded` with
//!   `payment_status: "paid"`: grants `metadata.credits` millicredits to `metadata.account_id`
//!   (or `client_reference_id`). Idempotency key `purchase:{checkout id}`; the purchase is
//!   remembered by its `payment_intent` (or checkout id) for later reversals.
//! - `charge.refunded`: takes back `amount_refunded / amount` of that payment's credits
//!   (cumulative, so partial refunds add up). Key `refund:{charge id}:{amount_refunded}`.
//! - `charge.dispute.created`: a chargeback takes back everything not taken back yet. Key
//!   `chargeback:{dispute id}`.

use atelier_protocol::ids::AccountId;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use crate::db::ledger::ReversalTarget;
use crate::error::{Error, Result};

/// How far (seconds) a signature's timestamp may be from the server's clock.
pub const TOLERANCE_S: i64 = 300;
/// The largest credit amount one purchase may grant (millicredits).
pub const MAX_PURCHASE_CREDITS: i64 = 1_000_000_000_000;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str, timestamp: &str, body: &[u8]) -> Result<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .map_err(|e| Error::Internal(format!("webhook HMAC key: {e}")))?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(mac)
}

/// The header value a provider would send for `body` at `timestamp` (tests and tooling).
pub fn signature_header(secret: &str, timestamp: i64, body: &[u8]) -> Result<String> {
    let t = timestamp.to_string();
    let tag = mac(secret, &t, body)?.finalize().into_bytes();
    Ok(format!("t={t},v1={}", hex::encode(tag)))
}

/// Checks a `Stripe-Signature` header against the raw body at `now_s` (unix seconds).
pub fn verify_signature(secret: &str, header: &str, body: &[u8], now_s: i64) -> Result<()> {
    let bad = |why: &str| Error::InvalidSignature(format!("invalid webhook signature: {why}"));
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) if timestamp.is_none() => timestamp = Some(t.trim()),
            Some(("v1", sig)) => candidates.push(sig.trim()),
            _ => {}
        }
    }
    let t = timestamp.ok_or_else(|| bad("no timestamp (t=)"))?;
    let t_secs: i64 = t
        .parse()
        .map_err(|_| bad("the timestamp is not a number"))?;
    if candidates.is_empty() {
        return Err(bad("no v1 signature"));
    }
    // `abs_diff`: the timestamp is the sender's, any i64 at all (`t=-9223372036854775808`);
    // a subtraction could overflow before the signature is even checked.
    if now_s.abs_diff(t_secs) > TOLERANCE_S.unsigned_abs() {
        return Err(bad("the timestamp is outside the tolerance window"));
    }
    for candidate in candidates {
        let Ok(tag) = hex::decode(candidate) else {
            continue;
        };
        // `verify_slice` compares in constant time.
        if mac(secret, t, body)?.verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    Err(bad("no signature matches"))
}

/// What a verified event asks the ledger to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentAction {
    Purchase {
        account: AccountId,
        credits: i64,
        key: String,
        reference: String,
    },
    Reversal {
        chargeback: bool,
        reference: String,
        target: ReversalTarget,
        key: String,
    },
    Ignore {
        why: String,
    },
}

/// A provider event: its id, type and object.
#[derive(Debug, Clone)]
pub struct PaymentEvent {
    pub id: String,
    pub kind: String,
    pub action: PaymentAction,
}

#[derive(Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EnvelopeData,
}

#[derive(Deserialize)]
struct EnvelopeData {
    object: Value,
}

fn str_field<'a>(object: &'a Value, name: &str) -> Option<&'a str> {
    object
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn int_field(object: &Value, name: &str) -> Option<i64> {
    match object.get(name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Parses a verified event body.
pub fn parse_event(body: &[u8]) -> Result<PaymentEvent> {
    let env: Envelope = serde_json::from_slice(body)
        .map_err(|e| Error::invalid(format!("not a payment event: {e}")))?;
    let object = &env.data.object;
    let action = match env.kind.as_str() {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            purchase(object)?
        }
        "charge.refunded" => {
            let charge = str_field(object, "id")
                .ok_or_else(|| Error::invalid("charge.refunded without a charge id"))?;
            let reference = str_field(object, "payment_intent")
                .ok_or_else(|| Error::invalid("charge.refunded without a payment_intent"))?;
            let amount = int_field(object, "amount").unwrap_or(0);
            let refunded = int_field(object, "amount_refunded").unwrap_or(0);
            if amount <= 0 || refunded <= 0 {
                PaymentAction::Ignore {
                    why: "nothing refunded".into(),
                }
            } else {
                PaymentAction::Reversal {
                    chargeback: false,
                    reference: reference.to_string(),
                    target: ReversalTarget::Fraction {
                        refunded,
                        of: amount,
                    },
                    key: format!("refund:{charge}:{refunded}"),
                }
            }
        }
        "charge.dispute.created" => {
            let dispute = str_field(object, "id")
                .ok_or_else(|| Error::invalid("charge.dispute.created without a dispute id"))?;
            let reference = str_field(object, "payment_intent")
                .ok_or_else(|| Error::invalid("charge.dispute.created without a payment_intent"))?;
            PaymentAction::Reversal {
                chargeback: true,
                reference: reference.to_string(),
                target: ReversalTarget::All,
                key: format!("chargeback:{dispute}"),
            }
        }
        other => PaymentAction::Ignore {
            why: format!("event type {other} is not used"),
        },
    };
    Ok(PaymentEvent {
        id: env.id,
        kind: env.kind,
        action,
    })
}

fn purchase(object: &Value) -> Result<PaymentAction> {
    let checkout =
        str_field(object, "id").ok_or_else(|| Error::invalid("checkout session without an id"))?;
    if str_field(object, "payment_status") != Some("paid") {
        // Delayed payment methods complete later with `async_payment_succeeded`.
        return Ok(PaymentAction::Ignore {
            why: "the checkout is not paid yet".into(),
        });
    }
    let metadata = object.get("metadata").cloned().unwrap_or(Value::Null);
    let account = str_field(&metadata, "account_id")
        .or_else(|| str_field(object, "client_reference_id"))
        .ok_or_else(|| {
            Error::invalid(
                "the checkout names no account (metadata.account_id or client_reference_id)",
            )
        })?;
    let account: AccountId = account
        .parse()
        .map_err(|_| Error::invalid(format!("the checkout's account {account:?} is not an id")))?;
    let credits = int_field(&metadata, "credits")
        .filter(|c| (1..=MAX_PURCHASE_CREDITS).contains(c))
        .ok_or_else(|| {
            Error::invalid(format!(
                "the checkout's metadata.credits must be a whole number of millicredits between 1 and {MAX_PURCHASE_CREDITS}"
            ))
        })?;
    let reference = str_field(object, "payment_intent").unwrap_or(checkout);
    Ok(PaymentAction::Purchase {
        account,
        credits,
        key: format!("purchase:{checkout}"),
        reference: reference.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SECRET: &str = "whsec_test";

    #[test]
    fn accepts_its_own_signature_and_refuses_tampering() {
        let body = br#"{"id":"evt_1"}"#;
        let header = signature_header(SECRET, 1_700_000_000, body).unwrap();
        verify_signature(SECRET, &header, body, 1_700_000_010).unwrap();
        // Another secret, another body, an old or future timestamp, garbage.
        assert!(verify_signature("other", &header, body, 1_700_000_010).is_err());
        assert!(verify_signature(SECRET, &header, br#"{"id":"evt_2"}"#, 1_700_000_010).is_err());
        assert!(verify_signature(SECRET, &header, body, 1_700_000_000 + TOLERANCE_S + 1).is_err());
        assert!(verify_signature(SECRET, &header, body, 1_700_000_000 - TOLERANCE_S - 1).is_err());
        assert!(verify_signature(SECRET, "t=1700000000", body, 1_700_000_000).is_err());
        assert!(verify_signature(SECRET, "v1=00", body, 1_700_000_000).is_err());
        assert!(verify_signature(SECRET, "", body, 1_700_000_000).is_err());
        let err = verify_signature(SECRET, "t=x,v1=zz", body, 1).unwrap_err();
        assert_eq!(err.code(), "invalid_signature");
    }

    #[test]
    fn extreme_timestamps_are_refused_not_overflowed() {
        let body = b"{}";
        for t in [i64::MIN, i64::MIN + 1, i64::MAX, -1] {
            let header = format!("t={t},v1={}", "0".repeat(64));
            for now in [0, 1_700_000_000, i64::MAX, i64::MIN] {
                let err = verify_signature(SECRET, &header, body, now).unwrap_err();
                assert_eq!(err.code(), "invalid_signature", "t={t} now={now}");
            }
        }
        let huge = "t=99999999999999999999999,v1=00";
        assert!(verify_signature(SECRET, huge, body, 1).is_err());
    }

    #[test]
    fn any_v1_may_match_for_secret_rotation() {
        let body = b"{}";
        let good = signature_header(SECRET, 100, body).unwrap();
        let sig = good.split_once("v1=").unwrap().1;
        let header = format!("t=100,v1={},v1={sig},v0=abc", "0".repeat(64));
        verify_signature(SECRET, &header, body, 100).unwrap();
    }

    #[test]
    fn parses_checkouts_refunds_and_disputes() {
        let account = AccountId::new_random();
        let body = json!({"id": "evt_1", "type": "checkout.session.completed", "data": {"object": {
            "id": "cs_1", "payment_status": "paid", "payment_intent": "pi_1",
            "metadata": {"account_id": account.to_string(), "credits": "5000"}}}});
        let event = parse_event(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            event.action,
            PaymentAction::Purchase {
                account,
                credits: 5000,
                key: "purchase:cs_1".into(),
                reference: "pi_1".into()
            }
        );
        let unpaid = json!({"id": "evt_2", "type": "checkout.session.completed", "data": {"object": {
            "id": "cs_2", "payment_status": "unpaid", "metadata": {}}}});
        assert!(matches!(
            parse_event(unpaid.to_string().as_bytes()).unwrap().action,
            PaymentAction::Ignore { .. }
        ));
        let bad_credits = json!({"id": "evt_3", "type": "checkout.session.completed", "data": {"object": {
            "id": "cs_3", "payment_status": "paid",
            "metadata": {"account_id": account.to_string(), "credits": "-5"}}}});
        assert!(parse_event(bad_credits.to_string().as_bytes()).is_err());
        let refund = json!({"id": "evt_4", "type": "charge.refunded", "data": {"object": {
            "id": "ch_1", "payment_intent": "pi_1", "amount": 1000, "amount_refunded": 250}}});
        assert_eq!(
            parse_event(refund.to_string().as_bytes()).unwrap().action,
            PaymentAction::Reversal {
                chargeback: false,
                reference: "pi_1".into(),
                target: ReversalTarget::Fraction {
                    refunded: 250,
                    of: 1000
                },
                key: "refund:ch_1:250".into()
            }
        );
        let dispute = json!({"id": "evt_5", "type": "charge.dispute.created", "data": {"object": {
            "id": "dp_1", "payment_intent": "pi_1"}}});
        assert!(matches!(
            parse_event(dispute.to_string().as_bytes()).unwrap().action,
            PaymentAction::Reversal {
                chargeback: true,
                ..
            }
        ));
        let other = json!({"id": "evt_6", "type": "invoice.paid", "data": {"object": {}}});
        assert!(matches!(
            parse_event(other.to_string().as_bytes()).unwrap().action,
            PaymentAction::Ignore { .. }
        ));
        assert!(parse_event(b"not json").is_err());
    }
}
