//! Why a lease stopped, as `runtime.stopped {reason}` carries them.

pub const STOPPED_BY_USER: &str = "stopped_by_user";
/// The lease's prepaid time is used up (the payer may still have credits).
pub const PREPAID_TIME_USED: &str = "prepaid_time_used";
/// An admin stopped it (their reason is in the audit log).
pub const STOPPED_BY_ADMIN: &str = "stopped_by_admin";
/// An admin suspended the payer's account.
pub const ACCOUNT_SUSPENDED: &str = "account_suspended";
pub const IDLE: &str = "idle";
pub const WORKER_LOST: &str = "worker_lost";
pub const NO_WORKER: &str = "no_worker";
pub const SESSION_DELETED: &str = "session_deleted";
pub const ACCOUNT_DELETED: &str = "account_deleted";
pub const PAYMENT_REVERSED: &str = "payment_reversed";
pub const SERVER_SHUTDOWN: &str = "server_shutdown";
pub const SERVER_RESTARTED: &str = "server_restarted";
pub const LEASE_DELETED: &str = "lease_deleted";
pub const INTERNAL_ERROR: &str = "internal_error";
/// Jobs interrupted on a node that lost the lease to another node (the lease goes on there).
pub const TAKEN_OVER: &str = "lease_taken_over";
