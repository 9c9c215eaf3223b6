//! Feeds arbitrary bytes to the decoder of a worker's binary media frames (previews, node
//! outputs). Any panic, abort or allocation beyond the input's size is a bug; a frame that
//! decodes re-encodes to the same bytes.
#![no_main]

use atelier_protocol::worker_frame::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode(data) {
        assert_eq!(encode(&frame), data);
    }
});
