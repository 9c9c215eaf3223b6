//! Frames written by stock yjs / y-protocols (see `fixtures/gen_yjs_fixtures.mjs`) must decode,
//! and their updates must pass the validator and apply with yrs.

use atelier_protocol::ysync::{
    decode_awareness, decode_frame, decode_update, encode_frame, Frame, FrameError,
    SUBDOCUMENTS_UNSUPPORTED,
};
use yrs::{Doc, GetString, ReadTxn, StateVector, Transact};

/// `(description, frame)` pairs; `None` if a line is not valid hex.
fn fixtures() -> Option<Vec<(String, Vec<u8>)>> {
    let text = include_str!("fixtures/yjs_frames.txt");
    let mut what = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            what = comment.to_owned();
        } else if !line.is_empty() {
            let bytes = (0..line.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(line.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            out.push((what.clone(), bytes));
        }
    }
    Some(out)
}

#[test]
fn every_yjs_frame_decodes_and_applies() {
    let fixtures = fixtures().expect("fixture is not hex");
    assert!(fixtures.len() >= 15);
    let doc = Doc::new();
    for (what, bytes) in &fixtures {
        if what.starts_with("reject") {
            assert_eq!(
                decode_frame(bytes),
                Err(FrameError::Malformed(SUBDOCUMENTS_UNSUPPORTED)),
                "{what}"
            );
            continue;
        }
        let frame = decode_frame(bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(&encode_frame(&frame), bytes, "{what}: re-encoding differs");
        if let Some(update) = frame.document_update() {
            let update = decode_update(update).unwrap_or_else(|e| panic!("{what}: {e}"));
            doc.transact_mut()
                .apply_update(update)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        if let Frame::Awareness(payload) = &frame {
            decode_awareness(payload).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }
    // The text survived formatting, an embed and a deletion the same way yjs saw it.
    let prompt = doc.get_or_insert_text("prompt");
    assert!(prompt.get_string(&doc.transact()).starts_with('h'));
    assert!(!doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default())
        .is_empty());
}
