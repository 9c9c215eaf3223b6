//! Billing: credits, Pro runtime leases and their meters, payment webhooks.
//!
//! Layout:
//! - [`prices`]: the price table (`--gpu-prices`); the time → credits arithmetic is the meter's,
//!   re-exported there.
//! - The actors are in `atelier-actors`: the [`WorkerPool`] port, the in-process pool and
//!   `WorkerLeaseActor` (one per lease: owns its worker assignment) in `atelier_actors::lease`,
//!   re-exported here; `BillingMeterActor` (one per lease: meters, checkpoints, stops and
//!   settles) in `atelier_actors::meter`, with its stop [`reason`]s re-exported here. Billing
//!   is its `MeterHost` (`host.rs`); the database is its `Ledger`
//!   (`crate::db::leases`).
//! - [`webhook`]: Stripe-style signature verification and the payment events understood;
//!   `payments.rs` applies them (and the signup grant) to the ledger.
//! - [`checkout`], [`packs`]: buying credits; [`statement`]: an account's statement.
//! - `ports.rs`: [`RuntimeHooks`] (the job system); [`EventSink`] (studio events) is the
//!   actors' event bus port, re-exported;
//!   `settings.rs`: [`BillingSettings`]; `views.rs`: what callers get back ([`LeaseView`], …).
//! - The ledger and lease queries are in [`crate::db::ledger`] and [`crate::db::leases`].
//!
//! [`Billing`] is the cheap-to-clone handle the API and the job system use. It keeps the meter of
//! each session's active lease in a std `Mutex`ed map (short synchronous sections, never held
//! across an `.await`); each lease's state is owned by its meter actor, which publishes it
//! ([`LeaseState`] over a `watch`, read here and by the views) and is asked by messages.
//!
//! Ownership (`ownership.rs`): a lease is metered by the node that owns it in the database, at
//! an epoch its meter's every write is conditional on. Each node heartbeats its leases; in a
//! cluster a node claims the leases of an owner silent for the takeover delay and continues
//! (or, its worker gone with the dead node, settles) them — see [`Billing::take_over_stale`].
//!
//! For the job system: call [`Billing::require_active_lease`] before running a job (402
//! `payment_required` without a running lease), [`Billing::note_job_activity`] when a job
//! starts, progresses or ends (the idle timer), and attach a [`RuntimeHooks`] with
//! [`Billing::set_hooks`] so a stopping lease can interrupt the session's jobs. Replace the
//! in-process pool with [`Billing::set_worker_pool`].

mod adopt;
pub mod checkout;
mod host;
mod ownership;
pub mod packs;
mod payments;
mod placement;
mod ports;
pub mod prices;
mod settings;
pub mod statement;
mod views;
pub mod webhook;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use actix::prelude::*;
use atelier_protocol::events::StudioEvent;
use atelier_protocol::ids::{AccountId, LeaseId, SessionId};
use tokio::sync::{oneshot, watch};

use atelier_actors::meter::{
    BillingMeterActor, ExtendLease, JobActivity, LeaseState, MeterError, MeterPorts, StopLease,
};

pub use atelier_actors::events::EventSink;
pub use atelier_actors::lease::{
    InProcessWorkerPool, PoolError, WorkerAssignment, WorkerHeartbeat, WorkerPool,
};
pub use atelier_actors::meter::{reason, MeterSettings};
pub use ownership::telemetry;
pub use placement::{BindSlot, LeasePlacement, Placement};
pub use ports::{NoJobs, RuntimeHooks};
pub use settings::BillingSettings;
pub use views::{JobLease, LeaseInfo, LeaseView, PaymentOutcome, Recovery};

use self::prices::{hold_for, PriceTable};
use crate::db::leases::{LeaseStatus, NewLease, RuntimeLease, Settlement};
use crate::db::{now_ms, Db};
use crate::error::{Error, Result};

/// A lease this node meters: its meter, and what the meter publishes about it.
struct ActiveLease {
    lease_id: LeaseId,
    account_id: AccountId,
    meter: Addr<BillingMeterActor>,
    state: watch::Receiver<LeaseState>,
}

impl ActiveLease {
    /// The lease as its meter last published it (a copy; the borrow is not held).
    fn state(&self) -> LeaseState {
        self.state.borrow().clone()
    }
}

struct Shared {
    db: Db,
    settings: BillingSettings,
    events: Arc<dyn EventSink>,
    hooks: RwLock<Arc<dyn RuntimeHooks>>,
    pool: RwLock<Arc<dyn WorkerPool>>,
    /// Cluster mode: the lease lines new leases wait in (`None`: leases wait on this node's
    /// board, as on a single node).
    placement: RwLock<Option<Arc<dyn LeasePlacement>>>,
    leases: Mutex<HashMap<SessionId, ActiveLease>>,
    /// Meters live on the system arbiter, not on an HTTP worker's (which stops first on
    /// shutdown).
    arbiter: ArbiterHandle,
}

/// The billing handle (cheap to clone).
#[derive(Clone)]
pub struct Billing {
    shared: Arc<Shared>,
}

impl Billing {
    /// Must be called inside an actix system: meters run on its arbiter.
    pub fn new(
        db: Db,
        settings: BillingSettings,
        events: Arc<dyn EventSink>,
        pool: Arc<dyn WorkerPool>,
    ) -> Self {
        Billing {
            shared: Arc::new(Shared {
                db,
                settings,
                events,
                hooks: RwLock::new(Arc::new(NoJobs)),
                pool: RwLock::new(pool),
                placement: RwLock::new(None),
                leases: Mutex::new(HashMap::new()),
                arbiter: System::current().arbiter().clone(),
            }),
        }
    }

    /// Attaches the job system's hooks.
    pub fn set_hooks(&self, hooks: Arc<dyn RuntimeHooks>) {
        *self
            .shared
            .hooks
            .write()
            .unwrap_or_else(PoisonError::into_inner) = hooks;
    }

    /// Replaces the worker pool (for leases started from now on).
    pub fn set_worker_pool(&self, pool: Arc<dyn WorkerPool>) {
        *self
            .shared
            .pool
            .write()
            .unwrap_or_else(PoisonError::into_inner) = pool;
    }

    /// Cluster mode: new leases find their slot through the cluster's lease lines.
    pub fn set_placement(&self, placement: Arc<dyn LeasePlacement>) {
        *self
            .shared
            .placement
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(placement);
    }

    fn placement(&self) -> Option<Arc<dyn LeasePlacement>> {
        if !self.shared.settings.clustered {
            return None;
        }
        self.shared
            .placement
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn db(&self) -> &Db {
        &self.shared.db
    }

    pub fn prices(&self) -> &PriceTable {
        &self.shared.settings.prices
    }

    pub fn settings(&self) -> &MeterSettings {
        &self.shared.settings.meter
    }

    /// This node's name as a lease owner.
    pub fn node_id(&self) -> &str {
        &self.shared.settings.node_id
    }

    pub fn max_prepaid_minutes(&self) -> u32 {
        self.shared.settings.max_prepaid_minutes
    }

    fn leases(&self) -> MutexGuard<'_, HashMap<SessionId, ActiveLease>> {
        // Every critical section is one map operation: a panic cannot leave it half-done.
        self.shared
            .leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn worker_pool(&self) -> Arc<dyn WorkerPool> {
        self.shared
            .pool
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn send_event(&self, session: SessionId, event: StudioEvent) {
        self.shared.events.send(session, event);
    }

    /// Starts a meter (and through it a worker lease) for a stored open lease.
    fn start_meter(&self, lease: RuntimeLease, balance: i64, payer_name: String) {
        self.start_meter_on(lease, balance, payer_name, self.worker_pool());
    }

    /// Starts a meter whose lease takes its worker from `pool`.
    fn start_meter_on(
        &self,
        lease: RuntimeLease,
        balance: i64,
        payer_name: String,
        pool: Arc<dyn WorkerPool>,
    ) {
        let mut leases = self.leases();
        let session = lease.session_id;
        let entry_lease = lease.id;
        let account_id = lease.account_id;
        let ports = MeterPorts {
            ledger: Arc::new(self.shared.db.clone()),
            host: Arc::new(self.clone()),
            events: self.shared.events.clone(),
            pool,
        };
        let settings = *self.settings();
        let actor = BillingMeterActor::new(ports, settings, lease.into(), balance, payer_name);
        let state = actor.state();
        // Started under the map's lock so the meter cannot `forget` itself before it is listed.
        let meter = BillingMeterActor::start_in_arbiter(&self.shared.arbiter, move |_| actor);
        leases.insert(
            session,
            ActiveLease {
                lease_id: entry_lease,
                account_id,
                meter,
                state,
            },
        );
    }

    /// Starts a Pro runtime lease paid by `account`: holds `prepaid_ms` at the class's price
    /// and asks for a worker. 402 `insufficient_credits`, 409 if the session has one already.
    pub async fn start_lease(
        &self,
        session: SessionId,
        account: AccountId,
        gpu_class: &str,
        prepaid_ms: i64,
    ) -> Result<LeaseView> {
        let price = self.prices().price(gpu_class).ok_or_else(|| {
            Error::invalid(format!(
                "unknown gpu_class {gpu_class:?}; offered: {}",
                self.prices().classes().join(", ")
            ))
        })?;
        let max_ms = i64::from(self.max_prepaid_minutes()) * prices::MINUTE_MS;
        if prepaid_ms < 1000 || prepaid_ms > max_ms {
            return Err(Error::invalid(format!(
                "prepaid_minutes must be at least one second and at most {} minutes",
                self.max_prepaid_minutes()
            )));
        }
        if self
            .leases()
            .get(&session)
            .is_some_and(|a| a.meter.connected())
        {
            return Err(Error::Conflict(
                "this session already has a Pro runtime; stop it before starting another".into(),
            ));
        }
        let lease = self
            .db()
            .create_lease(&NewLease {
                id: LeaseId::new_random(),
                session_id: session,
                account_id: account,
                gpu_class,
                price_per_minute: price,
                prepaid_ms,
                hold_amount: hold_for(price, prepaid_ms),
                owner_node: self.node_id(),
            })
            .await?;
        tracing::info!(lease = %lease.id, %session, %account, gpu_class, prepaid_ms, hold = lease.hold_amount, "runtime lease started");
        let view = LeaseView::stored(&lease);
        if let Some(placement) = self.placement() {
            match placement.place(lease.id, session, gpu_class).await {
                Ok(Placement::Here(bind)) => bind(lease.id),
                Ok(Placement::Queued) => {
                    placement.waiting_here(lease.id, session, gpu_class);
                    return Ok(view);
                }
                Err(why) => {
                    // Nobody could ever take it: settled at once, nothing charged.
                    tracing::error!(lease = %lease.id, %why, "could not place a runtime lease");
                    self.db()
                        .settle_lease(lease.id, lease.epoch, 0, 0, reason::INTERNAL_ERROR)
                        .await?;
                    return Err(Error::Internal(format!(
                        "could not queue the Pro runtime for a slot: {why}"
                    )));
                }
            }
        }
        let balance = self.db().balance(account).await?.balance;
        let payer_name = self.payer_name(account).await?;
        self.start_meter(lease, balance, payer_name);
        Ok(view)
    }

    /// Cluster mode: this node took a waiting lease from its line and claimed it (at a new
    /// epoch, its slot reserved and bound here): its meter starts here, from the assignment.
    pub async fn start_claimed_lease(&self, lease: RuntimeLease) -> Result<()> {
        let balance = self.db().balance(lease.account_id).await?.balance;
        let payer_name = self.payer_name(lease.account_id).await?;
        tracing::info!(lease = %lease.id, session = %lease.session_id, epoch = lease.epoch, "took a waiting runtime lease from its line");
        self.start_meter(lease, balance, payer_name);
        Ok(())
    }

    async fn payer_name(&self, account: AccountId) -> Result<String> {
        Ok(self
            .db()
            .account(account)
            .await?
            .map_or_else(String::new, |a| a.name))
    }

    /// Adds prepaid time to the session's running lease, paid by `account`, who must be its
    /// payer (403 otherwise): a further hold; the job goes on. 404 without a running lease.
    pub async fn extend_lease(
        &self,
        session: SessionId,
        account: AccountId,
        add_ms: i64,
    ) -> Result<LeaseView> {
        let max_ms = i64::from(self.max_prepaid_minutes()) * prices::MINUTE_MS;
        if add_ms < 1000 || add_ms > max_ms {
            return Err(Error::invalid(format!(
                "add_minutes must be at least one second and at most {} minutes",
                self.max_prepaid_minutes()
            )));
        }
        let active = self
            .leases()
            .get(&session)
            .filter(|a| a.state.borrow().is_open())
            .map(|a| (a.meter.clone(), a.account_id));
        let Some((meter, payer)) = active else {
            return Err(Error::NotFound("running Pro runtime"));
        };
        if payer != account {
            return Err(Error::forbidden(
                "only the account paying for this runtime can extend it",
            ));
        }
        let (reply, rx) = oneshot::channel();
        meter
            .send(ExtendLease {
                add_ms,
                max_prepaid_ms: max_ms,
                reply,
            })
            .await
            .map_err(|_| Error::Conflict("the Pro runtime has stopped".into()))?;
        rx.await
            .map_err(|_| Error::Conflict("the Pro runtime has stopped".into()))?
            .map_err(meter_error)?;
        // The meter published the extension before it replied.
        self.lease_view(session)
            .await?
            .ok_or(Error::NotFound("running Pro runtime"))
    }

    /// Every lease with a live meter on this node, as its meter last published it (the admin
    /// page; in a cluster each node lists the leases it owns).
    pub async fn running_leases(&self) -> Vec<(LeaseView, AccountId)> {
        self.leases()
            .values()
            .map(|a| (LeaseView::published(&a.state()), a.account_id))
            .collect()
    }

    /// The session whose live lease has this id.
    pub fn session_of_lease(&self, lease: LeaseId) -> Option<SessionId> {
        self.leases()
            .iter()
            .find(|(_, a)| a.lease_id == lease)
            .map(|(s, _)| *s)
    }

    /// The session's active lease (live numbers, when metered here), else its latest stopped
    /// one, else `None`.
    pub async fn lease_view(&self, session: SessionId) -> Result<Option<LeaseView>> {
        let published = self.leases().get(&session).map(ActiveLease::state);
        if let Some(state) = published {
            return Ok(Some(LeaseView::published(&state)));
        }
        Ok(self.db().latest_lease(session).await?.map(|lease| {
            let mut view = LeaseView::stored(&lease);
            // A cluster's waiting lease has no meter anywhere: it is shown waiting.
            let waiting_in_line =
                self.shared.settings.clustered && lease.status == LeaseStatus::Starting;
            if lease.status != LeaseStatus::Stopped
                && !waiting_in_line
                && lease.owner_node.as_deref() == Some(self.node_id())
            {
                // Ours in the database without a meter: being recovered or settled. (Owned by
                // another node: metered there, shown as of its last checkpoint.)
                view.status = LeaseStatus::Stopping;
            }
            view
        }))
    }

    /// Stops the session's lease and settles it. 404 when the session has no open lease.
    pub async fn stop_lease(&self, session: SessionId, reason: &str) -> Result<Settlement> {
        let meter = self.leases().get(&session).map(|a| a.meter.clone());
        if let Some(meter) = meter {
            let (reply, rx) = oneshot::channel();
            let sent = meter
                .send(StopLease {
                    reason: reason.to_string(),
                    reply,
                })
                .await;
            if sent.is_ok() {
                match rx.await {
                    // Taken over meanwhile: settled below, like a lease metered elsewhere.
                    Ok(Err(MeterError::TakenOver)) | Err(_) => {}
                    Ok(result) => return result.map(Settlement::from).map_err(meter_error),
                }
            }
        }
        // No live meter here: claim the lease (fencing whichever node meters it, which then
        // stops without charging) and settle what is stored, at its last checkpoint.
        match self.db().latest_lease(session).await? {
            Some(lease) if lease.status != LeaseStatus::Stopped => {
                let Some(claimed) = self
                    .db()
                    .claim_lease(lease.id, self.node_id(), lease.epoch, i64::MAX)
                    .await?
                else {
                    return Err(Error::Conflict(
                        "the Pro runtime changed while stopping it; try again".into(),
                    ));
                };
                let s = self
                    .db()
                    .settle_lease(
                        claimed.id,
                        claimed.epoch,
                        claimed.used_ms,
                        claimed.charged,
                        reason,
                    )
                    .await?;
                if lease.status == LeaseStatus::Starting {
                    if let Some(placement) = self.placement() {
                        placement.left_line(lease.id, &lease.gpu_class).await;
                    }
                }
                self.send_event(session, stopped_event(&s));
                Ok(s)
            }
            _ => Err(Error::NotFound("runtime lease")),
        }
    }

    /// For the job system, before running a job of `session`: the running lease, or 402
    /// `payment_required` (409 while the lease waits for its worker).
    pub fn require_active_lease(&self, session: SessionId) -> Result<LeaseInfo> {
        let leases = self.leases();
        let Some(active) = leases.get(&session).filter(|a| a.meter.connected()) else {
            return Err(Error::PaymentRequired(
                "this session has no Pro runtime: start one (POST /api/v1/sessions/{id}/runtime) \
                 to run jobs"
                    .into(),
            ));
        };
        let state = active.state.borrow();
        if !state.is_open() {
            return Err(Error::PaymentRequired(
                "this session's Pro runtime is stopping: start a new one \
                 (POST /api/v1/sessions/{id}/runtime) to run jobs"
                    .into(),
            ));
        }
        let Some((worker_id, device)) = state.worker() else {
            return Err(Error::Conflict(
                "the Pro runtime is starting (no worker assigned yet); try again in a moment"
                    .into(),
            ));
        };
        Ok(LeaseInfo {
            lease_id: active.lease_id,
            session_id: session,
            account_id: active.account_id,
            gpu_class: state.lease.gpu_class.clone(),
            worker_id,
            device: device.to_owned(),
        })
    }

    /// For the job system in a cluster: the session's running lease wherever it is metered —
    /// here (as [`Self::require_active_lease`]), or on another live node, read from the
    /// database (its jobs are then sent to that node). On a single node the same as
    /// [`Self::require_active_lease`].
    pub async fn lease_for_jobs(&self, session: SessionId) -> Result<JobLease> {
        let refused = match self.require_active_lease(session) {
            Ok(info) => return Ok(JobLease::Here(info)),
            Err(refused) => refused,
        };
        if !self.shared.settings.clustered {
            return Err(refused);
        }
        let Some(lease) = self.db().latest_lease(session).await? else {
            return Err(refused);
        };
        let alive = lease
            .owner_heartbeat_at
            .is_some_and(|at| at >= self.stale_before());
        match (lease.status, lease.owner_node) {
            (LeaseStatus::Running, Some(owner)) if owner != self.node_id() && alive => {
                Ok(JobLease::Elsewhere {
                    lease_id: lease.id,
                    owner_node: owner,
                })
            }
            (LeaseStatus::Starting, _) => Err(Error::Conflict(
                "the Pro runtime is waiting for a slot (no worker assigned yet); try again once \
                 it runs"
                    .into(),
            )),
            _ => Err(refused),
        }
    }

    /// For the job system: a job of this lease started, progressed or finished (resets the idle
    /// timer).
    pub fn note_job_activity(&self, lease: LeaseId) {
        let meter = self
            .leases()
            .values()
            .find(|a| a.lease_id == lease)
            .map(|a| a.meter.clone());
        if let Some(meter) = meter {
            meter.do_send(JobActivity);
        }
    }

    /// Stops and settles every running lease the account pays for (its balance went negative,
    /// an admin suspended it, or the account is being deleted).
    pub async fn stop_account_leases(&self, account: AccountId, reason: &str) {
        let sessions: Vec<SessionId> = self
            .leases()
            .iter()
            .filter(|(_, a)| a.account_id == account)
            .map(|(s, _)| *s)
            .collect();
        for session in sessions {
            if let Err(error) = self.stop_lease(session, reason).await {
                tracing::error!(%session, %error, "could not stop a lease");
            }
        }
    }

    /// At start-up: every lease left open by the previous run of this node — on a single node
    /// every open lease; in a cluster those this node id owned and those whose owner has been
    /// silent for the takeover delay (the others are metered by live nodes) — is claimed at a
    /// new epoch, then resumed (a new metering segment from when its worker is assigned again,
    /// so the downtime is not billed) if it was alive within the resume window, else settled at
    /// its last checkpoint. Leases of another (dead) node go through [`Self::take_over`].
    pub async fn recover(&self) -> Result<Recovery> {
        let mut recovery = Recovery::default();
        let open = if self.shared.settings.clustered {
            self.db()
                .stale_leases(self.node_id(), self.stale_before())
                .await?
        } else {
            self.db().open_leases().await?
        };
        let now = now_ms();
        let window =
            i64::try_from(self.shared.settings.resume_window.as_millis()).unwrap_or(i64::MAX);
        for stored in open {
            let previous_owner = stored.owner_node.clone();
            // One node: every open lease is this node's to claim, whatever its stored owner. In a
            // cluster another node's running lease waits the reconnect grace first.
            let foreign =
                stored.owner_node.is_some() && stored.owner_node.as_deref() != Some(self.node_id());
            let stale_before = if !self.shared.settings.clustered {
                i64::MAX
            } else if foreign {
                match self.claimable_before(&stored) {
                    Some(before) => before,
                    None => continue,
                }
            } else {
                self.stale_before()
            };
            let Some(lease) = self
                .db()
                .claim_lease(stored.id, self.node_id(), stored.epoch, stale_before)
                .await?
            else {
                continue; // Another node claimed it first.
            };
            let ours_before = previous_owner.is_none()
                || previous_owner.as_deref() == Some(self.node_id())
                || !self.shared.settings.clustered;
            if self.keep_waiting(&lease) {
                recovery.resumed += 1;
                continue;
            }
            if !ours_before {
                self.take_over(lease, previous_owner.as_deref()).await?;
                recovery.taken_over += 1;
                continue;
            }
            let last_alive = [
                Some(lease.created_at),
                lease.segment_started_at,
                lease.checkpointed_at,
            ]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(lease.created_at);
            let resumable = now - last_alive <= window && lease.used_ms < lease.prepaid_ms;
            if resumable {
                tracing::info!(lease = %lease.id, used_ms = lease.used_ms, epoch = lease.epoch, "resuming a runtime lease after a restart");
                let balance = self.db().balance(lease.account_id).await?.balance;
                let payer_name = self.payer_name(lease.account_id).await?;
                self.start_meter(lease, balance, payer_name);
                recovery.resumed += 1;
            } else {
                let s = self
                    .db()
                    .settle_lease(
                        lease.id,
                        lease.epoch,
                        lease.used_ms,
                        lease.charged,
                        reason::SERVER_RESTARTED,
                    )
                    .await?;
                tracing::info!(lease = %lease.id, used_ms = s.used_ms, charged = s.charged, refunded = s.refunded, "settled a runtime lease left open by the previous run");
                recovery.settled += 1;
            }
        }
        Ok(recovery)
    }

    /// Ownership heartbeats older than this (epoch ms) are stale: their owner is taken for dead.
    fn stale_before(&self) -> i64 {
        let delay =
            i64::try_from(self.shared.settings.takeover_delay.as_millis()).unwrap_or(i64::MAX);
        now_ms().saturating_sub(delay)
    }

    /// The ownership heartbeat before which a silent node's lease may be claimed now, or `None`
    /// when it may not be yet. A waiting lease: the takeover delay. A RUNNING lease: the
    /// reconnect grace on top of it — its worker, alive, reconnects to a live node and adopts
    /// it there ([`Billing::adopt_lease`]); only a worker that does not come back leaves it to
    /// be settled `worker_lost`.
    fn claimable_before(&self, lease: &RuntimeLease) -> Option<i64> {
        let stale_before = self.stale_before();
        if lease.status != LeaseStatus::Running {
            return Some(stale_before);
        }
        let grace =
            i64::try_from(self.shared.settings.reconnect_grace.as_millis()).unwrap_or(i64::MAX);
        let before = stale_before.saturating_sub(grace);
        match lease.owner_heartbeat_at {
            Some(at) if at >= before => None,
            _ => Some(before),
        }
    }

    /// Cluster mode, every ownership heartbeat: claims the open leases whose owner has been
    /// silent for the takeover delay (of nodes racing for one, exactly one wins the epoch) and
    /// takes each over. How many this node took.
    pub async fn take_over_stale(&self) -> Result<usize> {
        let mut taken = 0;
        for stored in self
            .db()
            .stale_leases(self.node_id(), self.stale_before())
            .await?
        {
            // This node's own leases are its meters' (a lease being started is owned before its
            // meter is listed); only start-up recovery claims its own back.
            if stored.owner_node.as_deref() == Some(self.node_id()) {
                continue;
            }
            let Some(stale_before) = self.claimable_before(&stored) else {
                continue; // its worker may still reconnect and adopt it
            };
            let previous_owner = stored.owner_node.clone();
            if let Some(lease) = self
                .db()
                .claim_lease(stored.id, self.node_id(), stored.epoch, stale_before)
                .await?
            {
                self.take_over(lease, previous_owner.as_deref()).await?;
                taken += 1;
            }
        }
        Ok(taken)
    }

    /// A lease just claimed from a dead node, at its new epoch. Its worker was one the dead node
    /// leased (workers are leased by the node they are connected to): when it had one, it is
    /// gone with that node, so the lease is settled at its last checkpoint — the time since is
    /// not billed, the rest of the hold released — with `worker_lost`, as when a worker stops
    /// heartbeating. A lease still waiting for a worker goes on waiting here, metered from
    /// when a worker of this node is assigned.
    async fn take_over(&self, lease: RuntimeLease, previous_owner: Option<&str>) -> Result<()> {
        metrics::counter!(telemetry::LEASE_TAKEOVERS).increment(1);
        tracing::warn!(lease = %lease.id, session = %lease.session_id, previous_owner, epoch = lease.epoch,
            status = lease.status.as_str(), used_ms = lease.used_ms, "took over a runtime lease from a silent node");
        if self.keep_waiting(&lease) {
            return Ok(());
        }
        if lease.status == LeaseStatus::Running {
            let s = self
                .db()
                .settle_lease(
                    lease.id,
                    lease.epoch,
                    lease.used_ms,
                    lease.charged,
                    reason::WORKER_LOST,
                )
                .await?;
            tracing::info!(lease = %lease.id, used_ms = s.used_ms, charged = s.charged, refunded = s.refunded, "settled a taken-over lease whose worker was lost with its node");
            self.send_event(lease.session_id, stopped_event(&s));
        } else {
            let balance = self.db().balance(lease.account_id).await?.balance;
            let payer_name = self.payer_name(lease.account_id).await?;
            self.start_meter(lease, balance, payer_name);
        }
        Ok(())
    }

    /// Cluster mode: a waiting lease this node just claimed (at start-up or from a silent
    /// node) stays in its class's line, where its entry still is; this node reports its place.
    /// False (nothing done) for any other lease.
    fn keep_waiting(&self, lease: &RuntimeLease) -> bool {
        if lease.status != LeaseStatus::Starting {
            return false;
        }
        let Some(placement) = self.placement() else {
            return false;
        };
        placement.waiting_here(lease.id, lease.session_id, &lease.gpu_class);
        true
    }

    /// Graceful shutdown: stops and settles every lease (`server_shutdown`).
    pub async fn shutdown(&self) {
        let sessions: Vec<SessionId> = self.leases().keys().copied().collect();
        for session in sessions {
            if let Err(error) = self.stop_lease(session, reason::SERVER_SHUTDOWN).await {
                tracing::error!(%session, %error, "a lease could not be settled on shutdown; it will be recovered at the next start");
            }
        }
    }
}

/// A meter's refusal as the API says it.
fn meter_error(error: MeterError) -> Error {
    match error {
        MeterError::Stopping | MeterError::TakenOver => Error::Conflict(error.to_string()),
        MeterError::NotSettledYet(_) => Error::Internal(error.to_string()),
        MeterError::Ledger(error) => error.into(),
    }
}

fn stopped_event(s: &Settlement) -> StudioEvent {
    StudioEvent::RuntimeStopped {
        lease_id: s.lease_id,
        reason: s.reason.clone(),
        used_ms: u64::try_from(s.used_ms).unwrap_or(0),
        charged: s.charged,
        refunded: s.refunded,
    }
}

#[cfg(test)]
mod tests;
