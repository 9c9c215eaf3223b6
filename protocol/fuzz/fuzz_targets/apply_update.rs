//! Applies validated updates to a document that already holds real yjs content, the way a
//! session applies an editor's update: the nesting check, then `integrate`. yrs's integration
//! code can panic on hostile updates (see ../README.md); the session catches such panics and
//! restarts from storage, so here a *panic* is tolerated and only what `catch_unwind` cannot
//! contain is a finding: aborts (a panic while unwinding), stack overflows, out-of-memory, leaks
//! and hangs.
#![no_main]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use atelier_protocol::ysync::integrate::integrate;
use atelier_protocol::ysync::nesting::resolve;
use atelier_protocol::ysync::{decode_frame, summarize_update, NestingIndex};
use libfuzzer_sys::fuzz_target;
use yrs::types::ToJson;
use yrs::{Doc, ReadTxn, StateVector, Transact};

/// The full document state written by stock yjs (`tests/fixtures/yjs_frames.txt`).
fn base_state() -> Vec<u8> {
    let fixtures = include_str!("../../tests/fixtures/yjs_frames.txt");
    let mut lines = fixtures.lines();
    while let Some(line) = lines.next() {
        if line == "# full state as sync step 2" {
            let hex = lines.next().unwrap_or_default();
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect();
            let frame = decode_frame(&bytes).expect("fixture decodes");
            return frame
                .document_update()
                .expect("fixture is a step 2")
                .to_vec();
        }
    }
    panic!("no full-state fixture")
}

static QUIET_PANICS: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys aborts on any panic; the session survives panics, so let them unwind.
    QUIET_PANICS.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let Ok(frame) = decode_frame(data) else {
        return;
    };
    let Some(update) = frame.document_update() else {
        return;
    };
    let Ok(summary) = summarize_update(update) else {
        return;
    };
    let doc = Doc::new();
    let mut nesting = NestingIndex::new();
    integrate(&doc, &mut nesting, &base_state()).expect("base state applies");
    // What a session stores and applies: only what the nesting check accepts.
    if resolve(&summary, &[&nesting]).is_err() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let _ = integrate(&doc, &mut nesting, update);
        // What the session does next: answer a step 1, compact; jobs read the graph as JSON.
        let txn = doc.transact();
        let _ = txn.encode_state_as_update_v1(&StateVector::default());
        for (_, root) in txn.root_refs() {
            let _ = root.to_json(&txn);
        }
    }));
});
