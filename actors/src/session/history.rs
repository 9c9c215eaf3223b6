//! Bursts of editing, handed to the [`crate::versions::VersionRecorder`] as automatic versions.
//!
//! A burst starts with the first stored edit after the last version and ends when nobody has
//! edited for `version_settle`, or when it has lasted `version_every` (so a session edited
//! without pause still gets a version that often). Only edits stored by this node count (in a
//! cluster each node reports its own editors' bursts; the server drops a version equal to the
//! latest one) and only participants' edits: the server's own (job outputs, restores) are not
//! editing, and a restore records its own version.

use std::time::{Duration, SystemTime};

use actix::prelude::*;
use atelier_protocol::ids::AccountId;
use tokio::time::Instant;

use super::SessionActor;
use crate::versions::EditBurst;

/// The burst in progress.
pub(crate) struct Burst {
    first: Instant,
    last: Instant,
    started_at: SystemTime,
    /// Distinct authors, in order of their latest edit.
    authors: Vec<AccountId>,
}

#[derive(Default)]
pub(crate) struct History {
    burst: Option<Burst>,
}

impl History {
    /// A participant's edit was stored.
    pub(crate) fn edited(&mut self, author: Option<AccountId>) {
        let now = Instant::now();
        let burst = self.burst.get_or_insert_with(|| Burst {
            first: now,
            last: now,
            started_at: SystemTime::now(),
            authors: Vec::new(),
        });
        burst.last = now;
        if let Some(author) = author {
            burst.authors.retain(|a| *a != author);
            burst.authors.push(author);
        }
    }

    /// Takes the burst if it is due (`force`: whatever its age, e.g. before unloading).
    fn take_due(&mut self, settle: Duration, every: Duration, force: bool) -> Option<Burst> {
        let due = self
            .burst
            .as_ref()
            .is_some_and(|b| force || b.last.elapsed() >= settle || b.first.elapsed() >= every);
        if due {
            self.burst.take()
        } else {
            None
        }
    }

    /// How often to look: a quarter of the settle time, between 10 ms and 1 s.
    pub(crate) fn tick(settle: Duration) -> Duration {
        (settle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

impl SessionActor {
    /// Hands a due burst to the recorder (`force`: any burst, e.g. before unloading). The
    /// returned future resolves once the recorder is done (errors are logged: a missed
    /// automatic version loses no edit).
    pub(crate) fn record_burst(
        &mut self,
        force: bool,
    ) -> Option<impl std::future::Future<Output = ()> + 'static> {
        let limits = &self.deps.limits;
        let burst = self
            .history
            .take_due(limits.version_settle, limits.version_every, force)?;
        let state = self
            .cache
            .full_state(self.awareness.doc())
            .update()
            .to_vec();
        let recorder = self.deps.versions.clone();
        let session = self.id;
        let burst = EditBurst {
            session,
            state,
            authors: burst.authors,
            started_at: burst.started_at,
            ended_at: SystemTime::now(),
        };
        Some(async move {
            if let Err(error) = recorder.edits_settled(burst).await {
                tracing::warn!(%session, %error, "automatic version not recorded");
            }
        })
    }

    pub(crate) fn on_history_tick(&mut self, ctx: &mut Context<Self>) {
        if !matches!(self.phase, super::Phase::Ready) {
            return;
        }
        if let Some(recorded) = self.record_burst(false) {
            ctx.spawn(recorded.into_actor(self));
        }
    }
}
