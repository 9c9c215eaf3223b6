//! Presence: a connection changes only the awareness states it introduced, a reconnecting tab
//! gets its state back when its old connection leaves, and presence is bounded in bytes.

use std::sync::Arc;

use atelier_protocol::close_code;
use atelier_protocol::ids::SessionId;
use atelier_protocol::Role;

use super::support::*;
use crate::{MemoryDocStore, RegistryConfig, SessionLimits, SessionRegistryHandle};

fn registry(limits: SessionLimits) -> SessionRegistryHandle {
    let mut config = RegistryConfig::new(Arc::new(MemoryDocStore::new()));
    config.limits = limits;
    SessionRegistryHandle::new(config)
}

async fn joined(registry: &SessionRegistryHandle, session: SessionId, role: Role) -> Client {
    let mut client = Client::join(registry, session, participant(role)).await;
    client.handshake().await;
    client
}

const ALICE_STATE: &str = r#"{"user":{"name":"alice"}}"#;

#[actix::test]
async fn a_connection_cannot_change_or_remove_presence_it_did_not_introduce() {
    let registry = registry(SessionLimits::default());
    let session = SessionId::new_random();
    let mut alice = joined(&registry, session, Role::Editor).await;
    let mut mallory = joined(&registry, session, Role::Viewer).await;
    settle().await;
    alice.send(awareness(&[(100, 1, ALICE_STATE)])).await;
    for client in [&mut alice, &mut mallory] {
        let echo = client.recv_frame().await;
        assert_eq!(
            awareness_entries(&echo),
            vec![(100, ALICE_STATE.to_owned())]
        );
    }

    // Overwriting and removing Alice's state: neither applied nor relayed.
    mallory
        .send(awareness(&[(100, 5, r#"{"user":{"name":"hacked"}}"#)]))
        .await;
    mallory.send(awareness(&[(100, 6, "null")])).await;
    alice.expect_silence().await;
    mallory.expect_silence().await;
    let mut carol = Client::join(&registry, session, participant(Role::Viewer)).await;
    let _step1 = carol.recv_frame().await;
    assert_eq!(
        awareness_entries(&carol.recv_frame().await),
        vec![(100, ALICE_STATE.to_owned())]
    );

    // Her own ids are Mallory's to change.
    mallory.send(awareness(&[(200, 1, r#"{"me":1}"#)])).await;
    assert_eq!(
        awareness_entries(&alice.recv_frame().await),
        vec![(200, r#"{"me":1}"#.to_owned())]
    );
    let _ = carol.recv_frame().await;
    // And Alice can still remove hers.
    alice.send(awareness(&[(100, 2, "null")])).await;
    assert_eq!(
        awareness_entries(&carol.recv_frame().await),
        vec![(100, "null".to_owned())]
    );
}

#[actix::test]
async fn a_reconnecting_tab_gets_its_presence_back_when_its_old_connection_leaves() {
    let registry = registry(SessionLimits::default());
    let session = SessionId::new_random();
    let mut bob = joined(&registry, session, Role::Editor).await;
    let old_tab = joined(&registry, session, Role::Editor).await;
    old_tab.send(awareness(&[(100, 1, ALICE_STATE)])).await;
    let _ = bob.recv_frame().await;

    // The tab reconnected on a new socket before the server noticed the old one died.
    let new_tab = joined(&registry, session, Role::Editor).await;
    let moved = r#"{"user":{"name":"alice","cursor":7}}"#;
    new_tab.send(awareness(&[(100, 2, moved)])).await;
    bob.expect_silence().await;

    // When the old connection goes, its state is not removed: the new tab's is shown.
    old_tab.leave().await;
    assert_eq!(
        awareness_entries(&bob.recv_frame().await),
        vec![(100, moved.to_owned())]
    );
    // And the new tab owns it now.
    new_tab.send(awareness(&[(100, 3, "null")])).await;
    assert_eq!(
        awareness_entries(&bob.recv_frame().await),
        vec![(100, "null".to_owned())]
    );
}

#[actix::test]
async fn presence_is_bounded_in_bytes_per_connection_and_per_session() {
    let registry = registry(SessionLimits {
        max_presence_bytes_per_connection: 1000,
        max_presence_bytes_per_session: 2000,
        ..SessionLimits::default()
    });
    let session = SessionId::new_random();
    let state = |fill: usize| format!(r#"{{"blob":"{}"}}"#, "x".repeat(fill));

    // One connection over its own budget is closed.
    let mut greedy = joined(&registry, session, Role::Viewer).await;
    greedy
        .send(awareness(&[(1, 1, &state(600)), (2, 1, &state(600))]))
        .await;
    let (code, reason) = greedy.recv_close().await;
    assert_eq!(code, close_code::POLICY_VIOLATION);
    assert_eq!(reason, "presence too large");

    // Two fill the session; a third state that does not fit is not applied, not relayed, and
    // its connection stays.
    let mut watcher = joined(&registry, session, Role::Viewer).await;
    for client in [10, 11] {
        let c = joined(&registry, session, Role::Viewer).await;
        c.send(awareness(&[(client, 1, &state(900))])).await;
        assert_eq!(awareness_entries(&watcher.recv_frame().await)[0].0, client);
    }
    let mut third = joined(&registry, session, Role::Viewer).await;
    third.send(awareness(&[(12, 1, &state(900))])).await;
    watcher.expect_silence().await;
    // A small one still fits.
    third.send(awareness(&[(13, 1, "{}")])).await;
    assert_eq!(
        awareness_entries(&watcher.recv_frame().await),
        vec![(13, "{}".to_owned())]
    );
    let _ = third.recv_frame().await;
}
