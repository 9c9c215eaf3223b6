//! Middleware: answers to API-key requests carry the key's budget (`X-RateLimit-Limit`,
//! `X-RateLimit-Remaining`, `X-RateLimit-Reset` in seconds), refusals included — the extractor
//! that counted the request left it in the request's extensions.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpMessage;

use crate::auth::key_rate_limit::RateLimitInfo;

pub async fn add(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut res = next.call(req).await?;
    let budget = res.request().extensions().get::<RateLimitInfo>().copied();
    if let Some(budget) = budget {
        let reset = budget.reset.as_secs() + u64::from(budget.reset.subsec_nanos() > 0);
        let headers = res.headers_mut();
        for (name, value) in [
            ("x-ratelimit-limit", u64::from(budget.limit)),
            ("x-ratelimit-remaining", u64::from(budget.remaining)),
            ("x-ratelimit-reset", reset),
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
    Ok(res)
}
