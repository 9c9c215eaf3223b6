//! The job board: every piece of the job system's mutable state, and every change to it, in one
//! place. This is where a job is queued ([`State::enqueue`]), assigned to a worker
//! ([`State::next_assignment`]), put back after a lost worker ([`State::requeue`]) and finished
//! ([`State::finish`]); where workers join and leave; and where runtime leases take a worker
//! slot or wait in their class's line for one ([`State::serve_lease_lines`]).
//!
//! The state is owned by [`JobBoard`] behind a std `Mutex`: every operation below is a short,
//! synchronous change (no I/O, no `.await` while it is held). The job service
//! ([`super::service`]) does the I/O around it — the database, studio events, worker messages —
//! after the lock is released; what it must announce comes back as return values.
//!
//! Slots: a worker offers `slots` (one per device; the in-process worker's are configurable). A
//! runtime lease holds one slot exclusively for its whole life, so two sessions never pay for the
//! same device-second; the lease's jobs run on that slot one at a time. When every slot of a
//! class is held, a lease waits in the class's FIFO and learns its position as it moves.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use atelier_actors::WorkerLink;
use atelier_protocol::ids::{AccountId, JobId, LeaseId, MediaId, SessionId, WorkerId};
use atelier_protocol::worker::{MediaBytes, ProvidedTensor, ServerMessage};
use tokio::sync::{mpsc, oneshot, watch};

use super::assignment::{AssignmentEvent, ASSIGNMENT_INBOX_CAPACITY};
use super::graph::Plan;
use super::queue::FairQueue;
use crate::billing::{WorkerAssignment, WorkerHeartbeat};
use crate::db::jobs::JobStatus;

/// An unfinished job as the board keeps it (and `session.hello` and `GET` report it).
#[derive(Debug, Clone)]
pub(super) struct JobView {
    pub(super) session: SessionId,
    pub(super) account: AccountId,
    /// The runtime lease the job runs under: it runs on the lease's slot only.
    pub(super) lease: Option<LeaseId>,
    pub(super) status: JobStatus,
    pub(super) position: u32,
    pub(super) worker: Option<WorkerId>,
    pub(super) device: Option<String>,
    pub(super) node_id: Option<String>,
    pub(super) step: u32,
    pub(super) total: u32,
    pub(super) plan: Plan,
    /// Cached nodes → their PNG.
    pub(super) cached: BTreeMap<String, MediaId>,
    /// Handed to the worker with the assignment (kept for a re-queue after a lost worker).
    pub(super) provided: Vec<ProvidedTensor>,
    pub(super) media: Vec<MediaBytes>,
    /// Times the job went back to the queue after its worker was lost (at most once).
    pub(super) requeues: u32,
}

impl JobView {
    pub(super) fn queued(
        session: SessionId,
        account: AccountId,
        lease: Option<LeaseId>,
        plan: Plan,
        resolution: super::cache::Resolution,
        media: Vec<MediaBytes>,
    ) -> Self {
        JobView {
            session,
            account,
            lease,
            status: JobStatus::Queued,
            position: 0,
            worker: None,
            device: None,
            node_id: None,
            step: 0,
            total: 0,
            plan,
            cached: resolution.cached,
            provided: resolution.provided,
            media,
            requeues: 0,
        }
    }
}

pub(super) struct WorkerEntry {
    pub(super) name: String,
    pub(super) device: String,
    pub(super) models: Vec<String>,
    /// What the server sends it (bounded: a worker that does not read is closed as too slow).
    pub(super) link: WorkerLink,
    /// Jobs it runs now (at most one per lease, so at most `slots`), each with its
    /// assignment's (bounded) inbox.
    pub(super) running: HashMap<JobId, mpsc::Sender<AssignmentEvent>>,
    /// How many runtime leases it can hold at once (one per device).
    pub(super) slots: u32,
    /// The worker token it connected with; `None` for the in-process worker.
    pub(super) token_id: Option<WorkerId>,
    /// An admin drained it: no new runtime leases are placed on it.
    pub(super) draining: bool,
    pub(super) connected_at: i64,
    /// The GPU class runtime leases take it as.
    pub(super) gpu_class: String,
    /// Its liveness for the leases on it (see [`super::leasing`]).
    pub(super) heartbeat: watch::Sender<WorkerHeartbeat>,
    /// Runtime leases holding one of its slots now.
    pub(super) leases: u32,
    /// Its connection dropped: its leases and jobs wait for it to come back (the reconnect
    /// grace, see [`super::reattach`]); it takes nothing new meanwhile.
    pub(super) away: bool,
    /// It just reconnected and its leases and jobs are being adopted: its slots are not
    /// offered to waiting leases until that is done.
    pub(super) adopting: bool,
}

impl WorkerEntry {
    fn free_slot(&self) -> bool {
        !self.draining && !self.away && !self.adopting && self.leases < self.slots
    }

    /// It may be sent a job now.
    fn reachable(&self) -> bool {
        !self.away && !self.adopting
    }
}

/// A lease waiting for a slot of its class.
pub(super) struct Waiter {
    pub(super) lease: LeaseId,
    pub(super) reply: oneshot::Sender<WorkerAssignment>,
    /// The position it was last told (0: none yet).
    announced: u32,
}

/// A lease whose place in line moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LineMove {
    pub(super) lease: LeaseId,
    pub(super) gpu_class: String,
    pub(super) position: u32,
}

/// A job the board just gave a worker: what the service sends and records.
pub(super) struct Started {
    pub(super) job: JobId,
    pub(super) worker: WorkerId,
    pub(super) device: String,
    pub(super) link: WorkerLink,
    pub(super) inbox: mpsc::Receiver<AssignmentEvent>,
    pub(super) view: JobView,
}

/// Who hears about the lease lines (the job service): positions to the sessions, and that a
/// lease got a slot (its queued jobs may start).
pub(super) trait LineNews: Send + Sync + 'static {
    fn moved(&self, moves: Vec<LineMove>);
    fn slot_assigned(&self);
}

#[derive(Default)]
pub(super) struct State {
    queue: FairQueue,
    pub(super) jobs: HashMap<JobId, JobView>,
    pub(super) workers: HashMap<WorkerId, WorkerEntry>,
    /// Which worker's slot each runtime lease holds.
    leases: HashMap<LeaseId, WorkerId>,
    /// Leases waiting for a slot, per GPU class, first come first served.
    lines: BTreeMap<String, VecDeque<Waiter>>,
}

/// The owner of the board's state (cheap to clone); the session actors read it for
/// `session.hello`, runtime leases take their slots from it (see [`super::leasing`]).
#[derive(Clone, Default)]
pub struct JobBoard {
    state: Arc<Mutex<State>>,
    news: Arc<OnceLock<Arc<dyn LineNews>>>,
}

impl JobBoard {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // Each operation leaves the state consistent before it can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn attach_news(&self, news: Arc<dyn LineNews>) {
        let _ = self.news.set(news);
    }

    /// Tells the lines' listener what changed (called after the lock is released).
    pub(super) fn tell(&self, moves: Vec<LineMove>, assigned: bool) {
        if let Some(news) = self.news.get() {
            if !moves.is_empty() {
                news.moved(moves);
            }
            if assigned {
                news.slot_assigned();
            }
        }
    }
}

impl State {
    pub(super) fn queued_for(&self, account: AccountId) -> usize {
        self.queue.queued_for(account)
    }

    /// A job joins the back of its account's line.
    pub(super) fn enqueue(&mut self, job: JobId, view: JobView) {
        self.queue.push(view.account, job);
        self.jobs.insert(job, view);
    }

    /// Whether a running job may go back to the queue (it never did, and it runs under a
    /// lease): its session and lease if so.
    pub(super) fn requeue_allowed(&self, job: JobId) -> Option<(SessionId, LeaseId)> {
        let view = self.jobs.get(&job)?;
        let lease = view.lease?;
        (view.status == JobStatus::Running && view.requeues == 0).then_some((view.session, lease))
    }

    /// A job whose worker was lost before it produced anything goes back to the head of its
    /// account's line, once (see [`State::requeue_allowed`]). False (and nothing changes) when
    /// it was re-queued before.
    pub(super) fn requeue(&mut self, job: JobId) -> bool {
        let Some(view) = self.jobs.get_mut(&job) else {
            return false;
        };
        if view.requeues > 0 || view.status != JobStatus::Running {
            return false;
        }
        view.requeues += 1;
        view.status = JobStatus::Queued;
        view.position = 0; // told again
        view.worker = None;
        view.device = None;
        view.node_id = None;
        view.step = 0;
        view.total = 0;
        self.queue.push_front(view.account, job);
        true
    }

    /// Every queued job's current place in line, for those whose place moved.
    pub(super) fn moved_positions(&mut self) -> Vec<(SessionId, JobId, u32)> {
        let positions = self.queue.positions();
        positions
            .into_iter()
            .filter_map(|(job, pos)| {
                let view = self.jobs.get_mut(&job)?;
                (view.position != pos).then(|| {
                    view.position = pos;
                    (view.session, job, pos)
                })
            })
            .collect()
    }

    /// The next queued job that can start now, marked running on its lease's worker. A job
    /// can start when its account is under `max_running`, its lease holds a slot on a connected
    /// worker that has every model it needs, and no other job of its lease runs.
    pub(super) fn next_assignment(&mut self, max_running: usize) -> Option<Started> {
        let mut running_per_account: HashMap<AccountId, usize> = HashMap::new();
        let mut running_leases = Vec::new();
        for v in self
            .jobs
            .values()
            .filter(|v| v.status == JobStatus::Running)
        {
            *running_per_account.entry(v.account).or_default() += 1;
            running_leases.extend(v.lease);
        }
        let (jobs, workers, leases) = (&self.jobs, &self.workers, &self.leases);
        let worker_for = |job: &JobView| -> Option<WorkerId> {
            let lease = job.lease?;
            if running_leases.contains(&lease) {
                return None;
            }
            let worker_id = *leases.get(&lease)?;
            let worker = workers.get(&worker_id)?;
            let capable = job
                .plan
                .steps
                .iter()
                .filter(|s| !s.cached)
                .all(|s| worker.models.contains(&s.model));
            (capable && worker.reachable() && worker.running.len() < worker.slots as usize)
                .then_some(worker_id)
        };
        let (job, worker) = self.queue.take_first(|account, job| {
            if running_per_account.get(&account).copied().unwrap_or(0) >= max_running {
                return None;
            }
            jobs.get(&job).and_then(&worker_for)
        })?;
        let (tx, inbox) = mpsc::channel(ASSIGNMENT_INBOX_CAPACITY);
        let entry = self.workers.get_mut(&worker)?;
        entry.running.insert(job, tx);
        let device = entry.device.clone();
        let link = entry.link.clone();
        let view = self.jobs.get_mut(&job)?;
        view.status = JobStatus::Running;
        view.worker = Some(worker);
        view.device = Some(device.clone());
        Some(Started {
            job,
            worker,
            device,
            link,
            inbox,
            view: view.clone(),
        })
    }

    /// Takes a queued job off the board (cancelled); its session, or `None` when it was not
    /// queued.
    pub(super) fn remove_queued(&mut self, job: JobId) -> Option<SessionId> {
        let view = self.jobs.get(&job)?;
        if view.status != JobStatus::Queued {
            return None;
        }
        let session = view.session;
        self.queue.remove(job);
        self.jobs.remove(&job);
        Some(session)
    }

    /// The inbox of a running job's assignment.
    pub(super) fn running_inbox(&self, job: JobId) -> Option<mpsc::Sender<AssignmentEvent>> {
        let worker = self.jobs.get(&job)?.worker?;
        self.workers.get(&worker)?.running.get(&job).cloned()
    }

    /// A job ended: off the board, its worker's slot free for the lease's next job (unless the
    /// worker is lost: then it is taken off the board too, and told to go). Returns the job's
    /// lease.
    pub(super) fn finish(&mut self, job: JobId, worker: WorkerId, lost: bool) -> Option<LeaseId> {
        let lease = self.jobs.remove(&job).and_then(|v| v.lease);
        self.release_job_slot(job, worker, lost);
        lease
    }

    /// The worker stops running `job` (it ended, or goes back to the queue).
    pub(super) fn release_job_slot(&mut self, job: JobId, worker: WorkerId, lost: bool) {
        if lost {
            // Do not hand a lost worker another job; it must reconnect.
            if let Some(w) = self.remove_worker(worker) {
                let _ = w.link.message(ServerMessage::Refused {
                    reason: "heartbeat timeout".into(),
                });
            }
        } else if let Some(w) = self.workers.get_mut(&worker) {
            w.running.remove(&job);
        }
    }

    /// `job` keeps one of `worker`'s slots (it runs there, unknown to this board, until the
    /// worker ends it); what the worker says of it goes to `inbox`. False when the worker is
    /// gone or the job is on it already.
    pub(super) fn hold_job_slot(
        &mut self,
        worker: WorkerId,
        job: JobId,
        inbox: mpsc::Sender<AssignmentEvent>,
    ) -> bool {
        match self.workers.get_mut(&worker) {
            Some(entry) if !entry.running.contains_key(&job) => {
                entry.running.insert(job, inbox);
                true
            }
            _ => false,
        }
    }

    pub(super) fn workers_link(&self, worker: WorkerId) -> Option<WorkerLink> {
        self.workers.get(&worker).map(|w| w.link.clone())
    }

    /// A worker joined; waiting leases may take its slots.
    pub(super) fn add_worker(&mut self, id: WorkerId, entry: WorkerEntry) -> Vec<LineMove> {
        self.workers.insert(id, entry);
        self.serve_lease_lines().0
    }

    /// Takes a worker off the board; the leases on it learn it is lost as of its last heartbeat.
    pub(super) fn remove_worker(&mut self, worker: WorkerId) -> Option<WorkerEntry> {
        let entry = self.workers.remove(&worker)?;
        entry.heartbeat.send_modify(|h| {
            let last = h.billable_until(crate::db::now_ms());
            *h = WorkerHeartbeat::Lost {
                last_heartbeat_ms: last,
            };
        });
        Some(entry)
    }

    /// A lease asks for a slot of `gpu_class`: it joins the back of the class's line and is
    /// served at once if a slot is free.
    pub(super) fn join_line(
        &mut self,
        lease: LeaseId,
        gpu_class: &str,
        reply: oneshot::Sender<WorkerAssignment>,
    ) -> (Vec<LineMove>, bool) {
        // A lease taken from the cluster's lease line comes with its slot reserved and bound
        // (see [`State::bind_reserved`]): it is served at once, without a line.
        if let Some(entry) = self
            .leases
            .get(&lease)
            .and_then(|worker| self.workers.get(worker).map(|entry| (*worker, entry)))
        {
            let (worker_id, entry) = entry;
            let assignment = WorkerAssignment {
                worker_id,
                device: entry.device.clone(),
                heartbeat: entry.heartbeat.subscribe(),
            };
            return (Vec::new(), reply.send(assignment).is_ok());
        }
        self.lines
            .entry(gpu_class.to_string())
            .or_default()
            .push_back(Waiter {
                lease,
                reply,
                announced: 0,
            });
        self.serve_lease_lines()
    }

    /// A lease withdrew its request (it stopped while waiting): it leaves its line; the leases
    /// behind it move up. (A slot it was given in the meantime is given back by the caller,
    /// which holds the assignment: [`State::release_lease`].)
    pub(super) fn withdraw(&mut self, lease: LeaseId) -> (Vec<LineMove>, bool) {
        for line in self.lines.values_mut() {
            line.retain(|w| w.lease != lease);
        }
        self.serve_lease_lines()
    }

    /// A lease gives back its slot on `worker`; the next lease of the class in line takes it.
    /// Nothing happens when the lease holds a slot of another worker now (it was adopted there
    /// by a reconnecting worker, see [`State::bind_lease`]).
    pub(super) fn release_lease(
        &mut self,
        lease: LeaseId,
        worker: WorkerId,
    ) -> (Vec<LineMove>, bool) {
        if self.leases.get(&lease) == Some(&worker) {
            self.leases.remove(&lease);
            if let Some(entry) = self.workers.get_mut(&worker) {
                entry.leases = entry.leases.saturating_sub(1);
            }
            self.tell_leases(worker);
        }
        self.serve_lease_lines()
    }

    /// Cluster mode: holds a free slot of `gpu_class` (the worker with the most free slots) for
    /// a lease about to be taken from the class's lease line, so no other lease takes it
    /// meanwhile. `None` when no slot of the class is free here.
    pub(super) fn reserve_slot(&mut self, gpu_class: &str) -> Option<WorkerId> {
        let (id, entry) = self
            .workers
            .iter_mut()
            .filter(|(_, w)| w.gpu_class == gpu_class && w.free_slot())
            .max_by_key(|(_, w)| w.slots - w.leases)?;
        entry.leases += 1;
        Some(*id)
    }

    /// The reserved slot is the lease's now: its meter's request is served from it at once.
    pub(super) fn bind_reserved(&mut self, lease: LeaseId, worker: WorkerId) {
        self.leases.insert(lease, worker);
        // The worker re-announces its leases when it reconnects: it must know this one.
        self.tell_leases(worker);
    }

    /// A reserved slot was not used (the line was empty, or the lease could not be claimed).
    pub(super) fn unreserve(&mut self, worker: WorkerId) -> (Vec<LineMove>, bool) {
        if let Some(entry) = self.workers.get_mut(&worker) {
            entry.leases = entry.leases.saturating_sub(1);
        }
        self.serve_lease_lines()
    }

    /// The GPU classes with a free slot on this board now.
    pub(super) fn free_classes(&self) -> Vec<String> {
        let mut classes: Vec<String> = self
            .workers
            .values()
            .filter(|w| w.free_slot())
            .map(|w| w.gpu_class.clone())
            .collect();
        classes.sort();
        classes.dedup();
        classes
    }

    /// The leases holding a slot of `worker` now.
    fn leases_of(&self, worker: WorkerId) -> Vec<LeaseId> {
        let mut leases: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, w)| **w == worker)
            .map(|(l, _)| *l)
            .collect();
        leases.sort();
        leases
    }

    /// Tells a worker which leases hold its slots (what it re-announces when it reconnects).
    fn tell_leases(&self, worker: WorkerId) {
        if let Some(entry) = self.workers.get(&worker) {
            let _ = entry.link.message(ServerMessage::Leases {
                lease_ids: self.leases_of(worker),
            });
        }
    }

    /// An admin drained or undrained a worker. False when it is not connected.
    pub(super) fn set_draining(
        &mut self,
        worker: WorkerId,
        draining: bool,
    ) -> Option<Vec<LineMove>> {
        self.workers.get_mut(&worker)?.draining = draining;
        Some(self.serve_lease_lines().0)
    }

    /// Gives the leases at the front of each class's line a free slot of their class (the
    /// worker with the most free slots first), then returns the positions that moved and
    /// whether any lease got a slot.
    pub(super) fn serve_lease_lines(&mut self) -> (Vec<LineMove>, bool) {
        let mut assigned = false;
        let mut moves = Vec::new();
        let mut told = Vec::new();
        for (class, line) in &mut self.lines {
            while let Some(front) = line.front() {
                if front.reply.is_closed() {
                    line.pop_front(); // the lease stopped waiting
                    continue;
                }
                let chosen = self
                    .workers
                    .iter_mut()
                    .filter(|(_, w)| w.gpu_class == *class && w.free_slot())
                    .max_by_key(|(_, w)| w.slots - w.leases);
                let Some((id, entry)) = chosen else {
                    break;
                };
                let Some(waiter) = line.pop_front() else {
                    break;
                };
                let assignment = WorkerAssignment {
                    worker_id: *id,
                    device: entry.device.clone(),
                    heartbeat: entry.heartbeat.subscribe(),
                };
                if waiter.reply.send(assignment).is_ok() {
                    entry.leases += 1;
                    self.leases.insert(waiter.lease, *id);
                    assigned = true;
                    told.push(*id);
                }
            }
            line.retain(|w| !w.reply.is_closed());
            for (i, waiter) in line.iter_mut().enumerate() {
                let position = u32::try_from(i + 1).unwrap_or(u32::MAX);
                if waiter.announced != position {
                    waiter.announced = position;
                    moves.push(LineMove {
                        lease: waiter.lease,
                        gpu_class: class.clone(),
                        position,
                    });
                }
            }
        }
        self.lines.retain(|_, line| !line.is_empty());
        for worker in told {
            self.tell_leases(worker);
        }
        (moves, assigned)
    }

    /// A worker's connection dropped: it stays on the board (its leases keep their slots, its
    /// jobs their assignments) but takes nothing new until it comes back or its grace ends.
    /// The inboxes of the jobs it runs, `None` when it is not on the board.
    pub(super) fn mark_away(
        &mut self,
        worker: WorkerId,
    ) -> Option<Vec<mpsc::Sender<AssignmentEvent>>> {
        let entry = self.workers.get_mut(&worker)?;
        entry.away = true;
        Some(entry.running.values().cloned().collect())
    }

    /// The reconnect grace of an away worker ended: it leaves the board, and what it still
    /// holds is lost (its leases as of its last heartbeat). `None` when it is not away (it is
    /// gone already) or its new connection is adopting what it holds.
    pub(super) fn remove_if_away(&mut self, worker: WorkerId) -> Option<WorkerEntry> {
        let entry = self.workers.get(&worker)?;
        if !entry.away || entry.adopting {
            return None;
        }
        self.remove_worker(worker)
    }

    /// A worker's new connection adopts what this (previous) connection holds: its grace no
    /// longer ends it (the adoption does). The inboxes of its jobs when it was not away yet
    /// (its drop not noticed yet), to tell them.
    pub(super) fn hold_for_adoption(
        &mut self,
        worker: WorkerId,
    ) -> Option<Vec<mpsc::Sender<AssignmentEvent>>> {
        let entry = self.workers.get_mut(&worker)?;
        entry.adopting = true;
        if entry.away {
            return None;
        }
        entry.away = true;
        Some(entry.running.values().cloned().collect())
    }

    /// A reconnected worker adopts `lease`: the lease holds one of its slots from now (taken
    /// from the worker it held one of before, on this node). False when the worker is gone,
    /// of another class, or has no slot left.
    pub(super) fn bind_lease(&mut self, lease: LeaseId, worker: WorkerId, class: &str) -> bool {
        match self.workers.get(&worker) {
            Some(w) if w.gpu_class == class && w.leases < w.slots => {}
            _ => return false,
        }
        if self.leases.get(&lease) == Some(&worker) {
            return true;
        }
        if let Some(before) = self.leases.insert(lease, worker) {
            if let Some(entry) = self.workers.get_mut(&before) {
                entry.leases = entry.leases.saturating_sub(1);
            }
        }
        if let Some(entry) = self.workers.get_mut(&worker) {
            entry.leases += 1;
        }
        self.tell_leases(worker);
        true
    }

    /// The worker whose slot `lease` holds.
    pub(super) fn holder_of(&self, lease: LeaseId) -> Option<WorkerId> {
        self.leases.get(&lease).copied()
    }

    /// Whether `lease` holds a slot of `worker`.
    pub(super) fn holds(&self, lease: LeaseId, worker: WorkerId) -> bool {
        self.leases.get(&lease) == Some(&worker)
    }

    /// A running job of this board moves from its old worker's entry (the reconnected
    /// worker's previous connection) to the new one; its assignment's inbox, to tell it.
    pub(super) fn move_job(
        &mut self,
        job: JobId,
        from: WorkerId,
        to: WorkerId,
    ) -> Option<mpsc::Sender<AssignmentEvent>> {
        if from == to || !self.workers.contains_key(&to) {
            return None;
        }
        let tx = self.workers.get_mut(&from)?.running.remove(&job)?;
        let entry = self.workers.get_mut(&to)?;
        entry.running.insert(job, tx.clone());
        let device = entry.device.clone();
        if let Some(view) = self.jobs.get_mut(&job) {
            view.worker = Some(to);
            view.device = Some(device);
        }
        Some(tx)
    }

    /// A running job this board did not know (its node died; its worker reconnected here)
    /// goes on the board as running on `worker`; the inbox of its new assignment. `None` when
    /// the worker is gone or the job is on the board already.
    pub(super) fn attach_job(
        &mut self,
        job: JobId,
        mut view: JobView,
        worker: WorkerId,
    ) -> Option<mpsc::Receiver<AssignmentEvent>> {
        if self.jobs.contains_key(&job) {
            return None;
        }
        let entry = self.workers.get_mut(&worker)?;
        let (tx, inbox) = mpsc::channel(ASSIGNMENT_INBOX_CAPACITY);
        entry.running.insert(job, tx);
        view.status = JobStatus::Running;
        view.worker = Some(worker);
        view.device = Some(entry.device.clone());
        self.jobs.insert(job, view);
        Some(inbox)
    }

    /// The adoption of a reconnected worker's leases and jobs is done: its free slots are
    /// offered to waiting leases.
    pub(super) fn adopted(&mut self, worker: WorkerId) -> (Vec<LineMove>, bool) {
        if let Some(entry) = self.workers.get_mut(&worker) {
            entry.adopting = false;
        }
        self.serve_lease_lines()
    }

    /// Runtime leases holding a slot of this worker now.
    #[cfg(test)]
    pub(super) fn leases_on(&self, worker: WorkerId) -> u32 {
        self.workers.get(&worker).map_or(0, |w| w.leases)
    }

    /// How many leases wait in line.
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.lines.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
impl WorkerEntry {
    /// An idle worker of `gpu_class` with `slots` slots that runs nothing, for tests of the
    /// board.
    pub(super) fn idle_for_test(gpu_class: &str, slots: u32, heartbeat: WorkerHeartbeat) -> Self {
        let (link, _) = atelier_actors::worker_link();
        WorkerEntry {
            name: "test".into(),
            device: "cpu".into(),
            models: Vec::new(),
            link,
            running: HashMap::new(),
            slots,
            token_id: None,
            draining: false,
            connected_at: 0,
            gpu_class: gpu_class.into(),
            heartbeat: watch::Sender::new(heartbeat),
            leases: 0,
            away: false,
            adopting: false,
        }
    }
}
