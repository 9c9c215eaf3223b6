//! The cluster's work lines in Redis Streams: one stream per line (`{prefix}:{line}`), one
//! consumer group (`nodes`), each node a consumer named by its node id. Two kinds of lines use
//! it: the lease line of a GPU class (`leases:{class}`, read by the nodes with a free slot of
//! the class: see [`super::lease_line`]) and the job stream of a node (`jobs:node:{node}`, the
//! jobs of the leases that node runs: see [`super::job_routing`]). An entry carries a kind and
//! an id ([`Item`]). The database stays the record of a job or a lease (its status); an entry
//! here only says "this waits for a node", so losing the stream loses no job.
//!
//! The life of an entry:
//! - [`JobStream::push`]: a node adds the item (`XADD … MAXLEN ~`).
//! - [`JobStream::claim`]: a node reads new entries for itself (`XREADGROUP GROUP nodes {node}
//!   … >`); each becomes pending under that node. [`JobStream::own_pending`] re-reads what is
//!   pending under this node already (after a restart under the same node id).
//! - [`JobStream::keep_alive`]: while its jobs wait or run, the claiming node refreshes their idle
//!   time (only of the entries still pending under it), so a live node's long job is never taken
//!   over; the entries it no longer holds tell it another node took them.
//! - [`JobStream::ack`]: the item ended (finished, failed or cancelled): `XACK`, then trim.
//! - [`JobStream::take_over`]: entries pending longer than `min_idle` under a node that stopped
//!   answering move to the caller (`XAUTOCLAIM`), so a queued job outlives its node's death. The
//!   database's status decides whether a taken-over job still needs to run (a job that already
//!   finished is only acknowledged), which is what makes it run once.
//! - [`JobStream::trim`]: `XTRIM MINID` to the oldest entry still needed — the oldest pending
//!   one, else the last one delivered — so the stream holds only waiting and running items.
//!   `MAXLEN ~` on `XADD` is a second, coarse bound against a group that stopped reading.
//! - [`JobStream::waiting`]: the entries not delivered yet, in order (a waiting lease's place in
//!   its line).

use std::fmt;
use std::time::Duration;

use atelier_protocol::ids::{JobId, LeaseId};
use redis::aio::ConnectionManager;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamMaxlen,
    StreamPendingReply, StreamRangeReply, StreamReadOptions, StreamReadReply, StreamTrimOptions,
    StreamTrimmingMode,
};
use redis::{AsyncCommands, RedisError, RedisResult};

/// The consumer group every node reads the streams in.
pub const GROUP: &str = "nodes";

/// The field of an entry naming what it carries (`job`, `lease`).
const KIND_FIELD: &str = "kind";
/// The field of an entry holding the item's id.
const ID_FIELD: &str = "id";

/// Entries a stream keeps at most (approximately) even if nobody acknowledges.
pub const DEFAULT_MAX_LEN: usize = 100_000;

/// GPU class names and node ids as key parts: bounded and restricted here.
const MAX_NAME_LEN: usize = 64;

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

/// A line: the part of a stream's key after the prefix, built from a validated name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Line(String);

impl Line {
    /// The jobs of a GPU class (one line all nodes read).
    pub fn class_jobs(class: &str) -> Result<Self, JobStreamError> {
        Ok(Line(format!("jobs:{}", valid_name(class)?)))
    }

    /// The runtime leases of a GPU class waiting for a slot.
    pub fn leases(class: &str) -> Result<Self, JobStreamError> {
        Ok(Line(format!("leases:{}", valid_name(class)?)))
    }

    /// The jobs of the leases one node runs.
    pub fn node_jobs(node: &str) -> Result<Self, JobStreamError> {
        Ok(Line(format!("{NODE_JOBS}{}", valid_name(node)?)))
    }

    /// The node whose job stream this is.
    pub fn node(&self) -> Option<&str> {
        self.0.strip_prefix(NODE_JOBS)
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key part before a node's id in its job stream's line.
const NODE_JOBS: &str = "jobs:node:";
/// The set of node job streams ever used (`{prefix}:{NODE_LINES}`), so live nodes find the
/// streams of dead ones.
const NODE_LINES: &str = "jobs:nodes";

fn valid_name(name: &str) -> Result<&str, JobStreamError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if valid {
        Ok(name)
    } else {
        Err(JobStreamError::BadClass)
    }
}

/// What an entry stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Item {
    Job(JobId),
    Lease(LeaseId),
}

impl Item {
    fn fields(&self) -> [(&'static str, String); 2] {
        match self {
            Item::Job(id) => [(KIND_FIELD, "job".into()), (ID_FIELD, id.to_string())],
            Item::Lease(id) => [(KIND_FIELD, "lease".into()), (ID_FIELD, id.to_string())],
        }
    }

    fn parse(entry: &StreamId) -> Option<Self> {
        let id = entry.get::<String>(ID_FIELD)?;
        match entry.get::<String>(KIND_FIELD)?.as_str() {
            "job" => id.parse().ok().map(Item::Job),
            "lease" => id.parse().ok().map(Item::Lease),
            _ => None,
        }
    }
}

/// An item this node holds in a stream (pending under its consumer until [`JobStream::ack`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamClaim {
    pub line: Line,
    /// The entry's id in the stream.
    pub entry: String,
    pub item: Item,
}

impl StreamClaim {
    pub fn job(&self) -> Option<JobId> {
        match self.item {
            Item::Job(job) => Some(job),
            Item::Lease(_) => None,
        }
    }

    pub fn lease(&self) -> Option<LeaseId> {
        match self.item {
            Item::Lease(lease) => Some(lease),
            Item::Job(_) => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobStreamError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("a GPU class or node id must be 1 to {MAX_NAME_LEN} characters of [A-Za-z0-9._-]")]
    BadClass,
}

/// One node's handle on the streams.
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

    /// The stream's key.
    pub fn key(&self, line: &Line) -> String {
        format!("{}:{line}", self.prefix)
    }

    /// Creates the line's stream and group if they do not exist (every node may race here).
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

    /// Queues `item` on `line`; returns the entry's id. A node's job stream is remembered in
    /// the set of node streams (see [`JobStream::node_lines`]).
    pub async fn push(&self, line: &Line, item: Item) -> Result<String, JobStreamError> {
        let key = self.key(line);
        self.ensure_group(&key).await?;
        let mut conn = self.connection.clone();
        if line.node().is_some() {
            let set = format!("{}:{NODE_LINES}", self.prefix);
            conn.sadd::<_, _, ()>(&set, line.to_string()).await?;
        }
        let entry: Option<String> = conn
            .xadd_maxlen(
                &key,
                StreamMaxlen::Approx(self.max_len),
                "*",
                &item.fields(),
            )
            .await?;
        entry.ok_or_else(|| {
            JobStreamError::Redis(RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "XADD returned no id",
            )))
        })
    }

    /// Every node job stream ever pushed to (the streams of dead nodes included).
    pub async fn node_lines(&self) -> Result<Vec<Line>, JobStreamError> {
        let mut conn = self.connection.clone();
        let set = format!("{}:{NODE_LINES}", self.prefix);
        let lines: Vec<String> = conn.smembers(&set).await?;
        Ok(lines
            .into_iter()
            .filter_map(|line| line.strip_prefix(NODE_JOBS).map(Line::node_jobs))
            .filter_map(Result::ok)
            .collect())
    }

    /// Takes up to `count` new items of `line` for this node (they stay pending under it).
    pub async fn claim(
        &self,
        line: &Line,
        count: usize,
    ) -> Result<Vec<StreamClaim>, JobStreamError> {
        self.read(line, ">", count).await
    }

    /// As [`JobStream::claim`], waiting up to `block` for an entry (keep it well under the
    /// connection's response timeout, 500 ms; use a [`JobStream`] of its own for it, since a
    /// blocked connection answers nothing else meanwhile).
    pub async fn claim_blocking(
        &self,
        line: &Line,
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamClaim>, JobStreamError> {
        let key = self.key(line);
        self.ensure_group(&key).await?;
        let mut conn = self.connection.clone();
        let block_ms = usize::try_from(block.as_millis()).unwrap_or(usize::MAX);
        let options = StreamReadOptions::default()
            .group(GROUP, &self.node_id)
            .count(count)
            .block(block_ms);
        let reply: Option<StreamReadReply> = conn.xread_options(&[&key], &[">"], &options).await?;
        let entries = reply
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|stream| stream.ids);
        Ok(self.claims(line, entries).await?)
    }

    /// The items already pending under this node in `line` (delivered to a previous run of
    /// this node id, or read and not yet acknowledged), up to `count`.
    pub async fn own_pending(
        &self,
        line: &Line,
        count: usize,
    ) -> Result<Vec<StreamClaim>, JobStreamError> {
        self.read(line, "0", count).await
    }

    async fn read(
        &self,
        line: &Line,
        from: &str,
        count: usize,
    ) -> Result<Vec<StreamClaim>, JobStreamError> {
        let key = self.key(line);
        self.ensure_group(&key).await?;
        let mut conn = self.connection.clone();
        let options = StreamReadOptions::default()
            .group(GROUP, &self.node_id)
            .count(count);
        let reply: Option<StreamReadReply> = conn.xread_options(&[&key], &[from], &options).await?;
        let entries = reply
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|stream| stream.ids);
        Ok(self.claims(line, entries).await?)
    }

    /// Moves to this node the items of `line` another node claimed and has not acknowledged
    /// for `min_idle` (that node is presumed dead), up to `count`.
    pub async fn take_over(
        &self,
        line: &Line,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<StreamClaim>, JobStreamError> {
        let key = self.key(line);
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
        Ok(self.claims(line, reply.claimed.into_iter()).await?)
    }

    /// Resets the idle time of `claims` (all of one line) that this node still holds; returns
    /// those it no longer holds (taken over by another node: it must stop running them).
    pub async fn keep_alive(
        &self,
        line: &Line,
        claims: &[StreamClaim],
    ) -> Result<Vec<StreamClaim>, JobStreamError> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.key(line);
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

    /// Entries → claims. An entry without a readable item (not written by us) is acknowledged
    /// and dropped, so it cannot be handed around forever.
    async fn claims(
        &self,
        line: &Line,
        entries: impl Iterator<Item = StreamId>,
    ) -> RedisResult<Vec<StreamClaim>> {
        let mut claims = Vec::new();
        for entry in entries {
            match Item::parse(&entry) {
                Some(item) => claims.push(StreamClaim {
                    line: line.clone(),
                    entry: entry.id,
                    item,
                }),
                None => {
                    tracing::warn!(%line, entry = %entry.id, "stream entry without a kind and id");
                    self.xack(&self.key(line), &entry.id).await?;
                }
            }
        }
        Ok(claims)
    }

    async fn xack(&self, key: &str, entry: &str) -> RedisResult<()> {
        let mut conn = self.connection.clone();
        conn.xack::<_, _, _, ()>(key, GROUP, &[entry]).await
    }

    /// The item ended: its entry leaves this node's pending list, and the stream is trimmed.
    pub async fn ack(&self, claim: &StreamClaim) -> Result<(), JobStreamError> {
        let key = self.key(&claim.line);
        self.xack(&key, &claim.entry).await?;
        self.trim(&claim.line).await?;
        Ok(())
    }

    /// The last entry delivered to the group (`None`: the line has no group yet).
    async fn last_delivered(&self, key: &str) -> RedisResult<Option<String>> {
        let mut conn = self.connection.clone();
        let exists: bool = conn.exists(key).await?;
        if !exists {
            return Ok(None);
        }
        let groups: StreamInfoGroupsReply = conn.xinfo_groups(key).await?;
        Ok(groups
            .groups
            .into_iter()
            .find(|group| group.name == GROUP)
            .map(|group| group.last_delivered_id))
    }

    /// Drops the entries no node needs any more: everything older than the oldest pending entry
    /// (or, with none pending, than the last one delivered). Returns how many went.
    pub async fn trim(&self, line: &Line) -> Result<usize, JobStreamError> {
        let key = self.key(line);
        let mut conn = self.connection.clone();
        let pending: StreamPendingReply = conn.xpending(&key, GROUP).await?;
        let threshold = match pending {
            StreamPendingReply::Data(data) => data.start_id,
            _ => match self.last_delivered(&key).await? {
                Some(last) => last,
                None => return Ok(0),
            },
        };
        let options = StreamTrimOptions::minid(StreamTrimmingMode::Exact, threshold);
        Ok(conn.xtrim_options(&key, &options).await?)
    }

    /// The items of `line` not delivered to any node yet, oldest first, up to `count`: a
    /// waiting item's place in line is its index here plus one.
    pub async fn waiting(&self, line: &Line, count: usize) -> Result<Vec<Item>, JobStreamError> {
        Ok(self
            .waiting_entries(line, count)
            .await?
            .into_iter()
            .map(|(_, item)| item)
            .collect())
    }

    async fn waiting_entries(&self, line: &Line, count: usize) -> RedisResult<Vec<(String, Item)>> {
        let key = self.key(line);
        let Some(last) = self.last_delivered(&key).await? else {
            return Ok(Vec::new());
        };
        let mut conn = self.connection.clone();
        // Exclusive start: the entries after the last delivered one.
        let reply: StreamRangeReply = conn
            .xrange_count(&key, format!("({last}"), "+", count)
            .await?;
        Ok(reply
            .ids
            .iter()
            .filter_map(|entry| Item::parse(entry).map(|item| (entry.id.clone(), item)))
            .collect())
    }

    /// Takes `item` out of the line while it waits (among the first `count` undelivered
    /// entries), so the items behind it move up. Returns whether it was there.
    pub async fn withdraw(
        &self,
        line: &Line,
        item: Item,
        count: usize,
    ) -> Result<bool, JobStreamError> {
        let entries: Vec<String> = self
            .waiting_entries(line, count)
            .await?
            .into_iter()
            .filter(|(_, waiting)| *waiting == item)
            .map(|(entry, _)| entry)
            .collect();
        if entries.is_empty() {
            return Ok(false);
        }
        let mut conn = self.connection.clone();
        let removed: usize = conn.xdel(self.key(line), &entries).await?;
        Ok(removed > 0)
    }

    /// Entries in the line's stream (waiting, running, and not yet trimmed).
    pub async fn len(&self, line: &Line) -> Result<usize, JobStreamError> {
        let key = self.key(line);
        let mut conn = self.connection.clone();
        Ok(conn.xlen(&key).await?)
    }
}
