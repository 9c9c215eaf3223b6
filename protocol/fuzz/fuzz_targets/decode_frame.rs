//! Feeds arbitrary bytes to everything the server does to *decode* an untrusted live-session
//! frame: the frame itself, then the document update or awareness update inside it (bounded
//! validator + yrs decoder). Any panic, abort, stack overflow, leak or out-of-memory is a bug.
#![no_main]

use atelier_protocol::ysync::{decode_awareness, decode_frame, decode_update, encode_frame, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = decode_frame(data) else {
        return;
    };
    // Canonical re-encoding decodes to the same frame.
    assert_eq!(decode_frame(&encode_frame(&frame)).as_ref(), Ok(&frame));
    if let Some(update) = frame.document_update() {
        // decode_frame validated it, so yrs must decode it.
        assert!(decode_update(update).is_ok());
    }
    if let Frame::Awareness(payload) = &frame {
        assert!(decode_awareness(payload).is_ok());
    }
});
