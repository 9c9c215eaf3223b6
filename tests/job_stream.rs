//! The cluster's job streams against a real Redis (`ATELIER_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`), each test under a fresh key prefix: a job pushed on one node is
//! claimed by exactly one node, a dead node's claim is taken over after `min_idle` and runs
//! once, acknowledged entries are trimmed away, and hostile class names are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use atelier::cluster::job_stream::{
    Item, JobStream, JobStreamError, Line, StreamClaim, DEFAULT_MAX_LEN,
};
use atelier_protocol::ids::{JobId, LeaseId};
use redis::AsyncCommands;

fn t4() -> Line {
    Line::class_jobs("t4").unwrap()
}

fn job_of(claim: &StreamClaim) -> JobId {
    claim.job().expect("a job entry")
}

fn redis_url() -> String {
    std::env::var("ATELIER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

struct Cluster {
    client: redis::Client,
    prefix: String,
}

impl Cluster {
    fn new() -> Self {
        Self {
            client: redis::Client::open(redis_url()).expect("redis url"),
            prefix: format!("atelier-test-streams-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    async fn node(&self, id: &str) -> JobStream {
        JobStream::connect(&self.client, &self.prefix, id, DEFAULT_MAX_LEN)
            .await
            .expect("connect to redis")
    }

    async fn clean(&self) {
        let mut conn = self
            .client
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        let keys: Vec<String> = conn.keys(format!("{}:*", self.prefix)).await.expect("keys");
        if !keys.is_empty() {
            let _: () = conn.del(keys).await.expect("del");
        }
    }
}

#[tokio::test]
async fn a_job_pushed_on_one_node_is_claimed_by_exactly_one_node_in_order() {
    let cluster = Cluster::new();
    let (n1, n2, n3) = (
        cluster.node("n1").await,
        cluster.node("n2").await,
        cluster.node("n3").await,
    );
    let jobs: Vec<JobId> = (0..3).map(|_| JobId::new_random()).collect();
    for job in &jobs {
        n1.push(&t4(), Item::Job(*job)).await.expect("push");
    }
    let on_n3 = n3.claim(&t4(), 2).await.expect("claim");
    let on_n2 = n2.claim(&t4(), 10).await.expect("claim");
    let again = n3.claim(&t4(), 10).await.expect("claim");
    assert_eq!(
        on_n3.iter().map(job_of).collect::<Vec<_>>(),
        jobs[..2].to_vec(),
        "first come, first served"
    );
    assert_eq!(on_n2.iter().map(job_of).collect::<Vec<_>>(), vec![jobs[2]]);
    assert!(again.is_empty(), "a claimed job is not handed out twice");
    assert!(
        n1.claim(&Line::class_jobs("a100").unwrap(), 10)
            .await
            .expect("claim")
            .is_empty(),
        "classes are separate streams"
    );
    cluster.clean().await;
}

#[tokio::test]
async fn a_dead_nodes_claim_is_taken_over_after_min_idle_and_runs_once() {
    let cluster = Cluster::new();
    let (n1, n2, n3) = (
        cluster.node("n1").await,
        cluster.node("n2").await,
        cluster.node("n3").await,
    );
    let job = JobId::new_random();
    n1.push(&t4(), Item::Job(job)).await.expect("push");
    let claimed = n1.claim(&t4(), 1).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    // n1 dies holding the claim. Before min_idle nobody may take it.
    let min_idle = Duration::from_millis(300);
    assert!(n2
        .take_over(&t4(), min_idle, 10)
        .await
        .expect("autoclaim")
        .is_empty());
    tokio::time::sleep(min_idle + Duration::from_millis(100)).await;
    let taken = n2.take_over(&t4(), min_idle, 10).await.expect("autoclaim");
    assert_eq!(taken.iter().map(job_of).collect::<Vec<_>>(), vec![job]);
    assert_eq!(taken[0].entry, claimed[0].entry);
    // n3 looks at once: the claim is fresh again under n2, so it stays there.
    assert!(n3
        .take_over(&t4(), min_idle, 10)
        .await
        .expect("autoclaim")
        .is_empty());
    n2.ack(&taken[0]).await.expect("ack");
    tokio::time::sleep(min_idle + Duration::from_millis(100)).await;
    assert!(
        n3.take_over(&t4(), min_idle, 10)
            .await
            .expect("autoclaim")
            .is_empty(),
        "an acknowledged job is never handed out again"
    );
    assert!(n3.claim(&t4(), 10).await.expect("claim").is_empty());
    cluster.clean().await;
}

#[tokio::test]
async fn a_live_node_keeps_its_claims_and_learns_which_it_lost() {
    let cluster = Cluster::new();
    let (n1, n2) = (cluster.node("n1").await, cluster.node("n2").await);
    let (long, stalled) = (JobId::new_random(), JobId::new_random());
    n1.push(&t4(), Item::Job(long)).await.expect("push");
    n1.push(&t4(), Item::Job(stalled)).await.expect("push");
    let claims = n1.claim(&t4(), 2).await.expect("claim");
    let min_idle = Duration::from_millis(400);
    // n1 keeps the long job alive past min_idle; the other one it lets go idle.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let lost = n1
            .keep_alive(&t4(), &claims[..1])
            .await
            .expect("keep alive");
        assert!(lost.is_empty());
    }
    let taken = n2.take_over(&t4(), min_idle, 10).await.expect("autoclaim");
    assert_eq!(
        taken.iter().map(job_of).collect::<Vec<_>>(),
        vec![stalled],
        "only the idle claim moves"
    );
    // n1 wakes up: its keep-alive does not steal the stalled job back, and tells it it lost it.
    let lost = n1.keep_alive(&t4(), &claims).await.expect("keep alive");
    assert_eq!(lost.iter().map(job_of).collect::<Vec<_>>(), vec![stalled]);
    tokio::time::sleep(min_idle + Duration::from_millis(100)).await;
    let back = n1.take_over(&t4(), min_idle, 10).await.expect("autoclaim");
    assert_eq!(
        back.iter().map(job_of).collect::<Vec<_>>(),
        vec![long, stalled],
        "without keep-alives both are idle again"
    );
    cluster.clean().await;
}

#[tokio::test]
async fn acknowledged_entries_are_trimmed_and_waiting_ones_kept() {
    let cluster = Cluster::new();
    let node = cluster.node("n1").await;
    let jobs: Vec<JobId> = (0..5).map(|_| JobId::new_random()).collect();
    for job in &jobs {
        node.push(&t4(), Item::Job(*job)).await.expect("push");
    }
    let claims = node.claim(&t4(), 3).await.expect("claim");
    // The second one finishes first: the first is still pending, nothing before it may go.
    node.ack(&claims[1]).await.expect("ack");
    assert_eq!(node.len(&t4()).await.expect("len"), 5);
    node.ack(&claims[0]).await.expect("ack");
    // Entries 0 and 1 are acknowledged and older than the pending entry 2: trimmed.
    assert_eq!(node.len(&t4()).await.expect("len"), 3);
    node.ack(&claims[2]).await.expect("ack");
    // None pending: entries up to the last delivered one go (it stays as the threshold).
    assert_eq!(node.len(&t4()).await.expect("len"), 3);
    let rest = node.claim(&t4(), 10).await.expect("claim");
    assert_eq!(
        rest.iter().map(job_of).collect::<Vec<_>>(),
        jobs[3..].to_vec(),
        "waiting jobs survive every trim"
    );
    for claim in &rest {
        node.ack(claim).await.expect("ack");
    }
    assert_eq!(node.len(&t4()).await.expect("len"), 1);
    cluster.clean().await;
}

#[tokio::test]
async fn the_stream_is_bounded_even_if_nobody_acknowledges() {
    let cluster = Cluster::new();
    let node = JobStream::connect(&cluster.client, &cluster.prefix, "n1", 100)
        .await
        .expect("connect");
    for _ in 0..1_000 {
        node.push(&t4(), Item::Job(JobId::new_random()))
            .await
            .expect("push");
    }
    let len = node.len(&t4()).await.expect("len");
    assert!(
        len < 300,
        "MAXLEN ~ 100 keeps the stream near 100, got {len}"
    );
    cluster.clean().await;
}

#[tokio::test]
async fn hostile_class_names_are_refused_before_redis() {
    for class in ["", "a b", "x:y", "*", &"a".repeat(65)] {
        assert!(
            matches!(Line::class_jobs(class), Err(JobStreamError::BadClass))
                && matches!(Line::leases(class), Err(JobStreamError::BadClass))
                && matches!(Line::node_jobs(class), Err(JobStreamError::BadClass)),
            "{class:?}"
        );
    }
}

#[tokio::test]
async fn a_lease_line_reports_places_among_the_undelivered_entries() {
    let cluster = Cluster::new();
    let (n1, n2) = (cluster.node("n1").await, cluster.node("n2").await);
    let line = Line::leases("cpu").unwrap();
    assert!(
        n1.waiting(&line, 10).await.unwrap().is_empty(),
        "no line yet"
    );
    let leases: Vec<LeaseId> = (0..3).map(|_| LeaseId::new_random()).collect();
    for lease in &leases {
        n1.push(&line, Item::Lease(*lease)).await.expect("push");
    }
    let all: Vec<Item> = leases.iter().map(|l| Item::Lease(*l)).collect();
    assert_eq!(n2.waiting(&line, 10).await.unwrap(), all);
    // The first is delivered (a node with a free slot took it): the others move up.
    let taken = n2.claim(&line, 1).await.unwrap();
    assert_eq!(taken[0].lease(), Some(leases[0]));
    assert_eq!(taken[0].job(), None);
    assert_eq!(n1.waiting(&line, 10).await.unwrap(), all[1..].to_vec());
    n2.ack(&taken[0]).await.unwrap();
    assert_eq!(n1.waiting(&line, 10).await.unwrap(), all[1..].to_vec());
    // The second leaves the line (stopped while it waited): the third moves up, and is the
    // next one delivered.
    assert!(n1.withdraw(&line, all[1], 10).await.unwrap());
    assert!(
        !n1.withdraw(&line, all[1], 10).await.unwrap(),
        "gone already"
    );
    assert_eq!(n2.waiting(&line, 10).await.unwrap(), all[2..].to_vec());
    let next = n2.claim(&line, 10).await.unwrap();
    assert_eq!(
        next.iter().map(|c| c.item).collect::<Vec<_>>(),
        all[2..].to_vec()
    );
    cluster.clean().await;
}

#[tokio::test]
async fn node_streams_are_found_and_a_restarted_node_rereads_its_pending_entries() {
    let cluster = Cluster::new();
    let n1 = cluster.node("n1").await;
    let (job_a, job_b) = (JobId::new_random(), JobId::new_random());
    let to_n2 = Line::node_jobs("n2").unwrap();
    let to_n3 = Line::node_jobs("n3").unwrap();
    n1.push(&to_n2, Item::Job(job_a)).await.unwrap();
    n1.push(&to_n3, Item::Job(job_b)).await.unwrap();
    let mut lines = n1.node_lines().await.unwrap();
    lines.sort();
    assert_eq!(lines, vec![to_n2.clone(), to_n3.clone()]);
    assert_eq!(to_n2.node(), Some("n2"));
    let n2 = cluster.node("n2").await;
    let claims = n2.claim(&to_n2, 10).await.unwrap();
    assert_eq!(claims.iter().map(job_of).collect::<Vec<_>>(), vec![job_a]);
    // n2 restarts under the same id: nothing new, but its pending entry comes back.
    let n2_again = cluster.node("n2").await;
    assert!(n2_again.claim(&to_n2, 10).await.unwrap().is_empty());
    let pending = n2_again.own_pending(&to_n2, 10).await.unwrap();
    assert_eq!(pending, claims);
    cluster.clean().await;
}
