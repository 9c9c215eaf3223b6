//! What changed between two graphs (`{"nodes": {...}, "edges": {...}}`, the shape the graph
//! endpoints read): nodes and edges added, removed and changed, and for a changed node which of
//! its fields and params changed, with their values before and after.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// A field or param that differs: its value before and after (`null` when absent).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldChange {
    pub name: String,
    #[schema(value_type = Object)]
    pub before: Value,
    #[schema(value_type = Object)]
    pub after: Value,
}

/// A node or edge present in both graphs but different.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EntryChange {
    pub id: String,
    /// Fields other than params (`type`, `x`, `y`, an edge's ends…).
    pub fields: Vec<FieldChange>,
    /// A node's params added, removed or changed.
    pub params: Vec<FieldChange>,
}

/// Entries added to or removed from one root map (`nodes` or `edges`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct MapDiff {
    /// Entries only in the later graph, with their content.
    #[schema(value_type = Object)]
    pub added: Map<String, Value>,
    /// Entries only in the earlier graph, with their content.
    #[schema(value_type = Object)]
    pub removed: Map<String, Value>,
    pub changed: Vec<EntryChange>,
}

/// From graph `a` to graph `b`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct GraphDiff {
    pub nodes: MapDiff,
    pub edges: MapDiff,
}

impl GraphDiff {
    pub fn is_empty(&self) -> bool {
        [&self.nodes, &self.edges]
            .iter()
            .all(|m| m.added.is_empty() && m.removed.is_empty() && m.changed.is_empty())
    }
}

/// The changes that turn graph `a` into graph `b`.
pub fn diff(a: &Value, b: &Value) -> GraphDiff {
    GraphDiff {
        nodes: diff_map(root(a, "nodes"), root(b, "nodes")),
        edges: diff_map(root(a, "edges"), root(b, "edges")),
    }
}

fn root<'a>(graph: &'a Value, name: &str) -> Option<&'a Map<String, Value>> {
    graph.get(name).and_then(Value::as_object)
}

fn diff_map(a: Option<&Map<String, Value>>, b: Option<&Map<String, Value>>) -> MapDiff {
    let empty = Map::new();
    let (a, b) = (a.unwrap_or(&empty), b.unwrap_or(&empty));
    let mut out = MapDiff::default();
    for (id, entry) in a {
        match b.get(id) {
            None => {
                out.removed.insert(id.clone(), entry.clone());
            }
            Some(after) if after != entry => out.changed.push(EntryChange {
                id: id.clone(),
                fields: changes(entry, after, |k| k != "params"),
                params: changes(
                    entry.get("params").unwrap_or(&Value::Null),
                    after.get("params").unwrap_or(&Value::Null),
                    |_| true,
                ),
            }),
            Some(_) => {}
        }
    }
    for (id, entry) in b {
        if !a.contains_key(id) {
            out.added.insert(id.clone(), entry.clone());
        }
    }
    out
}

/// Keys (passing `keep`) whose values differ between two JSON objects.
fn changes(a: &Value, b: &Value, keep: impl Fn(&str) -> bool) -> Vec<FieldChange> {
    let empty = Map::new();
    let a = a.as_object().unwrap_or(&empty);
    let b = b.as_object().unwrap_or(&empty);
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| keep(k))
        .filter_map(|k| {
            let before = a.get(k).cloned().unwrap_or(Value::Null);
            let after = b.get(k).cloned().unwrap_or(Value::Null);
            (before != after).then(|| FieldChange {
                name: k.clone(),
                before,
                after,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nodes_edges_and_params() {
        let a = json!({
            "nodes": {"n1": {"type": "terrain", "x": 1, "y": 2, "params": {"seed": 7, "steps": 20}},
                      "n2": {"type": "blur", "x": 0, "y": 0, "params": {}}},
            "edges": {"e1": {"source": "n1", "source_port": "image", "target": "n2", "target_port": "image"}}
        });
        let b = json!({
            "nodes": {"n1": {"type": "terrain", "x": 5, "y": 2, "params": {"seed": 8, "scale": 2}},
                      "n3": {"type": "output", "x": 0, "y": 0, "params": {}}},
            "edges": {}
        });
        let d = diff(&a, &b);
        assert_eq!(d.nodes.added.keys().collect::<Vec<_>>(), ["n3"]);
        assert_eq!(d.nodes.removed.keys().collect::<Vec<_>>(), ["n2"]);
        assert_eq!(d.edges.removed.keys().collect::<Vec<_>>(), ["e1"]);
        let n1 = &d.nodes.changed[0];
        assert_eq!(n1.id, "n1");
        assert_eq!(
            n1.fields
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>(),
            ["x"]
        );
        let params: Vec<(&str, &Value, &Value)> = n1
            .params
            .iter()
            .map(|p| (p.name.as_str(), &p.before, &p.after))
            .collect();
        assert_eq!(
            params,
            [
                ("scale", &Value::Null, &json!(2)),
                ("seed", &json!(7), &json!(8)),
                ("steps", &json!(20), &Value::Null)
            ]
        );
        assert!(diff(&a, &a).is_empty());
    }
}
