//! The ledger as people read it: one line per lease (its hold, checkpoint charges and release
//! folded together), one per other entry, with dates and sessions — the dashboard's ledger and
//! `GET /billing/ledger.csv`.

use atelier_protocol::ids::{LeaseId, SessionId};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::ledger::{EntryKind, LedgerEntry};

/// What a lease entry's line also needs to know about its lease.
#[derive(Debug, Clone)]
pub struct LeaseContext {
    pub session_id: SessionId,
    pub session_title: Option<String>,
    pub gpu_class: String,
    /// Final once the lease has stopped.
    pub used_ms: i64,
    pub stopped: bool,
}

/// One line of the statement.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StatementLine {
    /// When it happened (the lease's start for a lease), epoch ms.
    pub at: i64,
    /// `runtime`, `grant`, `adjustment`, `purchase`, `purchase_refund`, `chargeback`.
    pub kind: String,
    /// In the user's words, e.g. "Pro runtime (cpu), 12 min 5 s".
    pub description: String,
    /// Millicredits: added (positive) or spent (negative).
    pub amount: i64,
    /// The balance after the line's last entry.
    pub balance_after: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<LeaseId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_class: Option<String>,
    /// Runtime used, for a lease.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_ms: Option<i64>,
    /// Still running: the line grows.
    pub open: bool,
    /// The payment's reference, or an admin's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// "12 min 5 s", "45 s", "2 h 3 min".
pub fn duration_text(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s} s"),
        (0, _) => format!("{m} min {s} s"),
        _ => format!("{h} h {m} min"),
    }
}

fn describe(entry: &LedgerEntry) -> &'static str {
    match entry.kind {
        EntryKind::Grant if entry.idempotency_key.starts_with("signup:") => "Starter credits",
        EntryKind::Grant => "Credits granted",
        EntryKind::Adjustment => "Adjustment",
        EntryKind::Purchase => "Credits bought",
        EntryKind::PurchaseRefund => "Purchase refunded",
        EntryKind::Chargeback => "Purchase disputed",
        EntryKind::Hold | EntryKind::Charge | EntryKind::Release => "Pro runtime",
    }
}

/// Folds entries (newest first, as the ledger pages them) into lines, newest first. A lease's
/// entries become one line at the position of its newest entry.
pub fn fold(
    entries: &[LedgerEntry],
    lease: impl Fn(LeaseId) -> Option<LeaseContext>,
) -> Vec<StatementLine> {
    let mut lines: Vec<StatementLine> = Vec::new();
    let mut lease_line: std::collections::HashMap<LeaseId, usize> = Default::default();
    for e in entries {
        if let Some(lease_id) = e.lease_id {
            if let Some(&i) = lease_line.get(&lease_id) {
                let line = &mut lines[i];
                line.amount += e.amount;
                line.at = line.at.min(e.created_at);
                continue;
            }
            let ctx = lease(lease_id);
            let (description, used_ms, open) = match &ctx {
                Some(c) => (
                    format!(
                        "Pro runtime ({}), {}",
                        c.gpu_class,
                        duration_text(c.used_ms)
                    ),
                    Some(c.used_ms),
                    !c.stopped,
                ),
                None => ("Pro runtime".to_string(), None, false),
            };
            lease_line.insert(lease_id, lines.len());
            lines.push(StatementLine {
                at: e.created_at,
                kind: "runtime".into(),
                description,
                amount: e.amount,
                balance_after: e.balance_after,
                session_id: ctx.as_ref().map(|c| c.session_id),
                session_title: ctx.as_ref().and_then(|c| c.session_title.clone()),
                lease_id: Some(lease_id),
                gpu_class: ctx.as_ref().map(|c| c.gpu_class.clone()),
                used_ms,
                open,
                note: None,
            });
            continue;
        }
        lines.push(StatementLine {
            at: e.created_at,
            kind: e.kind.as_str().into(),
            description: describe(e).into(),
            amount: e.amount,
            balance_after: e.balance_after,
            session_id: None,
            session_title: None,
            lease_id: None,
            gpu_class: None,
            used_ms: None,
            open: false,
            note: e
                .note
                .clone()
                .or_else(|| e.reference.as_ref().map(|r| format!("payment {r}"))),
        });
    }
    lines
}

/// One CSV field, quoted when it must be (RFC 4180); a leading `=`, `+`, `-`, `@` is defused so
/// a spreadsheet does not run it as a formula.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '@'])
        || (text.starts_with('-') && text.parse::<f64>().is_err())
    {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// The statement as CSV: a header and one row per line, oldest first; amounts in credits.
pub fn to_csv(lines: &[StatementLine]) -> String {
    let mut out = String::from(
        "date_utc,description,credits,balance_after,session,session_id,gpu_class,runtime_seconds,note\n",
    );
    for l in lines.iter().rev() {
        let row = [
            crate::http::api::billing::utc_timestamp(l.at),
            l.description.clone(),
            super::prices::credits_text(l.amount),
            super::prices::credits_text(l.balance_after),
            l.session_title.clone().unwrap_or_default(),
            l.session_id.map(|s| s.to_string()).unwrap_or_default(),
            l.gpu_class.clone().unwrap_or_default(),
            l.used_ms
                .map(|ms| format!("{:.3}", ms as f64 / 1000.0))
                .unwrap_or_default(),
            l.note.clone().unwrap_or_default(),
        ];
        let fields: Vec<String> = row.iter().map(|f| csv_field(f)).collect();
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use atelier_protocol::ids::AccountId;

    fn entry(id: i64, kind: EntryKind, amount: i64, lease: Option<LeaseId>) -> LedgerEntry {
        LedgerEntry {
            id,
            account_id: AccountId::new_random(),
            kind,
            amount,
            held_delta: 0,
            balance_after: 1000 - id,
            held_after: 0,
            idempotency_key: format!("k{id}"),
            hold_id: None,
            lease_id: lease,
            reference: None,
            usage_ms: None,
            admin_id: None,
            note: (kind == EntryKind::Grant).then(|| "=1+1, welcome".to_string()),
            created_at: id * 1000,
        }
    }

    #[test]
    fn a_lease_is_one_line() {
        let lease = LeaseId::new_random();
        let session = SessionId::new_random();
        // Newest first: release, charge, charge, hold, then the grant.
        let entries = vec![
            entry(5, EntryKind::Release, 0, Some(lease)),
            entry(4, EntryKind::Charge, -30, Some(lease)),
            entry(3, EntryKind::Charge, -70, Some(lease)),
            entry(2, EntryKind::Hold, 0, Some(lease)),
            entry(1, EntryKind::Grant, 6000, None),
        ];
        let lines = fold(&entries, |_| {
            Some(LeaseContext {
                session_id: session,
                session_title: Some("Terrain".into()),
                gpu_class: "cpu".into(),
                used_ms: 61_000,
                stopped: true,
            })
        });
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].amount, -100);
        assert_eq!(lines[0].at, 2000);
        assert_eq!(lines[0].balance_after, 995);
        assert_eq!(lines[0].description, "Pro runtime (cpu), 1 min 1 s");
        assert_eq!(lines[1].kind, "grant");
        let csv = to_csv(&lines);
        let rows: Vec<&str> = csv.lines().collect();
        assert_eq!(rows.len(), 3);
        assert!(rows[1].contains("Credits granted,6,"), "{csv}");
        assert!(rows[1].ends_with(",\"'=1+1, welcome\""), "{csv}");
        assert!(rows[2].contains("-0.1,0.995,Terrain,"), "{csv}");
    }

    #[test]
    fn durations() {
        assert_eq!(duration_text(45_000), "45 s");
        assert_eq!(duration_text(725_000), "12 min 5 s");
        assert_eq!(duration_text(7_380_000), "2 h 3 min");
    }
}
