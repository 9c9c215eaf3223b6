//! What a session queues for a connection is bounded in bytes, large frames still reach clients
//! that read, and answering step 1s neither piles up encodings nor holds up everyone else.

use std::sync::Arc;
use std::time::Duration;

use atelier_protocol::close_code;
use atelier_protocol::ids::SessionId;
use atelier_protocol::ysync::{Frame, SyncMessage};
use atelier_protocol::Role;
use yrs::{ReadTxn, Transact};

use super::support::*;
use crate::session::pause_diffs;
use crate::{MemoryDocStore, RegistryConfig, SessionRegistryHandle};

fn registry() -> SessionRegistryHandle {
    SessionRegistryHandle::new(RegistryConfig::new(Arc::new(MemoryDocStore::new())))
}

async fn joined(registry: &SessionRegistryHandle, session: SessionId, role: Role) -> Client {
    let mut client = Client::join(registry, session, participant(role)).await;
    client.handshake().await;
    client
}

#[actix::test]
async fn a_client_that_does_not_read_is_closed_once_the_byte_budget_is_queued() {
    let registry = registry();
    let session = SessionId::new_random();
    let alice = joined(&registry, session, Role::Editor).await;
    let mut hoarder = Client::join_with(
        &registry,
        session,
        participant(Role::Viewer),
        JoinOptions {
            outbox_bytes: 64 * 1024,
            hoard: true,
            ..JoinOptions::default()
        },
    )
    .await;
    // Twenty updates of 8 KiB: far below the 1024 frames, but 160 KiB.
    for i in 0..20 {
        alice
            .send_edit(&format!("k{i}"), &"x".repeat(8 * 1024))
            .await;
    }
    let (code, reason) = hoarder.recv_close().await;
    assert_eq!(code, close_code::POLICY_VIOLATION);
    assert_eq!(reason, "too slow; resync");
}

#[actix::test]
async fn a_frame_larger_than_the_budget_still_reaches_a_client_that_reads() {
    let registry = registry();
    let session = SessionId::new_random();
    let alice = joined(&registry, session, Role::Editor).await;
    alice.send_edit("big", &"x".repeat(100 * 1024)).await;
    registry.flush(session).await.unwrap();

    let mut reader = Client::join_with(
        &registry,
        session,
        participant(Role::Viewer),
        JoinOptions {
            outbox_bytes: 16 * 1024,
            ..JoinOptions::default()
        },
    )
    .await;
    let _step1 = reader.recv_frame().await;
    // The whole document: 100 KiB, six times the budget.
    reader.sync().await;
    assert_eq!(reader.node("big").map(|v| v.len()), Some(100 * 1024));
    // And what follows.
    let update = alice.send_edit("small", "after").await;
    assert_eq!(expect_update(reader.recv_frame().await), update);
}

#[actix::test]
async fn repeated_step_1s_share_one_encoding_and_edits_flow_meanwhile() {
    let registry = registry();
    let session = SessionId::new_random();
    let alice = joined(&registry, session, Role::Editor).await;
    // Larger than what is diffed on the actor itself.
    alice.send_edit("big", &"x".repeat(200 * 1024)).await;
    registry.flush(session).await.unwrap();
    let mut bob = joined(&registry, session, Role::Editor).await;
    let mut asker = joined(&registry, session, Role::Viewer).await;
    asker.sync().await;
    settle().await;

    // The encoders are busy (as with a large document): the step 1s wait...
    let paused = pause_diffs().await;
    let sv = asker.doc.transact().state_vector();
    for _ in 0..50 {
        asker.send(Frame::step1(sv.clone())).await;
    }
    // ...and the session still serves everyone else at once.
    let update = alice.send_edit("n1", "live").await;
    let received = tokio::time::timeout(Duration::from_millis(500), bob.recv_frame())
        .await
        .expect("edits flow while a diff is pending");
    assert_eq!(expect_update(received), update);

    drop(paused);
    // One answer for the first step 1, one for all those that came while it was encoded.
    let mut answers = 0;
    loop {
        match tokio::time::timeout(Duration::from_millis(500), asker.recv()).await {
            Ok(Received::Frame(Frame::Sync(SyncMessage::SyncStep2(_)))) => answers += 1,
            Ok(Received::Frame(Frame::Sync(SyncMessage::Update(_)))) => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => break,
        }
    }
    assert_eq!(answers, 2);
}
