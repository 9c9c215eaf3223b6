//! Cluster rows: the same rate ladder against Atelier in cluster mode — N nodes on one fresh
//! PostgreSQL database and one Redis key prefix, each node on its own CPU, the clients of every
//! session spread over the nodes in turn — so that almost every delivery crosses nodes (commit to
//! PostgreSQL, publish on Redis, apply and fan out on the other node).
//!
//! Run with 1 node too: the same cluster-mode server (PostgreSQL + Redis) without a peer, the
//! baseline the 2-node rows are compared with.

use anyhow::{bail, Context, Result};
use tokio::process::Command;

use super::servers::{Kind, Launcher};
use super::steps::{self, Params, SetupResult};
use crate::server::{DataDir, Server, ServerSpec, SharedStorage};

/// Where the nodes' database and Redis are.
#[derive(Debug, Clone)]
pub struct ClusterEnv {
    /// A PostgreSQL URL the bench may create (and drop) a database with.
    pub admin_database_url: String,
    pub redis_url: String,
    /// CPUs of node `i` (`taskset -c`); nodes beyond the list share the last entry.
    pub node_cpus: Vec<String>,
}

/// One ladder on `nodes` nodes.
#[derive(Debug, Clone)]
pub struct ClusterResult {
    pub nodes: usize,
    pub setup: SetupResult,
}

pub async fn run(
    launcher: &Launcher,
    env: &ClusterEnv,
    nodes: usize,
    params: &Params,
) -> Result<ClusterResult> {
    let tag = format!("atelier_bench_{}_{nodes}", std::process::id());
    psql(
        &env.admin_database_url,
        &format!("DROP DATABASE IF EXISTS {tag}"),
    )
    .await?;
    psql(&env.admin_database_url, &format!("CREATE DATABASE {tag}")).await?;
    let result = run_on(launcher, env, nodes, params, &tag).await;
    let dropped = psql(
        &env.admin_database_url,
        &format!("DROP DATABASE IF EXISTS {tag} WITH (FORCE)"),
    )
    .await;
    let result = result?;
    dropped?;
    Ok(result)
}

async fn run_on(
    launcher: &Launcher,
    env: &ClusterEnv,
    nodes: usize,
    params: &Params,
    database: &str,
) -> Result<ClusterResult> {
    let mut url = url::Url::parse(&env.admin_database_url).context("--cluster-database-url")?;
    url.set_path(&format!("/{database}"));
    let objects = DataDir::new()?;
    let shared = SharedStorage {
        database_url: url.to_string(),
        storage_url: format!("file://{}", objects.path().display()),
    };
    let mut dirs = Vec::new();
    let mut servers: Vec<Server> = Vec::new();
    // The first node migrates the fresh database before the others start.
    for i in 0..nodes {
        let cpus = env.node_cpus.get(i).or(env.node_cpus.last()).cloned();
        let mut spec: ServerSpec = launcher.atelier.clone();
        spec.cpus = cpus;
        spec.shared = Some(shared.clone());
        spec.env.extend([
            ("ATELIER_REDIS_URL".to_owned(), env.redis_url.clone()),
            ("ATELIER_REDIS_PREFIX".to_owned(), database.to_owned()),
            (
                "ATELIER_NODE_ID".to_owned(),
                format!("bench-node-{}", i + 1),
            ),
        ]);
        let dir = DataDir::new()?;
        servers.push(Server::start(&spec, &dir).await?);
        dirs.push(dir);
    }
    let result = steps::drive(launcher, Kind::Atelier, &servers, params).await;
    for server in servers {
        if result.is_err() {
            eprintln!("node log:\n{}", server.log_tail());
        }
        server.stop().await?;
    }
    Ok(ClusterResult {
        nodes,
        setup: result?,
    })
}

async fn psql(url: &str, sql: &str) -> Result<()> {
    let status = Command::new("psql")
        .arg(url)
        .arg("-qAtc")
        .arg(sql)
        .status()
        .await
        .context("running psql (the cluster rows need PostgreSQL's client)")?;
    if !status.success() {
        bail!("psql {sql:?} failed");
    }
    Ok(())
}
