//! `BillingMeterActor`: one per runtime lease; the one owner of the lease's billing state.
//!
//! Life of a lease:
//! 1. Started with the stored lease (its hold already placed), it starts a
//!    [`WorkerLeaseActor`] to get a worker.
//! 2. On assignment it records a new metering segment in the database (so a restart never
//!    meters the time the server was down), tells the session `runtime.started`, and ticks every
//!    `meter_interval`: `runtime.meter` to the session (the balance to the payer only), and
//!    every `checkpoint_interval` a checkpoint that charges what was used so far (idempotency
//!    key from the lease and the checkpoint number). `low_balance_warning` before the prepaid
//!    time runs out, everyone gets `runtime.low_balance`; the payer may extend the lease
//!    ([`ExtendLease`]: a further hold, the job goes on).
//! 3. It stops — prepaid time used up (`prepaid_time_used`), idle for `idle_timeout` (`idle`),
//!    worker lost (`worker_lost`, billed to its last heartbeat), asked to (`stopped_by_user`,
//!    `session_deleted`, `account_deleted`, `payment_reversed`, `server_shutdown`; a checkpoint
//!    that finds the session gone stops it with `session_deleted` too) — by interrupting the session's
//!    jobs through its [`MeterHost`], giving the worker back, and settling:
//!    the used part charged, the rest of the hold released, `runtime.stopped` to everyone.
//!
//! 4. It publishes the lease's state ([`LeaseState`]) over a `watch` at every change and tick:
//!    [`BillingMeterActor::state`] hands out receivers; nobody else keeps a copy.
//! 5. Every write carries the lease's epoch. When one is refused as fenced — another node
//!    claimed the lease (its owner looked dead) — this meter stops at once without charging or
//!    settling: it interrupts the session's jobs here, gives the worker back and forgets the
//!    lease; the new owner meters it from the last checkpoint.
//!
//! It reaches the database through the [`Ledger`] port, the billing service (and the job system
//! behind it) through [`MeterHost`], the participants through [`EventSink`] and workers through
//! [`WorkerPool`] ([`MeterPorts`]).
//!
//! Used time is `segment_base_ms + (billable_until − segment_started_at)`, capped at the
//! prepaid time, where `billable_until` is now (or the worker's last heartbeat, if older).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use atelier_protocol::events::StudioEvent;
use atelier_protocol::ids::WorkerId;
use tokio::sync::{oneshot, watch};

use super::cost::cost;
use super::host::MeterHost;
use super::ledger::{LeaseStatus, Ledger, LedgerError, MeteredLease, Settlement};
use super::messages::{ExtendLease, HandOver, JobActivity, MeterError, StopLease};
use super::reason;
use super::state::LeaseState;
use crate::events::EventSink;
use crate::lease::worker::now_ms;
use crate::lease::{LeaseNews, ReleaseWorker, WorkerHeartbeat, WorkerLeaseActor, WorkerPool};

/// How long a failed settlement waits before it is tried again (doubling up to the maximum).
const SETTLE_RETRY_MIN: Duration = Duration::from_millis(500);
const SETTLE_RETRY_MAX: Duration = Duration::from_secs(30);

/// Timing of every meter.
#[derive(Debug, Clone, Copy)]
pub struct MeterSettings {
    /// How often lease time is metered and `runtime.meter` sent.
    pub meter_interval: Duration,
    /// How often what was used is charged to the database.
    pub checkpoint_interval: Duration,
    /// A lease without job activity this long stops by itself.
    pub idle_timeout: Duration,
    /// How long before the prepaid time runs out `runtime.low_balance` is sent.
    pub low_balance_warning: Duration,
}

/// What a meter needs from the rest of the server.
#[derive(Clone)]
pub struct MeterPorts {
    pub ledger: Arc<dyn Ledger>,
    pub host: Arc<dyn MeterHost>,
    pub events: Arc<dyn EventSink>,
    pub pool: Arc<dyn WorkerPool>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Tick;

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Waiting for a worker.
    Waiting,
    Running,
    Stopping {
        reason: String,
        used_ms: i64,
    },
    Stopped,
}

pub struct BillingMeterActor {
    ports: MeterPorts,
    settings: MeterSettings,
    lease: MeteredLease,
    phase: Phase,
    /// Used time before the current segment.
    base_ms: i64,
    segment_started_at: Option<i64>,
    heartbeat: Option<watch::Receiver<WorkerHeartbeat>>,
    /// Set when the worker was lost: billing ends here.
    lost_at: Option<i64>,
    /// What the database has (last checkpoint).
    checkpoint_seq: i64,
    checkpointed_used_ms: i64,
    checkpointed_charged: i64,
    checkpointed_at: i64,
    checkpointing: bool,
    /// The payer's balance as of the last write.
    balance: i64,
    /// Shown to the participants as who pays.
    payer_name: String,
    /// The prepaid time `runtime.low_balance` was last sent for (once per extension).
    warned_for_prepaid_ms: Option<i64>,
    last_activity: i64,
    lease_actor: Option<Addr<WorkerLeaseActor>>,
    waiters: Vec<oneshot::Sender<Result<Settlement, MeterError>>>,
    settle_retry: Duration,
    /// The lease's state as published; the only sender.
    published: watch::Sender<LeaseState>,
}

impl BillingMeterActor {
    /// A meter for a stored lease that is not stopped (new, or recovered after a restart).
    pub fn new(
        ports: MeterPorts,
        settings: MeterSettings,
        lease: MeteredLease,
        balance: i64,
        payer_name: String,
    ) -> Self {
        let now = now_ms();
        let (published, _) = watch::channel(LeaseState {
            lease: lease.clone(),
            status: LeaseStatus::Starting,
            used_ms: lease.used_ms,
            charged: lease.charged,
            segment_started_at: None,
            checkpointed_at: None,
            at: now,
        });
        BillingMeterActor {
            published,
            ports,
            settings,
            base_ms: lease.used_ms,
            checkpoint_seq: lease.checkpoint_seq,
            checkpointed_used_ms: lease.used_ms,
            checkpointed_charged: lease.charged,
            checkpointed_at: now,
            lease,
            phase: Phase::Waiting,
            segment_started_at: None,
            heartbeat: None,
            lost_at: None,
            checkpointing: false,
            balance,
            payer_name,
            warned_for_prepaid_ms: None,
            last_activity: now,
            lease_actor: None,
            waiters: Vec::new(),
            settle_retry: SETTLE_RETRY_MIN,
        }
    }

    fn billable_until(&self, now: i64) -> i64 {
        let heartbeat = self
            .heartbeat
            .as_ref()
            .map_or(WorkerHeartbeat::InProcess, |h| *h.borrow());
        let until = heartbeat.billable_until(now);
        self.lost_at.map_or(until, |lost| lost.min(until))
    }

    /// Used time as of `until` (epoch ms), capped at the prepaid time.
    fn used_ms_at(&self, until: i64) -> i64 {
        let used = match self.segment_started_at {
            Some(start) => self.base_ms + (until - start).max(0),
            None => self.base_ms,
        };
        used.clamp(self.checkpointed_used_ms, self.lease.prepaid_ms)
    }

    fn used_ms_now(&self) -> i64 {
        self.used_ms_at(self.billable_until(now_ms()))
    }

    fn cost(&self, used_ms: i64) -> i64 {
        cost(self.lease.price_per_minute, used_ms).min(self.lease.hold_amount)
    }

    /// A receiver of the lease's published state (taken before the actor starts, or any time
    /// from another receiver's `clone`).
    pub fn state(&self) -> watch::Receiver<LeaseState> {
        self.published.subscribe()
    }

    /// Publishes the lease's state as of now.
    fn publish(&self) {
        let (status, used_ms) = match &self.phase {
            Phase::Waiting => (LeaseStatus::Starting, self.base_ms),
            Phase::Running => (LeaseStatus::Running, self.used_ms_now()),
            Phase::Stopping { used_ms, .. } => (LeaseStatus::Stopping, *used_ms),
            Phase::Stopped => (LeaseStatus::Stopped, self.checkpointed_used_ms),
        };
        let state = LeaseState {
            lease: self.lease.clone(),
            status,
            used_ms,
            charged: self.cost(used_ms).max(self.checkpointed_charged),
            segment_started_at: self
                .segment_started_at
                .filter(|_| status == LeaseStatus::Running),
            checkpointed_at: Some(self.checkpointed_at),
            at: now_ms(),
        };
        self.published.send_replace(state);
    }

    /// Another node owns the lease now (a write was refused at this meter's epoch): stop
    /// metering it here without charging or settling anything.
    fn fenced(&mut self, error: &LedgerError, ctx: &mut Context<Self>) {
        if self.phase == Phase::Stopped {
            return;
        }
        tracing::warn!(lease = %self.lease.id, session = %self.lease.session_id, epoch = self.lease.epoch, %error,
            "runtime lease taken over by another node; this node stops metering it without charging");
        self.phase = Phase::Stopped;
        self.ports.host.fenced(self.lease.id);
        self.ports
            .host
            .interrupt_jobs(self.lease.session_id, reason::TAKEN_OVER);
        if let Some(lease_actor) = self.lease_actor.take() {
            lease_actor.do_send(ReleaseWorker);
        }
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Err(MeterError::TakenOver));
        }
        self.publish();
        self.ports.host.forget(self.lease.session_id, self.lease.id);
        ctx.stop();
    }

    /// The lease's worker was lost and the lease moved to another one: the time up to the lost
    /// worker's last heartbeat stays used, the gap is not billed, a new segment starts now.
    fn on_moved(
        &mut self,
        last_heartbeat_ms: i64,
        worker_id: WorkerId,
        device: String,
        heartbeat: watch::Receiver<WorkerHeartbeat>,
        ctx: &mut Context<Self>,
    ) {
        if self.phase != Phase::Running {
            return;
        }
        tracing::warn!(lease = %self.lease.id, last_heartbeat_ms, %worker_id, "worker lost; the lease moved to another worker");
        let now = now_ms();
        self.base_ms = self.used_ms_at(self.billable_until(now).min(last_heartbeat_ms));
        self.segment_started_at = Some(now);
        self.heartbeat = Some(heartbeat);
        self.lease.worker_id = Some(worker_id);
        self.lease.device = Some(device.clone());
        // Billing and the job system read the lease's worker from the published state.
        self.publish();
        // Record the new segment so a node taking the lease over meters from the new worker,
        // not across the gap. The stored base is the last checkpoint (never more than this
        // meter's own base), so a takeover can under-bill the moved part but never charge twice.
        let fut = self.ports.ledger.segment_started(
            self.lease.id,
            self.lease.epoch,
            worker_id,
            &device,
            now,
        );
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| match result {
            Ok(_) => {}
            Err(error @ LedgerError::Fenced(_)) => act.fenced(&error, ctx),
            Err(error) => {
                tracing::warn!(lease = %act.lease.id, %error, "could not record the moved segment")
            }
        }));
    }

    fn on_assigned(
        &mut self,
        worker_id: WorkerId,
        device: String,
        heartbeat: watch::Receiver<WorkerHeartbeat>,
        ctx: &mut Context<Self>,
    ) {
        if self.phase != Phase::Waiting {
            return;
        }
        let at = now_ms();
        self.heartbeat = Some(heartbeat);
        let fut = self.ports.ledger.segment_started(
            self.lease.id,
            self.lease.epoch,
            worker_id,
            &device,
            at,
        );
        // Nothing else happens to this lease until its segment is stored.
        ctx.wait(fut.into_actor(self).map(move |result, act, ctx| {
            match result {
                Ok(Some(lease)) => {
                    act.base_ms = lease.segment_base_ms;
                    act.segment_started_at = Some(at);
                    act.last_activity = at;
                    act.lease = lease;
                    act.phase = Phase::Running;
                    act.publish();
                    act.ports.events.send(
                        act.lease.session_id,
                        StudioEvent::RuntimeStarted {
                            lease_id: act.lease.id,
                            gpu_class: act.lease.gpu_class.clone(),
                        },
                    );
                    ctx.run_interval(act.settings.meter_interval, |_, ctx| {
                        ctx.notify(Tick);
                    });
                }
                Ok(None) => {
                    // Settled elsewhere (a concurrent stop): nothing to meter.
                    act.begin_stop(reason::STOPPED_BY_USER.into(), None, ctx);
                }
                Err(error @ LedgerError::Fenced(_)) => act.fenced(&error, ctx),
                Err(error) => {
                    tracing::error!(lease = %act.lease.id, %error, "could not start metering");
                    act.begin_stop(reason::INTERNAL_ERROR.into(), None, ctx);
                }
            }
        }));
    }

    fn on_tick(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Running {
            return;
        }
        let now = now_ms();
        let used = self.used_ms_now();
        if used >= self.lease.prepaid_ms {
            self.begin_stop(
                reason::PREPAID_TIME_USED.into(),
                Some(self.lease.prepaid_ms),
                ctx,
            );
            return;
        }
        let remaining_ms = self.lease.prepaid_ms - used;
        let lead_ms =
            i64::try_from(self.settings.low_balance_warning.as_millis()).unwrap_or(i64::MAX);
        if remaining_ms <= lead_ms && self.warned_for_prepaid_ms != Some(self.lease.prepaid_ms) {
            self.warned_for_prepaid_ms = Some(self.lease.prepaid_ms);
            self.ports.events.send(
                self.lease.session_id,
                StudioEvent::RuntimeLowBalance {
                    lease_id: self.lease.id,
                    remaining_ms: u64::try_from(remaining_ms).unwrap_or(0),
                },
            );
        }
        let idle_ms = i64::try_from(self.settings.idle_timeout.as_millis()).unwrap_or(i64::MAX);
        if now - self.last_activity >= idle_ms {
            self.begin_stop(reason::IDLE.into(), None, ctx);
            return;
        }
        let charged = self.cost(used).max(self.checkpointed_charged);
        self.publish();
        self.ports.events.send(
            self.lease.session_id,
            StudioEvent::RuntimeMeter {
                lease_id: self.lease.id,
                gpu_class: self.lease.gpu_class.clone(),
                used_ms: u64::try_from(used).unwrap_or(0),
                charged,
                remaining_ms: u64::try_from(remaining_ms).unwrap_or(0),
                payer_id: self.lease.account_id,
                payer_name: self.payer_name.clone(),
                // Estimated between checkpoints: the stored balance less what is not yet stored.
                balance: Some(self.balance - (charged - self.checkpointed_charged)),
            },
        );
        let every =
            i64::try_from(self.settings.checkpoint_interval.as_millis()).unwrap_or(i64::MAX);
        if !self.checkpointing && now - self.checkpointed_at >= every {
            self.checkpoint(used, ctx);
        }
    }

    fn checkpoint(&mut self, used_ms: i64, ctx: &mut Context<Self>) {
        if used_ms <= self.checkpointed_used_ms {
            self.checkpointed_at = now_ms();
            return;
        }
        self.checkpointing = true;
        let seq = self.checkpoint_seq + 1;
        let charged = self.cost(used_ms);
        let fut =
            self.ports
                .ledger
                .checkpoint(self.lease.id, self.lease.epoch, seq, used_ms, charged);
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.checkpointing = false;
            act.checkpointed_at = now_ms();
            match result {
                Ok(cp) => {
                    act.checkpoint_seq = cp.lease.checkpoint_seq;
                    act.checkpointed_used_ms = act.checkpointed_used_ms.max(cp.lease.used_ms);
                    act.checkpointed_charged = act.checkpointed_charged.max(cp.lease.charged);
                    act.balance = cp.balance;
                    if cp.lease.status == LeaseStatus::Stopped && act.phase == Phase::Running {
                        // Settled behind our back (cannot happen with one meter per lease).
                        act.begin_stop(reason::STOPPED_BY_USER.into(), None, ctx);
                    } else if !cp.session_exists {
                        // The session went away by a path that did not stop its lease: no one
                        // could use it or stop it any more, so it stops here.
                        act.begin_stop(reason::SESSION_DELETED.into(), None, ctx);
                    }
                }
                Err(LedgerError::Gone(_)) => {
                    // The payer's account (and with it the lease) was deleted.
                    act.begin_stop(reason::LEASE_DELETED.into(), None, ctx);
                }
                Err(error @ LedgerError::Fenced(_)) => act.fenced(&error, ctx),
                Err(error) => {
                    tracing::warn!(lease = %act.lease.id, %error, "checkpoint failed; will retry");
                }
            }
        }));
    }

    /// Starts stopping (once): interrupts jobs, gives the worker back, settles.
    fn begin_stop(&mut self, reason: String, used_override: Option<i64>, ctx: &mut Context<Self>) {
        let used_ms = match self.phase {
            Phase::Waiting => self.base_ms,
            Phase::Running => used_override.unwrap_or_else(|| self.used_ms_now()),
            Phase::Stopping { .. } | Phase::Stopped => return,
        }
        .clamp(self.checkpointed_used_ms, self.lease.prepaid_ms);
        tracing::info!(lease = %self.lease.id, session = %self.lease.session_id, %reason, used_ms, "runtime lease stopping");
        self.phase = Phase::Stopping {
            reason: reason.clone(),
            used_ms,
        };
        self.publish();
        self.ports
            .host
            .interrupt_jobs(self.lease.session_id, &reason);
        if let Some(lease_actor) = self.lease_actor.take() {
            lease_actor.do_send(ReleaseWorker);
        }
        self.settle(ctx);
    }

    fn settle(&mut self, ctx: &mut Context<Self>) {
        let Phase::Stopping { reason, used_ms } = self.phase.clone() else {
            return;
        };
        let charged = self.cost(used_ms);
        let fut =
            self.ports
                .ledger
                .settle(self.lease.id, self.lease.epoch, used_ms, charged, &reason);
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| match result {
            Ok(settlement) => act.finish(settlement, ctx),
            Err(LedgerError::Gone(_)) => {
                let settlement = Settlement {
                    lease_id: act.lease.id,
                    session_id: act.lease.session_id,
                    account_id: act.lease.account_id,
                    used_ms: act.checkpointed_used_ms,
                    charged: act.checkpointed_charged,
                    refunded: 0,
                    reason: reason::LEASE_DELETED.into(),
                    balance: 0,
                };
                act.finish(settlement, ctx);
            }
            Err(error @ LedgerError::Fenced(_)) => act.fenced(&error, ctx),
            Err(error) => {
                tracing::error!(lease = %act.lease.id, %error, retry_in = ?act.settle_retry, "settling a lease failed");
                for waiter in act.waiters.drain(..) {
                    let _ = waiter.send(Err(MeterError::NotSettledYet(error.to_string())));
                }
                let delay = act.settle_retry;
                act.settle_retry = (act.settle_retry * 2).min(SETTLE_RETRY_MAX);
                ctx.run_later(delay, |act, ctx| act.settle(ctx));
            }
        }));
    }

    fn finish(&mut self, settlement: Settlement, ctx: &mut Context<Self>) {
        self.phase = Phase::Stopped;
        self.checkpointed_used_ms = settlement.used_ms;
        self.checkpointed_charged = settlement.charged;
        self.lease.status = LeaseStatus::Stopped;
        self.lease.used_ms = settlement.used_ms;
        self.lease.charged = settlement.charged;
        self.lease.refunded = Some(settlement.refunded);
        self.lease.stop_reason = Some(settlement.reason.clone());
        self.publish();
        self.ports.events.send(
            settlement.session_id,
            StudioEvent::RuntimeStopped {
                lease_id: settlement.lease_id,
                reason: settlement.reason.clone(),
                used_ms: u64::try_from(settlement.used_ms).unwrap_or(0),
                charged: settlement.charged,
                refunded: settlement.refunded,
            },
        );
        self.ports.host.forget(self.lease.session_id, self.lease.id);
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Ok(settlement.clone()));
        }
        ctx.stop();
    }
}

impl Actor for BillingMeterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let lease_actor = WorkerLeaseActor::new(
            self.lease.id,
            self.lease.gpu_class.clone(),
            self.ports.pool.clone(),
            ctx.address().recipient(),
        )
        .start();
        self.lease_actor = Some(lease_actor);
        // No worker of the class within the idle timeout: stop with `no_worker` (nothing used,
        // the whole hold released) rather than keep the credits reserved for nothing.
        ctx.run_later(self.settings.idle_timeout, |act, ctx| {
            if act.phase == Phase::Waiting {
                act.begin_stop(reason::NO_WORKER.into(), None, ctx);
            }
        });
    }

    fn stopping(&mut self, _ctx: &mut Self::Context) -> Running {
        if let Some(lease_actor) = self.lease_actor.take() {
            lease_actor.do_send(ReleaseWorker);
        }
        Running::Stop
    }
}

impl Handler<LeaseNews> for BillingMeterActor {
    type Result = ();

    fn handle(&mut self, msg: LeaseNews, ctx: &mut Self::Context) {
        match msg {
            LeaseNews::Assigned {
                worker_id,
                device,
                heartbeat,
            } => self.on_assigned(worker_id, device, heartbeat, ctx),
            LeaseNews::AssignFailed(error) => {
                tracing::warn!(lease = %self.lease.id, %error, "no worker for the lease");
                self.begin_stop(reason::NO_WORKER.into(), None, ctx);
            }
            LeaseNews::Moved {
                last_heartbeat_ms,
                worker_id,
                device,
                heartbeat,
            } => self.on_moved(last_heartbeat_ms, worker_id, device, heartbeat, ctx),
            LeaseNews::WorkerLost { last_heartbeat_ms } => {
                tracing::warn!(lease = %self.lease.id, last_heartbeat_ms, "worker lost");
                self.lost_at = Some(last_heartbeat_ms);
                self.begin_stop(reason::WORKER_LOST.into(), None, ctx);
            }
        }
    }
}

impl Handler<Tick> for BillingMeterActor {
    type Result = ();

    fn handle(&mut self, _msg: Tick, ctx: &mut Self::Context) {
        self.on_tick(ctx);
    }
}

impl Handler<StopLease> for BillingMeterActor {
    type Result = ();

    fn handle(&mut self, msg: StopLease, ctx: &mut Self::Context) {
        self.waiters.push(msg.reply);
        match self.phase {
            Phase::Waiting | Phase::Running => self.begin_stop(msg.reason, None, ctx),
            // Already settling: the waiter gets that settlement; after a failure, try again now.
            Phase::Stopping { .. } => {}
            Phase::Stopped => {}
        }
    }
}

impl Handler<ExtendLease> for BillingMeterActor {
    type Result = ();

    fn handle(&mut self, msg: ExtendLease, ctx: &mut Self::Context) {
        if !matches!(self.phase, Phase::Waiting | Phase::Running) {
            let _ = msg.reply.send(Err(MeterError::Stopping));
            return;
        }
        let fut = self.ports.ledger.extend(
            self.lease.id,
            self.lease.epoch,
            msg.add_ms,
            msg.max_prepaid_ms,
        );
        let reply = msg.reply;
        // Nothing else (no tick, no stop) happens to the lease until the extension is stored.
        ctx.wait(fut.into_actor(self).map(move |result, act, ctx| {
            let result = match result {
                Err(error @ LedgerError::Fenced(_)) => {
                    // Another node owns the lease: it may be extended there; here it stops.
                    act.fenced(&error, ctx);
                    Err(error)
                }
                other => other,
            };
            if let Ok(extended) = &result {
                act.lease.prepaid_ms = extended.prepaid_ms;
                act.lease.hold_amount = extended.hold_amount;
                act.lease.extensions = extended.extensions;
                let used = match act.phase {
                    Phase::Running => act.used_ms_now(),
                    _ => act.base_ms,
                };
                tracing::info!(lease = %act.lease.id, prepaid_ms = extended.prepaid_ms, hold = extended.hold_amount, "runtime lease extended");
                act.publish();
                act.ports.events.send(
                    act.lease.session_id,
                    StudioEvent::RuntimeExtended {
                        lease_id: act.lease.id,
                        prepaid_ms: u64::try_from(extended.prepaid_ms).unwrap_or(0),
                        remaining_ms: u64::try_from(extended.prepaid_ms - used).unwrap_or(0),
                    },
                );
            }
            let _ = reply.send(result.map_err(|error| match error {
                LedgerError::Fenced(_) => MeterError::TakenOver,
                other => MeterError::from(other),
            }));
        }));
    }
}

impl BillingMeterActor {
    /// Stops metering here without settling (the lease goes on under a new epoch): gives the
    /// slot back — waiting until the lease actor has, so no late release can undo the new
    /// binding — and is forgotten, then answers.
    fn hand_over_done(
        &mut self,
        reply: oneshot::Sender<Result<(), MeterError>>,
        ctx: &mut Context<Self>,
    ) {
        self.phase = Phase::Stopped;
        self.publish();
        let release = self.lease_actor.take().map(|a| a.send(ReleaseWorker));
        let done = async move {
            if let Some(release) = release {
                let _ = release.await;
            }
        };
        ctx.wait(done.into_actor(self).map(move |(), act, ctx| {
            act.ports.host.forget(act.lease.session_id, act.lease.id);
            for waiter in act.waiters.drain(..) {
                let _ = waiter.send(Err(MeterError::TakenOver));
            }
            let _ = reply.send(Ok(()));
            ctx.stop();
        }));
    }
}

impl Handler<HandOver> for BillingMeterActor {
    type Result = ();

    fn handle(&mut self, msg: HandOver, ctx: &mut Self::Context) {
        match self.phase {
            Phase::Waiting => {
                tracing::info!(lease = %self.lease.id, epoch = self.lease.epoch, "runtime lease handed over before metering");
                self.hand_over_done(msg.reply, ctx);
            }
            Phase::Running => {
                // Up to the worker's last heartbeat: the time it was unreachable is not billed.
                let used_ms = self.used_ms_now();
                let charged = self.cost(used_ms);
                tracing::info!(lease = %self.lease.id, epoch = self.lease.epoch, used_ms,
                    "runtime lease handed over to its reconnected worker; final checkpoint here");
                if used_ms <= self.checkpointed_used_ms {
                    self.hand_over_done(msg.reply, ctx);
                    return;
                }
                let fut = self.ports.ledger.checkpoint(
                    self.lease.id,
                    self.lease.epoch,
                    self.checkpoint_seq + 1,
                    used_ms,
                    charged,
                );
                let reply = msg.reply;
                // Nothing else happens to the lease until the checkpoint is stored.
                ctx.wait(fut.into_actor(self).map(move |result, act, ctx| {
                    match result {
                        Ok(cp) => {
                            act.checkpoint_seq = cp.lease.checkpoint_seq;
                            act.checkpointed_used_ms = act.checkpointed_used_ms.max(cp.lease.used_ms);
                            act.checkpointed_charged = act.checkpointed_charged.max(cp.lease.charged);
                        }
                        // Claimed elsewhere meanwhile, or the database failed: what is not
                        // checkpointed is not billed (never twice).
                        Err(error) => {
                            tracing::warn!(lease = %act.lease.id, %error, "the hand-over's checkpoint failed; the time since the last one is not billed")
                        }
                    }
                    act.hand_over_done(reply, ctx);
                }));
            }
            Phase::Stopping { .. } | Phase::Stopped => {
                let _ = msg.reply.send(Err(MeterError::Stopping));
            }
        }
    }
}

impl Handler<JobActivity> for BillingMeterActor {
    type Result = ();

    fn handle(&mut self, _msg: JobActivity, _ctx: &mut Self::Context) {
        self.last_activity = now_ms();
    }
}
