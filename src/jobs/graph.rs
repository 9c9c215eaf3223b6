//! The session graph: read from the session document, validated against the model catalog and
//! compiled into the steps a worker runs. Every problem is reported before any GPU time is used,
//! naming the node (or edge) and what is wrong.
//!
//! Node types are the catalog's models plus one built-in sink, [`OUTPUT_NODE`]: it has one input
//! port (`image`, of any type) and marks which images are the job's outputs. Edges go from an
//! output port of a node to an input port of another; they order the steps, must not form a
//! cycle, and must join ports of the same type (`heightmap`, `image`, `mask`; an `any` input
//! takes every type and its node's `any` output passes it on). Each step records where its
//! inputs come from and its content address ([`Plan::compute_keys`]), which the cache looks up.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use atelier_protocol::worker::{JobStep, PortRef};
use serde_json::{Map, Value};
use yrs::{Doc, Map as _, ReadTxn, Transact};

use crate::inference::catalog::Port;
use crate::inference::ModelCatalog;

/// The built-in sink node type.
pub const OUTPUT_NODE: &str = "output";
/// Its one input port.
pub const OUTPUT_PORT: &str = "image";
/// Largest accepted seed: integers a JavaScript client can hold exactly.
pub const MAX_SEED: u64 = (1 << 53) - 1;
/// Most nodes a job may run.
pub const MAX_NODES: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: String,
    pub node_type: String,
    pub params: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub id: String,
    pub source: String,
    pub source_port: String,
    pub target: String,
    pub target_port: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    pub nodes: BTreeMap<String, Node>,
    pub edges: Vec<Edge>,
}

/// A compiled job: the model runs in order, and which nodes' images are the job's outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub steps: Vec<JobStep>,
    /// Nodes whose images are the job's outputs (those wired to an `output` node, or every
    /// model node when the graph has no `output` node).
    pub output_nodes: BTreeSet<String>,
}

fn str_field(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key).and_then(Value::as_str).map(str::to_string)
}

impl Graph {
    /// Reads `nodes` and `edges` as DESIGN.md lays them out, from the live session's
    /// `{"nodes": {...}, "edges": {...}}` (see `SessionRegistryHandle::graph_json`). Entries that
    /// are not maps are reported, not skipped: a graph the client sees must be the graph that
    /// runs.
    pub fn from_json(graph_json: &Value) -> Result<Graph, String> {
        let empty = Value::Object(Map::new());
        let nodes_json = graph_json.get("nodes").unwrap_or(&empty);
        let edges_json = graph_json.get("edges").unwrap_or(&empty);
        let mut graph = Graph::default();
        for (id, value) in nodes_json.as_object().into_iter().flatten() {
            let obj = value
                .as_object()
                .ok_or_else(|| format!("node {id}: is not a map"))?;
            let node_type =
                str_field(obj, "type").ok_or_else(|| format!("node {id}: has no type"))?;
            let params = match obj.get("params") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(p)) => p.clone(),
                Some(_) => return Err(format!("node {id}: params is not a map")),
            };
            graph.nodes.insert(
                id.clone(),
                Node {
                    id: id.clone(),
                    node_type,
                    params,
                },
            );
        }
        for (id, value) in edges_json.as_object().into_iter().flatten() {
            let obj = value
                .as_object()
                .ok_or_else(|| format!("edge {id}: is not a map"))?;
            let field = |k: &str| str_field(obj, k).ok_or_else(|| format!("edge {id}: has no {k}"));
            graph.edges.push(Edge {
                id: id.clone(),
                source: field("source")?,
                source_port: field("source_port")?,
                target: field("target")?,
                target_port: field("target_port")?,
            });
        }
        Ok(graph)
    }

    /// Validates the graph (or the part needed to run `selected` and what feeds it) and compiles
    /// it into steps in dependency order. `default_seed` seeds random nodes without a `seed`
    /// param (node `i` of the plan takes `default_seed + i`). Without a selection only nodes
    /// that feed an `output` node run (every node when the graph has none).
    pub fn compile(
        &self,
        catalog: &ModelCatalog,
        selected: Option<&[String]>,
        default_seed: u64,
    ) -> Result<Plan, String> {
        if self.nodes.is_empty() {
            return Err("the graph has no nodes: add a node before running".into());
        }
        // Node types and ports.
        for node in self.nodes.values() {
            if node.node_type != OUTPUT_NODE && catalog.get(&node.node_type).is_none() {
                return Err(format!(
                    "node {}: unknown node type '{}' (available: {}, {OUTPUT_NODE})",
                    node.id,
                    node.node_type,
                    catalog.names().join(", ")
                ));
            }
        }
        let mut incoming: BTreeMap<&str, Vec<&Edge>> = BTreeMap::new();
        for edge in &self.edges {
            let source = self.nodes.get(&edge.source).ok_or_else(|| {
                format!(
                    "edge {}: source node '{}' does not exist",
                    edge.id, edge.source
                )
            })?;
            let target = self.nodes.get(&edge.target).ok_or_else(|| {
                format!(
                    "edge {}: target node '{}' does not exist",
                    edge.id, edge.target
                )
            })?;
            if port_of(catalog, source, &edge.source_port, false).is_none() {
                return Err(format!(
                    "edge {}: node {} has no output port '{}'",
                    edge.id, source.id, edge.source_port
                ));
            }
            if port_of(catalog, target, &edge.target_port, true).is_none() {
                return Err(format!(
                    "edge {}: node {} has no input port '{}'",
                    edge.id, target.id, edge.target_port
                ));
            }
            let feeding = incoming.entry(edge.target.as_str()).or_default();
            if target.node_type != OUTPUT_NODE {
                if let Some(other) = feeding.iter().find(|e| e.target_port == edge.target_port) {
                    return Err(format!(
                        "edge {}: input '{}' of node {} is already connected by edge {}",
                        edge.id, edge.target_port, target.id, other.id
                    ));
                }
            }
            feeding.push(edge);
        }
        // Every required input port must be fed.
        for node in self.nodes.values() {
            for port in ports(catalog, node, true) {
                let fed = incoming
                    .get(node.id.as_str())
                    .is_some_and(|edges| edges.iter().any(|e| e.target_port == port.name));
                if !fed && !port.optional {
                    return Err(format!(
                        "node {}: input '{}' is not connected",
                        node.id, port.name
                    ));
                }
            }
        }
        let order = self.topological_order()?;

        // Port types, in dependency order: an `any` output takes the type its `any` input
        // receives. Every edge must join equal types (or end at an `any` input).
        let mut out_types: BTreeMap<(String, String), String> = BTreeMap::new();
        for id in &order {
            let node = &self.nodes[id.as_str()];
            let mut any_in: Option<String> = None;
            for edge in incoming.get(id.as_str()).into_iter().flatten() {
                let from = out_types
                    .get(&(edge.source.clone(), edge.source_port.clone()))
                    .cloned()
                    .unwrap_or_else(|| "any".to_string());
                let to = port_of(catalog, node, &edge.target_port, true)
                    .map_or_else(|| "any".to_string(), |p| p.ty);
                if to == "any" {
                    any_in.get_or_insert(from);
                } else if from != to {
                    return Err(format!(
                        "edge {}: {}:{} is a {from}, but {}:{} takes a {to}",
                        edge.id, edge.source, edge.source_port, edge.target, edge.target_port
                    ));
                }
            }
            for port in ports(catalog, node, false) {
                let ty = if port.ty == "any" {
                    any_in.clone().unwrap_or_else(|| "any".to_string())
                } else {
                    port.ty
                };
                out_types.insert((id.clone(), port.name), ty);
            }
        }

        // What to run: the selection, or what feeds an output, and everything upstream of it.
        let sinks: Vec<&Node> = self
            .nodes
            .values()
            .filter(|n| n.node_type == OUTPUT_NODE)
            .collect();
        let roots: Vec<String> = match selected {
            Some(ids) => {
                if ids.is_empty() {
                    return Err(
                        "nodes: name at least one node, or leave it out to run the whole graph"
                            .into(),
                    );
                }
                for id in ids {
                    if !self.nodes.contains_key(id) {
                        return Err(format!("nodes: node '{id}' is not in the graph"));
                    }
                }
                ids.to_vec()
            }
            None if sinks.is_empty() => self.nodes.keys().cloned().collect(),
            None => sinks.iter().map(|n| n.id.clone()).collect(),
        };
        let mut wanted = BTreeSet::new();
        let mut todo: VecDeque<String> = roots.into_iter().collect();
        while let Some(id) = todo.pop_front() {
            if wanted.insert(id.clone()) {
                for e in incoming.get(id.as_str()).into_iter().flatten() {
                    todo.push_back(e.source.clone());
                }
            }
        }

        let mut steps: Vec<JobStep> = Vec::new();
        for id in order.iter().filter(|id| wanted.contains(*id)) {
            let node = &self.nodes[id.as_str()];
            let Some(entry) = catalog.get(&node.node_type) else {
                // The output sink: nothing to run.
                continue;
            };
            let mut params: BTreeMap<String, Value> = node
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let seed_param = params.remove("seed");
            let seed = if entry.manifest.stochastic() {
                match seed_param {
                    None | Some(Value::Null) => {
                        default_seed.wrapping_add(steps.len() as u64) & MAX_SEED
                    }
                    Some(v) => v.as_u64().filter(|s| *s <= MAX_SEED).ok_or_else(|| {
                        format!(
                            "node {id}: parameter seed must be a whole number from 0 to {MAX_SEED}, got {v}"
                        )
                    })?,
                }
            } else {
                if seed_param.is_some_and(|v| !v.is_null()) {
                    return Err(format!(
                        "node {id}: parameter seed: a {} node is not random and takes no seed",
                        node.node_type
                    ));
                }
                0
            };
            let resolved = catalog
                .validate_params(&node.node_type, &params)
                .map_err(|e| format!("node {id}: parameter {}: {}", e.param, e.reason))?;
            let params = serde_json::to_value(&resolved.0)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default();
            let inputs = incoming
                .get(id.as_str())
                .into_iter()
                .flatten()
                .map(|e| {
                    (
                        e.target_port.clone(),
                        PortRef {
                            node_id: e.source.clone(),
                            port: e.source_port.clone(),
                        },
                    )
                })
                .collect();
            steps.push(JobStep {
                node_id: id.clone(),
                model: node.node_type.clone(),
                params,
                seed,
                inputs,
                cache_key: String::new(),
                cached: false,
            });
        }
        if steps.len() > MAX_NODES {
            return Err(format!(
                "the job has {} model nodes; at most {MAX_NODES} run at once",
                steps.len()
            ));
        }
        if steps.is_empty() {
            return Err("nothing to run: the selected nodes contain no model node".into());
        }
        let wanted_sinks: Vec<&&Node> = sinks.iter().filter(|n| wanted.contains(&n.id)).collect();
        let output_nodes = if wanted_sinks.is_empty() {
            steps.iter().map(|s| s.node_id.clone()).collect()
        } else {
            wanted_sinks
                .iter()
                .flat_map(|n| incoming.get(n.id.as_str()).into_iter().flatten())
                .map(|e| e.source.clone())
                .collect()
        };
        let mut plan = Plan {
            steps,
            output_nodes,
        };
        plan.compute_keys(catalog);
        Ok(plan)
    }

    /// Kahn's algorithm; ties broken by node id so the order is stable.
    fn topological_order(&self) -> Result<Vec<String>, String> {
        let mut indegree: BTreeMap<&str, usize> =
            self.nodes.keys().map(|k| (k.as_str(), 0)).collect();
        let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for e in &self.edges {
            *indegree.entry(e.target.as_str()).or_default() += 1;
            out.entry(e.source.as_str())
                .or_default()
                .push(e.target.as_str());
        }
        let mut ready: BTreeSet<&str> = indegree
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(k, _)| *k)
            .collect();
        let mut order = Vec::with_capacity(self.nodes.len());
        while let Some(id) = ready.pop_first() {
            order.push(id.to_string());
            for next in out.get(id).into_iter().flatten() {
                if let Some(d) = indegree.get_mut(next) {
                    *d -= 1;
                    if *d == 0 {
                        ready.insert(next);
                    }
                }
            }
        }
        if order.len() < self.nodes.len() {
            let stuck = indegree
                .iter()
                .find(|(id, d)| **d > 0 && !order.iter().any(|o| o == *id))
                .map(|(id, _)| *id)
                .unwrap_or("?");
            return Err(format!("the graph has a cycle through node {stuck}"));
        }
        Ok(order)
    }
}

/// The ports of `node` on one side (the `output` sink: one input of type `any`).
fn ports(catalog: &ModelCatalog, node: &Node, input: bool) -> Vec<Port> {
    if node.node_type == OUTPUT_NODE {
        return if input {
            vec![Port {
                name: OUTPUT_PORT.to_string(),
                ty: "any".to_string(),
                description: None,
                optional: false,
            }]
        } else {
            Vec::new()
        };
    }
    catalog
        .get(&node.node_type)
        .map(|m| {
            if input {
                m.manifest.ports.inputs.clone()
            } else {
                m.manifest.ports.outputs.clone()
            }
        })
        .unwrap_or_default()
}

fn port_of(catalog: &ModelCatalog, node: &Node, name: &str, input: bool) -> Option<Port> {
    ports(catalog, node, input)
        .into_iter()
        .find(|p| p.name == name)
}

impl Plan {
    /// Content-addresses every step (see [`JobStep::cache_key`]), in order, so each key covers
    /// everything upstream of its node.
    pub fn compute_keys(&mut self, catalog: &ModelCatalog) {
        use sha2::{Digest, Sha256};
        let mut keys: BTreeMap<String, String> = BTreeMap::new();
        for step in &mut self.steps {
            let entry = catalog.get(&step.model);
            let stochastic = entry.is_some_and(|e| e.manifest.stochastic());
            let inputs: BTreeMap<&String, String> = step
                .inputs
                .iter()
                .map(|(port, r)| {
                    let upstream = keys.get(&r.node_id).cloned().unwrap_or_default();
                    (port, format!("{upstream}/{}", r.port))
                })
                .collect();
            let material = serde_json::json!({
                "v": 1,
                "type": step.model,
                "model": entry.map(|e| e.fingerprint.as_str()),
                "params": step.params,
                "seed": stochastic.then_some(step.seed),
                "inputs": inputs,
            });
            let key = hex::encode(Sha256::digest(material.to_string().as_bytes()));
            keys.insert(step.node_id.clone(), key.clone());
            step.cache_key = key;
        }
    }

    /// Variation `i` of a batch: every random node's seed moved on by `i` (wrapping inside
    /// [`MAX_SEED`]), keys recomputed.
    pub fn variation(&self, catalog: &ModelCatalog, i: u64) -> Plan {
        let mut plan = self.clone();
        for step in &mut plan.steps {
            if catalog
                .get(&step.model)
                .is_some_and(|e| e.manifest.stochastic())
            {
                step.seed = step.seed.wrapping_add(i) & MAX_SEED;
            }
        }
        plan.compute_keys(catalog);
        plan
    }

    /// The steps a worker runs (those not cached).
    pub fn to_run(&self) -> Vec<JobStep> {
        self.steps.iter().filter(|s| !s.cached).cloned().collect()
    }
}

/// The update that sets `outputs[node_id]` to `media` on top of the document `doc`.
pub fn outputs_update(doc: &Doc, node_id: &str, media: &[String]) -> Vec<u8> {
    use yrs::{Any, ArrayPrelim};
    let outputs = doc.get_or_insert_map("outputs");
    let before = doc.transact().state_vector();
    {
        let mut txn = doc.transact_mut();
        let items: Vec<Any> = media.iter().map(|m| Any::from(m.as_str())).collect();
        outputs.insert(&mut txn, node_id, ArrayPrelim::from(items));
    }
    doc.transact().encode_state_as_update_v1(&before)
}
