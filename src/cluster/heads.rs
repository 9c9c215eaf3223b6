//! The periodic check of this node's live sessions against the durable log.
//!
//! A relayed update that Redis lost is normally noticed when a later one arrives with a higher
//! `seq`. The last update of a burst has no successor, so now and then every live session is
//! told the log's head (one query for all of them) and catches up if it is behind.

use std::time::Duration;

use atelier_actors::SessionRegistryHandle;

use crate::db::Db;

/// Sessions per query.
const CHUNK: usize = 500;

pub async fn run(registry: SessionRegistryHandle, db: Db, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sessions = registry.live_session_ids();
        for chunk in sessions.chunks(CHUNK) {
            match db.document_heads(chunk).await {
                Ok(heads) => {
                    for (session, head) in heads {
                        registry.check_head(session, head);
                    }
                }
                Err(error) => tracing::warn!(%error, "could not read document heads"),
            }
        }
    }
}
