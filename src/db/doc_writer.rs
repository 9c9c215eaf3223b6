//! The cross-session group commit of session-document appends.
//!
//! Every live session keeps at most one append in flight and gathers what arrives meanwhile into
//! its next one (its own group commit, `atelier_actors::session::durability`). With many small
//! sessions that is still one transaction per session per round — on SQLite, with one writer
//! connection, ten sessions' appends queued one behind the other, each paying for its own
//! `BEGIN`, statements and `COMMIT` (every statement a round trip to SQLite's worker thread).
//!
//! Here one task commits for all of them: it takes every append waiting when it is free, commits
//! them in ONE transaction ([`Db::append_group`]), and only then answers each session — which
//! fans its updates out on that answer, so durability before fan-out holds as before. Appends
//! that arrive while a transaction runs wait for the next one; under load a round carries every
//! busy session, at light load it is a transaction of one, as before.
//!
//! Failure: the whole group failed, and every session in it gets the error (each closes the
//! connections whose updates were in its batch with 1011, as it did for its own failed append) —
//! except for a foreign-key violation, which means that a session was deleted meanwhile: then the
//! batches are appended one by one, so the deleted session learns `SessionNotFound` and the others
//! are stored.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use atelier_actors::store::DocStoreError;
use atelier_protocol::ids::SessionId;
use tokio::sync::{mpsc, oneshot};

use super::{is_fk_violation_of, Db, TxError};

/// Appends waiting for the writer, at most. Each session has at most one append in flight, so
/// this is only reached with more live sessions than that; further appends then wait to queue.
const QUEUE_CAPACITY: usize = 1024;

/// Sessions' appends committed in one transaction, at most (keeps the statement's parameters
/// well under both engines' limits: two per session).
const MAX_GROUP: usize = 256;

/// One session's batch, waiting for the next group commit.
struct Append {
    session: SessionId,
    updates: Vec<Vec<u8>>,
    reply: oneshot::Sender<Result<i64, DocStoreError>>,
}

/// The handle sessions append through.
///
/// The writer task starts with the first append, on that caller's runtime: the session actors'
/// arbiter, so a group commit costs no hop to another thread (on one core, a context switch each
/// way). Should that runtime end, the next append starts a new one.
pub struct DocWriter {
    db: Db,
    appends: Mutex<Option<mpsc::Sender<Append>>>,
}

impl DocWriter {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            appends: Mutex::new(None),
        }
    }

    /// Where appends go: the running writer, or a new one started on the current runtime.
    fn writer(&self) -> mpsc::Sender<Append> {
        let mut appends = self.appends.lock().unwrap_or_else(PoisonError::into_inner);
        match &*appends {
            Some(writer) if !writer.is_closed() => writer.clone(),
            _ => {
                let (writer, queue) = mpsc::channel(QUEUE_CAPACITY);
                tokio::spawn(run(self.db.clone(), queue));
                *appends = Some(writer.clone());
                writer
            }
        }
    }

    /// Appends `updates` to `session`'s log in the next group commit; the `seq` of the last one.
    pub async fn append(
        &self,
        session: SessionId,
        updates: Vec<Vec<u8>>,
    ) -> Result<i64, DocStoreError> {
        let (reply, answer) = oneshot::channel();
        let append = Append {
            session,
            updates,
            reply,
        };
        if self.writer().send(append).await.is_err() {
            return Err(writer_gone());
        }
        answer.await.unwrap_or_else(|_| Err(writer_gone()))
    }
}

fn writer_gone() -> DocStoreError {
    DocStoreError::backend("the document writer has stopped")
}

async fn run(db: Db, mut queue: mpsc::Receiver<Append>) {
    // Appends of a session already in the group being built wait for the next one (a session
    // actor never has two in flight, but the port allows it).
    let mut next: Vec<Append> = Vec::new();
    loop {
        if next.is_empty() && queue.recv_many(&mut next, MAX_GROUP).await == 0 {
            return; // every handle is gone
        }
        while next.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(append) => next.push(append),
                Err(_) => break,
            }
        }
        let mut sessions = BTreeSet::new();
        let (group, later): (Vec<Append>, Vec<Append>) = std::mem::take(&mut next)
            .into_iter()
            .partition(|append| sessions.insert(append.session));
        next = later;
        commit(&db, group).await;
    }
}

/// Commits one group (each session at most once) and answers every append in it.
async fn commit(db: &Db, mut group: Vec<Append>) {
    // Sorted by session: the lock order (see `append_group`).
    group.sort_by_key(|append| append.session);
    let batches: Vec<(SessionId, &[Vec<u8>])> = group
        .iter()
        .map(|append| (append.session, append.updates.as_slice()))
        .collect();
    let result = db.append_group(&batches).await;
    drop(batches);
    match result {
        Ok(lasts) => {
            for (append, last) in group.into_iter().zip(lasts) {
                let _ = append.reply.send(Ok(last));
            }
        }
        Err(error) if error.db_error().is_some_and(is_fk_violation_of) => {
            // A session was deleted meanwhile: find out which, storing the others.
            for append in group {
                let result = db.append_updates(append.session, append.updates).await;
                let _ = append.reply.send(result);
            }
        }
        Err(error) => {
            tracing::error!(%error, sessions = group.len(), "group commit of document updates failed");
            for append in group {
                let _ = append.reply.send(Err(error.clone()));
            }
        }
    }
}
