//! The cross-session group commit of document appends (`src/db/doc_writer.rs`), against the real
//! database: appends of many sessions at once each get their own `seq`s and are all stored, in
//! order; a session deleted meanwhile gets `SessionNotFound` while the others in its group are
//! stored. On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use atelier::db::documents::SqlDocStore;
use atelier::db::Db;
use atelier_actors::store::{DocStore, DocStoreError};
use atelier_protocol::ids::SessionId;
use common::{Backend, TestServer};
use futures_util::future::join_all;
use reqwest::Method;

on_both_backends!(appends_of_many_sessions_at_once_are_all_stored);

fn update(session: usize, n: usize) -> Vec<u8> {
    format!("session {session} update {n}").into_bytes()
}

async fn appends_of_many_sessions_at_once_are_all_stored(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let ada = server.signup("Ada").await;
    let mut sessions: Vec<SessionId> = Vec::new();
    for i in 0..6 {
        let id = server.create_session(&ada.token, &format!("S{i}")).await;
        sessions.push(id.parse().unwrap());
    }
    let doomed = sessions.pop().unwrap();
    let (status, body) = server
        .call(
            Method::DELETE,
            &format!("/sessions/{doomed}"),
            Some(&ada.token),
            None,
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    server.kill();

    let db = Db::connect(&server.database_url, 4).await.unwrap();
    let store = SqlDocStore::new(db.clone());

    // Three rounds of appends from every session at once (they meet in the writer's groups),
    // each a batch of a different size; the deleted session takes part in the last round.
    let mut expected: Vec<Vec<Vec<u8>>> = vec![Vec::new(); sessions.len()];
    for round in 0..3 {
        let appends = sessions.iter().enumerate().map(|(i, session)| {
            let batch: Vec<Vec<u8>> = (0..=i + round)
                .map(|n| update(i, expected[i].len() + n))
                .collect();
            expected[i].extend(batch.iter().cloned());
            let store = &store;
            async move { store.append(*session, batch).await }
        });
        let doomed_append = async {
            if round == 2 {
                Some(store.append(doomed, vec![update(99, 0)]).await)
            } else {
                None
            }
        };
        let (lasts, doomed_result) = tokio::join!(join_all(appends), doomed_append);
        for (i, last) in lasts.into_iter().enumerate() {
            let last = last.unwrap_or_else(|e| panic!("session {i}, round {round}: {e}"));
            assert_eq!(last, expected[i].len() as i64, "session {i}, round {round}");
        }
        if let Some(result) = doomed_result {
            assert!(
                matches!(result, Err(DocStoreError::SessionNotFound(id)) if id == doomed),
                "{result:?}"
            );
        }
    }

    for (i, session) in sessions.iter().enumerate() {
        let stored = store.load(*session).await.unwrap();
        let seqs: Vec<i64> = stored.updates.iter().map(|(seq, _)| *seq).collect();
        let want: Vec<i64> = (1..=expected[i].len() as i64).collect();
        assert_eq!(seqs, want, "session {i}");
        let updates: Vec<Vec<u8>> = stored.updates.into_iter().map(|(_, u)| u).collect();
        assert_eq!(updates, expected[i], "session {i}");
    }
    assert!(store.load(doomed).await.unwrap().updates.is_empty());

    // The group statement itself: several sessions, one transaction, `seq`s after the ones
    // already stored.
    let first: &[Vec<u8>] = &[update(0, 100), update(0, 101)];
    let second: &[Vec<u8>] = &[update(1, 100)];
    let lasts = db
        .append_group(&[(sessions[0], first), (sessions[1], second)])
        .await
        .unwrap();
    assert_eq!(
        lasts,
        vec![expected[0].len() as i64 + 2, expected[1].len() as i64 + 1]
    );
    expected[0].extend_from_slice(first);
    expected[1].extend_from_slice(second);

    // A group with a deleted session fails whole and stores nothing (on SQLite the script stops
    // with its transaction open and its connection is closed); the next group is stored.
    let kept: &[Vec<u8>] = &[update(2, 500)];
    let failed = db
        .append_group(&[(sessions[2], kept), (doomed, kept)])
        .await;
    assert!(failed.is_err(), "{failed:?}");
    let stored = store.load(sessions[2]).await.unwrap();
    assert_eq!(stored.updates.len(), expected[2].len());

    // More rows than one INSERT statement holds (200), beside a small batch: every row gets its
    // seq, in order.
    let big: Vec<Vec<u8>> = (0..450).map(|n| update(3, 1000 + n)).collect();
    let small: &[Vec<u8>] = &[update(4, 1000)];
    let lasts = db
        .append_group(&[(sessions[3], &big), (sessions[4], small)])
        .await
        .unwrap();
    expected[3].extend(big.iter().cloned());
    expected[4].extend_from_slice(small);
    assert_eq!(
        lasts,
        vec![expected[3].len() as i64, expected[4].len() as i64]
    );
    for i in [0, 1, 2, 3, 4] {
        let stored = store.load(sessions[i]).await.unwrap();
        let seqs: Vec<i64> = stored.updates.iter().map(|(seq, _)| *seq).collect();
        let want: Vec<i64> = (1..=expected[i].len() as i64).collect();
        assert_eq!(seqs, want, "session {i} after the direct groups");
        let updates: Vec<Vec<u8>> = stored.updates.into_iter().map(|(_, u)| u).collect();
        assert_eq!(updates, expected[i], "session {i} after the direct groups");
    }
    db.close().await;
}
