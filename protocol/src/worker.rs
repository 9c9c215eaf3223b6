//! The worker protocol: JSON text frames on `GET /api/v1/workers/ws` between the server and a
//! worker host, except for images and tensors, which are binary frames
//! ([`crate::worker_frame`]) both ways: a worker's previews and node outputs, and the inputs of
//! an `assign` (uploaded images, cached tensors), which follow it, one frame each.
//!
//! A worker connects with `Authorization: Bearer <worker token>`, sends [`WorkerMessage::Hello`]
//! (with its `slots`: how many runtime leases it serves at once, one job per lease at a time),
//! gets [`ServerMessage::Welcome`], then heartbeats and takes jobs. Each job is one
//! [`ServerMessage::Assign`] followed by its inputs' binary frames; the worker answers with
//! progress, previews and node outputs (binary frames), and ends it with exactly one of
//! `Succeeded`, `Failed` or `Cancelled`.
//!
//! A worker whose connection dropped reconnects with a hello that also names its previous
//! connection (`previous_worker_id`), the jobs it still runs and the leases holding its slots
//! (as last told by [`ServerMessage::Leases`]); the server adopts them, then welcomes it.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ids::{JobId, LeaseId, SessionId, WorkerId};

/// Most slots one worker may announce (the server caps `hello.slots` here).
pub const MAX_SLOTS: u32 = 64;

/// A compute device a worker offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// e.g. `cuda:0` or `cpu`.
    pub name: String,
    /// e.g. `NVIDIA A100-SXM4-80GB`, or the CPU model.
    pub description: String,
    /// Device memory in MiB, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// ONNX Runtime execution provider: `cuda` or `cpu`.
    pub execution_provider: String,
}

/// One model run of a job: a node of the session graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStep {
    pub node_id: String,
    /// The model (node type) to run.
    pub model: String,
    /// Parameters as validated by the server (defaults filled in).
    pub params: serde_json::Map<String, serde_json::Value>,
    /// The noise seed (recorded for every node; only random nodes use it).
    pub seed: u64,
    /// Where each input port's tensor comes from: an earlier step of the job, or a tensor the
    /// server provides with the assignment (a cached node's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, PortRef>,
    /// Content address of this node's result: type, model fingerprint, parameters, seed (random
    /// nodes) and the keys of what feeds it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cache_key: String,
    /// The server had the result: the worker does not run it (it is never sent one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

/// An output port of a node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRef {
    pub node_id: String,
    pub port: String,
}

/// A tensor the server hands the worker with an assignment: a cached node's output that a step
/// of the job consumes. `data` is the tensor's bytes (see the server's `inference::tensor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvidedTensor {
    pub node_id: String,
    pub port: String,
    pub data: Bytes,
}

/// An uploaded image a step's media parameter names, with its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaBytes {
    pub media_id: String,
    pub data: Bytes,
}

/// An input an `assign` names: its bytes follow the `assign` on the socket as one binary input
/// frame ([`crate::worker_frame::InputFrame`]) of exactly `bytes` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputRef {
    /// An uploaded image ([`MediaBytes`]).
    Media { media_id: String, bytes: u64 },
    /// A cached node's output tensor ([`ProvidedTensor`]).
    Tensor {
        node_id: String,
        port: String,
        bytes: u64,
    },
}

/// One job as the server assigns it, its inputs' bytes included: what the job system hands a
/// worker's link. Over a socket it travels as an `assign` text frame naming the inputs
/// ([`Assignment::message`]) followed by one binary input frame per input; the in-process worker
/// gets it as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub job_id: JobId,
    pub session_id: SessionId,
    /// The steps to run, in order (cached nodes are not among them).
    pub steps: Vec<JobStep>,
    pub provided: Vec<ProvidedTensor>,
    pub media: Vec<MediaBytes>,
}

impl Assignment {
    /// The inputs, in the order their frames follow the `assign`: media, then tensors.
    pub fn input_refs(&self) -> Vec<InputRef> {
        let media = self.media.iter().map(|m| InputRef::Media {
            media_id: m.media_id.clone(),
            bytes: m.data.len() as u64,
        });
        let tensors = self.provided.iter().map(|t| InputRef::Tensor {
            node_id: t.node_id.clone(),
            port: t.port.clone(),
            bytes: t.data.len() as u64,
        });
        media.chain(tensors).collect()
    }

    /// The `assign` text message: the steps, and the inputs by name and size.
    pub fn message(&self) -> ServerMessage {
        ServerMessage::Assign {
            job_id: self.job_id,
            session_id: self.session_id,
            steps: self.steps.clone(),
            inputs: self.input_refs(),
        }
    }

    /// Bytes of input the assignment carries.
    pub fn input_bytes(&self) -> usize {
        let media: usize = self.media.iter().map(|m| m.data.len()).sum();
        let tensors: usize = self.provided.iter().map(|t| t.data.len()).sum();
        media + tensors
    }
}

/// What the job system sends a worker over its link: a message, or an assignment with its inputs
/// (encoded as an `assign` and its input frames on a socket).
#[derive(Debug, Clone, PartialEq)]
pub enum ToWorker {
    Message(ServerMessage),
    Assign(Box<Assignment>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    Hello {
        name: String,
        version: String,
        devices: Vec<Device>,
        /// Models this worker can run.
        models: Vec<String>,
        /// The GPU class it is leased as (a class of the server's price table). Absent: its
        /// first device's execution provider (`cpu`, `cuda`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gpu_class: Option<String>,
        /// How many runtime leases it can serve at once, each holding one slot exclusively
        /// (added with exclusive leases; a worker that does not say offers one per device).
        /// The server caps it at 64.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slots: Option<u32>,
        /// A worker reconnecting after its connection dropped: the id the server gave it last
        /// time (its `welcome`). The server adopts only leases and jobs recorded on that id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_worker_id: Option<WorkerId>,
        /// Jobs it still runs (or whose result it has not delivered yet): the server re-attaches
        /// them, or answers `cancel` for those it cannot continue.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        running_jobs: Vec<JobId>,
        /// The runtime leases holding its slots (as last told by [`ServerMessage::Leases`]): the
        /// server claims each at a new epoch and meters it from now.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        leases: Vec<LeaseId>,
    },
    Heartbeat,
    /// A denoising step of a node finished.
    Progress {
        job_id: JobId,
        node_id: String,
        step: u32,
        total: u32,
    },
    Succeeded {
        job_id: JobId,
    },
    Failed {
        job_id: JobId,
        error: String,
    },
    Cancelled {
        job_id: JobId,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome {
        worker_id: WorkerId,
        /// Send a heartbeat at least this often.
        heartbeat_interval_ms: u64,
    },
    Assign {
        job_id: JobId,
        session_id: SessionId,
        /// The steps to run, in order (cached nodes are not among them).
        steps: Vec<JobStep>,
        /// The inputs whose binary frames follow this message, in this order (uploaded images,
        /// then cached tensors). The job starts once all of them arrived.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        inputs: Vec<InputRef>,
    },
    Cancel {
        job_id: JobId,
    },
    /// The server refuses this worker (e.g. a hello it cannot accept); the socket closes next.
    Refused {
        reason: String,
    },
    /// The runtime leases holding this worker's slots now (sent whenever they change): what a
    /// reconnecting worker re-announces in its hello.
    Leases {
        lease_ids: Vec<LeaseId>,
    },
}

impl WorkerMessage {
    /// The job a message is about, if any.
    pub fn job_id(&self) -> Option<JobId> {
        match self {
            Self::Hello { .. } | Self::Heartbeat => None,
            Self::Progress { job_id, .. }
            | Self::Succeeded { job_id }
            | Self::Failed { job_id, .. }
            | Self::Cancelled { job_id } => Some(*job_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let msg = WorkerMessage::Progress {
            job_id: JobId::new_random(),
            node_id: "n1".into(),
            step: 2,
            total: 4,
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert!(json.contains("\"type\":\"progress\""));
        assert_eq!(serde_json::from_str::<WorkerMessage>(&json).unwrap(), msg);
        assert!(serde_json::from_str::<WorkerMessage>("{\"type\":\"nope\"}").is_err());
    }

    #[test]
    fn a_hello_without_the_reconnect_fields_still_parses() {
        let old = r#"{"type":"hello","name":"w","version":"0","devices":[],"models":[]}"#;
        let WorkerMessage::Hello {
            previous_worker_id,
            running_jobs,
            leases,
            ..
        } = serde_json::from_str::<WorkerMessage>(old).unwrap()
        else {
            panic!("not a hello");
        };
        assert!(previous_worker_id.is_none() && running_jobs.is_empty() && leases.is_empty());
    }
}
