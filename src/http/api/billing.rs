//! Credits: prices, balance, ledger, runtime usage, and the payment provider's webhook.

use actix_web::http::header;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use atelier_protocol::ids::SessionId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::AccountAuth;
use crate::billing::packs::CreditPack;
use crate::billing::statement::{fold, to_csv, StatementLine};
use crate::billing::webhook::{parse_event, verify_signature};
use crate::billing::PaymentOutcome;
use crate::db::ledger::{Balance, LedgerEntry};
use crate::db::now_ms;
use crate::error::{Error, Result};
use crate::state::AppState;

/// The header carrying the webhook signature.
pub const SIGNATURE_HEADER: &str = "stripe-signature";
/// Largest ledger page.
pub const MAX_LEDGER_PAGE: u32 = 500;
/// Longest usage report, in days.
pub const MAX_USAGE_DAYS: u32 = 366;

#[derive(Debug, Serialize, ToSchema)]
pub struct GpuPrice {
    pub gpu_class: String,
    /// Millicredits per minute of lease time (billed per millisecond, rounded down).
    pub price_per_minute: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Prices {
    /// Always `millicredits_per_minute`; 1000 millicredits = 1 credit.
    pub unit: &'static str,
    pub max_prepaid_minutes: u32,
    pub prices: Vec<GpuPrice>,
}

/// GPU classes and their prices (public).
#[utoipa::path(tag = "billing", security(()), responses((status = 200, body = Prices)))]
#[get("/billing/prices")]
pub async fn prices(state: web::Data<AppState>) -> web::Json<Prices> {
    web::Json(Prices {
        unit: "millicredits_per_minute",
        max_prepaid_minutes: state.billing.max_prepaid_minutes(),
        prices: state
            .billing
            .prices()
            .iter()
            .map(|(gpu_class, price_per_minute)| GpuPrice {
                gpu_class: gpu_class.to_string(),
                price_per_minute,
            })
            .collect(),
    })
}

/// The caller's credits, in millicredits.
#[utoipa::path(security(("api_key" = ["billing:read"])), tag = "billing", responses((status = 200, body = Balance), (status = 401)))]
#[get("/billing/balance")]
pub async fn balance(state: web::Data<AppState>, auth: AccountAuth) -> Result<web::Json<Balance>> {
    Ok(web::Json(state.db.balance(auth.account.id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct LedgerQuery {
    /// Entries older than this id (the previous page's `next_before`).
    pub before: Option<i64>,
    /// Page size, 1–500 (default 50).
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerPage {
    /// Newest first.
    pub entries: Vec<LedgerEntry>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// The caller's ledger entries, newest first, paged.
#[utoipa::path(security(("api_key" = ["billing:read"])), tag = "billing", params(LedgerQuery),
    responses((status = 200, body = LedgerPage), (status = 400), (status = 401)))]
#[get("/billing/ledger")]
pub async fn ledger(
    state: web::Data<AppState>,
    auth: AccountAuth,
    query: web::Query<LedgerQuery>,
) -> Result<web::Json<LedgerPage>> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_LEDGER_PAGE).contains(&limit) {
        return Err(Error::invalid(format!(
            "limit must be between 1 and {MAX_LEDGER_PAGE}"
        )));
    }
    let entries = state
        .db
        .ledger_entries(auth.account.id, query.before, limit)
        .await?;
    let full = entries.len() == usize::try_from(limit).unwrap_or(usize::MAX);
    let next_before = entries.last().filter(|_| full).map(|e| e.id);
    Ok(web::Json(LedgerPage {
        entries,
        next_before,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct UsageQuery {
    /// How many days back, including today (UTC), 1–366 (default 30).
    pub days: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuntimeUsage {
    pub session_id: SessionId,
    /// Absent when the session was deleted since.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_title: Option<String>,
    pub gpu_class: String,
    /// UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// GPU time paid for that day.
    pub gpu_seconds: f64,
    pub used_ms: i64,
    /// Millicredits charged for it.
    pub charged: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    pub days: u32,
    pub usage: Vec<RuntimeUsage>,
}

/// The caller's Pro runtime usage: GPU-seconds per session, class and UTC day, newest first.
#[utoipa::path(security(("api_key" = ["billing:read"])), tag = "billing", params(UsageQuery),
    responses((status = 200, body = UsageReport), (status = 400), (status = 401)))]
#[get("/billing/usage")]
pub async fn usage(
    state: web::Data<AppState>,
    auth: AccountAuth,
    query: web::Query<UsageQuery>,
) -> Result<web::Json<UsageReport>> {
    let days = query.days.unwrap_or(30);
    if !(1..=MAX_USAGE_DAYS).contains(&days) {
        return Err(Error::invalid(format!(
            "days must be between 1 and {MAX_USAGE_DAYS}"
        )));
    }
    let today = now_ms().div_euclid(86_400_000);
    let since = (today - i64::from(days) + 1) * 86_400_000;
    let rows = state.db.runtime_usage(auth.account.id, since).await?;
    Ok(web::Json(UsageReport {
        days,
        usage: rows
            .into_iter()
            .map(|row| RuntimeUsage {
                session_id: row.session_id,
                session_title: row.session_title,
                gpu_class: row.gpu_class,
                day: civil_day(row.epoch_day),
                gpu_seconds: row.used_ms as f64 / 1000.0,
                used_ms: row.used_ms,
                charged: row.charged,
            })
            .collect(),
    }))
}

/// Epoch milliseconds → `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn utc_timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (day, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    format!(
        "{} {:02}:{:02}:{:02}",
        civil_day(day),
        rest / 3600,
        (rest / 60) % 60,
        rest % 60
    )
}

/// Most statement entries read at once (the statement covers this many ledger entries).
pub const MAX_STATEMENT_ENTRIES: u32 = 20_000;

#[derive(Debug, Deserialize, IntoParams)]
pub struct StatementQuery {
    /// How many ledger entries to fold into lines, newest first, 1–20000 (default 1000).
    pub entries: Option<u32>,
}

async fn statement_lines(
    state: &AppState,
    account: atelier_protocol::ids::AccountId,
    entries: Option<u32>,
) -> Result<Vec<StatementLine>> {
    let limit = entries.unwrap_or(1000);
    if !(1..=MAX_STATEMENT_ENTRIES).contains(&limit) {
        return Err(Error::invalid(format!(
            "entries must be between 1 and {MAX_STATEMENT_ENTRIES}"
        )));
    }
    let entries = state.db.ledger_entries(account, None, limit).await?;
    let leases = state.db.lease_contexts(account).await?;
    Ok(fold(&entries, |id| leases.get(&id).cloned()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Statement {
    /// Newest first; a lease's hold, charges and release are one `runtime` line.
    pub lines: Vec<StatementLine>,
}

/// The caller's ledger as people read it: one line per runtime lease, one per credit change.
#[utoipa::path(security(("api_key" = ["billing:read"])), tag = "billing", params(StatementQuery),
    responses((status = 200, body = Statement), (status = 400), (status = 401)))]
#[get("/billing/statement")]
pub async fn statement(
    state: web::Data<AppState>,
    auth: AccountAuth,
    query: web::Query<StatementQuery>,
) -> Result<web::Json<Statement>> {
    Ok(web::Json(Statement {
        lines: statement_lines(&state, auth.account.id, query.entries).await?,
    }))
}

/// The statement as CSV (oldest first, amounts in credits), for receipts and spreadsheets.
#[utoipa::path(security(("api_key" = ["billing:read"])), tag = "billing", params(StatementQuery),
    responses((status = 200, content_type = "text/csv", description = "the statement"), (status = 401)))]
#[get("/billing/ledger.csv")]
pub async fn ledger_csv(
    state: web::Data<AppState>,
    auth: AccountAuth,
    query: web::Query<StatementQuery>,
) -> Result<HttpResponse> {
    let lines = statement_lines(&state, auth.account.id, query.entries).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/csv; charset=utf-8"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"atelier-ledger.csv\"",
        ))
        .body(to_csv(&lines)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Packs {
    /// False when the operator has not set up payments (no Stripe key or no packs).
    pub enabled: bool,
    pub packs: Vec<CreditPack>,
}

/// The credit packs for sale (public).
#[utoipa::path(tag = "billing", security(()), responses((status = 200, body = Packs)))]
#[get("/billing/packs")]
pub async fn packs(state: web::Data<AppState>) -> web::Json<Packs> {
    web::Json(Packs {
        enabled: state.checkout.enabled(),
        packs: state.checkout.packs().all().to_vec(),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// A pack name from `GET /billing/packs`.
    pub pack: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutResponse {
    /// Stripe's checkout page: send the user there.
    pub url: String,
    pub checkout_id: String,
}

/// Starts buying a credit pack: a Stripe Checkout Session whose URL the studio redirects to.
/// The signed webhook credits the pack once paid. An `Idempotency-Key` header makes a retried
/// request return the same session.
#[utoipa::path(tag = "billing", request_body = CheckoutRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "8–100 characters; a retry with the same key gets the same checkout")),
    responses((status = 201, body = CheckoutResponse), (status = 400, description = "unknown pack"), (status = 401),
        (status = 409, description = "payments_not_configured"), (status = 502, description = "payment_provider_error")))]
#[post("/billing/checkout")]
pub async fn checkout(
    state: web::Data<AppState>,
    auth: AccountAuth,
    req: HttpRequest,
    body: web::Json<CheckoutRequest>,
) -> Result<HttpResponse> {
    let client_key = req
        .headers()
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::trim).unwrap_or(""));
    let key = match client_key {
        // Stripe takes keys of up to 255 characters; ours add the account and the pack.
        Some(k) if (8..=100).contains(&k.len()) && k.chars().all(|c| c.is_ascii_graphic()) => {
            // Scoped to the account so two accounts' keys never collide at Stripe.
            format!("atelier:{}:{}:{k}", auth.account.id, body.pack)
        }
        Some(_) => {
            return Err(Error::invalid(
                "Idempotency-Key must be 8 to 100 printable ASCII characters",
            ))
        }
        None => format!("atelier:{}", uuid::Uuid::new_v4()),
    };
    let session = state
        .checkout
        .create(auth.account.id, &auth.account.email, body.pack.trim(), &key)
        .await?;
    Ok(HttpResponse::Created().json(CheckoutResponse {
        url: session.url,
        checkout_id: session.id,
    }))
}

/// Days since 1970-01-01 → `YYYY-MM-DD` (proleptic Gregorian; H. Hinnant's algorithm).
pub fn civil_day(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReceipt {
    pub received: bool,
    pub event_id: String,
    pub outcome: PaymentOutcome,
}

/// The payment provider's events (signed Stripe-style; see the README's Billing section).
/// Replays of an event change nothing.
#[utoipa::path(tag = "billing", security(()), request_body(content = String, description = "the provider's event JSON", content_type = "application/json"),
    params(("Stripe-Signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"t.body\">")),
    responses((status = 200, body = WebhookReceipt), (status = 400, description = "invalid_signature or invalid_input")))]
#[post("/billing/webhook")]
pub async fn webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<web::Json<WebhookReceipt>> {
    let Some(secret) = state
        .config
        .payment_webhook_secret
        .as_deref()
        .filter(|s| !s.is_empty())
    else {
        tracing::warn!("payment webhook received but ATELIER_PAYMENT_WEBHOOK_SECRET is not set");
        return Err(Error::InvalidSignature(
            "payment webhooks are not configured on this server".into(),
        ));
    };
    let header = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::InvalidSignature("missing Stripe-Signature header".into()))?;
    verify_signature(secret, header, &body, now_ms() / 1000)?;
    let event = parse_event(&body)?;
    let outcome = state.billing.apply_payment(&event).await?;
    Ok(web::Json(WebhookReceipt {
        received: true,
        event_id: event.id,
        outcome,
    }))
}

#[cfg(test)]
mod tests {
    use super::civil_day;

    #[test]
    fn civil_days() {
        assert_eq!(civil_day(0), "1970-01-01");
        assert_eq!(civil_day(19_723), "2024-01-01");
        assert_eq!(civil_day(19_782), "2024-02-29");
        assert_eq!(civil_day(-1), "1969-12-31");
    }
}
