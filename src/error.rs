//! The one application error type, turned into an HTTP response only at the edge.
//!
//! Every error body is `{"error": {"code": "...", "message": "..."}}`. Internal causes (database,
//! storage) are logged with detail and answered with a generic 500/503 message.

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidInput(String),
    #[error("authentication required")]
    Unauthenticated,
    #[error("{0}")]
    InvalidCredentials(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    CsrfRejected(String),
    /// 403: an API key whose scopes do not cover the endpoint, or an endpoint keys cannot call.
    #[error("{0}")]
    InsufficientScope(String),
    /// 412: a conditional write (`If-Match`) whose version is no longer current.
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    NoRoute(String),
    /// 404 with a message naming what is missing (e.g. the node whose media input is not found).
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Conflict(String),
    /// 409: a write about a runtime lease by a node that no longer owns it (its epoch is
    /// stale: another node took the lease over, or it was settled elsewhere).
    #[error("{0}")]
    LeaseFenced(String),
    /// 410: something that existed and can no longer be used (a revoked, expired or used-up
    /// invitation).
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 402: the action needs Pro runtime (an active lease) that the session does not have.
    #[error("{0}")]
    PaymentRequired(String),
    #[error("{0}")]
    TooManyJobs(String),
    /// 429: a live-session connection cap (per share link, account or IP) is reached.
    #[error("{0}")]
    TooManyConnections(String),
    /// 429: as many exports as the server builds at once are being built.
    #[error("{0}")]
    TooManyExports(String),
    /// 402: the account's available credits do not cover the action.
    #[error("{0}")]
    InsufficientCredits(String),
    /// 409: buying credits needs a Stripe key and packs the operator has not configured.
    #[error("{0}")]
    PaymentsNotConfigured(String),
    /// 502: the payment provider refused or could not be reached.
    #[error("{0}")]
    PaymentProvider(String),
    /// 403: an admin suspended the account.
    #[error("{0}")]
    AccountSuspended(String),
    /// 400: a signed request (payment webhook) whose signature does not verify.
    #[error("{0}")]
    InvalidSignature(String),
    #[error("too many requests; retry in {} s", .retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("storage error")]
    Storage(#[from] object_store::Error),
    #[error("{0}")]
    Internal(String),
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: String,
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }

    pub fn forbidden(msg: impl Into<String>) -> Self {
        Error::Forbidden(msg.into())
    }

    /// The machine-readable code clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) => "invalid_input",
            Error::Unauthenticated => "unauthenticated",
            Error::InvalidCredentials(_) => "invalid_credentials",
            Error::Forbidden(_) => "forbidden",
            Error::CsrfRejected(_) => "csrf_rejected",
            Error::InsufficientScope(_) => "insufficient_scope",
            Error::PreconditionFailed(_) => "precondition_failed",
            Error::NotFound(_) | Error::NoRoute(_) | Error::Missing(_) => "not_found",
            Error::Conflict(_) | Error::LeaseFenced(_) => "conflict",
            Error::Gone(_) => "gone",
            Error::PayloadTooLarge(_) => "payload_too_large",
            Error::QuotaExceeded(_) => "quota_exceeded",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::PaymentRequired(_) => "payment_required",
            Error::TooManyJobs(_) => "too_many_jobs",
            Error::TooManyConnections(_) => "too_many_connections",
            Error::TooManyExports(_) => "too_many_exports",
            Error::InsufficientCredits(_) => "insufficient_credits",
            Error::InvalidSignature(_) => "invalid_signature",
            Error::PaymentsNotConfigured(_) => "payments_not_configured",
            Error::PaymentProvider(_) => "payment_provider_error",
            Error::AccountSuspended(_) => "account_suspended",
            Error::RateLimited { .. } => "rate_limited",
            Error::Database(_) | Error::Storage(_) | Error::Internal(_) => "internal",
        }
    }

    fn public_message(&self) -> String {
        match self {
            Error::Database(_) | Error::Storage(_) | Error::Internal(_) => {
                "internal error; it has been logged".to_string()
            }
            other => other.to_string(),
        }
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::InvalidInput(_) | Error::InvalidSignature(_) => StatusCode::BAD_REQUEST,
            Error::PaymentRequired(_) | Error::InsufficientCredits(_) => {
                StatusCode::PAYMENT_REQUIRED
            }
            Error::Unauthenticated | Error::InvalidCredentials(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_)
            | Error::CsrfRejected(_)
            | Error::InsufficientScope(_)
            | Error::AccountSuspended(_) => StatusCode::FORBIDDEN,
            Error::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Error::PaymentsNotConfigured(_) => StatusCode::CONFLICT,
            Error::PaymentProvider(_) => StatusCode::BAD_GATEWAY,
            Error::NotFound(_) | Error::NoRoute(_) | Error::Missing(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) | Error::LeaseFenced(_) => StatusCode::CONFLICT,
            Error::Gone(_) => StatusCode::GONE,
            Error::PayloadTooLarge(_) | Error::QuotaExceeded(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::RateLimited { .. }
            | Error::TooManyJobs(_)
            | Error::TooManyConnections(_)
            | Error::TooManyExports(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Database(_) | Error::Storage(_) | Error::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(error = ?self, "request failed");
        }
        let mut res = HttpResponse::build(status);
        if let Error::RateLimited { retry_after } = self {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            res.insert_header((header::RETRY_AFTER, secs.max(1).to_string()));
        }
        res.json(Body {
            error: Inner {
                code: self.code(),
                message: self.public_message(),
            },
        })
    }
}

/// Maps actix's extractor errors (bad JSON, bad path, bad query) into our error shape.
pub mod extract {
    use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
    use actix_web::HttpRequest;

    use super::Error;

    pub fn json(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
        let mapped = match &err {
            JsonPayloadError::OverflowKnownLength { length, limit } => Error::PayloadTooLarge(
                format!("request body is {length} bytes; the limit is {limit} bytes"),
            ),
            JsonPayloadError::Overflow { limit } => Error::PayloadTooLarge(format!(
                "request body is larger than the limit of {limit} bytes"
            )),
            JsonPayloadError::ContentType => Error::UnsupportedMediaType(
                "expected a JSON body with Content-Type: application/json".into(),
            ),
            JsonPayloadError::Deserialize(e) => Error::invalid(format!("invalid JSON body: {e}")),
            other => Error::invalid(format!("could not read the JSON body: {other}")),
        };
        mapped.into()
    }

    pub fn path(err: PathError, _req: &HttpRequest) -> actix_web::Error {
        match err {
            // A path segment that is not a valid id names nothing that exists.
            PathError::Deserialize(_) => Error::NotFound("resource").into(),
            other => Error::invalid(other.to_string()).into(),
        }
    }

    pub fn query(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
        Error::invalid(format!("invalid query string: {err}")).into()
    }
}
