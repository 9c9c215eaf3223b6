//! The cluster's job queue in Redis Streams: one stream per GPU class
//! (`{prefix}:jobs:{class}`), one consumer group (`nodes`), each node a consumer named by its
//! node id. The database stays the record of a job (its status, its graph); an entry here only
//! says "job J of class C waits for a worker", so losing the stream loses no job.
//!
//! The life of an entry:
//! - [`JobStream::push`]: the submitting node adds the job (`XADD … MAXLEN ~`).
//! - [`JobStream::claim`]: a node with a free slot of the class reads new entries for itself
//!   (`XREADGROUP GROUP nodes {node} … >`); each becomes pending under that node.
//! - [`JobStream::keep_alive`]: while its jobs wait or run, the claiming node refreshes their idle
//!   time (only of the entries still pending under it), so a live node's long job is never taken
//!   over; the entries it no longer holds tell it another node took them.
//! - [`JobStream::ack`]: the job ended (finished, failed or cancelled): `XACK`, then trim.
//! - [`JobStream::take_over`]: entries pending longer than `min_idle` under a node that stopped
//!   answering move to the caller (`XAUTOCLAIM`), so a queued job outlives its node's death. The
//!   database's status decides whether a taken-over job still needs to run (a job that already
//!   finished is only acknowledged), which is what makes it run once.
//! - [`JobStream::trim`]: `XTRIM MINID` to the oldest entry still needed — the oldest pending
//!   one, else the last one delivered — so the stream holds only waiting and running jobs.
//!   `MAXLEN ~` on `XADD` is a second, coarse bound against a group that stopped reading.

use std::time::Duration;

use atelier_protocol::ids::JobId;
use redis::aio::ConnectionManager;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamMaxlen,
    StreamPendingReply, StreamReadOptions, StreamReadReply, StreamTrimOptions, StreamTrimmingMode,
};
use redis::{AsyncCommands, RedisError, RedisResult};

/// The consumer group every node reads the job streams in.
pub const GROUP: &str = "nodes";

/// The field of an entry holding the job's id.
const JOB_FIELD: &str = "job";

/// Entries a stream keeps at most (approximately) even if nobody acknowledges.
pub const DEFAULT_MAX_LEN: usize = 100_000;

/// GPU class names as keys: what a worker announces, so bounded and restricted here.
const MAX_CLASS_LEN: usize = 64;

/// Refreshes the idle time of the entries still pending under the consumer `ARGV[1]` (an
/// `XCLAIM` alone would steal back an entry another node took over); returns their ids.
const KEEP_ALIVE: &str = r#"
local kept = {}
for i = 2, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], 'nodes', ARGV[i], ARGV[i], 1)
  if pending[1] and pending[1][2] == ARGV[1] then
    redis.call('XCLAIM', KEYS[1], 'nodes', ARGV[1], 0, ARGV[i], 'JUSTID')
    table.insert(kept, ARGV[i])
  end
end
return kept
"#;

/// A job this node holds in a stream (pending under its consumer until [`JobStream::ack`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamClaim {
    pub class: String,
    /// The entry's id in the stream.
    pub entry: String,
    pub job: JobId,
}

#[derive(Debug, thiserror::Error)]
pub enum JobStreamError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("a GPU class must be 1 to {MAX_CLASS_LEN} characters of [A-Za-z0-9._-]")]
    BadClass,
}

/// One node's handle on the job streams.
#[derive(Clone)]
pub struct JobStream {
    connection: ConnectionManager,
    prefix: String,
    node_id: String,
    max_len: usize,
}

impl JobStream {
    pub async fn connect(
        client: &redis::Client,
        prefix: &str,
        node_id: &str,
        max_len: usize,
    ) -> RedisResult<Self> {
        Ok(Self {
            connection: client.get_connection_manager().await?,
            prefix: prefix.to_owned(),
            node_id: node_id.to_owned(),
            max_len,
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The stream of a GPU class.
    pub fn key(&self, class: &str) -> Result<String, JobStreamError> {
        let valid = !class.is_empty()
            && class.len() <= MAX_CLASS_LEN
            && class
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            return Err(JobStreamError::BadClass);
        }
        Ok(format!("{}:jobs:{class}", self.prefix))
    }

    /// Creates the class's stream and group if they do not exist (every node may race here).
    async fn ensure_group(&self, key: &str) -> RedisResult<()> {
        let mut conn = self.connection.clone();
        match conn
            .xgroup_create_mkstream::<_, _, _, ()>(key, GROUP, "0")
            .await
        {
            Ok(()) => Ok(()),
            Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Queues `job` for a worker of `class`; returns the entry's id.
    pub async fn push(&self, class: &str, job: JobId) -> Result<String, JobStreamError> {
        let key = self.key(class)?;
        self.ensure_group(&key).await?;
        let mut conn = self.connection.clone();
        let entry: Option<String> = conn
            .xadd_maxlen(
                &key,
                StreamMaxlen::Approx(self.max_len),
                "*",
                &[(JOB_FIELD, job.to_string())],
            )
            .await?;
        entry.ok_or_else(|| {
            JobStreamError::Redis(RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "XADD returned no id",
            )))
        })
    }

    /// Takes up to `count` new jobs of `class` for this node (they stay pending under it).
    pub async fn claim(
        &self,
        class: &str,
        count: usize,
    ) -> Result<Vec<StreamClaim>, JobStreamError> {
        let key = self.key(class)?;
        self.ensure_group(&key).await?;
        let mut conn = self.connection.clone();
        let options = StreamReadOptions::default()
            .group(GROUP, &self.node_id)
            .count(count);
        let reply: Option<StreamReadReply> = conn.xread_options(&[&key], &[">"], &options).await?;
        let entries = reply
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|stream| stream.ids);
        Ok(self.claims(class, entries).await?)
    }

    /// Moves to this node the jobs of `class` another node claimed and has not acknowledged
    /// for `min_idle` (that node is presumed dead), up to `count`.
    pub async fn take_over(
        &self,
        class: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<StreamClaim>, JobStreamError> {
        let key = self.key(class)?;
        self.ensure_group(&key).await?;
        let mut conn = self.connection.clone();
        let min_idle_ms = u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX);
        let reply: StreamAutoClaimReply = conn
            .xautoclaim_options(
                &key,
                GROUP,
                &self.node_id,
                min_idle_ms,
                "0-0",
                StreamAutoClaimOptions::default().count(count),
            )
            .await?;
        Ok(self.claims(class, reply.claimed.into_iter()).await?)
    }

    /// Resets the idle time of `claims` (all of one class) that this node still holds; returns
    /// those it no longer holds (taken over by another node: it must stop running them).
    pub async fn keep_alive(
        &self,
        class: &str,
        claims: &[StreamClaim],
    ) -> Result<Vec<StreamClaim>, JobStreamError> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.key(class)?;
        let script = redis::Script::new(KEEP_ALIVE);
        let mut invocation = script.key(&key);
        invocation.arg(&self.node_id);
        for claim in claims {
            invocation.arg(&claim.entry);
        }
        let mut conn = self.connection.clone();
        let kept: Vec<String> = invocation.invoke_async(&mut conn).await?;
        Ok(claims
            .iter()
            .filter(|claim| !kept.contains(&claim.entry))
            .cloned()
            .collect())
    }

    /// Entries → claims. An entry without a readable job id (not written by us) is acknowledged
    /// and dropped, so it cannot be handed around forever.
    async fn claims(
        &self,
        class: &str,
        entries: impl Iterator<Item = StreamId>,
    ) -> RedisResult<Vec<StreamClaim>> {
        let mut claims = Vec::new();
        for entry in entries {
            let job = entry
                .get::<String>(JOB_FIELD)
                .and_then(|job| job.parse::<JobId>().ok());
            match job {
                Some(job) => claims.push(StreamClaim {
                    class: class.to_owned(),
                    entry: entry.id,
                    job,
                }),
                None => {
                    tracing::warn!(class, entry = %entry.id, "job stream entry without a job id");
                    self.xack(&format!("{}:jobs:{class}", self.prefix), &entry.id)
                        .await?;
                }
            }
        }
        Ok(claims)
    }

    async fn xack(&self, key: &str, entry: &str) -> RedisResult<()> {
        let mut conn = self.connection.clone();
        conn.xack::<_, _, _, ()>(key, GROUP, &[entry]).await
    }

    /// The job ended: its entry leaves this node's pending list, and the stream is trimmed.
    pub async fn ack(&self, claim: &StreamClaim) -> Result<(), JobStreamError> {
        let key = self.key(&claim.class)?;
        self.xack(&key, &claim.entry).await?;
        self.trim(&claim.class).await?;
        Ok(())
    }

    /// Drops the entries no node needs any more: everything older than the oldest pending entry
    /// (or, with none pending, than the last one delivered). Returns how many went.
    pub async fn trim(&self, class: &str) -> Result<usize, JobStreamError> {
        let key = self.key(class)?;
        let mut conn = self.connection.clone();
        let pending: StreamPendingReply = conn.xpending(&key, GROUP).await?;
        let threshold = match pending {
            StreamPendingReply::Data(data) => data.start_id,
            _ => {
                let groups: StreamInfoGroupsReply = conn.xinfo_groups(&key).await?;
                match groups.groups.into_iter().find(|group| group.name == GROUP) {
                    Some(group) => group.last_delivered_id,
                    None => return Ok(0),
                }
            }
        };
        let options = StreamTrimOptions::minid(StreamTrimmingMode::Exact, threshold);
        Ok(conn.xtrim_options(&key, &options).await?)
    }

    /// Entries in the class's stream (waiting, running, and not yet trimmed).
    pub async fn len(&self, class: &str) -> Result<usize, JobStreamError> {
        let key = self.key(class)?;
        let mut conn = self.connection.clone();
        Ok(conn.xlen(&key).await?)
    }
}
