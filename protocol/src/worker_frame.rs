//! Binary worker frames: images and tensors as WebSocket **binary** messages instead of base64
//! inside JSON (a quarter less on the wire, no base64 pass on either side), both ways:
//!
//! - worker → server: a preview or a node output ([`MediaFrame`]: [`encode`], [`decode`]);
//! - server → worker: one input of an `assign` — an uploaded image or a cached tensor
//!   ([`InputFrame`]: [`encode_input`], [`decode_input`]), sent right after the `assign` that
//!   names it.
//!
//! One family: a kind byte then the job id, kinds 1–2 one way and 3–4 the other; each decoder
//! refuses the other direction's kinds as unknown. Sans-IO; the layout is in
//! `protocol/README.md`.
//!
//! All integers are big-endian. Every length is checked against what is left before anything is
//! allocated, and against the limits below, so a hostile frame costs at most its own size.

use std::collections::BTreeMap;

pub use bytes::Bytes;

use crate::close_code;
use crate::ids::JobId;

/// Frame kind byte: a denoising step's preview image.
pub const KIND_PREVIEW: u8 = 1;
/// Frame kind byte: a node's output image and its tensors.
pub const KIND_NODE_OUTPUT: u8 = 2;

/// Frame kind byte (server → worker): an uploaded image an `assign` names.
pub const KIND_INPUT_MEDIA: u8 = 3;
/// Frame kind byte (server → worker): a cached tensor an `assign` names.
pub const KIND_INPUT_TENSOR: u8 = 4;

/// Largest image one frame carries.
pub const MAX_IMAGE_BYTES: usize = 32 * 1024 * 1024;
/// Largest tensor one frame carries.
pub const MAX_TENSOR_BYTES: usize = 32 * 1024 * 1024;
/// Most output ports one node output carries.
pub const MAX_TENSORS: usize = 16;
const MAX_NODE_ID: usize = 128;
const MAX_MIME: usize = 64;
const MAX_PORT: usize = 64;
const MAX_MEDIA_ID: usize = 128;

/// What a media frame is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaKind {
    Preview {
        step: u32,
    },
    NodeOutput {
        /// Every output port's tensor bytes (the server keeps them as the node's cache entry).
        tensors: BTreeMap<String, Vec<u8>>,
        /// Microseconds the node took on the worker, and how many of them ONNX Runtime ran.
        run_us: u64,
        inference_us: u64,
    },
}

/// A preview or a node output, with its image's raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFrame {
    pub job_id: JobId,
    pub node_id: String,
    pub mime: String,
    pub kind: MediaKind,
    pub image: Vec<u8>,
}

impl MediaFrame {
    /// Bytes this frame holds (what it costs in memory while it waits to be handled).
    pub fn payload_len(&self) -> usize {
        let tensors = match &self.kind {
            MediaKind::Preview { .. } => 0,
            MediaKind::NodeOutput { tensors, .. } => tensors.values().map(Vec::len).sum(),
        };
        self.image.len() + tensors
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaFrameError {
    #[error("unknown media frame kind {0}")]
    UnknownKind(u8),
    #[error("truncated media frame: {0}")]
    Truncated(&'static str),
    #[error("{what} of {len} bytes exceeds {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("malformed media frame: {0}")]
    Malformed(&'static str),
    #[error("{0} trailing bytes after the media frame")]
    Trailing(usize),
}

impl MediaFrameError {
    /// How the server closes a worker that sent it: 1003 for a kind it does not know, 1009 for
    /// something too large, 1002 for anything malformed.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::UnknownKind(_) => close_code::UNSUPPORTED_DATA,
            Self::TooLarge { .. } => close_code::MESSAGE_TOO_BIG,
            _ => close_code::PROTOCOL_ERROR,
        }
    }
}

/// A frame's bytes (for the worker to send).
pub fn encode(frame: &MediaFrame) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + frame.payload_len());
    let kind = match frame.kind {
        MediaKind::Preview { .. } => KIND_PREVIEW,
        MediaKind::NodeOutput { .. } => KIND_NODE_OUTPUT,
    };
    out.push(kind);
    out.extend_from_slice(frame.job_id.as_uuid().as_bytes());
    put_short(&mut out, &frame.node_id);
    put_short(&mut out, &frame.mime);
    match &frame.kind {
        MediaKind::Preview { step } => out.extend_from_slice(&step.to_be_bytes()),
        MediaKind::NodeOutput {
            tensors,
            run_us,
            inference_us,
        } => {
            out.extend_from_slice(&run_us.to_be_bytes());
            out.extend_from_slice(&inference_us.to_be_bytes());
            out.push(u8::try_from(tensors.len()).unwrap_or(u8::MAX));
            for (port, bytes) in tensors.iter().take(usize::from(u8::MAX)) {
                put_short(&mut out, port);
                put_long(&mut out, bytes);
            }
        }
    }
    put_long(&mut out, &frame.image);
    out
}

/// Strings are at most 255 bytes (the decoder allows far less): longer ones are cut, which the
/// decoder then refuses if they land mid-character.
fn put_short(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(usize::from(u8::MAX))];
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

fn put_long(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Parses one binary message. Everything must be consumed; nothing is allocated beyond what the
/// message itself holds.
pub fn decode(bytes: &[u8]) -> Result<MediaFrame, MediaFrameError> {
    let mut r = Reader(bytes);
    let kind = r.take(1, "kind")?[0];
    if kind != KIND_PREVIEW && kind != KIND_NODE_OUTPUT {
        return Err(MediaFrameError::UnknownKind(kind));
    }
    let job_id = r.job_id()?;
    let node_id = r.short("node id", MAX_NODE_ID)?;
    let mime = r.short("mime", MAX_MIME)?;
    let kind = if kind == KIND_PREVIEW {
        MediaKind::Preview {
            step: r.u32("step")?,
        }
    } else {
        let run_us = r.u64("run_us")?;
        let inference_us = r.u64("inference_us")?;
        let count = usize::from(r.take(1, "tensor count")?[0]);
        if count > MAX_TENSORS {
            return Err(MediaFrameError::TooLarge {
                what: "tensor count",
                len: count,
                max: MAX_TENSORS,
            });
        }
        let mut tensors = BTreeMap::new();
        for _ in 0..count {
            let port = r.short("port", MAX_PORT)?;
            let data = r.long("tensor", MAX_TENSOR_BYTES)?;
            // One encoding per frame (the encoder writes ports in order): a port out of order
            // or twice is refused rather than silently reordered or overwritten.
            if tensors
                .last_key_value()
                .is_some_and(|(last, _)| *last >= port)
            {
                return Err(MediaFrameError::Malformed(
                    "tensor ports must be in ascending order, each once",
                ));
            }
            tensors.insert(port, data.to_vec());
        }
        MediaKind::NodeOutput {
            tensors,
            run_us,
            inference_us,
        }
    };
    let image = r.long("image", MAX_IMAGE_BYTES)?.to_vec();
    if !r.0.is_empty() {
        return Err(MediaFrameError::Trailing(r.0.len()));
    }
    Ok(MediaFrame {
        job_id,
        node_id,
        mime,
        kind,
        image,
    })
}

/// Which input of its `assign` an input frame carries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InputKey {
    Media { media_id: String },
    Tensor { node_id: String, port: String },
}

/// One input of an assignment, with its bytes (a slice of the message it came in: not copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFrame {
    pub job_id: JobId,
    pub key: InputKey,
    pub data: Bytes,
}

/// An input frame's bytes (for the server to send).
pub fn encode_input(frame: &InputFrame) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 16 + 2 * 256 + 4 + frame.data.len());
    match &frame.key {
        InputKey::Media { media_id } => {
            out.push(KIND_INPUT_MEDIA);
            out.extend_from_slice(frame.job_id.as_uuid().as_bytes());
            put_short(&mut out, media_id);
        }
        InputKey::Tensor { node_id, port } => {
            out.push(KIND_INPUT_TENSOR);
            out.extend_from_slice(frame.job_id.as_uuid().as_bytes());
            put_short(&mut out, node_id);
            put_short(&mut out, port);
        }
    }
    put_long(&mut out, &frame.data);
    out
}

/// Parses one binary message from the server. Everything must be consumed; the input's bytes are
/// a slice of `bytes` (nothing is copied or allocated beyond the names).
pub fn decode_input(bytes: &Bytes) -> Result<InputFrame, MediaFrameError> {
    let mut r = Reader(bytes);
    let kind = r.take(1, "kind")?[0];
    if kind != KIND_INPUT_MEDIA && kind != KIND_INPUT_TENSOR {
        return Err(MediaFrameError::UnknownKind(kind));
    }
    let job_id = r.job_id()?;
    let (key, max) = if kind == KIND_INPUT_MEDIA {
        let media_id = r.short("media id", MAX_MEDIA_ID)?;
        (InputKey::Media { media_id }, MAX_IMAGE_BYTES)
    } else {
        let node_id = r.short("node id", MAX_NODE_ID)?;
        let port = r.short("port", MAX_PORT)?;
        (InputKey::Tensor { node_id, port }, MAX_TENSOR_BYTES)
    };
    let data = r.long("input", max)?;
    if !r.0.is_empty() {
        return Err(MediaFrameError::Trailing(r.0.len()));
    }
    Ok(InputFrame {
        job_id,
        key,
        data: bytes.slice_ref(data),
    })
}

/// The job id a server→worker frame names, when it is long enough to name one (to fail that job
/// when the rest of the frame does not decode).
pub fn input_job_id(bytes: &[u8]) -> Option<JobId> {
    let mut r = Reader(bytes);
    let kind = r.take(1, "kind").ok()?[0];
    if kind != KIND_INPUT_MEDIA && kind != KIND_INPUT_TENSOR {
        return None;
    }
    r.job_id().ok()
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], MediaFrameError> {
        if self.0.len() < n {
            return Err(MediaFrameError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn job_id(&mut self) -> Result<JobId, MediaFrameError> {
        let uuid: [u8; 16] = self
            .take(16, "job id")?
            .try_into()
            .map_err(|_| MediaFrameError::Truncated("job id"))?;
        Ok(JobId::from_uuid(uuid::Uuid::from_bytes(uuid)))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, MediaFrameError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, MediaFrameError> {
        let hi = u64::from(self.u32(what)?);
        let lo = u64::from(self.u32(what)?);
        Ok(hi << 32 | lo)
    }

    /// A one-byte length, then that many bytes of non-empty UTF-8 (at most `max`).
    fn short(&mut self, what: &'static str, max: usize) -> Result<String, MediaFrameError> {
        let len = usize::from(self.take(1, what)?[0]);
        if len == 0 {
            return Err(MediaFrameError::Malformed("an empty name"));
        }
        if len > max {
            return Err(MediaFrameError::TooLarge { what, len, max });
        }
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| MediaFrameError::Malformed("a name that is not UTF-8"))
    }

    /// A four-byte length, then that many bytes (at most `max`).
    fn long(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], MediaFrameError> {
        let len = usize::try_from(self.u32(what)?).unwrap_or(usize::MAX);
        if len > max {
            return Err(MediaFrameError::TooLarge { what, len, max });
        }
        self.take(len, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preview() -> MediaFrame {
        MediaFrame {
            job_id: JobId::new_random(),
            node_id: "sample".into(),
            mime: "image/png".into(),
            kind: MediaKind::Preview { step: 3 },
            image: vec![0x89, b'P', b'N', b'G', 1, 2, 3],
        }
    }

    fn output() -> MediaFrame {
        MediaFrame {
            kind: MediaKind::NodeOutput {
                tensors: [
                    ("latent".to_string(), vec![7u8; 40]),
                    ("image".into(), vec![]),
                ]
                .into_iter()
                .collect(),
                run_us: 1_234_567,
                inference_us: u64::MAX,
            },
            ..preview()
        }
    }

    #[test]
    fn previews_and_outputs_round_trip() {
        for frame in [preview(), output()] {
            assert_eq!(decode(&encode(&frame)).unwrap(), frame);
        }
    }

    #[test]
    fn the_header_is_laid_out_as_documented() {
        let frame = preview();
        let bytes = encode(&frame);
        assert_eq!(bytes[0], KIND_PREVIEW);
        assert_eq!(&bytes[1..17], frame.job_id.as_uuid().as_bytes());
        assert_eq!(bytes[17], 6);
        assert_eq!(&bytes[18..24], b"sample");
        assert_eq!(bytes[24], 9);
        assert_eq!(&bytes[34..38], &3u32.to_be_bytes());
        assert_eq!(&bytes[38..42], &7u32.to_be_bytes());
        assert_eq!(bytes.len(), 42 + 7);
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        for frame in [preview(), output()] {
            let bytes = encode(&frame);
            for cut in 0..bytes.len() {
                let err = decode(&bytes[..cut]).unwrap_err();
                assert_eq!(
                    err.close_code(),
                    close_code::PROTOCOL_ERROR,
                    "cut {cut}: {err}"
                );
            }
        }
    }

    #[test]
    fn tensor_ports_out_of_order_or_twice_are_refused() {
        // One encoding per frame (found by the fuzzer: a reordered frame decoded, then
        // re-encoded differently).
        let frame = output();
        let bytes = encode(&frame);
        let start = 1 + 16 + 1 + 6 + 1 + 9 + 8 + 8 + 1; // the tensors, after their count
        let image = start..start + 1 + 5 + 4;
        let latent = image.end..image.end + 1 + 6 + 4 + 40;
        assert_eq!(&bytes[image.start + 1..image.start + 6], b"image");
        let with = |first: &std::ops::Range<usize>, second: &std::ops::Range<usize>| {
            let mut out = bytes[..start].to_vec();
            out.extend_from_slice(&bytes[first.clone()]);
            out.extend_from_slice(&bytes[second.clone()]);
            out.extend_from_slice(&bytes[latent.end..]);
            out
        };
        assert_eq!(decode(&with(&image, &latent)).unwrap(), frame);
        for refused in [with(&latent, &image), with(&image, &image)] {
            assert!(
                matches!(decode(&refused), Err(MediaFrameError::Malformed(_))),
                "{:?}",
                decode(&refused)
            );
        }
    }

    #[test]
    fn unknown_kinds_are_unsupported_data() {
        let mut bytes = encode(&preview());
        for kind in [0u8, 3, 0x7b, 255] {
            bytes[0] = kind;
            let err = decode(&bytes).unwrap_err();
            assert_eq!(err, MediaFrameError::UnknownKind(kind));
            assert_eq!(err.close_code(), close_code::UNSUPPORTED_DATA);
        }
        // A JSON text sent as binary is an unknown kind too (`{` = 0x7b).
        assert!(matches!(
            decode(b"{\"type\":\"heartbeat\"}"),
            Err(MediaFrameError::UnknownKind(b'{'))
        ));
    }

    #[test]
    fn declared_lengths_beyond_the_limits_are_refused_before_reading() {
        // An image length of 4 GiB with five bytes behind it.
        let mut bytes = encode(&preview());
        let at = bytes.len() - 7 - 4;
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        let err = decode(&bytes).unwrap_err();
        assert!(matches!(
            err,
            MediaFrameError::TooLarge { what: "image", .. }
        ));
        assert_eq!(err.close_code(), close_code::MESSAGE_TOO_BIG);
        // 200 tensors declared.
        let mut bytes = encode(&output());
        let count_at = 1 + 16 + 1 + 6 + 1 + 9 + 16;
        assert_eq!(bytes[count_at], 2);
        bytes[count_at] = 200;
        assert!(matches!(
            decode(&bytes),
            Err(MediaFrameError::TooLarge {
                what: "tensor count",
                ..
            })
        ));
        // A node id longer than allowed.
        let mut long = preview();
        long.node_id = "n".repeat(200);
        assert!(matches!(
            decode(&encode(&long)),
            Err(MediaFrameError::TooLarge {
                what: "node id",
                ..
            })
        ));
    }

    #[test]
    fn trailing_bytes_empty_names_bad_utf8_and_twice_named_ports_are_malformed() {
        let mut bytes = encode(&preview());
        bytes.push(0);
        assert_eq!(decode(&bytes), Err(MediaFrameError::Trailing(1)));
        let mut bytes = encode(&preview());
        bytes[18] = 0xff;
        assert!(matches!(decode(&bytes), Err(MediaFrameError::Malformed(_))));
        let mut empty = preview();
        empty.node_id.clear();
        assert!(matches!(
            decode(&encode(&empty)),
            Err(MediaFrameError::Malformed(_))
        ));
        let mut bytes = encode(&output());
        // Rename the second port ("latent") to the first's name ("image", sorted first).
        let second = bytes.windows(6).position(|w| w == b"latent").unwrap();
        bytes[second - 1] = 5;
        bytes.splice(second..second + 6, *b"image");
        assert!(matches!(decode(&bytes), Err(MediaFrameError::Malformed(_))));
    }

    fn media_input() -> InputFrame {
        InputFrame {
            job_id: JobId::new_random(),
            key: InputKey::Media {
                media_id: uuid::Uuid::new_v4().to_string(),
            },
            data: Bytes::from(vec![0x89, b'P', b'N', b'G', 9, 9]),
        }
    }

    fn tensor_input() -> InputFrame {
        InputFrame {
            key: InputKey::Tensor {
                node_id: "refine".into(),
                port: "heightmap".into(),
            },
            data: Bytes::from(vec![3u8; 300]),
            ..media_input()
        }
    }

    #[test]
    fn input_frames_round_trip_without_copying_their_bytes() {
        for frame in [media_input(), tensor_input()] {
            let bytes = Bytes::from(encode_input(&frame));
            let decoded = decode_input(&bytes).unwrap();
            assert_eq!(decoded, frame);
            // The input is a view into the message, not a copy.
            let at = bytes.len() - frame.data.len();
            assert_eq!(decoded.data.as_ptr(), bytes[at..].as_ptr());
            assert_eq!(input_job_id(&bytes), Some(frame.job_id));
        }
        // An empty input is allowed (an empty tensor port).
        let mut empty = tensor_input();
        empty.data = Bytes::new();
        assert_eq!(
            decode_input(&Bytes::from(encode_input(&empty))).unwrap(),
            empty
        );
    }

    #[test]
    fn input_frames_are_laid_out_as_documented() {
        let frame = tensor_input();
        let bytes = encode_input(&frame);
        assert_eq!(bytes[0], KIND_INPUT_TENSOR);
        assert_eq!(&bytes[1..17], frame.job_id.as_uuid().as_bytes());
        assert_eq!(bytes[17], 6);
        assert_eq!(&bytes[18..24], b"refine");
        assert_eq!(bytes[24], 9);
        assert_eq!(&bytes[25..34], b"heightmap");
        assert_eq!(&bytes[34..38], &300u32.to_be_bytes());
        assert_eq!(bytes.len(), 38 + 300);
        let media = encode_input(&media_input());
        assert_eq!(media[0], KIND_INPUT_MEDIA);
        assert_eq!(media[17], 36);
    }

    #[test]
    fn every_truncated_input_frame_is_an_error_never_a_panic() {
        for frame in [media_input(), tensor_input()] {
            let bytes = Bytes::from(encode_input(&frame));
            for cut in 0..bytes.len() {
                let err = decode_input(&bytes.slice(..cut)).unwrap_err();
                assert_eq!(
                    err.close_code(),
                    close_code::PROTOCOL_ERROR,
                    "cut {cut}: {err}"
                );
            }
        }
    }

    #[test]
    fn each_direction_refuses_the_other_directions_kinds() {
        let input = Bytes::from(encode_input(&media_input()));
        assert_eq!(
            decode(&input),
            Err(MediaFrameError::UnknownKind(KIND_INPUT_MEDIA))
        );
        let preview = Bytes::from(encode(&preview()));
        assert_eq!(
            decode_input(&preview),
            Err(MediaFrameError::UnknownKind(KIND_PREVIEW))
        );
        assert_eq!(input_job_id(&preview), None);
        for kind in [0u8, 5, b'{', 255] {
            let mut bytes = encode_input(&tensor_input());
            bytes[0] = kind;
            let err = decode_input(&Bytes::from(bytes)).unwrap_err();
            assert_eq!(err, MediaFrameError::UnknownKind(kind));
            assert_eq!(err.close_code(), close_code::UNSUPPORTED_DATA);
        }
    }

    #[test]
    fn oversized_inputs_and_names_are_refused_before_reading() {
        // A media input declaring 4 GiB, and one just over the image limit.
        for declared in [u32::MAX, MAX_IMAGE_BYTES as u32 + 1] {
            let mut bytes = encode_input(&media_input());
            let at = bytes.len() - 6 - 4;
            bytes[at..at + 4].copy_from_slice(&declared.to_be_bytes());
            let err = decode_input(&Bytes::from(bytes)).unwrap_err();
            assert!(matches!(
                err,
                MediaFrameError::TooLarge { what: "input", .. }
            ));
            assert_eq!(err.close_code(), close_code::MESSAGE_TOO_BIG);
        }
        let mut long = tensor_input();
        long.key = InputKey::Tensor {
            node_id: "n".into(),
            port: "p".repeat(100),
        };
        assert!(matches!(
            decode_input(&Bytes::from(encode_input(&long))),
            Err(MediaFrameError::TooLarge { what: "port", .. })
        ));
        // Trailing bytes, an empty name.
        let mut bytes = encode_input(&tensor_input());
        bytes.push(1);
        assert_eq!(
            decode_input(&Bytes::from(bytes)),
            Err(MediaFrameError::Trailing(1))
        );
        let mut empty = media_input();
        empty.key = InputKey::Media {
            media_id: String::new(),
        };
        assert!(matches!(
            decode_input(&Bytes::from(encode_input(&empty))),
            Err(MediaFrameError::Malformed(_))
        ));
    }

    #[test]
    fn arbitrary_input_frames_never_panic() {
        let base = encode_input(&tensor_input());
        let mut seed = 0x2545_f491_u32;
        for _ in 0..2000 {
            let mut bytes = base.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let at = seed as usize % bytes.len();
                bytes[at] = (seed >> 8) as u8;
            }
            let _ = decode_input(&Bytes::from(bytes));
        }
    }

    /// Bytes on the wire for an `assign` with a 1 MiB input: base64 inside the JSON (before)
    /// against the JSON naming it plus its binary frame (after), WebSocket headers included.
    #[test]
    fn a_one_mib_input_costs_a_quarter_less_on_the_wire() {
        use crate::worker::{Assignment, JobStep, MediaBytes};
        let ws_header = |len: usize| {
            if len < 126 {
                2
            } else if len < 65_536 {
                4
            } else {
                10
            }
        };
        let image = Bytes::from(vec![7u8; 1024 * 1024]);
        let assignment = Assignment {
            job_id: JobId::new_random(),
            session_id: crate::ids::SessionId::new_random(),
            steps: vec![JobStep {
                node_id: "in".into(),
                model: "image-input".into(),
                params: serde_json::Map::new(),
                seed: 1,
                inputs: BTreeMap::new(),
                cache_key: String::new(),
                cached: false,
            }],
            provided: Vec::new(),
            media: vec![MediaBytes {
                media_id: uuid::Uuid::new_v4().to_string(),
                data: image.clone(),
            }],
        };
        let mut before = serde_json::to_value(assignment.message()).unwrap();
        before.as_object_mut().unwrap().remove("inputs");
        before["media"] = serde_json::json!([{
            "media_id": assignment.media[0].media_id,
            "data": base64_len_string(image.len()),
        }]);
        let before = serde_json::to_vec(&before).unwrap().len();
        let before = before + ws_header(before);
        let text = serde_json::to_vec(&assignment.message()).unwrap().len();
        let frame = encode_input(&InputFrame {
            job_id: assignment.job_id,
            key: InputKey::Media {
                media_id: assignment.media[0].media_id.clone(),
            },
            data: image,
        })
        .len();
        let after = text + ws_header(text) + frame + ws_header(frame);
        println!("assign with a 1 MiB input: {before} bytes as base64 JSON, {after} bytes as JSON + binary frame");
        assert!(after * 4 < before * 3 + 4096, "{after} vs {before}");
        assert!(after < 1024 * 1024 + 1024, "{after}");
    }

    /// A base64 text as long as `n` bytes encode to (its content does not change its size).
    fn base64_len_string(n: usize) -> String {
        "A".repeat(n.div_ceil(3) * 4)
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix of mutated valid frames.
        let base = encode(&output());
        let mut seed = 0x9e37_79b9_u32;
        for _ in 0..2000 {
            let mut bytes = base.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let at = seed as usize % bytes.len();
                bytes[at] = (seed >> 8) as u8;
            }
            let _ = decode(&bytes);
        }
    }
}
