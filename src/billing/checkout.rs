//! Selling credit packs through Stripe Checkout.
//!
//! `POST /billing/checkout {pack}` creates a Checkout Session with Stripe's HTTP API
//! (`POST {api_base}/v1/checkout/sessions`, form-encoded, `Authorization: Bearer sk_…`, an
//! `Idempotency-Key`) and answers with the session's `url`; the user pays on Stripe's page and
//! comes back to the dashboard. Stripe then sends `checkout.session.completed` to the signed
//! webhook ([`super::webhook`]), which credits `metadata.credits` to `client_reference_id` once.

use std::time::Duration;

use atelier_protocol::ids::AccountId;
use serde::Deserialize;

use super::packs::{CreditPack, CreditPacks};
use crate::error::{Error, Result};

/// How long Stripe gets to answer.
const STRIPE_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest Stripe answer read.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// The Checkout configuration and an HTTP client (cheap to clone).
#[derive(Clone)]
pub struct Checkout {
    http: http_client::Client,
    api_base: String,
    secret_key: Option<String>,
    packs: CreditPacks,
    /// Where Stripe sends the user back (`ATELIER_PUBLIC_URL`).
    public_url: String,
}

#[derive(Deserialize)]
struct StripeSession {
    id: String,
    url: Option<String>,
}

#[derive(Deserialize)]
struct StripeErrorBody {
    error: StripeError,
}

#[derive(Deserialize)]
struct StripeError {
    message: Option<String>,
}

/// A created Checkout Session.
#[derive(Debug, Clone)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
}

impl Checkout {
    pub fn new(
        api_base: &str,
        secret_key: Option<String>,
        packs: CreditPacks,
        public_url: String,
    ) -> Result<Self> {
        let http = http_client::Client::builder()
            .timeout(STRIPE_TIMEOUT)
            .build()
            .map_err(|e| Error::Internal(format!("HTTP client: {e}")))?;
        Ok(Checkout {
            http,
            api_base: api_base.trim_end_matches('/').to_string(),
            secret_key: secret_key.filter(|k| !k.is_empty()),
            packs,
            public_url,
        })
    }

    pub fn packs(&self) -> &CreditPacks {
        &self.packs
    }

    /// Whether credits can be bought here (a Stripe key and at least one pack).
    pub fn enabled(&self) -> bool {
        self.secret_key.is_some() && !self.packs.all().is_empty()
    }

    /// Creates a Checkout Session for `pack`, paid by `account`. 400 for an unknown pack, 409
    /// `payments_not_configured` when the operator has not set up payments, 502 when Stripe
    /// refuses or cannot be reached.
    pub async fn create(
        &self,
        account: AccountId,
        email: &str,
        pack: &str,
        idempotency_key: &str,
    ) -> Result<CheckoutSession> {
        let Some(secret_key) = self.secret_key.as_deref().filter(|_| self.enabled()) else {
            return Err(Error::PaymentsNotConfigured(
                "buying credits is not available: the operator has not set up payments".into(),
            ));
        };
        let pack = self.packs.get(pack).ok_or_else(|| {
            Error::invalid(format!(
                "unknown pack {pack:?}; offered: {}",
                self.packs.names().join(", ")
            ))
        })?;
        let body = self.form(account, email, pack);
        let response = self
            .http
            .post(format!("{}/v1/checkout/sessions", self.api_base))
            .bearer_auth(secret_key)
            .header("Idempotency-Key", idempotency_key)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "Stripe could not be reached");
                Error::PaymentProvider(
                    "the payment provider could not be reached; try again".into(),
                )
            })?;
        let status = response.status();
        let bytes = read_bounded(response).await?;
        let bytes = bytes.as_slice();
        if !status.is_success() {
            let message = serde_json::from_slice::<StripeErrorBody>(bytes)
                .ok()
                .and_then(|b| b.error.message)
                .unwrap_or_default();
            tracing::error!(%status, %message, "Stripe refused to create a Checkout Session");
            return Err(Error::PaymentProvider(
                "the payment provider refused the checkout; the operator has been told".into(),
            ));
        }
        let session: StripeSession = serde_json::from_slice(bytes).map_err(|e| {
            tracing::error!(error = %e, "Stripe's Checkout Session is not what was expected");
            Error::PaymentProvider("the payment provider answered something unexpected".into())
        })?;
        let url = session
            .url
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"));
        let Some(url) = url else {
            tracing::error!(session = %session.id, "Stripe's Checkout Session has no URL");
            return Err(Error::PaymentProvider(
                "the payment provider answered without a checkout page".into(),
            ));
        };
        tracing::info!(%account, pack = %pack.name, session = %session.id, "checkout started");
        Ok(CheckoutSession {
            id: session.id,
            url,
        })
    }

    /// The Checkout Session's parameters, form-encoded as Stripe expects.
    fn form(&self, account: AccountId, email: &str, pack: &CreditPack) -> String {
        let dashboard = format!("{}/#/sessions", self.public_url);
        let credits = pack.credits.to_string();
        let account = account.to_string();
        let name = format!(
            "{} credits ({})",
            crate::billing::prices::credits_text(pack.credits),
            pack.name
        );
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("mode", "payment")
            .append_pair("client_reference_id", &account)
            .append_pair("customer_email", email)
            .append_pair("success_url", &format!("{dashboard}?checkout=success"))
            .append_pair("cancel_url", &format!("{dashboard}?checkout=cancelled"))
            .append_pair("line_items[0][quantity]", "1")
            .append_pair("line_items[0][price_data][currency]", &pack.currency)
            .append_pair(
                "line_items[0][price_data][unit_amount]",
                &pack.price.to_string(),
            )
            .append_pair("line_items[0][price_data][product_data][name]", &name)
            .append_pair("metadata[credits]", &credits)
            .append_pair("metadata[account_id]", &account)
            .append_pair("metadata[pack]", &pack.name)
            .finish()
    }
}

/// Reads at most [`MAX_RESPONSE_BYTES`] of an answer (more is an error, not a bigger buffer).
async fn read_bounded(mut response: http_client::Response) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let chunk = response.chunk().await.map_err(|e| {
            tracing::error!(error = %e, "reading Stripe's answer failed");
            Error::PaymentProvider("the payment provider's answer was cut off; try again".into())
        })?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            tracing::error!("Stripe's answer is larger than {MAX_RESPONSE_BYTES} bytes");
            return Err(Error::PaymentProvider(
                "the payment provider answered something unexpected".into(),
            ));
        }
        body.extend_from_slice(&chunk);
    }
}
