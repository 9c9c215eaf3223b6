//! Feeds arbitrary bytes to the worker's decoder of the server's binary input frames (an
//! `assign`'s uploaded images and cached tensors). Any panic, abort or allocation beyond the
//! input's size is a bug; a frame that decodes re-encodes to the same bytes, and its input is a
//! view into the message.
#![no_main]

use atelier_protocol::worker_frame::{decode_input, encode_input, input_job_id, Bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(frame) = decode_input(&bytes) {
        assert_eq!(encode_input(&frame), data);
        assert_eq!(input_job_id(data), Some(frame.job_id));
    }
});
