//! Writing a graph given as JSON (`{"nodes": {...}, "edges": {...}}`, the shape `GET
//! /sessions/{id}/graph` reads) into the session document as the smallest collaborative change:
//! entries that are gone are removed, new ones inserted, and of the entries that stay only the
//! fields whose values differ are set. So a REST client and live editors merge like two editors —
//! a `PATCH` of one node's param leaves someone's concurrent drag of another node alone.
//!
//! Layout (DESIGN.md): `nodes[id]` and `edges[id]` are Y.Maps, a node's `params` is a Y.Map, every
//! other field a plain value. Numbers are written as JavaScript numbers (integers within 2^53 as
//! integers), as a Yjs editor in the browser writes them.

use std::sync::Arc;

use serde_json::{Map, Value};
use yrs::any::Number;
use yrs::{Any, Doc, In, Map as _, MapPrelim, MapRef, Out, ReadTxn, Transact, TransactionMut};

/// The node field held as a nested Y.Map.
const PARAMS: &str = "params";

/// The update that turns the document's graph into `target` (already validated: `nodes` and
/// `edges` are maps of maps), built on `doc`.
pub fn replace_update(doc: &Doc, target: &Value) -> Vec<u8> {
    let nodes = doc.get_or_insert_map("nodes");
    let edges = doc.get_or_insert_map("edges");
    let before = doc.transact().state_vector();
    {
        let empty = Map::new();
        let want = |root: &str| {
            target
                .get(root)
                .and_then(Value::as_object)
                .unwrap_or(&empty)
        };
        let mut txn = doc.transact_mut();
        sync_entries(&mut txn, &nodes, want("nodes"), true);
        sync_entries(&mut txn, &edges, want("edges"), false);
    }
    doc.transact().encode_state_as_update_v1(&before)
}

fn sync_entries(txn: &mut TransactionMut, root: &MapRef, want: &Map<String, Value>, nodes: bool) {
    let existing: Vec<String> = root.keys(txn).map(str::to_owned).collect();
    for key in existing.iter().filter(|k| !want.contains_key(*k)) {
        root.remove(txn, key);
    }
    for (key, value) in want {
        let Some(fields) = value.as_object() else {
            continue;
        };
        match root.get(txn, key) {
            Some(Out::YMap(entry)) => sync_fields(txn, &entry, fields, nodes),
            _ => {
                root.insert(txn, key.as_str(), entry_prelim(fields, nodes));
            }
        }
    }
}

fn sync_fields(txn: &mut TransactionMut, entry: &MapRef, fields: &Map<String, Value>, node: bool) {
    remove_missing(txn, entry, fields);
    for (key, value) in fields {
        if let (true, PARAMS, Value::Object(params)) = (node, key.as_str(), value) {
            match entry.get(txn, key) {
                Some(Out::YMap(map)) => {
                    remove_missing(txn, &map, params);
                    for (name, value) in params {
                        set_value(txn, &map, name, value);
                    }
                }
                _ => {
                    entry.insert(txn, key.as_str(), values_prelim(params));
                }
            }
            continue;
        }
        set_value(txn, entry, key, value);
    }
}

fn remove_missing(txn: &mut TransactionMut, map: &MapRef, keep: &Map<String, Value>) {
    let existing: Vec<String> = map.keys(txn).map(str::to_owned).collect();
    for key in existing.iter().filter(|k| !keep.contains_key(*k)) {
        map.remove(txn, key);
    }
}

/// Sets a plain value, unless it already holds an equal one (no change, no update bytes).
fn set_value(txn: &mut TransactionMut, map: &MapRef, key: &str, value: &Value) {
    let want = json_to_any(value);
    if let Some(Out::Any(current)) = map.get(txn, key) {
        if current == want {
            return;
        }
    }
    map.insert(txn, key, In::Any(want));
}

fn entry_prelim(fields: &Map<String, Value>, node: bool) -> MapPrelim {
    fields
        .iter()
        .map(|(key, value)| {
            let value = match (node, key.as_str(), value) {
                (true, PARAMS, Value::Object(params)) => In::Map(values_prelim(params)),
                _ => In::Any(json_to_any(value)),
            };
            (key.as_str(), value)
        })
        .collect()
}

fn values_prelim(values: &Map<String, Value>) -> MapPrelim {
    values
        .iter()
        .map(|(key, value)| (key.as_str(), In::Any(json_to_any(value))))
        .collect()
}

/// A JSON value as a Yjs value.
pub fn json_to_any(value: &Value) -> Any {
    match value {
        Value::Null => Any::Null,
        Value::Bool(b) => Any::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i)
                if (Number::I64_MIN_SAFE_INTEGER..=Number::I64_MAX_SAFE_INTEGER).contains(&i) =>
            {
                Any::Number(Number::Int(i))
            }
            _ => Any::Number(Number::Float(n.as_f64().unwrap_or(f64::NAN))),
        },
        Value::String(s) => Any::String(s.as_str().into()),
        Value::Array(items) => Any::Array(items.iter().map(json_to_any).collect()),
        Value::Object(map) => Any::Map(Arc::new(
            map.iter()
                .map(|(k, v)| (k.clone(), json_to_any(v)))
                .collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use yrs::types::ToJson;
    use yrs::updates::decoder::Decode;
    use yrs::Update;

    fn graph_of(doc: &Doc) -> Value {
        let txn = doc.transact();
        let mut out = Map::new();
        for root in ["nodes", "edges"] {
            let value = txn
                .get_map(root)
                .map(|m| serde_json::to_value(m.to_json(&txn)).unwrap())
                .unwrap_or(json!({}));
            out.insert(root.into(), value);
        }
        Value::Object(out)
    }

    fn apply(doc: &Doc, update: &[u8]) {
        doc.transact_mut()
            .apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
    }

    #[test]
    fn writes_the_target_and_only_what_changed() {
        let doc = Doc::new();
        let first = json!({
            "nodes": {"a": {"type": "denoise", "x": 10, "y": 2.5, "params": {"steps": 4, "prompt": "hills"}}},
            "edges": {"e": {"source": "a", "source_port": "image", "target": "o", "target_port": "image"}}
        });
        let update = replace_update(&doc, &first);
        let other = Doc::new();
        apply(&other, &update);
        assert_eq!(graph_of(&other), first);
        assert_eq!(graph_of(&doc), first);

        // One param changes, one field goes, an edge goes: a small update.
        let second = json!({
            "nodes": {"a": {"type": "denoise", "x": 10, "params": {"steps": 8, "prompt": "hills"}}},
            "edges": {}
        });
        let update = replace_update(&doc, &second);
        apply(&other, &update);
        assert_eq!(graph_of(&other), second);
        assert!(update.len() < 64, "update of {} bytes", update.len());

        // Writing the same graph again changes nothing.
        let before = doc.transact().state_vector();
        replace_update(&doc, &second);
        assert_eq!(doc.transact().state_vector(), before);
    }
}
