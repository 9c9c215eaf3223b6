//! Session behaviour, driven through the registry with fake connections and in-memory stores.

use std::sync::Arc;
use std::time::Duration;

use atelier_protocol::close_code;
use atelier_protocol::events::StudioEvent;
use atelier_protocol::ids::{SessionId, ShareLinkId};
use atelier_protocol::ysync::{decode_awareness, Frame, SyncMessage};
use atelier_protocol::Role;
use serde_json::json;

use super::support::*;
use crate::jobs::JobsSnapshot;
use crate::session::messages::{GetStats, InjectPanic};
use crate::store::{BoxError, BoxFuture};
use crate::{
    DocStore, Identity, MemoryDocStore, RegistryConfig, SessionLimits, SessionRegistryHandle,
};

fn registry(store: Arc<dyn DocStore>) -> SessionRegistryHandle {
    SessionRegistryHandle::new(RegistryConfig::new(store))
}

fn registry_with_limits(store: Arc<dyn DocStore>, limits: SessionLimits) -> SessionRegistryHandle {
    let mut config = RegistryConfig::new(store);
    config.limits = limits;
    SessionRegistryHandle::new(config)
}

/// Joins and completes the y-sync handshake.
async fn joined(registry: &SessionRegistryHandle, session: SessionId, role: Role) -> Client {
    let mut client = Client::join(registry, session, participant(role)).await;
    client.handshake().await;
    client
}

#[actix::test]
async fn editor_update_is_stored_before_it_is_fanned_out() {
    let store = GatedStore::new();
    let registry = registry(store.clone());
    let session = SessionId::new_random();
    let mut alice = joined(&registry, session, Role::Editor).await;
    let mut bob = joined(&registry, session, Role::Viewer).await;

    let update = alice.send_edit("n1", "sampler").await;
    settle().await;
    // The append is in flight: nothing stored yet, so nothing may reach Bob.
    assert_eq!(store.appends_started(), 1);
    assert!(store.inner.stored(session).updates.is_empty());
    bob.expect_silence().await;

    store.gate.add_permits(1);
    assert_eq!(expect_update(bob.recv_frame().await), update);
    assert_eq!(store.inner.stored(session).updates.len(), 1);
    // Like y-websocket: the author does not get its own update back.
    alice.expect_silence().await;
}

#[actix::test]
async fn viewer_update_is_refused_and_not_stored() {
    let store = Arc::new(MemoryDocStore::new());
    let registry = registry(store.clone());
    let session = SessionId::new_random();
    let mut viewer = joined(&registry, session, Role::Viewer).await;
    let mut editor = joined(&registry, session, Role::Editor).await;
    settle().await;
    // The viewer's handshake step 2 carried nothing new: no refusal for it.
    viewer.expect_silence().await;

    viewer.send_edit("n1", "hijack").await;
    assert_eq!(viewer.recv_frame().await, Frame::Auth("read-only".into()));
    settle().await;
    assert_eq!(store.stored(session), Default::default());
    editor.expect_silence().await;

    // Viewers may still ask for the document and send awareness.
    editor.send_edit("n2", "ok").await;
    settle().await;
    let _ = viewer.recv_frame().await; // the editor's update
    viewer.sync().await;
    assert_eq!(viewer.node("n2").as_deref(), Some("ok"));
}

#[actix::test]
async fn late_joiner_syncs_from_the_server() {
    let store = Arc::new(MemoryDocStore::new());
    let registry = registry(store.clone());
    let session = SessionId::new_random();
    let alice = joined(&registry, session, Role::Editor).await;
    alice.send_edit("n1", "prompt").await;
    alice.send_edit("n2", "sampler").await;
    registry.flush(session).await.unwrap();

    let mut carol = Client::join(&registry, session, participant(Role::Viewer)).await;
    match carol.recv_frame().await {
        Frame::Sync(SyncMessage::SyncStep1(sv)) => assert!(!sv.is_empty()),
        other => panic!("expected the server's step 1, got {other:?}"),
    }
    carol.sync().await;
    assert_eq!(carol.node("n1").as_deref(), Some("prompt"));
    assert_eq!(carol.node("n2").as_deref(), Some("sampler"));
}

#[actix::test]
async fn revoking_a_share_link_disconnects_its_viewers() {
    let registry = registry(Arc::new(MemoryDocStore::new()));
    let session = SessionId::new_random();
    let link = ShareLinkId::new_random();
    let mut member = joined(&registry, session, Role::Editor).await;
    let mut guest = Client::join(&registry, session, share_link_viewer(link)).await;
    let mut other_guest = Client::join(
        &registry,
        session,
        share_link_viewer(ShareLinkId::new_random()),
    )
    .await;
    settle().await;

    assert_eq!(registry.revoke_share_link(session, link).await, 1);
    // Within the call: the guest is gone from the session already.
    let stats = member.session.send(GetStats).await.unwrap();
    assert_eq!(stats.participants, 2);
    let kicked = loop {
        if let Frame::Event(json) = guest.recv_frame().await {
            let event = StudioEvent::from_json(&json).unwrap();
            if let StudioEvent::SessionKicked { reason } = event {
                break reason;
            }
        }
    };
    assert_eq!(kicked, "share link revoked");
    assert_eq!(guest.recv_close().await.0, close_code::ACCESS_REVOKED);

    // The other guest (another link) stays, and hears that someone left.
    let left = loop {
        if let Frame::Event(json) = other_guest.recv_frame().await {
            if let StudioEvent::ParticipantLeft { connection_id } =
                StudioEvent::from_json(&json).unwrap()
            {
                break connection_id;
            }
        }
    };
    assert_eq!(left, guest.joined.connection_id);
    member.expect_silence().await; // stock clients never see events
}

#[actix::test]
async fn group_commit_batches_updates_arriving_during_an_append() {
    let store = GatedStore::new();
    let registry = registry(store.clone());
    let session = SessionId::new_random();
    let alice = joined(&registry, session, Role::Editor).await;
    let mut bob = joined(&registry, session, Role::Editor).await;

    let first = alice.send_edit("k0", "v0").await;
    settle().await;
    let mut rest = Vec::new();
    for i in 1..=3 {
        rest.push(alice.send_edit(&format!("k{i}"), &format!("v{i}")).await);
    }
    settle().await;
    assert_eq!(
        store.appends_started(),
        1,
        "one append in flight, three queued"
    );

    store.gate.add_permits(10);
    // Fan-out keeps arrival order.
    assert_eq!(expect_update(bob.recv_frame().await), first);
    for update in rest {
        assert_eq!(expect_update(bob.recv_frame().await), update);
    }
    assert_eq!(store.inner.append_batch_sizes(), vec![1, 3]);
}

#[actix::test]
async fn append_failure_closes_the_author_and_stores_nothing() {
    let store = Arc::new(MemoryDocStore::new());
    let registry = registry(store.clone());
    let session = SessionId::new_random();
    let mut alice = joined(&registry, session, Role::Editor).await;
    let mut bob = joined(&registry, session, Role::Editor).await;
    settle().await;

    store.set_failing(true);
    alice.send_edit("n1", "lost?").await;
    let (code, reason) = alice.recv_close().await;
    assert_eq!(code, close_code::INTERNAL_ERROR);
    assert!(reason.contains("storage"), "{reason}");
    bob.expect_silence().await;

    store.set_failing(false);
    assert!(store.stored(session).updates.is_empty());
    // Bob is unaffected and can still edit.
    bob.send_edit("n2", "fine").await;
    registry.flush(session).await.unwrap();
    assert_eq!(
        stored_node(&store.stored(session), "n2").as_deref(),
        Some("fine")
    );
}

#[actix::test]
async fn compaction_keeps_the_document() {
    let store = Arc::new(MemoryDocStore::new());
    let limits = SessionLimits {
        compact_every_updates: 3,
        ..SessionLimits::default()
    };
    let registry = registry_with_limits(store.clone(), limits.clone());
    let session = SessionId::new_random();
    let alice = joined(&registry, session, Role::Editor).await;
    for i in 0..7 {
        alice.send_edit(&format!("k{i}"), &format!("v{i}")).await;
        settle().await;
    }
    registry.flush(session).await.unwrap();
    let stored = store.stored(session);
    assert!(stored.snapshot.is_some());
    assert!(stored.updates.is_empty(), "flush compacts the whole tail");
    for i in 0..7 {
        assert_eq!(
            stored_node(&stored, &format!("k{i}")),
            Some(format!("v{i}"))
        );
    }

    // A fresh server (new registry) serves the same document from the snapshot.
    let registry = registry_with_limits(store.clone(), limits);
    let mut carol = Client::join(&registry, session, participant(Role::Viewer)).await;
    let _ = carol.recv_frame().await;
    carol.sync().await;
    assert_eq!(carol.node("k6").as_deref(), Some("v6"));
}

#[actix::test]
async fn fresh_joiners_get_the_current_state_after_every_change() {
    // Fresh clients are answered from a cached full state; each change must replace it.
    let store = Arc::new(MemoryDocStore::new());
    let registry = registry(store.clone());
    let session = SessionId::new_random();
    let alice = joined(&registry, session, Role::Editor).await;
    alice.send_edit("k1", "v1").await;
    settle().await;
    for round in 0..2 {
        let mut fresh = Client::join(&registry, session, participant(Role::Viewer)).await;
        let _ = fresh.recv_frame().await;
        fresh.sync().await;
        assert_eq!(fresh.node("k1").as_deref(), Some("v1"), "round {round}");
    }
    alice.send_edit("k2", "v2").await;
    settle().await;
    let mut late = Client::join(&registry, session, participant(Role::Viewer)).await;
    let _ = late.recv_frame().await;
    late.sync().await;
    assert_eq!(late.node("k1").as_deref(), Some("v1"));
    assert_eq!(late.node("k2").as_deref(), Some("v2"));
}

#[actix::test]
async fn session_restarts_from_storage_after_a_panic() {
    let store = Arc::new(MemoryDocStore::new());
    let registry = registry(store.clone());
    let (s1, s2) = (SessionId::new_random(), SessionId::new_random());
    let mut a1 = joined(&registry, s1, Role::Editor).await;
    let a2 = joined(&registry, s2, Role::Editor).await;
    let mut b2 = joined(&registry, s2, Role::Editor).await;
    a1.send_edit("n1", "survives").await;
    registry.flush(s1).await.unwrap();

    let addr = registry.get(s1).unwrap();
    addr.do_send(InjectPanic);
    let (code, reason) = a1.recv_close().await;
    assert_eq!(code, close_code::INTERNAL_ERROR);
    assert!(reason.contains("restarted"), "{reason}");

    // The other session did not notice.
    let update = a2.send_edit("x", "y").await;
    assert_eq!(expect_update(b2.recv_frame().await), update);

    // Same address, reloaded from storage.
    assert_eq!(registry.get(s1).unwrap(), addr);
    let mut again = Client::join(&registry, s1, participant(Role::Editor)).await;
    let _ = again.recv_frame().await;
    again.sync().await;
    assert_eq!(again.node("n1").as_deref(), Some("survives"));
    assert_eq!(addr.send(GetStats).await.unwrap().participants, 1);
}

#[actix::test]
async fn awareness_is_echoed_to_everyone_and_withdrawn_on_leave() {
    let registry = registry(Arc::new(MemoryDocStore::new()));
    let session = SessionId::new_random();
    let mut alice = joined(&registry, session, Role::Editor).await;
    let mut bob = joined(&registry, session, Role::Viewer).await;
    settle().await;

    let mut payload = vec![1, 100, 1];
    let state = br#"{"user":{"name":"alice"}}"#;
    payload.push(state.len() as u8);
    payload.extend_from_slice(state);
    alice.send(Frame::Awareness(payload.clone())).await;
    for client in [&mut alice, &mut bob] {
        match client.recv_frame().await {
            Frame::Awareness(echo) => {
                let update = decode_awareness(&echo).unwrap();
                assert!(update.clients[&yrs::ClientID::new(100)]
                    .json
                    .contains("alice"));
            }
            other => panic!("expected awareness, got {other:?}"),
        }
    }

    // A late joiner gets the current states right after the server's step 1.
    let mut carol = Client::join(&registry, session, participant(Role::Viewer)).await;
    let _step1 = carol.recv_frame().await;
    assert!(matches!(carol.recv_frame().await, Frame::Awareness(_)));

    alice.leave().await;
    match bob.recv_frame().await {
        Frame::Awareness(removal) => {
            let update = decode_awareness(&removal).unwrap();
            assert_eq!(&*update.clients[&yrs::ClientID::new(100)].json, "null");
        }
        other => panic!("expected the awareness removal, got {other:?}"),
    }
}

struct OneRunningJob;

impl JobsSnapshot for OneRunningJob {
    fn unfinished_jobs(
        &self,
        _session: SessionId,
    ) -> BoxFuture<'_, Result<Vec<serde_json::Value>, BoxError>> {
        Box::pin(async { Ok(vec![json!({"job_id": "j1", "state": "running"})]) })
    }
}

#[actix::test]
async fn events_clients_get_hello_first_and_job_events() {
    let mut config = RegistryConfig::new(Arc::new(MemoryDocStore::new()));
    config.jobs = Arc::new(OneRunningJob);
    let registry = SessionRegistryHandle::new(config);
    let session = SessionId::new_random();
    let mut stock = joined(&registry, session, Role::Editor).await;
    let mut studio_participant = participant(Role::Editor);
    studio_participant.wants_events = true;
    let mut studio = Client::join(&registry, session, studio_participant).await;

    let Frame::Event(json) = studio.recv_frame().await else {
        panic!("hello must come first");
    };
    match StudioEvent::from_json(&json).unwrap() {
        StudioEvent::SessionHello {
            role,
            session_id,
            jobs,
            participants,
            ..
        } => {
            assert_eq!(role, Role::Editor);
            assert_eq!(session_id, session);
            assert_eq!(jobs, vec![json!({"job_id": "j1", "state": "running"})]);
            assert_eq!(participants.len(), 2);
        }
        other => panic!("expected hello, got {other:?}"),
    }
    assert!(matches!(
        studio.recv_frame().await,
        Frame::Sync(SyncMessage::SyncStep1(_))
    ));

    let event = StudioEvent::JobProgress {
        job_id: atelier_protocol::JobId::new_random(),
        node_id: "sampler".into(),
        step: 3,
        total: 20,
    };
    registry.broadcast_event(session, event.clone());
    let job_id = atelier_protocol::JobId::new_random();
    registry.broadcast_preview(session, job_id, 3, "image/png".into(), vec![1, 2, 3]);
    assert_eq!(studio.recv_frame().await, event.to_frame().unwrap());
    assert_eq!(
        studio.recv_frame().await,
        Frame::Preview {
            job_id,
            step: 3,
            mime: "image/png".into(),
            image: vec![1, 2, 3]
        }
    );
    stock.expect_silence().await;
}

#[actix::test]
async fn downgrade_to_viewer_makes_a_connection_read_only() {
    let store = Arc::new(MemoryDocStore::new());
    let registry = registry(store.clone());
    let session = SessionId::new_random();
    let mut editor_participant = participant(Role::Editor);
    editor_participant.wants_events = true;
    let Identity::Account(account) = editor_participant.identity else {
        unreachable!()
    };
    let mut editor = Client::join(&registry, session, editor_participant).await;
    let _hello = editor.recv_frame().await;
    editor.handshake().await;

    assert_eq!(
        registry
            .set_role(session, account, Some(Role::Viewer))
            .await,
        1
    );
    let Frame::Event(json) = editor.recv_frame().await else {
        panic!("expected role.changed")
    };
    assert_eq!(
        StudioEvent::from_json(&json).unwrap(),
        StudioEvent::RoleChanged { role: Role::Viewer }
    );
    editor.send_edit("n1", "too late").await;
    assert_eq!(editor.recv_frame().await, Frame::read_only());
    assert!(store.stored(session).updates.is_empty());

    // Removal disconnects.
    assert_eq!(registry.set_role(session, account, None).await, 1);
    assert_eq!(editor.recv_close().await.0, close_code::ACCESS_REVOKED);
}

#[actix::test]
async fn slow_client_is_disconnected_not_skipped() {
    let registry = registry(Arc::new(MemoryDocStore::new()));
    let session = SessionId::new_random();
    let alice = joined(&registry, session, Role::Editor).await;
    let mut slow = Client::join_with(
        &registry,
        session,
        participant(Role::Viewer),
        JoinOptions {
            outbox_capacity: 4,
            hoard: true,
            ..JoinOptions::default()
        },
    )
    .await;
    for i in 0..10 {
        alice.send_edit(&format!("k{i}"), "v").await;
    }
    let (code, reason) = slow.recv_close().await;
    assert_eq!(code, close_code::POLICY_VIOLATION);
    assert_eq!(reason, "too slow; resync");
    let stats = alice.session.send(GetStats).await.unwrap();
    assert_eq!(stats.participants, 1);
}

#[actix::test]
async fn document_size_limit_refuses_growth() {
    let store = Arc::new(MemoryDocStore::new());
    let limits = SessionLimits {
        max_doc_bytes: 200,
        ..SessionLimits::default()
    };
    let registry = registry_with_limits(store.clone(), limits);
    let session = SessionId::new_random();
    let mut alice = joined(&registry, session, Role::Editor).await;
    alice.send_edit("small", "ok").await;
    alice.send_edit("big", &"x".repeat(300)).await;
    assert_eq!(
        alice.recv_frame().await,
        Frame::Auth("document-too-large".into())
    );
    registry.flush(session).await.unwrap();
    let stored = store.stored(session);
    assert_eq!(stored_node(&stored, "small").as_deref(), Some("ok"));
    assert_eq!(stored_node(&stored, "big"), None);
}

#[actix::test]
async fn idle_session_unloads_after_flushing() {
    tokio::time::pause();
    let store = Arc::new(MemoryDocStore::new());
    let limits = SessionLimits {
        idle_unload: Duration::from_secs(30),
        compact_interval: Duration::from_secs(3600),
        ..SessionLimits::default()
    };
    let registry = registry_with_limits(store.clone(), limits);
    let session = SessionId::new_random();
    let alice = joined(&registry, session, Role::Editor).await;
    alice.send_edit("n1", "kept").await;
    alice.leave().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(registry.live_sessions(), 1, "not idle long enough yet");

    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(registry.live_sessions(), 0);
    let stored = store.stored(session);
    assert!(stored.snapshot.is_some() && stored.updates.is_empty());
    assert_eq!(stored_node(&stored, "n1").as_deref(), Some("kept"));

    // Coming back starts a fresh actor from storage.
    let mut bob = Client::join(&registry, session, participant(Role::Editor)).await;
    let _ = bob.recv_frame().await;
    bob.sync().await;
    assert_eq!(bob.node("n1").as_deref(), Some("kept"));
}

#[actix::test]
async fn shutdown_flushes_and_closes_everyone() {
    let store = GatedStore::new();
    let registry = registry(store.clone());
    let session = SessionId::new_random();
    let mut alice = joined(&registry, session, Role::Editor).await;
    alice.send_edit("n1", "pending at shutdown").await;
    settle().await;
    let shutdown = {
        let registry = registry.clone();
        actix::spawn(async move { registry.shutdown().await })
    };
    assert_eq!(alice.recv_close().await.0, close_code::GOING_AWAY);
    store.gate.add_permits(10);
    shutdown.await.unwrap().unwrap();
    assert_eq!(registry.live_sessions(), 0);
    assert_eq!(
        stored_node(&store.inner.stored(session), "n1").as_deref(),
        Some("pending at shutdown")
    );
}

#[actix::test]
async fn a_large_document_compacts_when_its_tail_reaches_half_the_snapshot() {
    let store = Arc::new(MemoryDocStore::new());
    let limits = SessionLimits {
        compact_every_updates: 3,
        idle_unload: Duration::from_secs(3600),
        ..SessionLimits::default()
    };
    let registry = registry_with_limits(store.clone(), limits);
    let session = SessionId::new_random();
    let alice = joined(&registry, session, Role::Editor).await;
    alice.send_edit("big", &"x".repeat(40_000)).await;
    registry.flush(session).await.unwrap();
    let snapshot = store.stored(session).snapshot.unwrap_or_default();
    assert!(snapshot.len() > 40_000);

    // Ten small edits: past the count, far from half the snapshot, so no rewrite of 40 kB.
    for i in 0..10 {
        alice.send_edit(&format!("k{i}"), "v").await;
        settle().await;
    }
    let stored = store.stored(session);
    assert_eq!(stored.updates.len(), 10);
    assert_eq!(stored.snapshot.as_deref(), Some(snapshot.as_slice()));

    // A tail of half the snapshot's size compacts.
    alice.send_edit("big2", &"y".repeat(25_000)).await;
    settle().await;
    let stored = store.stored(session);
    assert!(
        stored.updates.is_empty(),
        "{} updates left",
        stored.updates.len()
    );
    assert_eq!(stored_node(&stored, "k9").as_deref(), Some("v"));
    assert_eq!(stored_node(&stored, "big2").map(|v| v.len()), Some(25_000));
}

#[actix::test]
async fn compaction_also_runs_on_a_timer() {
    tokio::time::pause();
    let store = Arc::new(MemoryDocStore::new());
    let limits = SessionLimits {
        compact_interval: Duration::from_secs(10),
        idle_unload: Duration::from_secs(3600),
        ..SessionLimits::default()
    };
    let registry = registry_with_limits(store.clone(), limits);
    let session = SessionId::new_random();
    let alice = joined(&registry, session, Role::Editor).await;
    alice.send_edit("n1", "v1").await;
    alice.send_edit("n2", "v2").await;
    settle().await;
    assert_eq!(store.stored(session).updates.len(), 2);
    assert!(store.stored(session).snapshot.is_none());

    tokio::time::sleep(Duration::from_secs(25)).await;
    let stored = store.stored(session);
    assert!(stored.updates.is_empty() && stored.snapshot.is_some());
    assert_eq!(stored_node(&stored, "n2").as_deref(), Some("v2"));
}

#[actix::test]
async fn flush_of_a_session_whose_load_failed_does_not_hang() {
    let store = Arc::new(MemoryDocStore::new());
    store.set_failing(true);
    let registry = registry(store.clone());
    let session = SessionId::new_random();
    let addr = registry.get_or_start(session);
    let flushed = addr.send(crate::session::messages::Flush).await.unwrap();
    assert!(flushed.is_err());
    // A failed load takes the actor out of the registry, so the next join retries the load.
    assert!(registry.get(session).is_none());
    store.set_failing(false);
    let mut alice = Client::join(&registry, session, participant(Role::Editor)).await;
    assert!(matches!(
        alice.recv_frame().await,
        Frame::Sync(SyncMessage::SyncStep1(_))
    ));
}

#[actix::test]
async fn deleting_the_session_under_live_participants_closes_them_for_good() {
    let store = Arc::new(MemoryDocStore::new());
    let registry = registry(store.clone());
    let session = SessionId::new_random();
    let mut alice = joined(&registry, session, Role::Editor).await;
    let mut bob = joined(&registry, session, Role::Viewer).await;
    settle().await;

    // Deleted behind the session's back: the next append finds no session.
    store.delete_session(session);
    alice.send_edit("n1", "orphan").await;
    assert_eq!(alice.recv_close().await.0, close_code::SESSION_DELETED);
    assert_eq!(bob.recv_close().await.0, close_code::SESSION_DELETED);
    settle().await;
    assert!(registry.get(session).is_none());

    // The explicit way (DELETE /sessions/{id}) does the same, with session.kicked first.
    let other = SessionId::new_random();
    let mut studio = participant(Role::Editor);
    studio.wants_events = true;
    let mut carol = Client::join(&registry, other, studio).await;
    settle().await;
    registry
        .close_session(other, "the session was deleted")
        .await;
    let kicked = loop {
        match carol.recv().await {
            Received::Frame(Frame::Event(json)) => {
                if let StudioEvent::SessionKicked { reason } =
                    StudioEvent::from_json(&json).unwrap()
                {
                    break reason;
                }
            }
            Received::Frame(_) => {}
            Received::Close(..) => panic!("closed before session.kicked"),
        }
    };
    assert_eq!(kicked, "the session was deleted");
    assert_eq!(carol.recv_close().await.0, close_code::SESSION_DELETED);
    assert!(registry.get(other).is_none());
}
