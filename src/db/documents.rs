//! Session documents on SQLite/PostgreSQL: the `DocStore` port of the live-session actors.
//!
//! Appends are group commits: one transaction for the batches of every session waiting at the
//! time ([`super::doc_writer`]), sequence numbers taken from each document's `last_seq` (whose
//! row update also serialises concurrent appends to one session).

use std::sync::Arc;

use atelier_actors::store::{BoxFuture, DocStore, DocStoreError, StoredDoc, StoredUpdate};
use atelier_protocol::ids::SessionId;

use super::columns::UuidText;
use super::doc_writer::DocWriter;
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
            let rows: Vec<(&str, i64, &[u8])> = (last - n + 1..)
                .zip(updates.iter())
                .map(|(seq, update)| (sid.as_str(), seq, update.as_slice()))
                .collect();
            for chunk in rows.chunks(INSERT_CHUNK) {
                insert_rows(tx, chunk).await?;
            }
            Ok(last)
        })
    }

    /// Appends the batches of several sessions in ONE transaction (the cross-session group
    /// commit of [`super::doc_writer`]): `batches` holds each session once, with its updates in
    /// order. Returns each session's last `seq`, in the order of `batches`.
    ///
    /// Two statements whatever the number of sessions (plus one per [`INSERT_CHUNK`] rows): one
    /// upsert of every session's `last_seq`, then the rows. The upsert's rows are taken in the
    /// order given, so callers pass the sessions sorted: two nodes of a cluster committing
    /// groups that share sessions then lock their `documents` rows in the same order.
    ///
    /// A foreign-key violation (a session deleted meanwhile) fails the whole group; the caller
    /// then appends the batches one by one to find out which.
    pub async fn append_group(
        &self,
        batches: &[(SessionId, &[Vec<u8>])],
    ) -> Result<Vec<i64>, DocStoreError> {
        let sessions: Vec<(String, i64)> = batches
            .iter()
            .map(|(session, updates)| {
                let n = i64::try_from(updates.len())
                    .map_err(|e| DocStoreError::backend(e.to_string()))?;
                Ok((session.to_string(), n))
            })
            .collect::<Result<_, DocStoreError>>()?;
        if self.dialect() == Dialect::Sqlite {
            return self.append_group_in_one_script(&sessions, batches).await;
        }
        let sessions = &sessions;
        with_retrying_tx!(self, "append updates", pool = self.doc_writer(), |tx| {
            let mut sql = String::from("INSERT INTO documents (session_id, last_seq) VALUES ");
            for i in 0..sessions.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("(${}, ${})", 2 * i + 1, 2 * i + 2));
            }
            sql.push_str(
                " ON CONFLICT (session_id) DO UPDATE SET last_seq = documents.last_seq + \
                 excluded.last_seq RETURNING session_id, last_seq",
            );
            // Only placeholders are formatted in; every value is bound.
            let mut upsert = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql));
            for (sid, n) in sessions {
                upsert = upsert.bind(sid.as_str()).bind(*n);
            }
            let heads: std::collections::HashMap<String, i64> = upsert
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?
                .into_iter()
                .collect();
            let mut lasts = Vec::with_capacity(sessions.len());
            let mut rows: Vec<(&str, i64, &[u8])> = Vec::new();
            for ((sid, n), (_, updates)) in sessions.iter().zip(batches) {
                let Some(&last) = heads.get(sid) else {
                    return Err(DocStoreError::backend(format!(
                        "no seq returned for session {sid}"
                    )));
                };
                lasts.push(last);
                rows.extend(
                    (last - n + 1..)
                        .zip(updates.iter())
                        .map(|(seq, update)| (sid.as_str(), seq, update.as_slice())),
                );
            }
            for chunk in rows.chunks(INSERT_CHUNK) {
                insert_rows(tx, chunk).await?;
            }
            Ok(lasts)
        })
    }

    /// [`Db::append_group`] on SQLite: the whole transaction as ONE script — `BEGIN IMMEDIATE`,
    /// the upsert of the `last_seq`s, the inserts, `COMMIT` — which sqlx-sqlite hands to the
    /// connection's worker thread as one command. Run statement by statement, the same commit
    /// was four round trips to that thread (`BEGIN`, upsert, insert, `COMMIT`), each a wake-up
    /// and a context switch each way on one core: at light load, where every edit is its own
    /// commit, most of an edit's context switches. The rows' `seq`s are therefore computed in
    /// SQL, from the `last_seq` the upsert has just written (`last_seq − offset` within the
    /// session's batch), not from the upsert's answer.
    ///
    /// A failed script (say a foreign-key violation: a session deleted meanwhile) stops at the
    /// failing statement with its transaction open: the connection is then closed rather than
    /// returned to the pool, and closing it rolls the transaction back.
    async fn append_group_in_one_script(
        &self,
        sessions: &[(String, i64)],
        batches: &[(SessionId, &[Vec<u8>])],
    ) -> Result<Vec<i64>, DocStoreError> {
        let script = group_append_script(batches);
        self.retrying("append updates", || async {
            let mut query = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(script.clone()));
            for (sid, n) in sessions {
                query = query.bind(sid.as_str()).bind(*n);
            }
            for (_, updates) in batches {
                for (offset, update) in (0..updates.len()).rev().zip(updates.iter()) {
                    let offset =
                        i64::try_from(offset).map_err(|e| DocStoreError::backend(e.to_string()))?;
                    query = query.bind(offset).bind(update.as_slice());
                }
            }
            let mut conn = self.doc_writer().acquire().await.map_err(backend)?;
            let heads: std::collections::HashMap<String, i64> =
                match query.fetch_all(&mut *conn).await {
                    Ok(heads) => heads.into_iter().collect(),
                    Err(error) => {
                        conn.close_on_drop();
                        return Err(backend(error));
                    }
                };
            sessions
                .iter()
                .map(|(sid, _)| {
                    heads.get(sid).copied().ok_or_else(|| {
                        DocStoreError::backend(format!("no seq returned for session {sid}"))
                    })
                })
                .collect()
        })
        .await
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

/// The SQLite script of [`Db::append_group_in_one_script`] for `batches` (placeholders only).
///
/// Parameters: `$2i+1`, `$2i+2` are session `i`'s id and number of updates (the upsert, as in
/// [`Db::append_group`]); then two per update, in order: its offset from the session's last
/// update (`n − 1 … 0`) and its data. A row names its session by the session's parameter.
fn group_append_script(batches: &[(SessionId, &[Vec<u8>])]) -> String {
    use std::fmt::Write as _;
    let mut sql =
        String::from("BEGIN IMMEDIATE; INSERT INTO documents (session_id, last_seq) VALUES ");
    for i in 0..batches.len() {
        if i > 0 {
            sql.push_str(", ");
        }
        let _ = write!(sql, "(${}, ${})", 2 * i + 1, 2 * i + 2);
    }
    sql.push_str(
        " ON CONFLICT (session_id) DO UPDATE SET last_seq = documents.last_seq + \
         excluded.last_seq RETURNING session_id, last_seq;",
    );
    let mut param = 2 * batches.len();
    let mut in_statement = 0;
    for (i, (_, updates)) in batches.iter().enumerate() {
        let sid = 2 * i + 1;
        for _ in updates.iter() {
            if in_statement == INSERT_CHUNK {
                sql.push(';');
                in_statement = 0;
            }
            sql.push_str(if in_statement == 0 {
                " INSERT INTO doc_updates (session_id, seq, data) VALUES "
            } else {
                ", "
            });
            let _ = write!(
                sql,
                "(${sid}, (SELECT last_seq FROM documents WHERE session_id = ${sid}) - ${}, ${})",
                param + 1,
                param + 2
            );
            param += 2;
            in_statement += 1;
        }
    }
    sql.push_str("; COMMIT");
    sql
}

/// Inserts `(session_id, seq, data)` rows into the log with one statement.
async fn insert_rows(
    tx: &mut sqlx::AnyConnection,
    rows: &[(&str, i64, &[u8])],
) -> Result<(), DocStoreError> {
    let mut sql = String::from("INSERT INTO doc_updates (session_id, seq, data) VALUES ");
    for i in 0..rows.len() {
        if i > 0 {
            sql.push_str(", ");
        }
        let p = i * 3;
        sql.push_str(&format!("(${}, ${}, ${})", p + 1, p + 2, p + 3));
    }
    // Only placeholders are formatted in; every value is bound.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (sid, seq, data) in rows {
        query = query.bind(*sid).bind(*seq).bind(*data);
    }
    query.execute(&mut *tx).await.map_err(backend)?;
    Ok(())
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

/// The `DocStore` port over the database; appends go through the cross-session group commit
/// ([`DocWriter`]).
#[derive(Clone)]
pub struct SqlDocStore {
    db: Db,
    writer: Arc<DocWriter>,
}

impl SqlDocStore {
    pub fn new(db: Db) -> Self {
        let writer = Arc::new(DocWriter::new(db.clone()));
        Self { db, writer }
    }
}

impl DocStore for SqlDocStore {
    fn load(&self, session: SessionId) -> BoxFuture<'_, Result<StoredDoc, DocStoreError>> {
        Box::pin(self.db.load_document(session))
    }

    fn append(
        &self,
        session: SessionId,
        updates: Vec<Vec<u8>>,
    ) -> BoxFuture<'_, Result<i64, DocStoreError>> {
        Box::pin(self.writer.append(session, updates))
    }

    fn updates_since(
        &self,
        session: SessionId,
        after_seq: i64,
    ) -> BoxFuture<'_, Result<Option<Vec<StoredUpdate>>, DocStoreError>> {
        Box::pin(self.db.updates_since(session, after_seq))
    }

    fn compact(
        &self,
        session: SessionId,
        snapshot: Vec<u8>,
        upto_seq: i64,
    ) -> BoxFuture<'_, Result<(), DocStoreError>> {
        Box::pin(self.db.compact_document(session, snapshot, upto_seq))
    }
}
