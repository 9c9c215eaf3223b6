//! Feeds arbitrary bytes to everything the server does with an untrusted live-session frame:
//! decode the frame, then decode (and apply) any document update or awareness update inside it.
//! Any panic, abort, stack overflow or out-of-memory is a finding.
#![no_main]

use atelier_protocol::ysync::{decode_awareness, decode_frame, decode_update, encode_frame, Frame};
use libfuzzer_sys::fuzz_target;
use yrs::{Doc, Transact};

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = decode_frame(data) else {
        return;
    };
    // Canonical re-encoding decodes to the same frame.
    assert_eq!(decode_frame(&encode_frame(&frame)).as_ref(), Ok(&frame));
    if let Some(update) = frame.document_update() {
        if let Ok(update) = decode_update(update) {
            // The session applies validated updates to its document.
            let doc = Doc::new();
            let _ = doc.transact_mut().apply_update(update);
        }
    }
    if let Frame::Awareness(payload) = &frame {
        assert!(decode_awareness(payload).is_ok());
    }
});
