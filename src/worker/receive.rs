//! The receiving half of one `atelier worker` connection: JSON messages and the binary input
//! frames of `assign`s off the socket, assignments put back together ([`super::assembly`]).
//! The link ([`super::link`]) owns one [`Inbound`] per connection and hands what it makes of
//! each frame on: complete assignments to the host's bounded inbox (waiting for room there is
//! what keeps the socket from being read faster than the host takes), refusals as a failed job.
//! An assignment still waiting for its inputs when its connection ends is lost with it: the
//! server never saw the worker start it, and handles the job as its lost worker's.

use std::time::Instant;

use atelier_protocol::worker::{Assignment, ServerMessage};
use atelier_protocol::worker_frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::assembly::{Assembled, Assembler, Refused, INPUT_TIMEOUT};

/// Largest message the worker takes from the server: an input frame (at most a 32 MiB tensor
/// plus its header), with room to spare; the same cap as the server's for a worker's messages.
pub const MAX_SERVER_MESSAGE_BYTES: usize = 48 * 1024 * 1024;

/// What one frame from the server came to.
#[derive(Debug)]
pub enum Received {
    /// A message for the link or the host (never an `assign`: those are put together first).
    Message(ServerMessage),
    /// An assignment with all of its inputs: for the host.
    Assignment(Box<Assignment>),
    /// An assignment that cannot be put together: its job fails with this reason.
    Refused(Refused),
    /// The server closed the connection.
    Closed(Option<CloseFrame>),
    /// Nothing to act on: an input of an assignment still waiting, a ping, an unreadable
    /// message (logged).
    Nothing,
}

/// The assignments of one connection still waiting for their input frames.
pub struct Inbound {
    assembler: Assembler,
}

impl Default for Inbound {
    fn default() -> Self {
        Inbound {
            assembler: Assembler::new(INPUT_TIMEOUT),
        }
    }
}

impl Inbound {
    /// When the assignment waiting longest for its next input frame gives up.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.assembler.next_deadline()
    }

    /// The assignments whose input frames did not come in time.
    pub fn expire(&mut self) -> Vec<Refused> {
        self.assembler.expire(Instant::now())
    }

    /// Decodes one frame from the server.
    pub fn frame(&mut self, frame: Message) -> Received {
        let assembled = match frame {
            Message::Text(text) => match serde_json::from_str::<ServerMessage>(&text) {
                Ok(ServerMessage::Assign {
                    job_id,
                    session_id,
                    steps,
                    inputs,
                }) => self
                    .assembler
                    .assign(job_id, session_id, steps, inputs, Instant::now()),
                Ok(msg) => return Received::Message(msg),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable message from the server");
                    return Received::Nothing;
                }
            },
            Message::Binary(bytes) => match worker_frame::decode_input(&bytes) {
                Ok(frame) => self.assembler.input(frame, Instant::now()),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable input frame from the server");
                    let job = worker_frame::input_job_id(&bytes);
                    match job
                        .and_then(|job| self.assembler.unreadable(job, format!("input frame: {e}")))
                    {
                        Some(refused) => Assembled::Refused(refused),
                        None => return Received::Nothing,
                    }
                }
            },
            Message::Close(frame) => return Received::Closed(frame),
            _ => return Received::Nothing,
        };
        match assembled {
            Assembled::Complete(assignment) => Received::Assignment(assignment),
            Assembled::Refused(refused) => {
                tracing::warn!(job_id = %refused.job_id, error = %refused.error, "assignment refused");
                Received::Refused(refused)
            }
            Assembled::Waiting => Received::Nothing,
            Assembled::Stray => {
                tracing::warn!("an input frame of no assignment waiting for it: dropped");
                Received::Nothing
            }
        }
    }
}
