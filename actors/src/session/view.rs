//! What the server itself reads from a live document.

use serde_json::{Map, Value};
use yrs::encoding::write::Write;
use yrs::types::ToJson;
use yrs::{Doc, ReadTxn, Transact};

/// The document's version: its state vector in the v1 encoding (`Y.decodeStateVector` reads it),
/// with clients in ascending order so that equal states always give equal bytes (yrs keeps the
/// vector in a hash map, whose order is not stable).
pub fn document_version(doc: &Doc) -> Vec<u8> {
    let sv = doc.transact().state_vector();
    let mut clients: Vec<(u64, u32)> = sv
        .iter()
        .map(|(client, clock)| (client.get(), *clock))
        .collect();
    clients.sort_unstable();
    let mut out = Vec::with_capacity(1 + clients.len() * 8);
    out.write_var(clients.len());
    for (client, clock) in clients {
        out.write_var(client);
        out.write_var(clock);
    }
    out
}

/// The graph the editors see: `{"nodes": {...}, "edges": {...}}`, each the JSON of that root
/// map (an empty object when the document has none yet). Nesting is bounded by the update
/// validator, so `to_json`'s recursion is too.
pub fn graph_json(doc: &Doc) -> Value {
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
