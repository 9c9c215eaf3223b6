//! A database that already holds a hostile update (written by a server without the nesting
//! check): the server restarts, the session loads without what nests too deep, the jobs
//! endpoint can read its graph, and the server stays up. On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use atelier_protocol::ysync::{decode_frame, encode_frame, Frame, SyncMessage};
use common::{Backend, TestServer};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use tokio_tungstenite::tungstenite::Message;
use yrs::types::ToJson;
use yrs::updates::decoder::Decode;
use yrs::{Doc, Map, ReadTxn, StateVector, Transact, Update};

on_both_backends!(a_stored_deep_nesting_loads_without_it_after_a_restart);

fn var(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn string(out: &mut Vec<u8>, s: &str) {
    var(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// `levels` `Y.Map`s by `client`, each at key `k` of the one before, the first in the root
/// `root`; with `delete_first`, the update also deletes the first (and so, for yrs, all of
/// them, one recursion level each).
fn nested_maps(client: u64, root: &str, levels: u64, delete_first: bool) -> Vec<u8> {
    let mut out = Vec::new();
    var(&mut out, 1);
    var(&mut out, levels);
    var(&mut out, client);
    var(&mut out, 0);
    for clock in 0..levels {
        out.push(0b0010_0000 | 7);
        if clock == 0 {
            var(&mut out, 1);
            string(&mut out, root);
        } else {
            var(&mut out, 0);
            var(&mut out, client);
            var(&mut out, clock - 1);
        }
        string(&mut out, "k");
        out.push(1);
    }
    if delete_first {
        for value in [1, client, 1, 0, 1] {
            var(&mut out, value);
        }
    } else {
        var(&mut out, 0);
    }
    out
}

/// Joins the session over a raw WebSocket and returns its document (step 1 → step 2).
async fn sync(server: &TestServer, session: &str, token: &str) -> Doc {
    let url = format!(
        "{}/ws/{session}?token={token}",
        server.base.replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("live session socket");
    let step1 = encode_frame(&Frame::step1(StateVector::default()));
    ws.send(Message::Binary(step1.into())).await.unwrap();
    let doc = Doc::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("an answer within 20 s")
            .expect("the socket stays open")
            .expect("a frame");
        if let Message::Binary(bytes) = msg {
            if let Ok(Frame::Sync(SyncMessage::SyncStep2(update))) = decode_frame(&bytes) {
                doc.transact_mut()
                    .apply_update(Update::decode_v1(&update).unwrap())
                    .unwrap();
                return doc;
            }
        }
    }
}

/// Levels of maps nested at `k` under `nodes` (the root counts as 1).
fn depth(doc: &Doc) -> usize {
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

fn alive(server: &mut TestServer) -> bool {
    matches!(server.child.try_wait(), Ok(None))
}

async fn a_stored_deep_nesting_loads_without_it_after_a_restart(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let session = server.create_session(&ada.token, "Deep").await;
    let other = server.create_session(&ada.token, "Elsewhere").await;
    server.kill();

    // What an older server stored: an honest edit, 50,000 nested maps, and 50,000 more that
    // the same update deletes (yrs deletes them recursively while loading).
    let honest = Doc::with_client_id(7);
    honest
        .get_or_insert_map("nodes")
        .insert(&mut honest.transact_mut(), "n1", "kept");
    let honest = honest
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let db = atelier::db::Db::connect(&server.database_url, 2)
        .await
        .unwrap();
    db.append_updates(
        session.parse().unwrap(),
        vec![
            honest,
            nested_maps(1001, "nodes", 50_000, false),
            nested_maps(1002, "scratch", 50_000, true),
        ],
    )
    .await
    .unwrap();
    drop(db);

    server.spawn(&[]);
    let doc = sync(&server, &session, &ada.token).await;
    let nodes = doc.get_or_insert_map("nodes");
    assert_eq!(
        nodes
            .get(&doc.transact(), "n1")
            .map(|v| v.to_string(&doc.transact())),
        Some("kept".to_owned())
    );
    // What is left of the chains: the root and 31 maps.
    assert_eq!(depth(&doc), 32);

    // The jobs endpoint turns the graph into JSON: it answers (the graph is no valid job).
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/sessions/{session}/jobs"),
            Some(&ada.token),
            None,
        )
        .await;
    assert!(status.is_client_error(), "{status} {body}");
    assert!(alive(&mut server), "the server died");
    // Other sessions are served as ever.
    let elsewhere = sync(&server, &other, &ada.token).await;
    assert_eq!(depth(&elsewhere), 1);

    // The load compacted the document; a restart serves the same, clean.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    let stored = atelier::db::Db::connect(&server.database_url, 2)
        .await
        .unwrap()
        .load_document(session.parse().unwrap())
        .await
        .unwrap();
    assert!(
        stored.updates.is_empty(),
        "{} updates left",
        stored.updates.len()
    );
    server.spawn(&[]);
    let doc = sync(&server, &session, &ada.token).await;
    assert_eq!(depth(&doc), 32);
    assert!(alive(&mut server));
}
