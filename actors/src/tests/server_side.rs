//! What the server itself does to live sessions: edits that report success only once stored,
//! graph reads that include every accepted edit, and kicks that find connections still joining.

use std::sync::Arc;
use std::time::Duration;

use atelier_protocol::close_code;
use atelier_protocol::ids::{AccountId, SessionId, ShareLinkId};
use atelier_protocol::Role;
use yrs::{Doc, Map, ReadTxn, Transact};

use super::support::*;
use crate::admission::{AdmissionCaps, Grant, KickTarget};
use crate::session::messages::{DocEdit, LiveDocError};
use crate::{DocStore, Identity, MemoryDocStore, RegistryConfig, SessionRegistryHandle};

fn registry(store: Arc<dyn DocStore>) -> SessionRegistryHandle {
    SessionRegistryHandle::new(RegistryConfig::new(store))
}

/// A server edit that sets `outputs[key] = value`.
fn set_output(key: &'static str, value: &'static str) -> DocEdit {
    Arc::new(move |doc: &Doc| {
        let before = doc.transact().state_vector();
        let outputs = doc.get_or_insert_map("outputs");
        outputs.insert(&mut doc.transact_mut(), key, value);
        Ok(doc.transact().encode_state_as_update_v1(&before))
    })
}

fn stored_output(store: &MemoryDocStore, session: SessionId, key: &str) -> Option<String> {
    use yrs::updates::decoder::Decode;
    let stored = store.stored(session);
    let doc = Doc::new();
    for bytes in stored
        .snapshot
        .iter()
        .chain(stored.updates.iter().map(|(_, u)| u))
    {
        let update = yrs::Update::decode_v1(bytes).expect("stored garbage");
        doc.transact_mut().apply_update(update).expect("applies");
    }
    let txn = doc.transact();
    let outputs = txn.get_map("outputs")?;
    outputs.get(&txn, key).map(|v| v.to_string(&txn))
}

#[actix::test]
async fn a_server_edit_succeeds_only_once_stored() {
    let store = GatedStore::new();
    let registry = registry(store.clone());
    let session = SessionId::new_random();
    let mut viewer = Client::join(&registry, session, participant(Role::Viewer)).await;
    viewer.handshake().await;

    let edit = {
        let registry = registry.clone();
        actix::spawn(async move {
            registry
                .apply_server_edit(session, set_output("n1", "m1"))
                .await
        })
    };
    settle().await;
    // The append is held at the gate: the edit must not have answered yet.
    assert!(
        !edit.is_finished(),
        "the edit answered before its change was stored"
    );
    store.gate.add_permits(1);
    edit.await.unwrap().unwrap();
    assert_eq!(
        stored_output(&store.inner, session, "n1").as_deref(),
        Some("m1")
    );
    // And everyone got it.
    expect_update(viewer.recv_frame().await);
}

#[actix::test]
async fn a_server_edit_that_cannot_be_stored_fails() {
    let store = Arc::new(MemoryDocStore::new());
    let registry = registry(store.clone());
    let session = SessionId::new_random();
    // Nobody connected: the registry loads the session for the edit.
    registry
        .apply_server_edit(session, set_output("n1", "m1"))
        .await
        .unwrap();
    store.set_failing(true);
    let error = registry
        .apply_server_edit(session, set_output("n2", "m2"))
        .await
        .unwrap_err();
    assert!(matches!(error, LiveDocError::Storage(_)), "{error}");
    store.set_failing(false);
    assert_eq!(stored_output(&store, session, "n2"), None);
    assert_eq!(stored_output(&store, session, "n1").as_deref(), Some("m1"));
}

#[actix::test]
async fn a_server_edit_to_an_unloaded_session_goes_to_a_fresh_one() {
    let store = Arc::new(MemoryDocStore::new());
    let mut config = RegistryConfig::new(store.clone());
    config.limits.idle_unload = Duration::from_millis(20);
    let registry = SessionRegistryHandle::new(config);
    let session = SessionId::new_random();
    for i in 0..20 {
        // Some of these land while the previous actor unloads.
        let key: &'static str = Box::leak(format!("n{i}").into_boxed_str());
        registry
            .apply_server_edit(session, set_output(key, "m"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5 * (i % 8))).await;
    }
    for i in 0..20 {
        assert_eq!(
            stored_output(&store, session, &format!("n{i}")).as_deref(),
            Some("m"),
            "edit {i} lost"
        );
    }
}

#[actix::test]
async fn the_graph_includes_every_edit_accepted_before_it_was_asked_for() {
    let store = GatedStore::new();
    let registry = registry(store.clone());
    let session = SessionId::new_random();
    let mut alice = Client::join(&registry, session, participant(Role::Editor)).await;
    alice.handshake().await;
    alice.send_edit("n1", "sampler").await;
    settle().await;
    let graph = {
        let registry = registry.clone();
        actix::spawn(async move { registry.graph_json(session).await })
    };
    settle().await;
    assert!(
        !graph.is_finished(),
        "the graph was read before the edit was applied"
    );
    store.gate.add_permits(1);
    let graph = graph.await.unwrap().unwrap();
    assert_eq!(graph["nodes"]["n1"], "sampler", "{graph}");
    assert_eq!(graph["edges"], serde_json::json!({}));
}

#[actix::test]
async fn a_kick_finds_a_connection_that_joins_after_it() {
    let store = Arc::new(MemoryDocStore::new());
    let registry = registry(store);
    let session = SessionId::new_random();
    let link = ShareLinkId::new_random();
    let admission = registry
        .admit(Grant {
            session,
            identity: Identity::ShareLink(link),
            credential: None,
            ip: None,
            expires_at: None,
        })
        .unwrap();
    // Revoked while the connection is still between its checks and its join.
    registry.kick(
        KickTarget::ShareLink(link),
        close_code::ACCESS_REVOKED,
        "share link revoked",
    );
    let mut late = share_link_viewer(link);
    late.admission = admission;
    let mut client = Client::join(&registry, session, late).await;
    let (code, _) = client.recv_close().await;
    assert_eq!(code, close_code::ACCESS_REVOKED);
}

#[actix::test]
async fn kicks_close_an_accounts_connections_everywhere_and_caps_count_them() {
    let store = Arc::new(MemoryDocStore::new());
    let mut config = RegistryConfig::new(store);
    config.caps = AdmissionCaps {
        per_account: 2,
        ..AdmissionCaps::default()
    };
    let registry = SessionRegistryHandle::new(config);
    let account = AccountId::new_random();
    let grant = |session| Grant {
        session,
        identity: Identity::Account(account),
        credential: Some("token-hash".into()),
        ip: None,
        expires_at: None,
    };
    let (s1, s2) = (SessionId::new_random(), SessionId::new_random());
    let mut clients = Vec::new();
    for session in [s1, s2] {
        let mut p = participant(Role::Editor);
        p.identity = Identity::Account(account);
        p.admission = registry.admit(grant(session)).unwrap();
        let mut c = Client::join(&registry, session, p).await;
        c.handshake().await;
        clients.push(c);
    }
    assert!(
        registry.admit(grant(s1)).is_err(),
        "a third connection passed the cap of 2"
    );
    let mut bystander = Client::join(&registry, s1, participant(Role::Editor)).await;
    bystander.handshake().await;
    registry.kick_account(account, close_code::CREDENTIAL_ENDED, "account deleted");
    for c in &mut clients {
        assert_eq!(c.recv_close().await.0, close_code::CREDENTIAL_ENDED);
    }
    bystander.send_edit("still", "here").await;
    registry.flush(s1).await.unwrap();
    // The places are free once the connections are gone.
    drop(clients);
    settle().await;
    registry.admit(grant(s1)).unwrap();
}
