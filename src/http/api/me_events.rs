//! `GET /me/events`: the account's live channel as server-sent events (what `EventSource`
//! reads). Each event is one `data:` line of JSON with a `type` ([`AccountEvent`]); the first is
//! `ready`, and a comment line keeps idle connections open through proxies. The stream ends when
//! the server shuts down or the client falls [`STREAM_QUEUE`](crate::account_events::STREAM_QUEUE)
//! events behind; `EventSource` then reconnects by itself (after the `retry:` delay) and the
//! client reads its lists again on `ready`.

use std::time::Duration;

use actix_web::{get, http::header, web, HttpResponse};
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use tokio::time::{interval_at, Instant, Interval};

use crate::account_events::{AccountEvent, Subscription};
use crate::auth::AccountAuth;
use crate::error::Result;
use crate::state::AppState;

/// A comment this often keeps proxies from closing a quiet stream (and finds dead clients).
const KEEP_ALIVE: Duration = Duration::from_secs(20);
/// What `EventSource` waits before reconnecting after the stream ends.
const RETRY_MS: u32 = 2000;

/// The account's live channel: membership added, changed or removed, invitations by email
/// received or withdrawn (signed-in accounts; API keys need `sessions:read`). At most 8
/// streams per account and node: opening one more ends the oldest.
#[utoipa::path(security(("api_key" = ["sessions:read"])), tag = "accounts",
    responses((status = 200, description = "`text/event-stream`; each event's data is one of these", body = AccountEvent, content_type = "text/event-stream"),
        (status = 401), (status = 403)))]
#[get("/me/events")]
pub async fn events(state: web::Data<AppState>, auth: AccountAuth) -> Result<HttpResponse> {
    let subscription = state.account_events.subscribe(auth.account.id);
    let keep_alive = interval_at(Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    let retry = Bytes::from(format!("retry: {RETRY_MS}\n\n"));
    // Ends when the subscription's queue closes (shutdown, fell behind, replaced).
    let events = stream::unfold(
        (subscription, keep_alive),
        |(mut subscription, mut keep_alive): (Subscription, Interval)| async move {
            let chunk = tokio::select! {
                event = subscription.events.recv() => Bytes::from(format!("data: {}\n\n", event?)),
                _ = keep_alive.tick() => Bytes::from_static(b": keep-alive\n\n"),
            };
            Some((chunk, (subscription, keep_alive)))
        },
    );
    let body = stream::once(std::future::ready(retry))
        .chain(events)
        .map(Ok::<_, std::convert::Infallible>);
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // Proxies that buffer responses (nginx) would hold events back.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}
