//! The comparison's output: one summary table (a column per server, Atelier ÷ best peer, and the
//! goal from issue 17 where it has one), then the details of every scenario; and the same as JSON.

use serde_json::{json, Value};

use super::servers::Kind;
use super::steps::{SetupResult, Step};
use super::{Args, Results};
use crate::{cpu_model, thousands};

/// Which way a row is better.
#[derive(Clone, Copy)]
enum Better {
    Lower,
    Higher,
}

/// A goal on Atelier ÷ best peer: `ratio ≤ x` (lower is better) or `ratio ≥ x`.
struct Goal(f64);

struct Row {
    label: String,
    better: Better,
    goal: Option<Goal>,
    /// Per server (in `Results::servers` order): the compared value and the cell's text.
    cells: Vec<(Option<f64>, String)>,
    /// The goal is met when Atelier has a value and no peer has one (no peer carried the load).
    met_alone: bool,
}

impl Row {
    /// Whether Atelier has a value and no peer has one.
    fn atelier_alone(&self, servers: &[Kind]) -> bool {
        servers
            .iter()
            .zip(&self.cells)
            .all(|(kind, (value, _))| (*kind == Kind::Atelier) == value.is_some())
    }

    /// Atelier's value ÷ the best peer's.
    fn ratio(&self, servers: &[Kind]) -> Option<f64> {
        let mut atelier = None;
        let mut best: Option<f64> = None;
        for (kind, (value, _)) in servers.iter().zip(&self.cells) {
            let Some(value) = *value else { continue };
            if *kind == Kind::Atelier {
                atelier = Some(value);
            } else {
                best = Some(match (best, self.better) {
                    (None, _) => value,
                    (Some(b), Better::Lower) => b.min(value),
                    (Some(b), Better::Higher) => b.max(value),
                });
            }
        }
        match (atelier, best) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        }
    }
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

fn pct(cores: f64) -> String {
    format!("{:.0} %", cores * 100.0)
}

/// Whether a server carried a step's load: delivered (nearly) all of it, within the p99 limit,
/// with the generator not saturated.
fn kept_up(step: &Step, max_p99_ms: f64) -> bool {
    step.delivered >= 0.95 * step.offered_deliveries
        && step.latency.p99 <= max_p99_ms
        && step.lost == 0
        && !step.generator_saturated
}

/// A warning for a cell whose step saturated the generator (its numbers measure the generator).
fn saturated(step: &Step) -> &'static str {
    if step.generator_saturated {
        " ⚠ generator saturated"
    } else {
        ""
    }
}

fn setup_name((s, n): (usize, usize)) -> String {
    format!("{s} × {n}")
}

fn setup_of(results: &Results, kind: Kind, setup: (usize, usize)) -> Option<&SetupResult> {
    results
        .setups
        .iter()
        .find(|r| r.server == kind && (r.sessions, r.clients) == setup)
}

/// A cell for a server whose run is missing or stopped short.
fn missing(results: &Results, kind: Kind, setup: Option<(usize, usize)>) -> String {
    if let Some(setup) = setup {
        if let Some(r) = setup_of(results, kind, setup) {
            let last = r.steps.last().map_or(0.0, |s| s.rate);
            return format!("not reached (stopped after {last}/s: {})", r.stop);
        }
    }
    if results.failures.iter().any(|(k, _, _)| *k == kind) {
        "failed".into()
    } else {
        "–".into()
    }
}

fn rows(args: &Args, results: &Results) -> Vec<Row> {
    let servers = &results.servers;
    let mut rows = Vec::new();
    let headline = args.headline_setup;
    let (hs, hn) = headline;
    let per_rate = (hs * hn * (hn - 1)) as f64;
    let step_cell = |kind: Kind,
                     setup: (usize, usize),
                     rate: f64,
                     f: &dyn Fn(&Step) -> (Option<f64>, String)| {
        match setup_of(results, kind, setup).and_then(|r| r.at(rate)) {
            Some(step) => f(step),
            None => (None, missing(results, kind, Some(setup))),
        }
    };

    if !results.setups.is_empty() && args.setups.contains(&headline) {
        let rate = args.headline_rate;
        rows.push(Row {
            label: format!(
                "{}, {rate} edits/s per client ({} deliveries/s): p99",
                setup_name(headline),
                thousands(rate * per_rate)
            ),
            met_alone: false,
            better: Better::Lower,
            goal: Some(Goal(0.5)),
            cells: servers
                .iter()
                .map(|&k| {
                    step_cell(k, headline, rate, &|s| {
                        (
                            Some(s.latency.p99),
                            format!(
                                "{} (p50 {}; CPU {}){}",
                                ms(s.latency.p99),
                                ms(s.latency.p50),
                                pct(s.server_cpu),
                                saturated(s)
                            ),
                        )
                    })
                })
                .collect(),
        });
        rows.push(Row {
            label: format!(
                "{}: delivered updates/s at the highest rate with p99 ≤ {} ms",
                setup_name(headline),
                args.p99_budget_ms
            ),
            met_alone: true,
            better: Better::Higher,
            goal: Some(Goal(1.5)),
            cells: servers
                .iter()
                .map(|&k| best_cell(results, k, headline, args.p99_budget_ms))
                .collect(),
        });
        let cpu_rate = args.headline_cpu_rate();
        rows.push(Row {
            label: format!(
                "{}, {} deliveries/s ({cpu_rate} edits/s per client): server CPU",
                setup_name(headline),
                thousands(args.headline_deliveries)
            ),
            met_alone: true,
            better: Better::Lower,
            goal: Some(Goal(1.0)),
            cells: servers
                .iter()
                .map(|&k| {
                    step_cell(k, headline, cpu_rate, &|s| {
                        let text = format!(
                            "{} (p99 {}){}",
                            pct(s.server_cpu),
                            ms(s.latency.p99),
                            saturated(s)
                        );
                        // CPU only compares between servers that carried the load.
                        if kept_up(s, args.max_p99_ms) {
                            (Some(s.server_cpu), text)
                        } else {
                            (
                                None,
                                format!(
                                    "{text}: did not keep up ({}/s delivered)",
                                    thousands(s.delivered)
                                ),
                            )
                        }
                    })
                })
                .collect(),
        });
    }
    if !results.setups.is_empty() {
        for &setup in &args.setups {
            if setup != headline {
                rows.push(Row {
                    label: format!(
                        "{}: delivered updates/s at the highest rate with p99 ≤ {} ms",
                        setup_name(setup),
                        args.p99_budget_ms
                    ),
                    met_alone: false,
                    better: Better::Higher,
                    goal: None,
                    cells: servers
                        .iter()
                        .map(|&k| best_cell(results, k, setup, args.p99_budget_ms))
                        .collect(),
                });
            }
            rows.push(Row {
                label: format!(
                    "{}: most delivered updates/s in a step with p99 ≤ {} ms",
                    setup_name(setup),
                    args.max_p99_ms
                ),
                met_alone: false,
                better: Better::Higher,
                goal: None,
                cells: servers
                    .iter()
                    .map(|&k| {
                        let peak = setup_of(results, k, setup).and_then(|r| {
                            r.steps
                                .iter()
                                .filter(|s| s.latency.p99 <= args.max_p99_ms && s.lost == 0)
                                .max_by(|a, b| a.delivered.total_cmp(&b.delivered))
                        });
                        match peak {
                            Some(s) => (
                                Some(s.delivered),
                                format!(
                                    "{}/s at {}/s per client (CPU {})",
                                    thousands(s.delivered),
                                    s.rate,
                                    pct(s.server_cpu)
                                ),
                            ),
                            None => (None, missing(results, k, Some(setup))),
                        }
                    })
                    .collect(),
            });
        }
    }
    if !results.idle.is_empty() {
        let first = &results.idle[0];
        rows.push(Row {
            label: format!(
                "memory per idle connection ({} synced connections over {} documents)",
                thousands(first.connections as f64),
                first.documents
            ),
            met_alone: false,
            better: Better::Lower,
            goal: Some(Goal(0.5)),
            cells: servers
                .iter()
                .map(|&k| match results.idle.iter().find(|r| r.server == k) {
                    Some(r) => {
                        let per = r.bytes_per_connection();
                        let text = if r.alive == r.connections {
                            format!("{:.1} KiB", per / 1024.0)
                        } else {
                            format!(
                                "{:.1} KiB ({} of {} still open)",
                                per / 1024.0,
                                r.alive,
                                r.connections
                            )
                        };
                        (Some(per), text)
                    }
                    None => (None, missing(results, k, None)),
                })
                .collect(),
        });
    }
    if !results.cold.is_empty() {
        let first = &results.cold[0];
        rows.push(Row {
            label: format!(
                "cold sync of a {}-edit document (first start after it was built; connect → synced)",
                thousands(first.edits as f64)
            ),
            met_alone: false,
            better: Better::Lower,
            goal: Some(Goal(1.0)),
            cells: servers
                .iter()
                .map(|&k| match results.cold.iter().find(|r| r.server == k) {
                    Some(r) => match r.first() {
                        Some(m) => {
                            let later = r.later_median().map_or(String::new(), |l| {
                                format!("; later restarts {}", ms(l.synced.as_secs_f64() * 1e3))
                            });
                            (
                                Some(m.synced.as_secs_f64() * 1e3),
                                format!(
                                    "{} (step 2 in at {}; {:.0} KiB{later})",
                                    ms(m.synced.as_secs_f64() * 1e3),
                                    ms(m.step2_received.as_secs_f64() * 1e3),
                                    m.sync_bytes as f64 / 1024.0
                                ),
                            )
                        }
                        None => (None, "no run".into()),
                    },
                    None => (None, missing(results, k, None)),
                })
                .collect(),
        });
    }
    if !results.storm.is_empty() {
        let first = &results.storm[0];
        let label = format!(
            "reconnect storm: {} clients rejoin a restarted server at once ({} documents of {} edits)",
            thousands(first.clients as f64),
            first.documents,
            thousands(first.edits_per_document as f64)
        );
        let storm = |k: Kind| results.storm.iter().find(|r| r.server == k);
        rows.push(Row {
            label: format!("{label}: all synced"),
            met_alone: false,
            better: Better::Lower,
            goal: Some(Goal(1.0)),
            cells: servers
                .iter()
                .map(|&k| match storm(k) {
                    Some(r) if r.failed == 0 => (Some(r.all_synced_ms), ms(r.all_synced_ms)),
                    Some(r) => (None, format!("{} failed", r.failed)),
                    None => (None, missing(results, k, None)),
                })
                .collect(),
        });
        rows.push(Row {
            label: format!("{label}: per client p50 / p99"),
            met_alone: false,
            better: Better::Lower,
            goal: None,
            cells: servers
                .iter()
                .map(|&k| match storm(k) {
                    Some(r) => (
                        Some(r.per_client.p99),
                        format!("{} / {}", ms(r.per_client.p50), ms(r.per_client.p99)),
                    ),
                    None => (None, missing(results, k, None)),
                })
                .collect(),
        });
    }
    rows
}

fn best_cell(
    results: &Results,
    kind: Kind,
    setup: (usize, usize),
    budget: f64,
) -> (Option<f64>, String) {
    match setup_of(results, kind, setup) {
        Some(r) => match r.best_within(budget) {
            Some(s) => (
                Some(s.delivered),
                format!(
                    "{}/s at {}/s per client (p99 {})",
                    thousands(s.delivered),
                    s.rate,
                    ms(s.latency.p99)
                ),
            ),
            None => (
                None,
                format!("none (p99 > {budget} ms from the first step)"),
            ),
        },
        None => (None, missing(results, kind, None)),
    }
}

pub fn markdown(args: &Args, results: &Results) -> String {
    let servers = &results.servers;
    let mut out = String::new();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    out.push_str(&format!(
        "Machine: {} ({} CPU(s) for the generator); load average {} before, {} after. Servers on CPU {}, generator on CPU {}.\n\n",
        cpu_model(),
        cpus,
        results.load_before,
        results.load_after,
        args.server_cpus,
        args.client_cpus
    ));
    let has_ratio = servers.contains(&Kind::Atelier) && servers.iter().any(|k| *k != Kind::Atelier);
    out.push_str("| measurement |");
    for k in servers {
        out.push_str(&format!(" {} |", k.name()));
    }
    if has_ratio {
        out.push_str(" Atelier ÷ best peer | goal |");
    }
    out.push_str("\n|---|");
    for _ in servers {
        out.push_str("---|");
    }
    if has_ratio {
        out.push_str("---|---|");
    }
    out.push('\n');
    for row in rows(args, results) {
        out.push_str(&format!("| {} |", row.label));
        for (_, text) in &row.cells {
            out.push_str(&format!(" {text} |"));
        }
        if has_ratio {
            let ratio = row.ratio(servers);
            out.push_str(&match ratio {
                Some(r) => format!(" {r:.2} |"),
                None => " – |".into(),
            });
            out.push_str(&match (&row.goal, row.better, ratio) {
                (Some(Goal(g)), Better::Lower, Some(r)) => {
                    format!(" ≤ {g} {} |", if r <= *g { "✅" } else { "❌" })
                }
                (Some(Goal(g)), Better::Higher, Some(r)) => {
                    format!(" ≥ {g} {} |", if r >= *g { "✅" } else { "❌" })
                }
                (Some(Goal(g)), Better::Lower, None)
                    if row.met_alone && row.atelier_alone(servers) =>
                {
                    format!(" ≤ {g} ✅ (no peer carried it) |")
                }
                (Some(Goal(g)), Better::Lower, None) => format!(" ≤ {g} |"),
                (Some(Goal(g)), Better::Higher, None)
                    if row.met_alone && row.atelier_alone(servers) =>
                {
                    format!(" ≥ {g} ✅ (no peer carried it) |")
                }
                (Some(Goal(g)), Better::Higher, None) => format!(" ≥ {g} |"),
                (None, _, _) => " |".into(),
            });
        }
        out.push('\n');
    }
    if !results.setups.is_empty() {
        out.push_str(&format!(
            "\nGenerator CPU, highest step of each server's runs (of {} core(s); a step at ≥ 90 % is marked saturated and ends its setup):",
            results.generator_cores
        ));
        for &kind in servers {
            let most = results
                .setups
                .iter()
                .filter(|r| r.server == kind)
                .flat_map(|r| &r.steps)
                .map(|s| s.generator_cpu)
                .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.max(c))));
            if let Some(most) = most {
                out.push_str(&format!(" {} {};", kind.name(), pct(most)));
            }
        }
        out.pop();
        out.push_str(".\n");
    }
    for (kind, scenario, error) in &results.failures {
        out.push_str(&format!(
            "\n{} failed in {scenario}: {error}\n",
            kind.name()
        ));
    }

    for &setup in &args.setups {
        for &kind in servers {
            let Some(r) = setup_of(results, kind, setup) else {
                continue;
            };
            out.push_str(&format!(
                "\n{}, {} (stopped: {}):\n\n| edits/s per client | edits/s sent / offered | delivered updates/s / offered | p50 | p99 | max | server CPU | generator CPU | lost | unmatched |\n|---|---|---|---|---|---|---|---|---|---|\n",
                setup_name(setup),
                kind.name(),
                r.stop
            ));
            for s in &r.steps {
                out.push_str(&format!(
                    "| {} | {} / {} | {} / {} | {} | {} | {} | {} | {}{} | {} | {} |\n",
                    s.rate,
                    thousands(s.sent),
                    thousands(s.offered),
                    thousands(s.delivered),
                    thousands(s.offered_deliveries),
                    ms(s.latency.p50),
                    ms(s.latency.p99),
                    ms(s.latency.max),
                    pct(s.server_cpu),
                    pct(s.generator_cpu),
                    if s.generator_saturated {
                        " ⚠ saturated"
                    } else {
                        ""
                    },
                    s.lost,
                    s.unmatched,
                ));
            }
        }
    }
    if !results.idle.is_empty() {
        out.push_str("\nIdle connections:\n\n| server | connections | RSS before → held | per connection | still open | opened in |\n|---|---|---|---|---|---|\n");
        for r in &results.idle {
            out.push_str(&format!(
                "| {} | {} over {} documents, held {:.0} s | {:.1} → {:.1} MiB | {:.2} KiB | {} | {:.1} s |\n",
                r.server.name(),
                thousands(r.connections as f64),
                r.documents,
                r.hold_s,
                r.rss_before_kib as f64 / 1024.0,
                r.rss_held_kib as f64 / 1024.0,
                r.bytes_per_connection() / 1024.0,
                thousands(r.alive as f64),
                r.open_s
            ));
        }
    }
    if !results.cold.is_empty() {
        out.push_str("\nCold sync (a fresh client after each restart; restart 1 is the first start after the document was built):\n\n| server | built in | restart | connected | step 2 received | synced (applied) | bytes received |\n|---|---|---|---|---|---|---|\n");
        for r in &results.cold {
            for (i, run) in r.runs.iter().enumerate() {
                out.push_str(&format!(
                    "| {} | {:.1} s ({} edits/s) | {} | {} | {} | {} | {:.0} KiB |\n",
                    r.server.name(),
                    r.build_s,
                    thousands(r.edits as f64 / r.build_s.max(1e-3)),
                    i + 1,
                    ms(run.connected.as_secs_f64() * 1e3),
                    ms(run.step2_received.as_secs_f64() * 1e3),
                    ms(run.synced.as_secs_f64() * 1e3),
                    run.sync_bytes as f64 / 1024.0
                ));
            }
        }
    }
    if !results.cluster.is_empty() {
        out.push_str(&cluster_table(args, results));
    }
    if !results.storm.is_empty() {
        out.push_str("\nReconnect storm (from the storm's start to each client's step 2):\n\n| server | clients | all synced | p50 | p99 | max | failed | bytes per client | server CPU | generator CPU |\n|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &results.storm {
            out.push_str(&format!(
                "| {} | {} over {} documents | {} | {} | {} | {} | {} | {:.1} KiB | {} | {} |\n",
                r.server.name(),
                thousands(r.clients as f64),
                r.documents,
                ms(r.all_synced_ms),
                ms(r.per_client.p50),
                ms(r.per_client.p99),
                ms(r.per_client.max),
                r.failed,
                r.sync_bytes / 1024.0,
                pct(r.server_cpu),
                pct(r.generator_cpu)
            ));
        }
    }
    out
}

/// The cluster rows: one column per node count, then each ladder.
fn cluster_table(args: &Args, results: &Results) -> String {
    let (sessions, clients) = args.cluster_setup;
    let mut out = format!(
        "\nCluster mode ({sessions} × {clients}, the clients of each session spread over the nodes in turn; nodes on CPUs {}; PostgreSQL, Redis and the generator unpinned):\n\n| measurement |",
        args.cluster_node_cpus.join(", ")
    );
    for r in &results.cluster {
        out.push_str(&format!(" {} node(s) |", r.nodes));
    }
    out.push_str("\n|---|");
    for _ in &results.cluster {
        out.push_str("---|");
    }
    out.push('\n');
    let row = |label: &str, cell: &dyn Fn(&super::cluster::ClusterResult) -> String| {
        let mut line = format!("| {label} |");
        for r in &results.cluster {
            line.push_str(&format!(" {} |", cell(r)));
        }
        line.push('\n');
        line
    };
    out.push_str(&row(
        "fan-out at 10 edits/s per client: p50 / p99",
        &|r| match r.setup.at(10.0) {
            Some(s) => format!("{} / {}", ms(s.latency.p50), ms(s.latency.p99)),
            None => "not run".into(),
        },
    ));
    out.push_str(&row(
        &format!(
            "delivered updates/s at the highest rate with p99 ≤ {} ms",
            args.p99_budget_ms
        ),
        &|r| match r.setup.best_within(args.p99_budget_ms) {
            Some(s) => format!(
                "{}/s at {}/s per client (server CPU {})",
                thousands(s.delivered),
                s.rate,
                pct(s.server_cpu)
            ),
            None => "none".into(),
        },
    ));
    out.push_str(&row(
        "most delivered updates/s in a step (p99 ≤ 250 ms)",
        &|r| {
            r.setup
                .steps
                .iter()
                .filter(|s| s.latency.p99 <= 250.0 && s.lost == 0)
                .max_by(|a, b| a.delivered.total_cmp(&b.delivered))
                .map_or("none".into(), |s| {
                    format!(
                        "{}/s at {}/s (server CPU {}, generator {})",
                        thousands(s.delivered),
                        s.rate,
                        pct(s.server_cpu),
                        pct(s.generator_cpu)
                    )
                })
        },
    ));
    for r in &results.cluster {
        out.push_str(&format!(
            "\n{} node(s) (stopped: {}):\n\n| edits/s per client | delivered updates/s / offered | p50 | p99 | max | server CPU (all nodes) | generator CPU | lost |\n|---|---|---|---|---|---|---|---|\n",
            r.nodes, r.setup.stop
        ));
        for s in &r.setup.steps {
            out.push_str(&format!(
                "| {} | {} / {} | {} | {} | {} | {} | {} | {} |\n",
                s.rate,
                thousands(s.delivered),
                thousands(s.offered_deliveries),
                ms(s.latency.p50),
                ms(s.latency.p99),
                ms(s.latency.max),
                pct(s.server_cpu),
                pct(s.generator_cpu),
                s.lost
            ));
        }
    }
    out
}

pub fn json(args: &Args, results: &Results) -> Value {
    let servers = &results.servers;
    let summary: Vec<Value> = rows(args, results)
        .iter()
        .map(|row| {
            json!({
                "measurement": row.label,
                "values": servers.iter().zip(&row.cells).map(|(k, (v, text))| json!({
                    "server": k.name(), "value": v, "text": text,
                })).collect::<Vec<_>>(),
                "atelier_over_best_peer": row.ratio(servers),
                "lower_is_better": matches!(row.better, Better::Lower),
                "goal": row.goal.as_ref().map(|g| g.0),
            })
        })
        .collect();
    json!({
        "load_before": results.load_before,
        "load_after": results.load_after,
        "generator_cores": results.generator_cores,
        "server_cpus": args.server_cpus,
        "client_cpus": args.client_cpus,
        "step_s": args.step_s,
        "warmup_s": args.warmup_s,
        "summary": summary,
        "cluster": results.cluster.iter().map(|r| json!({
            "nodes": r.nodes,
            "stop": r.setup.stop,
            "steps": r.setup.steps.iter().map(|s| json!({
                "rate": s.rate, "delivered": s.delivered,
                "offered_deliveries": s.offered_deliveries,
                "p50_ms": s.latency.p50, "p99_ms": s.latency.p99, "max_ms": s.latency.max,
                "server_cpu": s.server_cpu, "generator_cpu": s.generator_cpu, "lost": s.lost,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "steps": results.setups.iter().map(|r| json!({
            "server": r.server.name(), "sessions": r.sessions, "clients": r.clients,
            "stop": r.stop,
            "steps": r.steps.iter().map(|s| json!({
                "rate": s.rate, "offered": s.offered, "sent": s.sent,
                "delivered": s.delivered, "offered_deliveries": s.offered_deliveries,
                "latency": s.latency.json(), "server_cpu": s.server_cpu,
                "generator_cpu": s.generator_cpu, "generator_saturated": s.generator_saturated,
                "lost": s.lost, "unmatched": s.unmatched, "ended": s.ended,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "idle": results.idle.iter().map(|r| json!({
            "server": r.server.name(), "connections": r.connections, "documents": r.documents,
            "rss_before_kib": r.rss_before_kib, "rss_held_kib": r.rss_held_kib,
            "hold_s": r.hold_s, "alive": r.alive, "open_s": r.open_s,
            "bytes_per_connection": r.bytes_per_connection(),
        })).collect::<Vec<_>>(),
        "cold": results.cold.iter().map(|r| json!({
            "server": r.server.name(), "edits": r.edits, "writers": r.writers,
            "build_s": r.build_s,
            "first_synced_ms": r.first().map(|m| m.synced.as_secs_f64() * 1e3),
            "later_median_synced_ms": r.later_median().map(|m| m.synced.as_secs_f64() * 1e3),
            "runs": r.runs.iter().map(|run| json!({
                "connected_ms": run.connected.as_secs_f64() * 1e3,
                "step2_received_ms": run.step2_received.as_secs_f64() * 1e3,
                "synced_ms": run.synced.as_secs_f64() * 1e3,
                "sync_bytes": run.sync_bytes,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "storm": results.storm.iter().map(|r| json!({
            "server": r.server.name(), "clients": r.clients, "documents": r.documents,
            "edits_per_document": r.edits_per_document, "all_synced_ms": r.all_synced_ms,
            "per_client": r.per_client.json(), "failed": r.failed,
            "sync_bytes": r.sync_bytes, "server_cpu": r.server_cpu,
            "generator_cpu": r.generator_cpu,
        })).collect::<Vec<_>>(),
        "failures": results.failures.iter().map(|(k, scenario, error)| json!({
            "server": k.name(), "scenario": scenario, "error": error,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::tests::args;
    use crate::Latencies;

    fn step(rate: f64, p99: f64, cpu: f64, delivered_share: f64) -> Step {
        let offered_deliveries = rate * 900.0;
        Step {
            rate,
            offered: rate * 100.0,
            sent: rate * 100.0,
            delivered: offered_deliveries * delivered_share,
            offered_deliveries,
            latency: Latencies {
                count: 1000,
                p50: p99 / 4.0,
                p99,
                p999: p99,
                max: p99,
            },
            server_cpu: cpu,
            generator_cpu: 0.2,
            generator_saturated: false,
            lost: 0,
            unmatched: 0,
            ended: 0,
        }
    }

    fn setup(server: Kind, steps: Vec<Step>) -> SetupResult {
        SetupResult {
            server,
            sessions: 10,
            clients: 10,
            steps,
            stop: "p99 over 250 ms".into(),
        }
    }

    #[test]
    fn the_summary_compares_atelier_with_the_best_peer() {
        let args = args(&["--setups", "10x10", "--rates", "40,80"]);
        let results = Results {
            servers: vec![Kind::Atelier, Kind::YWebsocket, Kind::Hocuspocus],
            setups: vec![
                setup(
                    Kind::Atelier,
                    vec![step(40.0, 4.0, 0.40, 1.0), step(80.0, 20.0, 0.90, 1.0)],
                ),
                // Kept up at 80/s, but slower.
                setup(
                    Kind::YWebsocket,
                    vec![step(40.0, 24.0, 0.60, 1.0), step(80.0, 160.0, 1.0, 1.0)],
                ),
                // Fastest at 40/s; at 80/s it fell behind, so its CPU there does not count.
                setup(
                    Kind::Hocuspocus,
                    vec![step(40.0, 10.0, 0.30, 1.0), step(80.0, 300.0, 0.5, 0.6)],
                ),
            ],
            generator_cores: 1,
            ..Results::default()
        };
        let rows = rows(&args, &results);
        let servers = &results.servers;
        // p99 at 40/s: 4 ms against Hocuspocus' 10 ms.
        assert_eq!(rows[0].ratio(servers), Some(0.4));
        // Highest rate within 50 ms: Atelier 80/s (72,000/s) against 40/s (36,000/s).
        assert_eq!(rows[1].ratio(servers), Some(2.0));
        // CPU at 72,000/s: against y-websocket only (Hocuspocus did not keep up).
        assert_eq!(rows[2].ratio(servers), Some(0.9));
        assert!(rows[2].cells[2].1.contains("did not keep up"));
        let table = markdown(&args, &results);
        assert!(table.contains("| 0.40 | ≤ 0.5 ✅ |"), "{table}");
        assert!(table.contains("| 2.00 | ≥ 1.5 ✅ |"), "{table}");
        assert!(table.contains("| 0.90 | ≤ 1 ✅ |"), "{table}");
    }

    #[test]
    fn a_goal_is_met_alone_when_no_peer_carried_the_load() {
        let args = args(&["--setups", "10x10", "--rates", "40,80"]);
        let results = Results {
            servers: vec![Kind::Atelier, Kind::Hocuspocus],
            setups: vec![
                setup(
                    Kind::Atelier,
                    vec![step(40.0, 4.0, 0.40, 1.0), step(80.0, 20.0, 0.90, 1.0)],
                ),
                setup(Kind::Hocuspocus, vec![step(40.0, 300.0, 1.0, 0.5)]),
            ],
            generator_cores: 1,
            ..Results::default()
        };
        let table = markdown(&args, &results);
        assert!(table.contains("not reached (stopped after 40/s"), "{table}");
        assert!(
            table.contains("| – | ≤ 1 ✅ (no peer carried it) |"),
            "{table}"
        );
        assert!(
            table.contains("| – | ≥ 1.5 ✅ (no peer carried it) |"),
            "{table}"
        );
    }
}
