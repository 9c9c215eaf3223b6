//! Studio events: the JSON messages carried by [`Frame::Event`] (type 100).
//!
//! Only connections that asked for them (`?events=1`) receive events, so stock Yjs clients never
//! see types 100/101. Each event is an object tagged by `type`, e.g.
//! `{"type":"job.progress","job_id":"…","node_id":"sampler","step":3,"total":20}`.
//! Credit amounts are integer millicredits; durations are milliseconds.

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, ConnectionId, JobId, LeaseId, MediaId, SessionId, WorkerId};
use crate::role::Role;
use crate::ysync::Frame;

/// One participant as shown to the others (presence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// Pairs this participant's `participant.joined` with its `participant.left`.
    pub connection_id: ConnectionId,
    /// Absent for share-link viewers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<AccountId>,
    pub name: String,
    pub role: Role,
}

/// Everything that can be announced to a session's participants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum StudioEvent {
    /// First event on every events-enabled connection.
    #[serde(rename = "session.hello")]
    SessionHello {
        /// The receiving connection's role.
        role: Role,
        session_id: SessionId,
        /// Current state of every unfinished job, as the job system reports it.
        jobs: Vec<serde_json::Value>,
        /// The receiving connection's own id (it also appears in `participants`).
        connection_id: ConnectionId,
        /// Who else is connected right now.
        #[serde(default)]
        participants: Vec<ParticipantInfo>,
    },
    #[serde(rename = "job.queued")]
    JobQueued { job_id: JobId, position: u32 },
    #[serde(rename = "job.started")]
    JobStarted {
        job_id: JobId,
        worker_id: WorkerId,
        /// e.g. `cuda:0` or `cpu`.
        device: String,
    },
    #[serde(rename = "job.progress")]
    JobProgress {
        job_id: JobId,
        node_id: String,
        step: u32,
        total: u32,
    },
    #[serde(rename = "job.node_done")]
    JobNodeDone {
        job_id: JobId,
        node_id: String,
        outputs: Vec<MediaId>,
        /// The node's time on the worker, and the part of it ONNX Runtime ran (milliseconds).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker_ms: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        inference_ms: Option<f64>,
    },
    /// A node's stored result was reused: no worker time.
    #[serde(rename = "job.node_cached")]
    JobNodeCached {
        job_id: JobId,
        node_id: String,
        outputs: Vec<MediaId>,
    },
    #[serde(rename = "job.succeeded")]
    JobSucceeded {
        job_id: JobId,
        outputs: Vec<MediaId>,
    },
    #[serde(rename = "job.failed")]
    JobFailed { job_id: JobId, error: String },
    /// The job's worker was lost before the job produced anything: it is back at the head of
    /// the queue (once; a second loss fails it).
    #[serde(rename = "job.requeued")]
    JobRequeued { job_id: JobId, reason: String },
    #[serde(rename = "job.cancelled")]
    JobCancelled {
        job_id: JobId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Every worker slot of the lease's class is taken: the lease waits in its class's line,
    /// `position` 1 being next. Sent again whenever the position moves; unbilled while waiting.
    #[serde(rename = "runtime.queued")]
    RuntimeQueued {
        lease_id: LeaseId,
        gpu_class: String,
        position: u32,
    },
    #[serde(rename = "runtime.started")]
    RuntimeStarted {
        lease_id: LeaseId,
        gpu_class: String,
    },
    /// Every meter interval. Everyone sees that a runtime runs, its class and who pays; only
    /// the payer's own connections get `balance` (see [`StudioEvent::private_to`]).
    #[serde(rename = "runtime.meter")]
    RuntimeMeter {
        lease_id: LeaseId,
        gpu_class: String,
        used_ms: u64,
        charged: i64,
        /// Prepaid time left.
        remaining_ms: u64,
        /// The account paying for the runtime, and its name.
        payer_id: AccountId,
        payer_name: String,
        /// The payer's balance (millicredits); stripped for everyone else.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        balance: Option<i64>,
    },
    /// The lease's prepaid time runs out in `remaining_ms` (sent once per stretch of prepaid
    /// time, at the server's warning lead time); the payer may extend it.
    #[serde(rename = "runtime.low_balance")]
    RuntimeLowBalance {
        lease_id: LeaseId,
        remaining_ms: u64,
    },
    /// The payer added prepaid time; the running job goes on.
    #[serde(rename = "runtime.extended")]
    RuntimeExtended {
        lease_id: LeaseId,
        prepaid_ms: u64,
        remaining_ms: u64,
    },
    #[serde(rename = "runtime.stopped")]
    RuntimeStopped {
        lease_id: LeaseId,
        reason: String,
        used_ms: u64,
        charged: i64,
        refunded: i64,
    },
    /// Sent to a connection right before the server closes it on purpose (revoked, removed).
    #[serde(rename = "session.kicked")]
    SessionKicked { reason: String },
    #[serde(rename = "participant.joined")]
    ParticipantJoined(ParticipantInfo),
    #[serde(rename = "participant.left")]
    ParticipantLeft { connection_id: ConnectionId },
    /// The receiving connection's role changed (a downgrade to viewer makes it read-only).
    #[serde(rename = "role.changed")]
    RoleChanged { role: Role },
}

impl StudioEvent {
    /// The `type` tag, e.g. `job.progress` (for logs and metrics labels).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SessionHello { .. } => "session.hello",
            Self::JobQueued { .. } => "job.queued",
            Self::JobStarted { .. } => "job.started",
            Self::JobProgress { .. } => "job.progress",
            Self::JobNodeDone { .. } => "job.node_done",
            Self::JobNodeCached { .. } => "job.node_cached",
            Self::JobSucceeded { .. } => "job.succeeded",
            Self::JobFailed { .. } => "job.failed",
            Self::JobRequeued { .. } => "job.requeued",
            Self::JobCancelled { .. } => "job.cancelled",
            Self::RuntimeQueued { .. } => "runtime.queued",
            Self::RuntimeStarted { .. } => "runtime.started",
            Self::RuntimeMeter { .. } => "runtime.meter",
            Self::RuntimeLowBalance { .. } => "runtime.low_balance",
            Self::RuntimeExtended { .. } => "runtime.extended",
            Self::RuntimeStopped { .. } => "runtime.stopped",
            Self::SessionKicked { .. } => "session.kicked",
            Self::ParticipantJoined(_) => "participant.joined",
            Self::ParticipantLeft { .. } => "participant.left",
            Self::RoleChanged { .. } => "role.changed",
        }
    }

    /// For an event with a part only one account may see (the payer's balance in
    /// `runtime.meter`): that account, and the event as everyone else gets it.
    pub fn private_to(&self) -> Option<(AccountId, StudioEvent)> {
        match self {
            Self::RuntimeMeter {
                payer_id,
                balance: Some(_),
                ..
            } => {
                let mut public = self.clone();
                if let Self::RuntimeMeter { balance, .. } = &mut public {
                    *balance = None;
                }
                Some((*payer_id, public))
            }
            _ => None,
        }
    }

    /// The event as a type-100 frame.
    pub fn to_frame(&self) -> Result<Frame, serde_json::Error> {
        serde_json::to_string(self).map(Frame::Event)
    }

    /// Parses the JSON of a type-100 frame.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn events_use_the_documented_shapes() {
        let job_id = JobId::new_random();
        let lease_id = LeaseId::new_random();
        let cases = [
            (
                StudioEvent::JobProgress {
                    job_id,
                    node_id: "sampler".into(),
                    step: 3,
                    total: 20,
                },
                json!({"type": "job.progress", "job_id": job_id, "node_id": "sampler", "step": 3, "total": 20}),
            ),
            (
                StudioEvent::JobCancelled {
                    job_id,
                    reason: None,
                },
                json!({"type": "job.cancelled", "job_id": job_id}),
            ),
            (
                StudioEvent::RuntimeStopped {
                    lease_id,
                    reason: "prepaid_time_used".into(),
                    used_ms: 61_000,
                    charged: 1017,
                    refunded: 8983,
                },
                json!({"type": "runtime.stopped", "lease_id": lease_id, "reason": "prepaid_time_used",
                       "used_ms": 61000, "charged": 1017, "refunded": 8983}),
            ),
            (
                StudioEvent::ParticipantJoined(ParticipantInfo {
                    connection_id: ConnectionId(7),
                    account_id: None,
                    name: "guest".into(),
                    role: Role::Viewer,
                }),
                json!({"type": "participant.joined", "connection_id": 7, "name": "guest", "role": "viewer"}),
            ),
            (
                StudioEvent::RoleChanged { role: Role::Viewer },
                json!({"type": "role.changed", "role": "viewer"}),
            ),
        ];
        for (event, expected) in cases {
            assert_eq!(
                serde_json::to_value(&event).unwrap(),
                expected,
                "{}",
                event.kind()
            );
            assert_eq!(
                serde_json::from_value::<StudioEvent>(expected).unwrap(),
                event
            );
            let Frame::Event(json) = event.to_frame().unwrap() else {
                panic!("not an event frame")
            };
            assert_eq!(StudioEvent::from_json(&json).unwrap(), event);
        }
    }

    #[test]
    fn hello_lists_jobs() {
        let session_id = SessionId::new_random();
        let hello = StudioEvent::SessionHello {
            role: Role::Editor,
            session_id,
            jobs: vec![json!({"job_id": "x", "state": "running"})],
            connection_id: ConnectionId(1),
            participants: vec![],
        };
        let value = serde_json::to_value(&hello).unwrap();
        assert_eq!(value["type"], "session.hello");
        assert_eq!(value["role"], "editor");
        assert_eq!(value["session_id"], json!(session_id));
        assert_eq!(value["jobs"][0]["state"], "running");
    }
}
