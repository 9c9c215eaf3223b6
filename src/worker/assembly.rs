//! A remote worker puts its assignments back together: an `assign` names its inputs (uploaded
//! images, cached tensors) and their sizes, and their bytes follow as binary input frames
//! (`atelier_protocol::worker_frame`). Sans-IO: the receive side ([`super::receive`]) feeds it
//! messages, frames and the time.
//!
//! Bounded, whatever the server sends: an assignment may name at most [`MAX_INPUTS`] inputs of at
//! most [`MAX_ASSIGNMENT_INPUT_BYTES`] in all (refused before a byte arrives), each frame must
//! be exactly the size its assign declared, at most [`MAX_PENDING`] assignments wait for their
//! inputs at once, and one that gets no frame for [`INPUT_TIMEOUT`] is given up. Each violation
//! fails that job with a reason (the host goes on).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use atelier_protocol::ids::{JobId, SessionId};
use atelier_protocol::worker::{
    Assignment, InputRef, JobStep, MediaBytes, ProvidedTensor, MAX_SLOTS,
};
use atelier_protocol::worker_frame::{InputFrame, InputKey};

/// Input bytes one assignment may bring: uploaded images are at most 8 MiB each and a cached
/// tensor at most 32 MiB (the frame limits), so a job reading a few cached results and images
/// fits, and a worker never holds more than this per slot before it runs anything.
pub const MAX_ASSIGNMENT_INPUT_BYTES: u64 = 128 * 1024 * 1024;
/// Inputs one assignment may name (a graph's cached sources and images; far more than a
/// studio graph has).
pub const MAX_INPUTS: usize = 256;
/// Assignments waiting for their inputs at once: the server sends at most one per slot.
pub const MAX_PENDING: usize = MAX_SLOTS as usize;
/// How long an assignment waits for its next input frame. The frames follow the assign at once
/// on the same socket; 30 s is 128 MiB at about 35 Mbit/s.
pub const INPUT_TIMEOUT: Duration = Duration::from_secs(30);

/// A job that cannot run: what to tell the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub job_id: JobId,
    pub error: String,
}

/// What a message or frame made of its assignment.
#[derive(Debug, PartialEq)]
pub enum Assembled {
    /// Every input is there: run it.
    Complete(Box<Assignment>),
    /// More inputs to come.
    Waiting,
    /// The job fails with this reason.
    Refused(Refused),
    /// A frame of no assignment waiting (one given up a moment ago): dropped.
    Stray,
}

struct Pending {
    session_id: SessionId,
    steps: Vec<JobStep>,
    /// Inputs still to come, with their declared sizes.
    expected: HashMap<InputKey, u64>,
    media: Vec<MediaBytes>,
    provided: Vec<ProvidedTensor>,
    deadline: Instant,
}

/// The assignments waiting for their inputs.
pub struct Assembler {
    pending: HashMap<JobId, Pending>,
    timeout: Duration,
}

fn key_of(input: &InputRef) -> (InputKey, u64) {
    match input {
        InputRef::Media { media_id, bytes } => (
            InputKey::Media {
                media_id: media_id.clone(),
            },
            *bytes,
        ),
        InputRef::Tensor {
            node_id,
            port,
            bytes,
        } => (
            InputKey::Tensor {
                node_id: node_id.clone(),
                port: port.clone(),
            },
            *bytes,
        ),
    }
}

impl Assembler {
    pub fn new(timeout: Duration) -> Self {
        Assembler {
            pending: HashMap::new(),
            timeout,
        }
    }

    /// An `assign`: complete at once when it names no input, else waiting for its frames.
    pub fn assign(
        &mut self,
        job_id: JobId,
        session_id: SessionId,
        steps: Vec<JobStep>,
        inputs: Vec<InputRef>,
        now: Instant,
    ) -> Assembled {
        let refuse = |error: String| Assembled::Refused(Refused { job_id, error });
        if inputs.is_empty() {
            return Assembled::Complete(Box::new(Assignment {
                job_id,
                session_id,
                steps,
                provided: Vec::new(),
                media: Vec::new(),
            }));
        }
        if self.pending.contains_key(&job_id) {
            // The first one fails too: neither can be told apart from the other's frames.
            self.pending.remove(&job_id);
            return refuse("the job was assigned twice".into());
        }
        if self.pending.len() >= MAX_PENDING {
            return refuse(format!(
                "more than {MAX_PENDING} assignments are waiting for their inputs"
            ));
        }
        if inputs.len() > MAX_INPUTS {
            return refuse(format!(
                "the job names {} inputs; a worker takes at most {MAX_INPUTS}",
                inputs.len()
            ));
        }
        let mut expected = HashMap::with_capacity(inputs.len());
        let mut total: u64 = 0;
        for input in &inputs {
            let (key, bytes) = key_of(input);
            total = total.saturating_add(bytes);
            if expected.insert(key, bytes).is_some() {
                return refuse("the job names an input twice".into());
            }
        }
        if total > MAX_ASSIGNMENT_INPUT_BYTES {
            return refuse(format!(
                "the job's inputs are {total} bytes; a worker takes at most \
                 {MAX_ASSIGNMENT_INPUT_BYTES} bytes per job"
            ));
        }
        self.pending.insert(
            job_id,
            Pending {
                session_id,
                steps,
                expected,
                media: Vec::new(),
                provided: Vec::new(),
                deadline: now + self.timeout,
            },
        );
        Assembled::Waiting
    }

    /// An input frame.
    pub fn input(&mut self, frame: InputFrame, now: Instant) -> Assembled {
        let job_id = frame.job_id;
        let Some(pending) = self.pending.get_mut(&job_id) else {
            return Assembled::Stray;
        };
        let refused = match pending.expected.remove(&frame.key) {
            None => Some(format!("an input the assign did not name: {:?}", frame.key)),
            Some(declared) if declared != frame.data.len() as u64 => Some(format!(
                "input {:?} is {} bytes; its assign said {declared}",
                frame.key,
                frame.data.len()
            )),
            Some(_) => None,
        };
        if let Some(error) = refused {
            self.pending.remove(&job_id);
            return Assembled::Refused(Refused { job_id, error });
        }
        match frame.key {
            InputKey::Media { media_id } => pending.media.push(MediaBytes {
                media_id,
                data: frame.data,
            }),
            InputKey::Tensor { node_id, port } => pending.provided.push(ProvidedTensor {
                node_id,
                port,
                data: frame.data,
            }),
        }
        pending.deadline = now + self.timeout;
        if !pending.expected.is_empty() {
            return Assembled::Waiting;
        }
        let Some(done) = self.pending.remove(&job_id) else {
            return Assembled::Stray;
        };
        Assembled::Complete(Box::new(Assignment {
            job_id,
            session_id: done.session_id,
            steps: done.steps,
            provided: done.provided,
            media: done.media,
        }))
    }

    /// A frame that did not decode but names a job: that job fails.
    pub fn unreadable(&mut self, job_id: JobId, error: String) -> Option<Refused> {
        self.pending
            .remove(&job_id)
            .map(|_| Refused { job_id, error })
    }

    /// The assignments whose next frame is overdue, given up.
    pub fn expire(&mut self, now: Instant) -> Vec<Refused> {
        let overdue: BTreeMap<JobId, usize> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(job, p)| (*job, p.expected.len()))
            .collect();
        overdue
            .into_iter()
            .map(|(job_id, missing)| {
                self.pending.remove(&job_id);
                Refused {
                    job_id,
                    error: format!(
                        "{missing} input(s) of the job did not arrive within {} s",
                        self.timeout.as_secs()
                    ),
                }
            })
            .collect()
    }

    /// When the next assignment is overdue, if any waits.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atelier_protocol::worker_frame::Bytes;

    fn media_ref(id: &str, bytes: u64) -> InputRef {
        InputRef::Media {
            media_id: id.into(),
            bytes,
        }
    }

    fn media_frame(job_id: JobId, id: &str, len: usize) -> InputFrame {
        InputFrame {
            job_id,
            key: InputKey::Media {
                media_id: id.into(),
            },
            data: Bytes::from(vec![1u8; len]),
        }
    }

    fn tensor_frame(job_id: JobId, len: usize) -> InputFrame {
        InputFrame {
            job_id,
            key: InputKey::Tensor {
                node_id: "n".into(),
                port: "p".into(),
            },
            data: Bytes::from(vec![2u8; len]),
        }
    }

    fn assign(asm: &mut Assembler, job: JobId, inputs: Vec<InputRef>, now: Instant) -> Assembled {
        asm.assign(job, SessionId::new_random(), Vec::new(), inputs, now)
    }

    #[test]
    fn an_assignment_completes_when_its_last_input_arrives() {
        let mut asm = Assembler::new(INPUT_TIMEOUT);
        let now = Instant::now();
        let job = JobId::new_random();
        let tensor = InputRef::Tensor {
            node_id: "n".into(),
            port: "p".into(),
            bytes: 5,
        };
        assert_eq!(
            assign(&mut asm, job, vec![media_ref("a", 3), tensor], now),
            Assembled::Waiting
        );
        assert_eq!(asm.input(tensor_frame(job, 5), now), Assembled::Waiting);
        let Assembled::Complete(done) = asm.input(media_frame(job, "a", 3), now) else {
            panic!("complete");
        };
        assert_eq!(done.media[0].data.as_ref(), &[1, 1, 1]);
        assert_eq!(done.provided[0].data.len(), 5);
        assert!(asm.next_deadline().is_none());
        // Without inputs: complete at once.
        assert!(matches!(
            assign(&mut asm, JobId::new_random(), Vec::new(), now),
            Assembled::Complete(_)
        ));
    }

    #[test]
    fn over_budget_duplicated_or_missized_inputs_fail_the_job() {
        let mut asm = Assembler::new(INPUT_TIMEOUT);
        let now = Instant::now();
        let job = JobId::new_random();
        let half = MAX_ASSIGNMENT_INPUT_BYTES / 2 + 1;
        let Assembled::Refused(r) = assign(
            &mut asm,
            job,
            vec![media_ref("a", half), media_ref("b", half)],
            now,
        ) else {
            panic!("over budget");
        };
        assert!(r.error.contains("at most"), "{}", r.error);
        assert!(matches!(
            assign(
                &mut asm,
                job,
                vec![media_ref("a", 1), media_ref("a", 1)],
                now
            ),
            Assembled::Refused(_)
        ));
        let many = (0..=MAX_INPUTS)
            .map(|i| media_ref(&i.to_string(), 1))
            .collect();
        assert!(matches!(
            assign(&mut asm, job, many, now),
            Assembled::Refused(_)
        ));
        // A frame of another size than declared, and one the assign did not name.
        assign(
            &mut asm,
            job,
            vec![media_ref("a", 3), media_ref("b", 3)],
            now,
        );
        let Assembled::Refused(r) = asm.input(media_frame(job, "a", 4), now) else {
            panic!("missized");
        };
        assert!(r.error.contains("its assign said 3"), "{}", r.error);
        assert_eq!(asm.input(media_frame(job, "b", 3), now), Assembled::Stray);
        assign(&mut asm, job, vec![media_ref("a", 3)], now);
        assert!(matches!(
            asm.input(tensor_frame(job, 3), now),
            Assembled::Refused(_)
        ));
        // Assigned twice while waiting: both fail.
        assign(&mut asm, job, vec![media_ref("a", 3)], now);
        assert!(matches!(
            assign(&mut asm, job, vec![media_ref("a", 3)], now),
            Assembled::Refused(_)
        ));
        assert_eq!(asm.input(media_frame(job, "a", 3), now), Assembled::Stray);
    }

    #[test]
    fn inputs_that_never_come_fail_the_job_after_the_timeout() {
        let timeout = Duration::from_secs(30);
        let mut asm = Assembler::new(timeout);
        let start = Instant::now();
        let (slow, fine) = (JobId::new_random(), JobId::new_random());
        assign(
            &mut asm,
            slow,
            vec![media_ref("a", 3), media_ref("b", 3)],
            start,
        );
        assign(
            &mut asm,
            fine,
            vec![media_ref("c", 3), media_ref("d", 3)],
            start,
        );
        assert_eq!(asm.next_deadline(), Some(start + timeout));
        // A frame restarts its job's clock.
        let later = start + Duration::from_secs(20);
        asm.input(media_frame(fine, "c", 3), later);
        assert!(asm.expire(start + Duration::from_secs(29)).is_empty());
        let expired = asm.expire(start + timeout);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].job_id, slow);
        assert!(
            expired[0].error.contains("2 input(s)"),
            "{}",
            expired[0].error
        );
        assert_eq!(asm.next_deadline(), Some(later + timeout));
        assert!(matches!(
            asm.input(media_frame(fine, "d", 3), later),
            Assembled::Complete(_)
        ));
    }

    #[test]
    fn at_most_max_pending_assignments_wait() {
        let mut asm = Assembler::new(INPUT_TIMEOUT);
        let now = Instant::now();
        for _ in 0..MAX_PENDING {
            assert_eq!(
                assign(&mut asm, JobId::new_random(), vec![media_ref("a", 1)], now),
                Assembled::Waiting
            );
        }
        assert!(matches!(
            assign(&mut asm, JobId::new_random(), vec![media_ref("a", 1)], now),
            Assembled::Refused(_)
        ));
        let job = JobId::new_random();
        assert_eq!(asm.unreadable(job, "x".into()), None);
    }
}
