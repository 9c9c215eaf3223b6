//! Nesting depth: placements of real yrs updates, hostile hand-written ones, and repairs.

use yrs::types::ToJson;
use yrs::updates::decoder::Decode;
use yrs::{
    Array, ArrayPrelim, ArrayRef, Doc, Map, MapPrelim, MapRef, ReadTxn, StateVector, Transact,
    Update,
};

use super::*;
use crate::ysync::update::{repair_update_v1, summarize_update};
use yrs::encoding::write::Write;

/// `levels` maps nested under the root map `nodes`, each at key `k` of the one above: the
/// deepest is `levels + 1` deep.
fn chain(doc: &Doc, levels: usize) -> MapRef {
    let root = doc.get_or_insert_map("nodes");
    let mut txn = doc.transact_mut();
    let mut current = root;
    for _ in 0..levels {
        current = current.insert(&mut txn, "k", MapPrelim::default());
    }
    current
}

fn full_state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

fn since(doc: &Doc, before: &StateVector) -> Vec<u8> {
    doc.transact().encode_state_as_update_v1(before)
}

/// Resolves strictly against `index` and records the result, like an applied update.
fn accept(index: &mut NestingIndex, update: &[u8]) -> Result<Resolution, NestingError> {
    let summary = summarize_update(update).expect("valid update");
    let resolution = resolve(&summary, &[index])?;
    for placed in &resolution.placed {
        index.record(placed, 0);
    }
    Ok(resolution)
}

#[test]
fn the_studio_document_is_three_deep() {
    let doc = Doc::with_client_id(1);
    let nodes = doc.get_or_insert_map("nodes");
    let outputs = doc.get_or_insert_map("outputs");
    {
        let mut txn = doc.transact_mut();
        let node = nodes.insert(&mut txn, "n1", MapPrelim::default());
        node.insert(&mut txn, "type", "sampler");
        let params = node.insert(&mut txn, "params", MapPrelim::default());
        params.insert(&mut txn, "steps", 20);
        outputs.insert(&mut txn, "n1", ArrayPrelim::from(["m1", "m2"]));
    }
    let mut index = NestingIndex::new();
    let resolution = accept(&mut index, &full_state(&doc)).unwrap();
    assert!(resolution.repairs.is_empty());
    let deepest = resolution
        .placed
        .iter()
        .filter_map(|p| match p.placement {
            Placement::Under(depth) => Some(depth),
            Placement::Collected => None,
        })
        .max();
    // `steps` sits in params, which is 3 deep.
    assert_eq!(deepest, Some(3));
}

#[test]
fn nesting_up_to_the_limit_is_fine_one_more_is_refused() {
    let levels = usize::from(MAX_TYPE_DEPTH) - 1;
    let ok = Doc::with_client_id(1);
    chain(&ok, levels);
    accept(&mut NestingIndex::new(), &full_state(&ok)).unwrap();

    let deep = Doc::with_client_id(1);
    chain(&deep, levels + 1);
    assert_eq!(
        accept(&mut NestingIndex::new(), &full_state(&deep)).unwrap_err(),
        NestingError::TooDeep
    );
}

#[test]
fn tens_of_thousands_of_levels_are_refused_without_recursion() {
    // Hand-written: yrs itself cannot even drop a document this deep without recursing.
    let levels = 50_000;
    let mut update = Vec::new();
    update.write_var::<u64>(1); // one client
    update.write_var::<u64>(levels); // blocks
    update.write_var::<u64>(7); // client
    update.write_var::<u64>(0); // first clock
    for clock in 0..levels {
        // A Y.Map at key "k": parent is the root "nodes" first, then the previous map.
        update.push(0b0010_0000 | 7);
        if clock == 0 {
            update.write_var::<u64>(1);
            update.write_string("nodes");
        } else {
            update.write_var::<u64>(0);
            update.write_var::<u64>(7);
            update.write_var::<u64>(clock - 1);
        }
        update.write_string("k");
        update.push(1); // TYPE_REFS_MAP
    }
    update.write_var::<u64>(0); // empty delete set
    let summary = summarize_update(&update).unwrap();
    assert_eq!(
        resolve(&summary, &[&NestingIndex::new()]).unwrap_err(),
        NestingError::TooDeep
    );
    // Repaired, it applies; and deleting the whole tree does not overflow the stack.
    let resolution = resolve_repairing(&summary, &[&NestingIndex::new()]);
    let repaired = repair_update_v1(&update, &summary, &resolution.repairs);
    let doc = Doc::with_client_id(1);
    doc.transact_mut()
        .apply_update(Update::decode_v1(&repaired).unwrap())
        .unwrap();
    let nodes = doc.get_or_insert_map("nodes");
    assert_eq!(json_depth(&nodes.to_json(&doc.transact())), 32);
    nodes.remove(&mut doc.transact_mut(), "k");
    assert_eq!(nodes.len(&doc.transact()), 0);
}

/// Depth of nested JSON objects.
fn json_depth(value: &yrs::Any) -> usize {
    let mut depth = 0;
    let mut current = value;
    while let yrs::Any::Map(map) = current {
        depth += 1;
        match map.get("k") {
            Some(next) => current = next,
            None => break,
        }
    }
    depth
}

#[test]
fn depth_adds_up_across_updates() {
    let doc = Doc::with_client_id(1);
    let mut index = NestingIndex::new();
    chain(&doc, 20);
    accept(&mut index, &full_state(&doc)).unwrap();

    // Another client continues below the deepest map.
    let other = Doc::with_client_id(2);
    other
        .transact_mut()
        .apply_update(Update::decode_v1(&full_state(&doc)).unwrap())
        .unwrap();
    let before = other.transact().state_vector();
    let deepest = other
        .get_or_insert_map("nodes")
        .get(&other.transact(), "k")
        .and_then(|v| v.cast::<MapRef>().ok())
        .unwrap();
    let mut current = deepest;
    {
        let mut txn = other.transact_mut();
        // Down to the level of `middle`, then 11 more levels: 21 + 11 = 32 is still fine...
        for _ in 0..19 {
            current = current
                .get(&txn, "k")
                .and_then(|v| v.cast::<MapRef>().ok())
                .unwrap();
        }
        for _ in 0..11 {
            current = current.insert(&mut txn, "k", MapPrelim::default());
        }
    }
    let fine = since(&other, &before);
    accept(&mut index, &fine).unwrap();
    // ...and one more is not.
    let before = other.transact().state_vector();
    current.insert(&mut other.transact_mut(), "k", MapPrelim::default());
    assert_eq!(
        accept(&mut index, &since(&other, &before)).unwrap_err(),
        NestingError::TooDeep
    );
}

#[test]
fn queued_updates_count_as_known_layers() {
    // The document holds 10 levels; an update still queued adds 15; the next one may add 7,
    // not 8.
    let doc = Doc::with_client_id(1);
    let mut document = NestingIndex::new();
    let mut current = chain(&doc, 10);
    accept(&mut document, &full_state(&doc)).unwrap();

    let mut queued = NestingIndex::new();
    let before = doc.transact().state_vector();
    {
        let mut txn = doc.transact_mut();
        for _ in 0..15 {
            current = current.insert(&mut txn, "k", MapPrelim::default());
        }
    }
    let update = since(&doc, &before);
    let summary = summarize_update(&update).unwrap();
    // Without the document, the queued update's parent is unknown.
    assert_eq!(
        resolve(&summary, &[&NestingIndex::new()]).unwrap_err(),
        NestingError::MissingDependency
    );
    let resolution = resolve(&summary, &[&document, &queued]).unwrap();
    for placed in &resolution.placed {
        queued.record(placed, document.end(placed.client));
    }

    let before = doc.transact().state_vector();
    {
        let mut txn = doc.transact_mut();
        for _ in 0..6 {
            current = current.insert(&mut txn, "k", MapPrelim::default());
        }
    }
    let six = since(&doc, &before);
    resolve(&summarize_update(&six).unwrap(), &[&document, &queued]).unwrap();
    let before = doc.transact().state_vector();
    current.insert(&mut doc.transact_mut(), "k", MapPrelim::default());
    let seven = since(&doc, &before);
    // Seven in one go (six + one) would be 11 + 15 + 7 = 33.
    let both = yrs::merge_updates_v1([six.as_slice(), seven.as_slice()]).unwrap();
    assert_eq!(
        resolve(&summarize_update(&both).unwrap(), &[&document, &queued]).unwrap_err(),
        NestingError::TooDeep
    );
}

#[test]
fn parents_copied_from_neighbours_are_followed() {
    // Overwriting a key: the new map's parent is copied from the old value (its origin).
    let doc = Doc::with_client_id(1);
    let deepest = chain(&doc, usize::from(MAX_TYPE_DEPTH) - 2);
    let mut index = NestingIndex::new();
    accept(&mut index, &full_state(&doc)).unwrap();
    let before = doc.transact().state_vector();
    let inner = deepest.insert(&mut doc.transact_mut(), "k", MapPrelim::default());
    accept(&mut index, &since(&doc, &before)).unwrap();
    // Overwrite `k` of `deepest` with another map: origin = the old map (depth 32)...
    let before = doc.transact().state_vector();
    let replacement = deepest.insert(&mut doc.transact_mut(), "k", MapPrelim::default());
    let update = since(&doc, &before);
    let summary = summarize_update(&update).unwrap();
    assert!(summary.blocks.iter().any(|b| matches!(
        b.kind,
        crate::ysync::BlockKind::Item {
            parent: crate::ysync::ParentRef::Neighbours { .. },
            is_type: true
        }
    )));
    accept(&mut index, &update).unwrap();
    // ...and one level below it is too deep.
    let before = doc.transact().state_vector();
    replacement.insert(&mut doc.transact_mut(), "k", MapPrelim::default());
    assert_eq!(
        accept(&mut index, &since(&doc, &before)).unwrap_err(),
        NestingError::TooDeep
    );
    let _ = inner;
}

#[test]
fn a_type_after_plain_values_in_an_array_takes_their_parent() {
    let doc = Doc::with_client_id(1);
    let deepest = chain(&doc, usize::from(MAX_TYPE_DEPTH) - 2);
    let list: ArrayRef = deepest.insert(&mut doc.transact_mut(), "list", ArrayPrelim::default());
    list.push_back(&mut doc.transact_mut(), "plain");
    let mut index = NestingIndex::new();
    accept(&mut index, &full_state(&doc)).unwrap();
    // No parent written: origin = the string, held by `list` (32 deep). A plain value is fine,
    // a map there would be 33 deep.
    let plain = Doc::with_client_id(2);
    let map = Doc::with_client_id(3);
    for other in [&plain, &map] {
        other
            .transact_mut()
            .apply_update(Update::decode_v1(&full_state(&doc)).unwrap())
            .unwrap();
    }
    let in_copy = |d: &Doc| -> ArrayRef {
        let mut current = d
            .get_or_insert_map("nodes")
            .get(&d.transact(), "k")
            .and_then(|v| v.cast::<MapRef>().ok())
            .unwrap();
        for _ in 0..usize::from(MAX_TYPE_DEPTH) - 3 {
            current = current
                .get(&d.transact(), "k")
                .and_then(|v| v.cast::<MapRef>().ok())
                .unwrap();
        }
        current
            .get(&d.transact(), "list")
            .and_then(|v| v.cast::<ArrayRef>().ok())
            .unwrap()
    };
    let before = plain.transact().state_vector();
    in_copy(&plain).push_back(&mut plain.transact_mut(), 5);
    let plain_update = since(&plain, &before);
    let before = map.transact().state_vector();
    in_copy(&map).push_back(&mut map.transact_mut(), MapPrelim::default());
    let map_update = since(&map, &before);
    for update in [&plain_update, &map_update] {
        let summary = summarize_update(update).unwrap();
        assert!(matches!(
            summary.blocks.first().map(|b| b.kind),
            Some(crate::ysync::BlockKind::Item {
                parent: crate::ysync::ParentRef::Neighbours {
                    origin: Some(_),
                    ..
                },
                ..
            })
        ));
    }
    accept(&mut index, &plain_update).unwrap();
    assert_eq!(
        accept(&mut index, &map_update).unwrap_err(),
        NestingError::TooDeep
    );
}

#[test]
fn references_to_unknown_items_are_refused() {
    let doc = Doc::with_client_id(1);
    chain(&doc, 3);
    // Another client edits below the deepest map, on a server that never saw client 1's maps.
    let other = Doc::with_client_id(2);
    other
        .transact_mut()
        .apply_update(Update::decode_v1(&full_state(&doc)).unwrap())
        .unwrap();
    let before = other.transact().state_vector();
    let mut current = other.get_or_insert_map("nodes");
    for _ in 0..3 {
        current = current
            .get(&other.transact(), "k")
            .and_then(|v| v.cast::<MapRef>().ok())
            .unwrap();
    }
    current.insert(&mut other.transact_mut(), "x", 1);
    let update = since(&other, &before);
    let summary = summarize_update(&update).unwrap();
    assert_eq!(
        resolve(&summary, &[&NestingIndex::new()]).unwrap_err(),
        NestingError::MissingDependency
    );
    // Repairing drops it.
    let resolution = resolve_repairing(&summary, &[&NestingIndex::new()]);
    assert_eq!(resolution.repairs.collect.len(), 1);
}

#[test]
fn a_gap_in_a_clients_clocks_is_refused() {
    let doc = Doc::with_client_id(1);
    chain(&doc, 2);
    let sv = doc.transact().state_vector();
    doc.get_or_insert_map("meta")
        .insert(&mut doc.transact_mut(), "title", "x");
    // Starts at clock 2: the server knows nothing of client 1.
    let update = since(&doc, &sv);
    assert_eq!(
        resolve(&summarize_update(&update).unwrap(), &[&NestingIndex::new()]).unwrap_err(),
        NestingError::MissingDependency
    );
}

#[test]
fn deleting_unknown_items_is_refused() {
    let mut update = Vec::new();
    update.write_var::<u64>(0); // no blocks
    update.write_var::<u64>(1); // one client in the delete set
    update.write_var::<u64>(99);
    update.write_var::<u64>(1);
    update.write_var::<u64>(0);
    update.write_var::<u64>(1_000_000);
    let summary = summarize_update(&update).unwrap();
    assert_eq!(
        resolve(&summary, &[&NestingIndex::new()]).unwrap_err(),
        NestingError::UnknownDeletion
    );
    let resolution = resolve_repairing(&summary, &[&NestingIndex::new()]);
    assert_eq!(resolution.repairs.deletes, Some(Vec::new()));
}

#[test]
fn a_dependency_cycle_is_refused() {
    // Client 5's item has its origin in client 6's item and the other way round.
    let mut update = Vec::new();
    update.write_var::<u64>(2);
    for (client, other) in [(6u64, 5u64), (5, 6)] {
        update.write_var::<u64>(1);
        update.write_var::<u64>(client);
        update.write_var::<u64>(0);
        update.push(0b1000_0000 | 7); // origin, type content
        update.write_var::<u64>(other);
        update.write_var::<u64>(0);
        update.push(1);
    }
    update.write_var::<u64>(0);
    let summary = summarize_update(&update).unwrap();
    assert_eq!(
        resolve(&summary, &[&NestingIndex::new()]).unwrap_err(),
        NestingError::MissingDependency
    );
    let resolution = resolve_repairing(&summary, &[&NestingIndex::new()]);
    let repaired = repair_update_v1(&update, &summary, &resolution.repairs);
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(&repaired).unwrap())
        .unwrap();
    assert!(doc.transact().store().pending_update().is_none());
}

#[test]
fn an_update_repeating_known_items_is_placed_by_what_is_known() {
    // A client resends items the server has, claiming another parent for them: yrs keeps the
    // items it has, so the index does too.
    let doc = Doc::with_client_id(1);
    chain(&doc, 5);
    let mut index = NestingIndex::new();
    let update = full_state(&doc);
    accept(&mut index, &update).unwrap();
    let runs = index.runs();
    let resolution = accept(&mut index, &update).unwrap();
    assert!(resolution.placed.is_empty());
    assert_eq!(index.runs(), runs);
}

#[test]
fn one_run_per_stretch_of_typing() {
    let doc = Doc::with_client_id(1);
    let text = doc.get_or_insert_text("notes");
    let mut index = NestingIndex::new();
    for i in 0..200 {
        let before = doc.transact().state_vector();
        yrs::Text::insert(&text, &mut doc.transact_mut(), i, "a");
        accept(&mut index, &since(&doc, &before)).unwrap();
    }
    assert_eq!(index.runs(), 1);
}

#[test]
fn a_cycle_through_a_clients_clock_order_is_refused() {
    // 5#0 is a map under 1#0; 1#0 sits after 5#1 (its origin). yrs integrates 5#0 before 5#1,
    // so neither can go first: it would park them all (found by the hostile_update fuzzer).
    let mut update = Vec::new();
    update.write_var::<u64>(2);
    // Client 5: two blocks.
    update.write_var::<u64>(2);
    update.write_var::<u64>(5);
    update.write_var::<u64>(0);
    update.push(0b0010_0000 | 7);
    update.write_var::<u64>(0);
    update.write_var::<u64>(1);
    update.write_var::<u64>(0);
    update.write_string("k");
    update.push(1);
    update.push(7);
    update.write_var::<u64>(1);
    update.write_string("nodes");
    update.push(1);
    // Client 1: one block after 5#1.
    update.write_var::<u64>(1);
    update.write_var::<u64>(1);
    update.write_var::<u64>(0);
    update.push(0b1000_0000 | 7);
    update.write_var::<u64>(5);
    update.write_var::<u64>(1);
    update.push(1);
    update.write_var::<u64>(0);
    let summary = summarize_update(&update).unwrap();
    assert_eq!(
        resolve(&summary, &[&NestingIndex::new()]).unwrap_err(),
        NestingError::MissingDependency
    );
    let resolution = resolve_repairing(&summary, &[&NestingIndex::new()]);
    let repaired = repair_update_v1(&update, &summary, &resolution.repairs);
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(&repaired).unwrap())
        .unwrap();
    assert!(doc.transact().store().pending_update().is_none());
}

#[test]
fn a_reference_past_the_end_of_a_clients_blocks_is_unknown() {
    // 5#0 names 1#7 as its parent; client 1's blocks end at 1#1, and the next section (client
    // 6's) must not be mistaken for it (found by the hostile_update fuzzer).
    let mut update = Vec::new();
    update.write_var::<u64>(3);
    for client in [1, 6] {
        update.write_var::<u64>(1);
        update.write_var::<u64>(client);
        update.write_var::<u64>(0);
        update.push(7);
        update.write_var::<u64>(1);
        update.write_string("nodes");
        update.push(1);
    }
    update.write_var::<u64>(1);
    update.write_var::<u64>(5);
    update.write_var::<u64>(0);
    update.push(8);
    update.write_var::<u64>(0);
    update.write_var::<u64>(1);
    update.write_var::<u64>(7);
    update.write_var::<u64>(1);
    update.push(126);
    update.write_var::<u64>(0);
    let summary = summarize_update(&update).unwrap();
    assert_eq!(
        resolve(&summary, &[&NestingIndex::new()]).unwrap_err(),
        NestingError::MissingDependency
    );
}

#[test]
fn a_reference_to_a_later_collected_range_of_the_same_client_is_a_cycle() {
    // 1#0 sits after 1#5, inside the collected range that follows it: yrs cannot integrate
    // 1#0 before that range, nor the range before 1#0 (found by the hostile_update fuzzer).
    let mut update = Vec::new();
    update.write_var::<u64>(1);
    update.write_var::<u64>(2);
    update.write_var::<u64>(1);
    update.write_var::<u64>(0);
    update.push(0b1000_0000 | 7);
    update.write_var::<u64>(1);
    update.write_var::<u64>(5);
    update.push(1);
    update.push(0);
    update.write_var::<u64>(10);
    update.write_var::<u64>(0);
    let summary = summarize_update(&update).unwrap();
    assert_eq!(
        resolve(&summary, &[&NestingIndex::new()]).unwrap_err(),
        NestingError::MissingDependency
    );
    let resolution = resolve_repairing(&summary, &[&NestingIndex::new()]);
    let repaired = repair_update_v1(&update, &summary, &resolution.repairs);
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(&repaired).unwrap())
        .unwrap();
    assert!(doc.transact().store().pending_update().is_none());
}
