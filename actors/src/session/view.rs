//! What the server itself reads from a live document.

use serde_json::{Map, Value};
use yrs::types::ToJson;
use yrs::{Doc, ReadTxn, Transact};

/// The graph the editors see: `{"nodes": {...}, "edges": {...}}`, each the JSON of that root
/// map (an empty object when the document has none yet). Nesting is bounded by the update
/// validator, so `to_json`'s recursion is too.
pub(crate) fn graph_json(doc: &Doc) -> Value {
    let txn = doc.transact();
    let mut graph = Map::new();
    for name in ["nodes", "edges"] {
        let value = txn
            .get_map(name)
            .map(|map| serde_json::to_value(map.to_json(&txn)).unwrap_or(Value::Null))
            .unwrap_or_else(|| Value::Object(Map::new()));
        graph.insert(name.to_owned(), value);
    }
    Value::Object(graph)
}
