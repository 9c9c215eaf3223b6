//! Cluster mode: where a new runtime lease finds its slot, as billing sees it. The lease line
//! itself (Redis Streams, one line per GPU class) is `crate::cluster::lease_line`; billing only
//! asks it to place a lease and, when the lease must wait, lets it report the lease's place.
//!
//! A waiting lease is metered by nobody (it is not billed while it waits): the node that takes
//! it from the line claims it in the database at the next epoch and starts its meter there.

use atelier_protocol::ids::{LeaseId, SessionId};
use futures_util::future::BoxFuture;

/// Binds a slot reserved on this node to the lease (before its meter asks for it).
pub type BindSlot = Box<dyn FnOnce(LeaseId) + Send>;

/// Where a new lease goes.
pub enum Placement {
    /// A slot of its class is free here and nobody waits in the line: the lease takes it at
    /// once and is metered here.
    Here(BindSlot),
    /// It joined its class's line; a node with a free slot will take it.
    Queued,
}

/// The cluster's lease lines.
pub trait LeasePlacement: Send + Sync + 'static {
    /// Places a new (waiting) lease of `session`.
    fn place(
        &self,
        lease: LeaseId,
        session: SessionId,
        gpu_class: &str,
    ) -> BoxFuture<'_, Result<Placement, String>>;

    /// This node owns a waiting lease (it started it, or took it over from a silent node): it
    /// tells the session the lease's place in line as it moves (`runtime.queued`).
    fn waiting_here(&self, lease: LeaseId, session: SessionId, gpu_class: &str);

    /// A waiting lease was stopped: it leaves its line (the leases behind it move up).
    fn left_line(&self, lease: LeaseId, gpu_class: &str) -> BoxFuture<'_, ()>;
}
