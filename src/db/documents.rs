//! Session documents on SQLite/PostgreSQL: the `DocStore` port of the live-session actors.
//!
//! Appends are group commits: one transaction per batch, sequence numbers taken from the
//! document's `last_seq` (whose row update also serialises concurrent appends to one session).

use atelier_actors::store::{BoxFuture, DocStore, DocStoreError, StoredDoc, StoredUpdate};
use atelier_protocol::ids::SessionId;

use super::columns::UuidText;
use super::with_retrying_tx;
use super::{Db, Dialect};

/// Rows per INSERT statement; keeps the parameter count well under both engines' limits.
const INSERT_CHUNK: usize = 200;

fn backend(e: sqlx::Error) -> DocStoreError {
    DocStoreError::backend(e)
}

fn is_fk_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

impl Db {
    /// The snapshot and the tail after it, read in one transaction that sees one state of the
    /// database: a compaction (new snapshot, tail deleted) or an append committing between the two
    /// reads would otherwise hand back an old snapshot without the updates it did not cover. On
    /// PostgreSQL the transaction is `REPEATABLE READ` (one snapshot for both statements); on
    /// SQLite a read transaction in WAL mode sees the database as of its first read.
    pub async fn load_document(&self, session: SessionId) -> Result<StoredDoc, DocStoreError> {
        let sid = &session.to_string();
        let mut tx = self.pool().begin().await.map_err(backend)?;
        if self.dialect() == Dialect::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        let head: Option<(Option<Vec<u8>>, i64)> =
            sqlx::query_as("SELECT snapshot, snapshot_seq FROM documents WHERE session_id = $1")
                .bind(sid)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        let (snapshot, snapshot_seq) = head.unwrap_or((None, 0));
        let updates = fetch_updates(&mut tx, sid, snapshot_seq).await?;
        tx.commit().await.map_err(backend)?;
        Ok(StoredDoc {
            snapshot,
            updates,
            snapshot_seq,
        })
    }

    /// The updates after `after_seq`, or `None` if a snapshot already covers some of them.
    pub async fn updates_since(
        &self,
        session: SessionId,
        after_seq: i64,
    ) -> Result<Option<Vec<StoredUpdate>>, DocStoreError> {
        let sid = &session.to_string();
        let mut tx = self.pool().begin().await.map_err(backend)?;
        if self.dialect() == Dialect::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        let snapshot_seq: i64 =
            sqlx::query_scalar("SELECT snapshot_seq FROM documents WHERE session_id = $1")
                .bind(sid)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?
                .unwrap_or(0);
        if snapshot_seq > after_seq {
            return Ok(None);
        }
        let updates = fetch_updates(&mut tx, sid, after_seq).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(updates))
    }

    /// The last `seq` of each session's log (sessions without a document row are left out).
    pub async fn document_heads(
        &self,
        sessions: &[SessionId],
    ) -> Result<Vec<(SessionId, i64)>, DocStoreError> {
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=sessions.len()).map(|i| format!("${i}")).collect();
        // Only placeholders are formatted in; every value is bound.
        let sql = format!(
            "SELECT session_id, last_seq FROM documents WHERE session_id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query_as::<_, (UuidText, i64)>(sqlx::AssertSqlSafe(sql));
        for session in sessions {
            query = query.bind(session.to_string());
        }
        let rows = query.fetch_all(self.pool()).await.map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|(id, head)| (SessionId::from(id), head))
            .collect())
    }

    pub async fn append_updates(
        &self,
        session: SessionId,
        updates: Vec<Vec<u8>>,
    ) -> Result<i64, DocStoreError> {
        let sid = session.to_string();
        let n = i64::try_from(updates.len()).map_err(|e| DocStoreError::backend(e.to_string()))?;
        let (sid, updates) = (&sid, &updates);
        with_retrying_tx!(self, "append updates", pool = self.doc_writer(), |tx| {
            let head: Result<i64, _> = sqlx::query_scalar(
                "INSERT INTO documents (session_id, last_seq) VALUES ($1, $2) \
                 ON CONFLICT (session_id) DO UPDATE SET last_seq = documents.last_seq + $2 \
                 RETURNING last_seq",
            )
            .bind(sid)
            .bind(n)
            .fetch_one(&mut *tx)
            .await;
            let last: i64 = match head {
                Ok(last) => last,
                Err(e) if is_fk_violation(&e) => {
                    return Err(DocStoreError::SessionNotFound(session))
                }
                Err(e) => return Err(backend(e)),
            };
            let mut seq = last - n;
            for chunk in updates.chunks(INSERT_CHUNK) {
                let mut sql =
                    String::from("INSERT INTO doc_updates (session_id, seq, data) VALUES ");
                for i in 0..chunk.len() {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    let p = i * 3;
                    sql.push_str(&format!("(${}, ${}, ${})", p + 1, p + 2, p + 3));
                }
                // Only placeholders are formatted in; every value is bound.
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for update in chunk {
                    seq += 1;
                    query = query.bind(sid.clone()).bind(seq).bind(update.clone());
                }
                query.execute(&mut *tx).await.map_err(backend)?;
            }
            Ok(last)
        })
    }

    pub async fn compact_document(
        &self,
        session: SessionId,
        snapshot: Vec<u8>,
        upto_seq: i64,
    ) -> Result<(), DocStoreError> {
        let sid = session.to_string();
        let (sid, snapshot) = (&sid, &snapshot);
        with_retrying_tx!(self, "compact document", pool = self.doc_writer(), |tx| {
            if self.dialect() == Dialect::Postgres {
                // In a cluster every node holding the session may decide to compact it; one at a
                // time does it, the others skip (the conditional update below keeps even a late one
                // from replacing a newer snapshot).
                let ours: bool =
                    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext($1))")
                        .bind(format!("atelier:compact:{sid}"))
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(backend)?;
                if !ours {
                    return Ok(());
                }
            }
            let res = sqlx::query(
                "UPDATE documents SET snapshot = $1, snapshot_seq = $2 \
                 WHERE session_id = $3 AND snapshot_seq <= $2",
            )
            .bind(snapshot.as_slice())
            .bind(upto_seq)
            .bind(sid)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            if res.rows_affected() == 0 {
                // No document row (session deleted) or a newer snapshot already: leave it be.
                return Ok(());
            }
            sqlx::query("DELETE FROM doc_updates WHERE session_id = $1 AND seq <= $2")
                .bind(sid)
                .bind(upto_seq)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            Ok(())
        })
    }
}

/// `(seq, update)` of a session after `after_seq`, ascending.
async fn fetch_updates(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    sid: &str,
    after_seq: i64,
) -> Result<Vec<(i64, Vec<u8>)>, DocStoreError> {
    sqlx::query_as(
        "SELECT seq, data FROM doc_updates WHERE session_id = $1 AND seq > $2 ORDER BY seq",
    )
    .bind(sid)
    .bind(after_seq)
    .fetch_all(&mut **tx)
    .await
    .map_err(backend)
}

/// The `DocStore` port over the database.
#[derive(Clone)]
pub struct SqlDocStore(pub Db);

impl DocStore for SqlDocStore {
    fn load(&self, session: SessionId) -> BoxFuture<'_, Result<StoredDoc, DocStoreError>> {
        Box::pin(self.0.load_document(session))
    }

    fn append(
        &self,
        session: SessionId,
        updates: Vec<Vec<u8>>,
    ) -> BoxFuture<'_, Result<i64, DocStoreError>> {
        Box::pin(self.0.append_updates(session, updates))
    }

    fn updates_since(
        &self,
        session: SessionId,
        after_seq: i64,
    ) -> BoxFuture<'_, Result<Option<Vec<StoredUpdate>>, DocStoreError>> {
        Box::pin(self.0.updates_since(session, after_seq))
    }

    fn compact(
        &self,
        session: SessionId,
        snapshot: Vec<u8>,
        upto_seq: i64,
    ) -> BoxFuture<'_, Result<(), DocStoreError>> {
        Box::pin(self.0.compact_document(session, snapshot, upto_seq))
    }
}
