//! The receiving half of `atelier worker`'s connection: JSON messages and the binary input frames
//! of `assign`s off the socket, assignments put back together ([`super::assembly`]) and handed to
//! the host loop through its bounded inbox. Waiting for room there is what keeps the socket from
//! being read faster than the host takes (the server's socket then waits too, and closes us as
//! too slow only if that lasts). An assignment that cannot be put together fails its job with a
//! reason, through the host's outbox.

use std::time::Instant;

use atelier_protocol::worker::{ServerMessage, ToWorker, WorkerMessage};
use atelier_protocol::worker_frame;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::assembly::{Assembled, Assembler, Refused, INPUT_TIMEOUT};
use super::host::{HostOutput, Outbox};

/// Largest message the worker takes from the server: an input frame (at most a 32 MiB tensor
/// plus its header), with room to spare; the same cap as the server's for a worker's messages.
pub const MAX_SERVER_MESSAGE_BYTES: usize = 48 * 1024 * 1024;

/// Reads `stream` until it ends or the host is gone.
pub async fn run<S>(mut stream: S, to_host: mpsc::Sender<ToWorker>, outbox: Outbox)
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let mut assembler = Assembler::new(INPUT_TIMEOUT);
    loop {
        let deadline = assembler.next_deadline();
        let overdue = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let frame = tokio::select! {
            frame = stream.next() => frame,
            () = overdue => {
                for refused in assembler.expire(Instant::now()) {
                    fail(&outbox, refused).await;
                }
                continue;
            }
        };
        let assembled = match frame {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                Ok(ServerMessage::Assign {
                    job_id,
                    session_id,
                    steps,
                    inputs,
                }) => assembler.assign(job_id, session_id, steps, inputs, Instant::now()),
                Ok(msg) => {
                    if to_host.send(ToWorker::Message(msg)).await.is_err() {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable message from the server");
                    continue;
                }
            },
            Some(Ok(Message::Binary(bytes))) => match worker_frame::decode_input(&bytes) {
                Ok(frame) => assembler.input(frame, Instant::now()),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable input frame from the server");
                    let job = worker_frame::input_job_id(&bytes);
                    match job.and_then(|job| assembler.unreadable(job, format!("input frame: {e}")))
                    {
                        Some(refused) => Assembled::Refused(refused),
                        None => continue,
                    }
                }
            },
            Some(Ok(Message::Close(reason))) => {
                tracing::warn!(?reason, "the server closed the connection");
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "connection lost");
                break;
            }
            None => break,
        };
        match assembled {
            Assembled::Complete(assignment) => {
                if to_host.send(ToWorker::Assign(assignment)).await.is_err() {
                    break;
                }
            }
            Assembled::Refused(refused) => fail(&outbox, refused).await,
            Assembled::Waiting => {}
            Assembled::Stray => {
                tracing::warn!("an input frame of no assignment waiting for it: dropped")
            }
        }
    }
}

async fn fail(outbox: &Outbox, Refused { job_id, error }: Refused) {
    tracing::warn!(%job_id, %error, "assignment refused");
    let failed = WorkerMessage::Failed { job_id, error };
    let _ = outbox.send(HostOutput::Message(failed)).await;
}
