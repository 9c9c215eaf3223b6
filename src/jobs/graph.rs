//! The session graph: read from the session document, validated against the model catalog and
//! compiled into the steps a worker runs. Every problem is reported before any GPU time is used,
//! naming the node (or edge) and what is wrong.
//!
//! Node types are the catalog's models plus one built-in sink, [`OUTPUT_NODE`]: it has one input
//! port (`image`) and marks which images are the job's outputs. Edges go from an output port of a
//! node to an input port of another; they order the steps and must not form a cycle.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use atelier_protocol::worker::JobStep;
use serde_json::{Map, Value};
use yrs::types::ToJson;
use yrs::{Doc, Map as _, ReadTxn, Transact};

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
    /// Reads `nodes` and `edges` as DESIGN.md lays them out. Entries that are not maps are
    /// reported, not skipped: a graph the client sees must be the graph that runs.
    pub fn from_doc(doc: &Doc) -> Result<Graph, String> {
        let nodes_ref = doc.get_or_insert_map("nodes");
        let edges_ref = doc.get_or_insert_map("edges");
        let txn = doc.transact();
        let nodes_json = serde_json::to_value(nodes_ref.to_json(&txn))
            .map_err(|e| format!("the document's nodes cannot be read: {e}"))?;
        let edges_json = serde_json::to_value(edges_ref.to_json(&txn))
            .map_err(|e| format!("the document's edges cannot be read: {e}"))?;
        drop(txn);
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
    /// it into steps in dependency order. `default_seed` seeds nodes without a `seed` param.
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
            if !self
                .output_ports(catalog, source)
                .contains(&edge.source_port)
            {
                return Err(format!(
                    "edge {}: node {} has no output port '{}'",
                    edge.id, source.id, edge.source_port
                ));
            }
            if !self
                .input_ports(catalog, target)
                .contains(&edge.target_port)
            {
                return Err(format!(
                    "edge {}: node {} has no input port '{}'",
                    edge.id, target.id, edge.target_port
                ));
            }
            incoming.entry(edge.target.as_str()).or_default().push(edge);
        }
        // Every input port must be fed.
        for node in self.nodes.values() {
            for port in self.input_ports(catalog, node) {
                let fed = incoming
                    .get(node.id.as_str())
                    .is_some_and(|edges| edges.iter().any(|e| e.target_port == port));
                if !fed {
                    return Err(format!("node {}: input '{port}' is not connected", node.id));
                }
            }
        }
        let order = self.topological_order()?;

        // What to run: the selection and everything upstream of it.
        let wanted: BTreeSet<String> = match selected {
            None => self.nodes.keys().cloned().collect(),
            Some(ids) => {
                if ids.is_empty() {
                    return Err(
                        "nodes: name at least one node, or leave it out to run the whole graph"
                            .into(),
                    );
                }
                let mut wanted = BTreeSet::new();
                let mut todo: VecDeque<String> = VecDeque::new();
                for id in ids {
                    if !self.nodes.contains_key(id) {
                        return Err(format!("nodes: node '{id}' is not in the graph"));
                    }
                    todo.push_back(id.clone());
                }
                while let Some(id) = todo.pop_front() {
                    if wanted.insert(id.clone()) {
                        for e in incoming.get(id.as_str()).into_iter().flatten() {
                            todo.push_back(e.source.clone());
                        }
                    }
                }
                wanted
            }
        };

        let mut steps = Vec::new();
        for id in order.iter().filter(|id| wanted.contains(*id)) {
            let node = &self.nodes[id.as_str()];
            if node.node_type == OUTPUT_NODE {
                continue;
            }
            let mut params: BTreeMap<String, Value> = node
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let seed = match params.remove("seed") {
                None | Some(Value::Null) => default_seed.wrapping_add(steps.len() as u64) & MAX_SEED,
                Some(v) => v
                    .as_u64()
                    .filter(|s| *s <= MAX_SEED)
                    .ok_or_else(|| format!("node {id}: parameter seed must be a whole number from 0 to {MAX_SEED}, got {v}"))?,
            };
            let resolved = catalog
                .validate_params(&node.node_type, &params)
                .map_err(|e| format!("node {id}: parameter {}: {}", e.param, e.reason))?;
            let params = serde_json::to_value(&resolved.0)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default();
            steps.push(JobStep {
                node_id: id.clone(),
                model: node.node_type.clone(),
                params,
                seed,
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
        let sinks: Vec<&Node> = self
            .nodes
            .values()
            .filter(|n| n.node_type == OUTPUT_NODE && wanted.contains(&n.id))
            .collect();
        let output_nodes = if sinks.is_empty() {
            steps.iter().map(|s| s.node_id.clone()).collect()
        } else {
            sinks
                .iter()
                .flat_map(|n| incoming.get(n.id.as_str()).into_iter().flatten())
                .map(|e| e.source.clone())
                .collect()
        };
        Ok(Plan {
            steps,
            output_nodes,
        })
    }

    fn input_ports(&self, catalog: &ModelCatalog, node: &Node) -> Vec<String> {
        if node.node_type == OUTPUT_NODE {
            return vec![OUTPUT_PORT.to_string()];
        }
        catalog
            .get(&node.node_type)
            .map(|m| {
                m.manifest
                    .ports
                    .inputs
                    .iter()
                    .map(|p| p.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn output_ports(&self, catalog: &ModelCatalog, node: &Node) -> Vec<String> {
        if node.node_type == OUTPUT_NODE {
            return Vec::new();
        }
        catalog
            .get(&node.node_type)
            .map(|m| {
                m.manifest
                    .ports
                    .outputs
                    .iter()
                    .map(|p| p.name.clone())
                    .collect()
            })
            .unwrap_or_default()
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

/// Loads a document from its stored form (snapshot + updates), the way a live session does:
/// validated and with shared types nested at most `MAX_TYPE_DEPTH` deep, so that turning it
/// into JSON cannot recurse without bound (a document stored by an older server may hold
/// anything).
pub fn doc_from_stored(stored: &atelier_actors::StoredDoc) -> Result<Doc, String> {
    Ok(atelier_actors::session::rebuild_document(stored))
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
