//! The database: one schema on SQLite and PostgreSQL through sqlx's `Any` driver.
//!
//! Queries are written once in the dialect both engines accept (`$1` parameters, BIGINT epoch
//! milliseconds, UUIDs as TEXT) and grouped by entity in the submodules. Where the engines must
//! differ (migrations, locking), [`Dialect`] says which one is connected.

pub mod accounts;
pub mod admin;
pub mod api_keys;
mod columns;
mod doc_writer;
pub mod documents;
pub mod idempotency;
pub mod invitations;
pub(crate) mod job_queue;
pub mod jobs;
pub mod leases;
pub mod ledger;
pub mod media;
pub mod node_cache;
pub mod sessions;
pub mod share_links;
pub mod storage_quota;
pub mod usage;
pub mod versions;
pub mod webhooks;

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

use crate::error::{Error, Result};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// How often SQLite's write-ahead log is copied back into the database file.
const SQLITE_CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

/// A cheap-to-clone handle to the connection pools.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    /// Session-document appends and compactions: the live path. Appends of all sessions are
    /// committed together by one task (`doc_writer`, one transaction per round); compactions
    /// run beside it. On SQLite one connection, so that they queue in order instead of
    /// contending for SQLite's write lock (a loser sleeps in SQLite's busy handler, 1 ms and
    /// more, then retries); on PostgreSQL the main pool, whose row locks let a compaction run
    /// beside a group commit.
    doc_writer: AnyPool,
    dialect: Dialect,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("ATELIER_DATABASE_URL must start with sqlite:// or postgres://, got {0:?}")]
    UnsupportedScheme(String),
    #[error("could not create the directory for the SQLite file {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("could not connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("could not apply migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl Db {
    /// Connects (creating a missing SQLite file and its directory) and applies migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, ConnectError> {
        sqlx::any::install_default_drivers();
        let (dialect, url) = if let Some(rest) = url.strip_prefix("sqlite://") {
            (Dialect::Sqlite, prepare_sqlite_url(rest).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Dialect::Postgres, url.to_string())
        } else {
            return Err(ConnectError::UnsupportedScheme(redact(url)));
        };
        let pool = pool_options(dialect, max_connections)
            .connect(&url)
            .await
            .map_err(ConnectError::Connect)?;
        let doc_writer = match dialect {
            Dialect::Sqlite => pool_options(dialect, 1)
                .connect(&url)
                .await
                .map_err(ConnectError::Connect)?,
            Dialect::Postgres => pool.clone(),
        };
        let db = Db {
            pool,
            doc_writer,
            dialect,
        };
        db.migrate().await?;
        if dialect == Dialect::Sqlite {
            tokio::spawn(checkpoint_wal(db.pool.clone()));
        }
        Ok(db)
    }

    /// The pool for session-document writes (see [`Db::doc_writer`]).
    pub(crate) fn doc_writer(&self) -> &AnyPool {
        &self.doc_writer
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self.dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await,
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await,
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.doc_writer.close().await;
        self.pool.close().await;
    }
}

fn pool_options(dialect: Dialect, max_connections: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        // sqlx pings an idle connection before lending it; on SQLite that ping is a round trip
        // to the connection's worker thread (two context switches) in front of every acquire,
        // and there is no server to have gone away.
        .test_before_acquire(dialect == Dialect::Postgres)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if dialect == Dialect::Sqlite {
                    // WAL lets readers run beside the writer; busy_timeout makes concurrent
                    // writers wait for the lock instead of failing with SQLITE_BUSY. With
                    // synchronous = NORMAL a commit reaches the OS before it returns (a killed
                    // process loses nothing) and only checkpoints fsync. Automatic checkpoints
                    // are off: they run inside the COMMIT that crosses the threshold, so one
                    // unlucky append waited for two fsyncs (10-20 ms); `checkpoint_wal` does it
                    // in the background instead. The WAL file is cut back to 64 MiB after each
                    // complete checkpoint.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; \
                         PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;",
                    )
                    .await?;
                }
                Ok(())
            })
        })
}

/// Copies SQLite's write-ahead log into the database file every couple of seconds, beside the
/// writers (PASSIVE: it never blocks them, and does what it can), until the pool closes.
async fn checkpoint_wal(pool: AnyPool) {
    let mut tick = tokio::time::interval(SQLITE_CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(%error, "SQLite checkpoint failed; will retry");
        }
    }
}

/// `sqlite://./data/atelier.db` → makes sure `./data` exists and asks SQLite to create the file.
async fn prepare_sqlite_url(rest: &str) -> Result<String, ConnectError> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:" && !path.is_empty() {
        if let Some(dir) = std::path::Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|source| ConnectError::CreateDir {
                        path: path.to_string(),
                        source,
                    })?;
            }
        }
    }
    let query = if query.contains("mode=") {
        query.to_string()
    } else if query.is_empty() {
        "mode=rwc".to_string()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

/// Hides a password in a URL before it is shown in an error.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// Milliseconds since the Unix epoch: how every time is stored.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// True when the error is a foreign-key violation (both engines).
pub(crate) fn is_fk_violation_of(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

/// True when the error is a unique-constraint violation (both engines).
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// How often [`Db::retrying`] runs a transaction that lost a race before giving up.
const TX_ATTEMPTS: u32 = 8;

/// An error a transaction body may end with: it can carry a database error, which
/// [`Db::retrying`] inspects to decide whether a retry cures it.
pub(crate) trait TxError: Sized {
    fn from_db(error: sqlx::Error) -> Self;
    fn db_error(&self) -> Option<&sqlx::Error>;
}

impl TxError for Error {
    fn from_db(error: sqlx::Error) -> Self {
        Error::Database(error)
    }

    fn db_error(&self) -> Option<&sqlx::Error> {
        match self {
            Error::Database(e) => Some(e),
            _ => None,
        }
    }
}

impl TxError for atelier_actors::DocStoreError {
    fn from_db(error: sqlx::Error) -> Self {
        atelier_actors::DocStoreError::backend(error)
    }

    fn db_error(&self) -> Option<&sqlx::Error> {
        match self {
            atelier_actors::DocStoreError::Backend(e) => e.downcast_ref::<sqlx::Error>(),
            atelier_actors::DocStoreError::SessionNotFound(_) => None,
        }
    }
}

/// Runs `$body` — a block evaluating to `Result<T, E>` with `E:` [`TxError`], which sees the
/// open transaction as `$tx: &mut AnyConnection` — in a transaction, commits it when the block
/// gives `Ok` and rolls it back on `Err`; the whole transaction runs again when the database
/// refused it for a reason a retry cures (see [`Db::retrying`]). Every write that opens a
/// transaction goes through here:
///
/// ```ignore
/// with_retrying_tx!(self, "ledger credit", |tx| { lock_account(tx, account).await?; … })
/// with_retrying_tx!(self, "append updates", pool = self.doc_writer(), |tx| { … })
/// ```
///
/// A macro rather than a function taking a closure: a closure over `&mut AnyConnection` is
/// higher-ranked over the borrow, and rustc then cannot prove the resulting future `Send` (which
/// the `DocStore` port and actix handlers need).
macro_rules! with_retrying_tx {
    ($db:expr, $what:expr, |$tx:ident| $body:block) => {
        $crate::db::with_retrying_tx!($db, $what, pool = $db.pool(), |$tx| $body)
    };
    ($db:expr, $what:expr, pool = $pool:expr, |$tx:ident| $body:block) => {
        $db.retrying($what, || async move {
            // No `?` here: it would leave the error type to inference at each step.
            let mut transaction = match $pool.begin().await {
                Ok(transaction) => transaction,
                Err(e) => return Err($crate::db::TxError::from_db(e)),
            };
            let outcome = async {
                let $tx: &mut ::sqlx::AnyConnection = &mut transaction;
                $body
            }
            .await;
            let value = match outcome {
                Ok(value) => value,
                Err(e) => return Err(e),
            };
            match transaction.commit().await {
                Ok(()) => Ok(value),
                Err(e) => Err($crate::db::TxError::from_db(e)),
            }
        })
        .await
    };
}

pub(crate) use with_retrying_tx;

impl Db {
    /// Runs `attempt` (one whole transaction: begin, statements, commit; see
    /// [`with_retrying_tx!`]) and runs it again when the database refused it for a reason that
    /// a retry cures: a PostgreSQL serialization failure or deadlock, SQLite busy/locked, or a
    /// unique violation from a concurrent insert of the same idempotency key (the retry then
    /// finds the row and treats the call as a replay).
    pub(crate) async fn retrying<T, E, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: TxError,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt().await {
                Err(e)
                    if tries < TX_ATTEMPTS
                        && e.db_error().is_some_and(|d| self.is_retryable(d)) =>
                {
                    if let Some(db_error) = e.db_error() {
                        tracing::debug!(what, tries, error = %db_error, "transaction retried");
                    }
                    let jitter = u64::from(rand::random::<u8>() % 20);
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(tries) + jitter)).await;
                }
                other => return other,
            }
        }
    }

    fn is_retryable(&self, err: &sqlx::Error) -> bool {
        let sqlx::Error::Database(db) = err else {
            return false;
        };
        if db.is_unique_violation() {
            return true;
        }
        let Some(code) = db.code() else {
            return false;
        };
        match self.dialect {
            // serialization_failure, deadlock_detected
            Dialect::Postgres => code == "40001" || code == "40P01",
            // SQLITE_BUSY and SQLITE_LOCKED, with their extended codes (BUSY_SNAPSHOT = 517).
            Dialect::Sqlite => code.parse::<i32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6)),
        }
    }
}
