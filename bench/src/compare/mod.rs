//! `atelier-bench compare`: Atelier next to the servers a user would pick instead — the
//! y-websocket reference server (`@y/websocket-server` + y-leveldb) and Hocuspocus
//! (`@hocuspocus/server` + its SQLite extension) — on the same workloads, with the same load
//! generator, each server pinned to one core and the generator on the others.
//!
//! Layout: [`servers`] starts each server (persistence on, fresh temporary directory) and names
//! its documents; [`proto`] frames y-sync messages for each ([`proto::Framing`]); [`wire`] is the
//! generator's minimal WebSocket client and [`load`] its client task (pre-encoded edits out,
//! header-only parsing in). Scenarios: [`steps`] (S sessions × N clients, per-client edit rate
//! raised step by step), [`idle`] (memory per idle connection), [`cold`] (a fresh client's sync
//! of a 100k-edit document after a restart), [`storm`] (thousands of clients rejoining at once
//! after a restart). [`report`] prints one table with a column per server and the ratios, then
//! the details.

mod cluster;
mod cold;
mod idle;
mod load;
mod proto;
mod report;
mod servers;
mod steps;
mod storm;
mod wire;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::ValueEnum;

pub use servers::Kind;

use crate::server::ServerSpec;
use crate::{loadavg, parse_setup, ServerArgs};

/// What the comparison runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// S sessions × N clients, per-client edit rate raised step by step.
    Steps,
    /// Server memory per idle synced connection.
    Idle,
    /// A fresh client's sync of a large document after a server restart.
    Cold,
    /// Many clients rejoining at once after a server restart.
    Storm,
    /// Atelier alone, in cluster mode: the rate ladder with the clients of each session spread
    /// over 1 and 2 nodes (PostgreSQL + Redis; not in the default list).
    Cluster,
}

/// Atelier against the y-websocket reference server and Hocuspocus, same workloads, same
/// generator, each server on one core.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Servers to run, in this order within each workload.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "atelier,y-websocket,hocuspocus"
    )]
    pub servers: Vec<Kind>,

    /// Scenarios to run, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "steps,idle,cold,storm"
    )]
    pub scenarios: Vec<Scenario>,

    /// Steps: setups to run, SESSIONSxCLIENTS (clients per session; every client edits).
    #[arg(long, value_delimiter = ',', value_parser = parse_setup,
          default_value = "10x10,1x50,100x3,2x98")]
    pub setups: Vec<(usize, usize)>,

    /// Steps: edits per second per client, in order; a setup stops after the first step whose
    /// p99 is over `--max-p99-ms`, or that saturates the generator, or where the server closes
    /// connections. The headline rates are added for the headline setup.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,5,10,20,30,40,50,60,70,80,90,100,120,140,160,200,250,320,400,500,640,800,1000"
    )]
    pub rates: Vec<f64>,

    /// Steps: seconds measured per step (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub step_s: f64,

    /// Steps: seconds of warm-up per step (sent, not measured).
    #[arg(long, default_value_t = 1.0)]
    pub warmup_s: f64,

    /// Steps: stop a setup after a step with p99 above this.
    #[arg(long, default_value_t = 250.0)]
    pub max_p99_ms: f64,

    /// The setup of the summary's headline rows.
    #[arg(long, value_parser = parse_setup, default_value = "10x10")]
    pub headline_setup: (usize, usize),

    /// Headline: the per-client rate whose p99 is compared.
    #[arg(long, default_value_t = 40.0)]
    pub headline_rate: f64,

    /// Headline: the deliveries per second at which server CPU is compared (the per-client rate
    /// that offers them is run).
    #[arg(long, default_value_t = 72_000.0)]
    pub headline_deliveries: f64,

    /// The p99 budget for "highest rate with p99 within budget" rows.
    #[arg(long, default_value_t = 50.0)]
    pub p99_budget_ms: f64,

    /// Idle: connections to open.
    #[arg(long, default_value_t = 5000)]
    pub idle_connections: usize,

    /// Idle: documents they are spread over.
    #[arg(long, default_value_t = 50)]
    pub idle_documents: usize,

    /// Idle: seconds to hold them (through server pings) before measuring.
    #[arg(long, default_value_t = 12)]
    pub idle_hold_s: u64,

    /// Cold: single-character edits (typing runs) the document is built from.
    #[arg(long, default_value_t = 100_000)]
    pub cold_edits: u64,

    /// Cold: clients building it.
    #[arg(long, default_value_t = 16)]
    pub cold_writers: usize,

    /// Cold: restarts, one fresh client timed after each. The summary has the first; the
    /// details, the median of the others too.
    #[arg(long, default_value_t = 3)]
    pub cold_runs: usize,

    /// Storm: clients rejoining at once.
    #[arg(long, default_value_t = 2000)]
    pub storm_clients: usize,

    /// Storm: documents they are spread over.
    #[arg(long, default_value_t = 20)]
    pub storm_documents: usize,

    /// Storm: edits each document is built from.
    #[arg(long, default_value_t = 2000)]
    pub storm_edits: u64,

    /// Cluster: node counts to run the ladder on.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub cluster_nodes: Vec<usize>,

    /// Cluster: the setup (sessions × clients) whose clients are spread over the nodes.
    #[arg(long, value_parser = parse_setup, default_value = "10x10")]
    pub cluster_setup: (usize, usize),

    /// Cluster: CPUs of each node (`taskset -c`), in order.
    #[arg(long, value_delimiter = ',', default_value = "0,1")]
    pub cluster_node_cpus: Vec<String>,

    /// Cluster: a PostgreSQL URL allowed to create and drop the bench's database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub cluster_database_url: String,

    /// Cluster: the Redis the nodes relay through (a fresh key prefix per run).
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    pub cluster_redis_url: String,

    /// The CPUs every server is pinned to (`taskset -c`).
    #[arg(long, default_value = "0")]
    pub server_cpus: String,

    /// The CPUs the generator is pinned to; it runs one thread per CPU.
    #[arg(long, default_value = "1")]
    pub client_cpus: String,

    /// `node` for the peer servers.
    #[arg(long, default_value = "node")]
    pub node: PathBuf,

    /// Directory of the peer scripts and their `node_modules` (`npm ci` there).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/peers"))]
    pub peers_dir: PathBuf,

    #[command(flatten)]
    pub atelier: ServerArgs,

    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl Args {
    /// Per-client rate that offers `headline_deliveries` in the headline setup.
    fn headline_cpu_rate(&self) -> f64 {
        let (s, n) = self.headline_setup;
        self.headline_deliveries / (s * n * (n - 1)) as f64
    }

    /// The rate ladder of a setup: the headline setup also runs the headline rates.
    fn rates_for(&self, setup: (usize, usize)) -> Vec<f64> {
        let mut rates = self.rates.clone();
        if setup == self.headline_setup {
            rates.push(self.headline_rate);
            rates.push(self.headline_cpu_rate());
        }
        rates.retain(|r| r.is_finite() && *r > 0.0);
        rates.sort_by(f64::total_cmp);
        rates.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
        rates
    }
}

/// Everything measured, per server.
#[derive(Debug, Default)]
pub struct Results {
    pub servers: Vec<Kind>,
    pub setups: Vec<steps::SetupResult>,
    pub idle: Vec<idle::IdleResult>,
    pub cold: Vec<cold::ColdResult>,
    pub storm: Vec<storm::StormResult>,
    pub cluster: Vec<cluster::ClusterResult>,
    /// (server, scenario, error) of runs that failed.
    pub failures: Vec<(Kind, String, String)>,
    pub generator_cores: usize,
    pub load_before: String,
    pub load_after: String,
}

/// Runs the comparison. The generator must already be pinned (see [`generator_threads`]).
pub async fn run(args: Args) -> Result<()> {
    let bin = crate::server_bin(&args.atelier)?;
    // Atelier's per-connection limits are raised so that they do not end a step the peers
    // (which have none) would pass: messages per second and the outbound queue.
    let mut atelier_args = vec![
        "--ws-max-messages-per-sec".to_owned(),
        "1000000".to_owned(),
        "--ws-max-per-account".to_owned(),
        "1000000".to_owned(),
        "--ws-max-per-ip".to_owned(),
        "1000000".to_owned(),
        "--ws-outbound-queue-frames".to_owned(),
        "65536".to_owned(),
    ];
    atelier_args.extend(args.atelier.server_args.iter().cloned());
    let launcher = servers::Launcher {
        atelier: ServerSpec {
            bin,
            cpus: None,
            args: atelier_args,
            log_filter: args.atelier.server_log.clone(),
            env: args.atelier.server_env.clone(),
            shared: None,
        },
        node: args.node.clone(),
        peers_dir: args.peers_dir.clone(),
        cpus: args.server_cpus.clone(),
    };
    servers::check_peers(&launcher, &args.servers)?;
    let generator_cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut results = Results {
        servers: args.servers.clone(),
        generator_cores,
        load_before: loadavg(),
        ..Results::default()
    };
    eprintln!(
        "compare: servers on CPU {}, generator on CPU {} ({generator_cores} thread(s))",
        args.server_cpus, args.client_cpus
    );
    for scenario in &args.scenarios {
        match scenario {
            Scenario::Steps => {
                for &(sessions, clients) in &args.setups {
                    let params = steps::Params {
                        sessions,
                        clients,
                        rates: args.rates_for((sessions, clients)),
                        warmup: Duration::from_secs_f64(args.warmup_s),
                        window: Duration::from_secs_f64(args.step_s),
                        max_p99_ms: args.max_p99_ms,
                        generator_cores,
                    };
                    for &kind in &args.servers {
                        eprintln!("steps: {} — {sessions} × {clients}", kind.name());
                        match steps::run(&launcher, kind, &params).await {
                            Ok(r) => results.setups.push(r),
                            Err(e) => results.fail(kind, &format!("steps {sessions}×{clients}"), e),
                        }
                    }
                }
            }
            Scenario::Idle => {
                for &kind in &args.servers {
                    eprintln!(
                        "idle: {} — {} connections over {} documents",
                        kind.name(),
                        args.idle_connections,
                        args.idle_documents
                    );
                    let hold = Duration::from_secs(args.idle_hold_s);
                    match idle::run(
                        &launcher,
                        kind,
                        args.idle_connections,
                        args.idle_documents,
                        hold,
                    )
                    .await
                    {
                        Ok(r) => {
                            eprintln!(
                                "  {:.2} KiB per connection ({} alive)",
                                r.bytes_per_connection() / 1024.0,
                                r.alive
                            );
                            results.idle.push(r);
                        }
                        Err(e) => results.fail(kind, "idle", e),
                    }
                }
            }
            Scenario::Cold => {
                for &kind in &args.servers {
                    eprintln!(
                        "cold: {} — {} edits from {} writers, {} restarts",
                        kind.name(),
                        args.cold_edits,
                        args.cold_writers,
                        args.cold_runs
                    );
                    match cold::run(
                        &launcher,
                        kind,
                        args.cold_edits,
                        args.cold_writers,
                        args.cold_runs,
                    )
                    .await
                    {
                        Ok(r) => {
                            if let Some(m) = r.first() {
                                eprintln!(
                                    "  synced in {:.1} ms after the first restart (built in {:.1} s)",
                                    m.synced.as_secs_f64() * 1e3,
                                    r.build_s
                                );
                            }
                            results.cold.push(r);
                        }
                        Err(e) => results.fail(kind, "cold", e),
                    }
                }
            }
            Scenario::Cluster => {
                let (sessions, clients) = args.cluster_setup;
                let env = cluster::ClusterEnv {
                    admin_database_url: args.cluster_database_url.clone(),
                    redis_url: args.cluster_redis_url.clone(),
                    node_cpus: args.cluster_node_cpus.clone(),
                };
                let params = steps::Params {
                    sessions,
                    clients,
                    rates: args.rates_for((sessions, clients)),
                    warmup: Duration::from_secs_f64(args.warmup_s),
                    window: Duration::from_secs_f64(args.step_s),
                    max_p99_ms: args.max_p99_ms,
                    generator_cores,
                };
                for &nodes in &args.cluster_nodes {
                    eprintln!("cluster: {nodes} node(s) — {sessions} × {clients} spread over them");
                    match cluster::run(&launcher, &env, nodes, &params).await {
                        Ok(r) => results.cluster.push(r),
                        Err(e) => {
                            results.fail(Kind::Atelier, &format!("cluster {nodes} node(s)"), e)
                        }
                    }
                }
            }
            Scenario::Storm => {
                for &kind in &args.servers {
                    eprintln!(
                        "storm: {} — {} clients over {} documents of {} edits",
                        kind.name(),
                        args.storm_clients,
                        args.storm_documents,
                        args.storm_edits
                    );
                    match storm::run(
                        &launcher,
                        kind,
                        args.storm_clients,
                        args.storm_documents,
                        args.storm_edits,
                    )
                    .await
                    {
                        Ok(r) => {
                            eprintln!(
                                "  all synced in {:.0} ms (p50 {:.1} / p99 {:.1} ms, {} failed)",
                                r.all_synced_ms, r.per_client.p50, r.per_client.p99, r.failed
                            );
                            results.storm.push(r);
                        }
                        Err(e) => results.fail(kind, "storm", e),
                    }
                }
            }
        }
    }
    results.load_after = loadavg();
    println!("{}", report::markdown(&args, &results));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report::json(&args, &results))?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

impl Results {
    fn fail(&mut self, kind: Kind, scenario: &str, error: anyhow::Error) {
        eprintln!("{} {scenario} failed: {error:#}", kind.name());
        self.failures
            .push((kind, scenario.to_owned(), format!("{error:#}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    pub(super) fn args(flags: &[&str]) -> Args {
        let mut argv = vec!["atelier-bench"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn the_headline_setup_also_runs_the_headline_rates() {
        let args = args(&["--rates", "5,20,40"]);
        // 72,000 deliveries/s over 10 sessions of 10 clients, 9 receivers per edit.
        assert_eq!(args.headline_cpu_rate(), 80.0);
        assert_eq!(args.rates_for((10, 10)), vec![5.0, 20.0, 40.0, 80.0]);
        assert_eq!(args.rates_for((2, 98)), vec![5.0, 20.0, 40.0]);
    }
}
