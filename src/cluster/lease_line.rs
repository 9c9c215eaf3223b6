//! Cluster mode: a runtime lease finds its slot on any node through its class's lease line
//! (`{prefix}:leases:{class}` in Redis Streams, see [`super::job_stream`]).
//!
//! - `POST /sessions/{id}/runtime` on any node creates the lease (`starting`: waiting, not
//!   billed) and [`LeaseLine::place`]s it: when a slot of the class is free on this node and
//!   nobody waits in the line, it takes that slot at once (metered here); else it joins the line.
//! - Every node runs [`LeaseLine::run`]: while it has a free slot of a class it first RESERVES
//!   that slot on its board (so two leases never take one slot), then reads one entry of the
//!   class's line (`XREADGROUP … COUNT 1`, or, with none new, `XAUTOCLAIM`s an entry a dead
//!   node read and never acknowledged). It claims the lease in the database (still waiting;
//!   epoch + 1; owner = this node), binds the reserved slot to it, starts its meter (whose
//!   `WorkerPool::acquire` returns that slot at once) and acknowledges. A claim that fails (the
//!   lease was stopped, or claimed by another node) is acknowledged and dropped, and the
//!   reservation given back.
//! - The waiting lease's owner (the node that started it, or took it over from a silent node)
//!   tells the session its place in line as it moves (`runtime.queued {position}`): its index
//!   among the entries not delivered yet.
//!
//! Stopping a waiting lease from any node settles it in the database (nothing was charged); its
//! entry, when read, fails the claim and is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use atelier_actors::SessionRegistryHandle;
use atelier_protocol::events::StudioEvent;
use atelier_protocol::ids::{LeaseId, SessionId};
use futures_util::future::BoxFuture;

use super::job_stream::{Item, JobStream, Line, StreamClaim};
use super::telemetry;
use crate::billing::{Billing, LeasePlacement, Placement};
use crate::db::leases::LeaseStatus;
use crate::db::Db;
use crate::jobs::JobBoard;

/// How often a node looks for waiting leases while it has a free slot, and re-reads the places
/// of the leases it reports.
const POLL: Duration = Duration::from_millis(200);
/// Most undelivered entries read to find a lease's place (a place beyond is not reported).
const MAX_PLACES: usize = 1_000;

/// A waiting lease this node reports the place of.
struct Waiting {
    session: SessionId,
    gpu_class: String,
    /// The place it was last told (0: none yet).
    announced: u32,
    /// Since when this node reports it (it waits at most the idle timeout from then).
    since: tokio::time::Instant,
}

/// This node's side of the lease lines (cheap to clone).
#[derive(Clone)]
pub struct LeaseLine {
    inner: Arc<Inner>,
}

struct Inner {
    streams: JobStream,
    board: JobBoard,
    billing: Billing,
    db: Db,
    live: SessionRegistryHandle,
    /// How long a node may hold a read entry without acknowledging before another takes it.
    takeover_after: Duration,
    waiting: Mutex<HashMap<LeaseId, Waiting>>,
}

impl LeaseLine {
    pub fn new(
        streams: JobStream,
        board: JobBoard,
        billing: Billing,
        live: SessionRegistryHandle,
        takeover_after: Duration,
    ) -> Self {
        let db = billing.db().clone();
        LeaseLine {
            inner: Arc::new(Inner {
                streams,
                board,
                billing,
                db,
                live,
                takeover_after,
                waiting: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<LeaseId, Waiting>> {
        self.inner
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves the lines and reports places until the process ends. A failed round is logged
    /// and retried at the next tick.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for class in self.inner.board.free_classes() {
                if let Err(error) = self.serve(&class).await {
                    tracing::warn!(%error, gpu_class = %class, "could not serve the lease line");
                }
            }
            if let Err(error) = self.report_places().await {
                tracing::warn!(%error, "could not report the places of waiting leases");
            }
            self.stop_overdue().await;
        }
    }

    /// Takes waiting leases of `class` while this node has a free slot of it.
    async fn serve(&self, class: &str) -> Result<(), String> {
        let line = Line::leases(class).map_err(|e| e.to_string())?;
        loop {
            let Some(reservation) = self.inner.board.reserve_slot(class) else {
                return Ok(());
            };
            let mut claims = self
                .inner
                .streams
                .claim(&line, 1)
                .await
                .map_err(|e| e.to_string())?;
            if claims.is_empty() {
                claims = self
                    .inner
                    .streams
                    .take_over(&line, self.inner.takeover_after, 1)
                    .await
                    .map_err(|e| e.to_string())?;
                if !claims.is_empty() {
                    metrics::counter!(telemetry::STREAM_TAKEN_OVER, "line" => "leases")
                        .increment(1);
                }
            }
            let Some(claim) = claims.pop() else {
                return Ok(()); // nobody waits: the reservation is given back
            };
            metrics::counter!(telemetry::STREAM_CLAIMED, "line" => "leases").increment(1);
            let Some(lease_id) = claim.lease() else {
                self.ack(&claim).await;
                continue;
            };
            let claimed = self
                .inner
                .db
                .claim_waiting_lease(lease_id, self.inner.billing.node_id())
                .await
                .map_err(|e| e.to_string());
            let lease = match claimed {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    // Stopped while it waited, or another node has it: dropped.
                    self.ack(&claim).await;
                    continue;
                }
                // Not acknowledged: after the takeover delay another node (or this one) tries
                // again.
                Err(error) => return Err(error),
            };
            reservation.bind(lease.id);
            let (id, session) = (lease.id, lease.session_id);
            if let Err(error) = self.inner.billing.start_claimed_lease(lease).await {
                // The slot goes back; the lease stays waiting (ours now) in a fresh entry.
                tracing::error!(lease = %id, %error, "could not start a claimed lease's meter");
                self.inner.board.give_back(id);
                self.inner
                    .streams
                    .push(&line, Item::Lease(id))
                    .await
                    .map_err(|e| e.to_string())?;
                self.waiting_here(id, session, class);
            }
            self.ack(&claim).await;
        }
    }

    async fn ack(&self, claim: &StreamClaim) {
        if let Err(error) = self.inner.streams.ack(claim).await {
            tracing::warn!(%error, entry = %claim.entry, "could not acknowledge a lease line entry");
        }
    }

    /// Tells the sessions of the waiting leases this node owns their place when it moved;
    /// forgets those no longer waiting here.
    async fn report_places(&self) -> Result<(), String> {
        let mut classes: Vec<String> = self
            .waiting()
            .values()
            .map(|w| w.gpu_class.clone())
            .collect();
        classes.sort();
        classes.dedup();
        for class in classes {
            let line = Line::leases(&class).map_err(|e| e.to_string())?;
            let entries = self
                .inner
                .streams
                .waiting(&line, MAX_PLACES)
                .await
                .map_err(|e| e.to_string())?;
            let places: HashMap<LeaseId, u32> = entries
                .iter()
                .filter_map(|item| match item {
                    Item::Lease(lease) => Some(*lease),
                    Item::Job(_) => None,
                })
                .enumerate()
                .map(|(i, lease)| (lease, u32::try_from(i + 1).unwrap_or(u32::MAX)))
                .collect();
            let ours: Vec<LeaseId> = self
                .waiting()
                .iter()
                .filter(|(_, w)| w.gpu_class == class)
                .map(|(id, _)| *id)
                .collect();
            for lease in ours {
                match places.get(&lease) {
                    Some(&position) => self.announce(lease, position),
                    // Delivered (a node is claiming it) or gone: forget it once the database
                    // says it no longer waits as ours.
                    None => {
                        let stored = self
                            .inner
                            .db
                            .lease(lease)
                            .await
                            .map_err(|e| e.to_string())?;
                        let still_ours = stored.is_some_and(|l| {
                            l.status == LeaseStatus::Starting
                                && l.owner_node.as_deref() == Some(self.inner.billing.node_id())
                        });
                        if !still_ours {
                            self.waiting().remove(&lease);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A lease waits at most the idle timeout for a slot (as on one node, where its meter
    /// stops it): then it stops `no_worker`, nothing charged.
    async fn stop_overdue(&self) {
        let limit = self.inner.billing.settings().idle_timeout;
        let overdue: Vec<(LeaseId, SessionId)> = self
            .waiting()
            .iter()
            .filter(|(_, w)| w.since.elapsed() > limit)
            .map(|(id, w)| (*id, w.session))
            .collect();
        for (lease, session) in overdue {
            self.waiting().remove(&lease);
            tracing::info!(%lease, %session, "a waiting lease found no slot in time");
            if let Err(error) = self
                .inner
                .billing
                .stop_lease(session, crate::billing::reason::NO_WORKER)
                .await
            {
                tracing::warn!(%lease, %error, "could not stop a lease that waited too long");
            }
        }
    }

    fn announce(&self, lease: LeaseId, position: u32) {
        let event = {
            let mut waiting = self.waiting();
            let Some(w) = waiting.get_mut(&lease) else {
                return;
            };
            if w.announced == position {
                return;
            }
            w.announced = position;
            (
                w.session,
                StudioEvent::RuntimeQueued {
                    lease_id: lease,
                    gpu_class: w.gpu_class.clone(),
                    position,
                },
            )
        };
        self.inner.live.broadcast_event(event.0, event.1);
    }
}

impl LeasePlacement for LeaseLine {
    fn place(
        &self,
        lease: LeaseId,
        _session: SessionId,
        gpu_class: &str,
    ) -> BoxFuture<'_, Result<Placement, String>> {
        let gpu_class = gpu_class.to_owned();
        Box::pin(async move {
            let line = Line::leases(&gpu_class).map_err(|e| e.to_string())?;
            let nobody_waits = self
                .inner
                .streams
                .waiting(&line, 1)
                .await
                .map_err(|e| e.to_string())?
                .is_empty();
            if nobody_waits {
                if let Some(reservation) = self.inner.board.reserve_slot(&gpu_class) {
                    return Ok(Placement::Here(Box::new(move |lease| {
                        reservation.bind(lease)
                    })));
                }
            }
            self.inner
                .streams
                .push(&line, Item::Lease(lease))
                .await
                .map_err(|e| e.to_string())?;
            metrics::counter!(telemetry::STREAM_PUSHED, "line" => "leases").increment(1);
            Ok(Placement::Queued)
        })
    }

    fn left_line(&self, lease: LeaseId, gpu_class: &str) -> BoxFuture<'_, ()> {
        let gpu_class = gpu_class.to_owned();
        Box::pin(async move {
            self.waiting().remove(&lease);
            let Ok(line) = Line::leases(&gpu_class) else {
                return;
            };
            // Left there (Redis unreachable), its entry is dropped when read: the claim fails.
            if let Err(error) = self
                .inner
                .streams
                .withdraw(&line, Item::Lease(lease), MAX_PLACES)
                .await
            {
                tracing::warn!(%error, %lease, "could not take a stopped lease out of its line");
            }
        })
    }

    fn waiting_here(&self, lease: LeaseId, session: SessionId, gpu_class: &str) {
        self.waiting().insert(
            lease,
            Waiting {
                session,
                gpu_class: gpu_class.to_owned(),
                announced: 0,
                since: tokio::time::Instant::now(),
            },
        );
    }
}
