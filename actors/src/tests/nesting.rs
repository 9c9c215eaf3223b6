//! Nested shared types: refused before they are stored, in one update, across updates, through
//! the commit queue and through parents copied from neighbours; and documents stored before the
//! check existed load without what is too deep.

use std::sync::Arc;

use atelier_protocol::close_code;
use atelier_protocol::ids::SessionId;
use atelier_protocol::ysync::{decode_frame, Frame, MAX_TYPE_DEPTH};
use atelier_protocol::Role;
use yrs::types::ToJson;
use yrs::updates::decoder::Decode;
use yrs::{Doc, Map, ReadTxn, Transact, Update};

use super::support::*;
use crate::{DocStore, MemoryDocStore, RegistryConfig, SessionRegistryHandle, StoredDoc};

fn registry(store: Arc<dyn DocStore>) -> SessionRegistryHandle {
    SessionRegistryHandle::new(RegistryConfig::new(store))
}

async fn joined(registry: &SessionRegistryHandle, session: SessionId, role: Role) -> Client {
    let mut client = Client::join(registry, session, participant(role)).await;
    client.handshake().await;
    client
}

/// Levels of maps nested at `k` under the root `nodes` in a stored document.
fn stored_depth(stored: &StoredDoc) -> usize {
    let doc = Doc::new();
    for part in stored
        .snapshot
        .iter()
        .chain(stored.updates.iter().map(|(_, u)| u))
    {
        doc.transact_mut()
            .apply_update(Update::decode_v1(part).unwrap())
            .unwrap();
    }
    let json = doc.get_or_insert_map("nodes").to_json(&doc.transact());
    let mut depth = 1;
    let mut current = &json;
    while let yrs::Any::Map(map) = current {
        match map.get("k") {
            Some(next @ yrs::Any::Map(_)) => {
                depth += 1;
                current = next;
            }
            _ => break,
        }
    }
    depth
}

const ALICE: u64 = 1001;
const BOB: u64 = 1002;

#[actix::test]
async fn fifty_thousand_nested_maps_in_one_update_are_refused_before_they_are_stored() {
    let store = Arc::new(MemoryDocStore::new());
    let registry = registry(store.clone());
    let session = SessionId::new_random();
    let mut alice = joined(&registry, session, Role::Editor).await;
    let mut bob = joined(&registry, session, Role::Editor).await;
    settle().await;

    // About 400 KB: well under the message limit.
    alice
        .send(Frame::update(craft::nested_maps(
            ALICE,
            0,
            50_000,
            None,
            &[],
        )))
        .await;
    let (code, reason) = alice.recv_close().await;
    assert_eq!(code, close_code::UPDATE_REFUSED);
    assert!(reason.contains("nested deeper than 32"), "{reason}");

    // Overwriting the key would make yrs delete all 50,000 levels recursively, overflowing the
    // stack; the maps were never stored, so the overwrite refers to nothing.
    bob.send(Frame::update(craft::after(BOB, 0, (ALICE, 0), false)))
        .await;
    let (code, reason) = bob.recv_close().await;
    assert_eq!(code, close_code::UPDATE_REFUSED);
    assert!(reason.contains("does not have"), "{reason}");

    registry.flush(session).await.unwrap();
    assert_eq!(store.stored(session), StoredDoc::default());
    // The session works on.
    let carol = joined(&registry, session, Role::Editor).await;
    carol.send_edit("n1", "fine").await;
    registry.flush(session).await.unwrap();
    assert_eq!(
        stored_node(&store.stored(session), "n1").as_deref(),
        Some("fine")
    );
}

#[actix::test]
async fn nesting_adds_up_across_stored_updates() {
    let store = Arc::new(MemoryDocStore::new());
    let registry = registry(store.clone());
    let session = SessionId::new_random();
    let mut alice = joined(&registry, session, Role::Editor).await;
    let depth = u64::from(MAX_TYPE_DEPTH);

    // The root is 1 deep, these maps 2..=31.
    alice
        .send(Frame::update(craft::nested_maps(
            ALICE,
            0,
            depth - 2,
            None,
            &[],
        )))
        .await;
    registry.flush(session).await.unwrap();
    // One more level: 32, fine.
    let tail = (ALICE, depth - 3);
    alice
        .send(Frame::update(craft::nested_maps(
            ALICE,
            depth - 2,
            1,
            Some(tail),
            &[],
        )))
        .await;
    registry.flush(session).await.unwrap();
    // Another one: 33.
    alice
        .send(Frame::update(craft::nested_maps(
            ALICE,
            depth - 1,
            1,
            Some((ALICE, depth - 2)),
            &[],
        )))
        .await;
    assert_eq!(alice.recv_close().await.0, close_code::UPDATE_REFUSED);
    registry.flush(session).await.unwrap();
    assert_eq!(stored_depth(&store.stored(session)), 32);
}

#[actix::test]
async fn updates_still_in_the_commit_queue_count_towards_the_depth() {
    let store = GatedStore::new();
    let registry = registry(store.clone());
    let session = SessionId::new_random();
    let mut alice = joined(&registry, session, Role::Editor).await;
    let depth = u64::from(MAX_TYPE_DEPTH);

    alice
        .send(Frame::update(craft::nested_maps(
            ALICE,
            0,
            depth - 2,
            None,
            &[],
        )))
        .await;
    settle().await;
    assert_eq!(store.appends_started(), 1, "held in flight");
    // Built on the update in flight: placed against it (32 deep), queued behind it.
    alice
        .send(Frame::update(craft::nested_maps(
            ALICE,
            depth - 2,
            1,
            Some((ALICE, depth - 3)),
            &[],
        )))
        .await;
    // Built on the one still queued: 33 deep, refused although neither is applied yet.
    alice
        .send(Frame::update(craft::nested_maps(
            ALICE,
            depth - 1,
            1,
            Some((ALICE, depth - 2)),
            &[],
        )))
        .await;
    assert_eq!(alice.recv_close().await.0, close_code::UPDATE_REFUSED);

    store.gate.add_permits(10);
    registry.flush(session).await.unwrap();
    assert_eq!(stored_depth(&store.inner.stored(session)), 32);
}

#[actix::test]
async fn a_type_whose_parent_is_copied_from_its_left_neighbour_counts_at_that_depth() {
    let store = Arc::new(MemoryDocStore::new());
    let registry = registry(store.clone());
    let session = SessionId::new_random();
    let mut alice = joined(&registry, session, Role::Editor).await;
    let depth = u64::from(MAX_TYPE_DEPTH);

    // Maps 2..=32 deep; the deepest is (ALICE, depth - 2).
    alice
        .send(Frame::update(craft::nested_maps(
            ALICE,
            0,
            depth - 1,
            None,
            &[],
        )))
        .await;
    let deepest = (ALICE, depth - 2);
    // A plain value in it, then another overwriting it: no parent written, copied from the
    // left neighbour (the first value). Fine.
    alice
        .send(Frame::update(craft::value(ALICE, depth - 1, deepest)))
        .await;
    alice
        .send(Frame::update(craft::after(
            ALICE,
            depth,
            (ALICE, depth - 1),
            false,
        )))
        .await;
    registry.flush(session).await.unwrap();
    // A map in the same place would be 33 deep, though the update names no parent at all.
    alice
        .send(Frame::update(craft::after(
            ALICE,
            depth + 1,
            (ALICE, depth),
            true,
        )))
        .await;
    let (code, reason) = alice.recv_close().await;
    assert_eq!(code, close_code::UPDATE_REFUSED);
    assert!(reason.contains("nested deeper"), "{reason}");
    registry.flush(session).await.unwrap();
    assert_eq!(stored_depth(&store.stored(session)), 32);
}

#[actix::test]
async fn a_document_stored_with_deep_nesting_loads_without_it_and_is_compacted_clean() {
    // A server without the check stored these. Loading applies them; overwriting `k` then
    // deleted 50,000 levels recursively: the process aborted, and again at every load.
    let store = Arc::new(MemoryDocStore::new());
    let session = SessionId::new_random();
    let honest = Doc::with_client_id(7);
    honest
        .get_or_insert_map("nodes")
        .insert(&mut honest.transact_mut(), "n1", "kept");
    let honest = honest
        .transact()
        .encode_state_as_update_v1(&yrs::StateVector::default());
    store
        .append(
            session,
            vec![honest, craft::nested_maps(ALICE, 0, 50_000, None, &[])],
        )
        .await
        .unwrap();
    // And one that deletes its own chain: the recursion happened during the load itself.
    let deleting = SessionId::new_random();
    let chain = craft::nested_maps(BOB, 0, 50_000, None, &[(BOB, 0, 1)]);
    store.append(deleting, vec![chain]).await.unwrap();

    let registry = registry(store.clone());
    let mut dave = Client::join(&registry, deleting, participant(Role::Viewer)).await;
    let _ = dave.recv_frame().await;
    dave.sync().await;
    registry.flush(deleting).await.unwrap();
    assert_eq!(stored_depth(&store.stored(deleting)), 1);

    let mut carol = Client::join(&registry, session, participant(Role::Editor)).await;
    let _ = carol.recv_frame().await;
    carol.sync().await;
    assert_eq!(carol.node("n1").as_deref(), Some("kept"));
    // The repaired document holds 32 levels (the root and 31 maps), and the next load
    // compacted it: what is stored is clean.
    registry.flush(session).await.unwrap();
    let stored = store.stored(session);
    assert!(stored.updates.is_empty(), "the tail was compacted");
    assert_eq!(stored_depth(&stored), 32);
    assert_eq!(stored_node(&stored, "n1").as_deref(), Some("kept"));

    // Overwriting what is left deletes 31 levels: no trouble.
    let mut bob = joined(&registry, session, Role::Editor).await;
    bob.send(Frame::update(craft::after(BOB + 1, 0, (ALICE, 0), false)))
        .await;
    registry.flush(session).await.unwrap();
    assert_eq!(stored_depth(&store.stored(session)), 1);
    bob.expect_silence().await;
}

/// A frame found by fuzzing: a well-formed update on which yrs 0.28's integration panics
/// (`attempt to subtract with overflow` in `TransactionMut::delete`) when overflow checks are on.
/// It depends on a client nobody knows and deletes ranges nobody has.
const POISON_FRAME: &[u8] = include_bytes!("poison_update_frame.bin");

#[actix::test]
async fn the_fuzzers_poison_update_is_refused_and_a_stored_copy_is_repaired_away() {
    let store = Arc::new(MemoryDocStore::new());
    let registry = registry(store.clone());
    let session = SessionId::new_random();
    let mut alice = joined(&registry, session, Role::Editor).await;
    let mut bob = joined(&registry, session, Role::Editor).await;
    alice.send_edit("before", "kept").await;
    registry.flush(session).await.unwrap();
    let _ = bob.recv_frame().await;

    alice.send(decode_frame(POISON_FRAME).unwrap()).await;
    assert_eq!(alice.recv_close().await.0, close_code::UPDATE_REFUSED);
    bob.expect_silence().await;

    // Stored by an older server: the load applies what is sound in it and compacts.
    let poison = decode_frame(POISON_FRAME).unwrap();
    let other = SessionId::new_random();
    store
        .append(other, vec![poison.document_update().unwrap().to_vec()])
        .await
        .unwrap();
    let mut carol = Client::join(&registry, other, participant(Role::Editor)).await;
    let _ = carol.recv_frame().await;
    carol.sync().await;
    registry.flush(other).await.unwrap();
    assert!(store.stored(other).updates.is_empty(), "compacted");
    carol.send_edit("after", "works").await;
    registry.flush(other).await.unwrap();
    assert_eq!(
        stored_node(&store.stored(other), "after").as_deref(),
        Some("works")
    );
}
