//! Frame round trips, hostile inputs and a deterministic random-bytes "fuzz" pass.

use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, Map, ReadTxn, StateVector, Text, Transact, Update};

use super::*;
use crate::close_code;
use yrs::encoding::write::Write;

/// A real v1 update: a node in the `nodes` map, as a studio client would write it.
fn sample_update() -> Vec<u8> {
    let doc = Doc::with_client_id(42);
    let nodes = doc.get_or_insert_map("nodes");
    let title = doc.get_or_insert_text("title");
    let mut txn = doc.transact_mut();
    nodes.insert(&mut txn, "n1", "sampler");
    nodes.insert(&mut txn, "steps", 20);
    title.insert(&mut txn, 0, "héllo wörld ✓");
    drop(txn);
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    update
}

fn sample_awareness() -> Vec<u8> {
    let mut out = Vec::new();
    out.write_var::<u64>(2);
    out.write_var::<u64>(42);
    out.write_var::<u64>(3);
    out.write_string(r##"{"user":{"name":"ada","color":"#f00"}}"##);
    out.write_var::<u64>(7);
    out.write_var::<u64>(1);
    out.write_string("null");
    out
}

fn all_sample_frames() -> Vec<Frame> {
    let doc = Doc::with_client_id(9);
    doc.get_or_insert_map("nodes")
        .insert(&mut doc.transact_mut(), "a", 1);
    let sv = doc.transact().state_vector();
    vec![
        Frame::step1(sv),
        Frame::step1(StateVector::default()),
        Frame::Sync(SyncMessage::SyncStep2(sample_update())),
        Frame::update(sample_update()),
        Frame::Awareness(sample_awareness()),
        Frame::read_only(),
        Frame::QueryAwareness,
        Frame::Event(r#"{"type":"job.queued","job_id":"x","position":1}"#.into()),
        Frame::Preview {
            job_id: crate::JobId::new_random(),
            step: 7,
            mime: "image/webp".into(),
            image: vec![0, 1, 2, 255],
        },
    ]
}

#[test]
fn every_frame_round_trips() {
    for frame in all_sample_frames() {
        let bytes = encode_frame(&frame);
        assert_eq!(decode_frame(&bytes).unwrap(), frame, "{bytes:?}");
    }
}

#[test]
fn wire_layout_matches_y_protocols() {
    assert_eq!(
        encode_frame(&Frame::read_only()),
        [&[2u8, 0, 9][..], b"read-only"].concat()
    );
    assert_eq!(encode_frame(&Frame::QueryAwareness), [3]);
    // An empty state vector step 1 is what a fresh y-websocket client sends first.
    assert_eq!(
        encode_frame(&Frame::step1(StateVector::default())),
        [0, 0, 1, 0]
    );
    let update = sample_update();
    let mut expected = vec![0, 2];
    expected.write_buf(&update);
    assert_eq!(encode_update_frame(&update), expected);
    assert_eq!(encode_frame(&Frame::update(update)), expected);
}

#[test]
fn decoded_update_applies_like_the_original() {
    let update = sample_update();
    let decoded = decode_update(&update).unwrap();
    let doc = Doc::new();
    doc.transact_mut().apply_update(decoded).unwrap();
    let title = doc.get_or_insert_text("title");
    assert_eq!(title.get_string(&doc.transact()), "héllo wörld ✓");
}

#[test]
fn awareness_decodes_to_yrs_entries() {
    let update = decode_awareness(&sample_awareness()).unwrap();
    assert_eq!(update.clients.len(), 2);
    let ada = &update.clients[&yrs::ClientID::new(42)];
    assert_eq!(ada.clock, 3);
    assert!(ada.json.contains("ada"));
    // And back: yrs's own decoder reads what we encode.
    let again = yrs::sync::AwarenessUpdate::decode_v1(&encode_awareness(&update)).unwrap();
    assert_eq!(again, update);
}

/// (input, expected error) for inputs a hostile or buggy peer could send.
fn nasty_inputs() -> Vec<(Vec<u8>, FrameError)> {
    let huge = [0xff, 0xff, 0xff, 0xff, 0x0f]; // varint 2^32 - 1
    let mut cases = vec![
        (vec![], FrameError::Truncated),
        (vec![0x80], FrameError::Truncated),
        (vec![0x80; 11], FrameError::BadVarInt),
        (vec![4], FrameError::UnknownType(4)),
        (vec![99], FrameError::UnknownType(99)),
        (vec![0xff, 0x01], FrameError::UnknownType(255)),
        (vec![0, 3, 0], FrameError::UnknownSyncType(3)),
        (vec![2, 1], FrameError::UnknownAuthType(1)),
        (vec![0], FrameError::Truncated),
        (vec![3, 0], FrameError::TrailingBytes { len: 1 }),
        (vec![0, 0, 1, 0, 0], FrameError::TrailingBytes { len: 1 }),
        (
            [&[0u8, 2][..], &huge[..], b"x"].concat(),
            FrameError::LengthOverflow {
                declared: u64::from(u32::MAX),
                remaining: 1,
            },
        ),
        // A state vector declaring ~2^32 entries in five bytes (yrs would reserve them).
        (
            [&[0u8, 0, 5][..], &huge[..]].concat(),
            FrameError::Truncated,
        ),
        // An update declaring ~2^32 clients / an empty delete set.
        (
            [&[0u8, 2, 5][..], &huge[..]].concat(),
            FrameError::Truncated,
        ),
        // Client id 2^53 in a state vector (yrs asserts 53 bits in debug builds).
        (
            vec![
                0, 0, 10, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 0,
            ],
            FrameError::Malformed("client id exceeds 53 bits"),
        ),
        // Awareness: count 2^32 - 1 with no entries.
        ([&[1u8, 5][..], &huge[..]].concat(), FrameError::Truncated),
        // Awareness state that is not JSON.
        (
            vec![1, 6, 1, 1, 1, 3, b'{', b'x'],
            FrameError::LengthOverflow {
                declared: 3,
                remaining: 2,
            },
        ),
        (
            vec![1, 6, 1, 1, 1, 2, b'{', b'x'],
            FrameError::Malformed("awareness state is not valid JSON"),
        ),
        // Found by fuzzing: an embed whose JSON yrs cannot parse (the validator now parses it
        // exactly as yrs does, so "validated" keeps meaning "yrs decodes it").
        (
            vec![0, 2, 11, 1, 1, 6, 2, 5, 1, 1, 11, 1, 0, 0],
            FrameError::Malformed("embedded value is not valid JSON"),
        ),
        (vec![2, 0, 2, 0xc3, 0x28], FrameError::InvalidUtf8),
        (vec![100, 1, 0xff], FrameError::InvalidUtf8),
        (
            [&[101u8, 3][..], b"abc", &[0, 0, 0]].concat(),
            FrameError::Malformed("preview job id is not a UUID"),
        ),
    ];
    // A delete-set range whose end wraps 32 bits: 0 clients, 1 ds client, id 1, 1 range.
    let mut update = vec![0, 1, 1, 1];
    update.extend_from_slice(&huge);
    update.extend_from_slice(&[1]);
    let mut frame = vec![0, 2];
    frame.write_buf(&update);
    cases.push((
        frame,
        FrameError::Malformed("deleted range overflows 32 bits"),
    ));
    // An `Any` nested far deeper than the limit (yrs's recursive decoder would overflow the
    // stack on enough of these): one client, one block of content type 8 (Any) with one value.
    let mut update = vec![1, 1, 1, 0, 8, 1, b'm', 8, 1];
    update.extend(std::iter::repeat_n([117u8, 1], 100_000).flatten());
    update.push(126);
    update.push(0);
    let mut frame = vec![0, 2];
    frame.write_buf(&update);
    cases.push((frame, FrameError::Malformed("value nested too deeply")));
    cases
}

#[test]
fn nasty_inputs_are_errors_with_the_right_close_code() {
    for (input, expected) in nasty_inputs() {
        let err = decode_frame(&input).expect_err(&format!("{input:?} decoded"));
        assert_eq!(err, expected, "{input:?}");
        let code = err.close_code();
        match expected {
            FrameError::UnknownType(_)
            | FrameError::UnknownSyncType(_)
            | FrameError::UnknownAuthType(_) => assert_eq!(code, close_code::UNSUPPORTED_DATA),
            _ => assert_eq!(code, close_code::PROTOCOL_ERROR),
        }
    }
}

#[test]
fn every_truncation_of_a_valid_frame_is_an_error() {
    for frame in all_sample_frames() {
        let bytes = encode_frame(&frame);
        for len in 0..bytes.len() {
            assert!(
                decode_frame(&bytes[..len]).is_err(),
                "{frame:?} cut at {len}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_frame(&longer).is_err());
    }
}

/// xorshift64*: a tiny deterministic PRNG so the test is reproducible without extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Everything a server does with an untrusted frame, which must never panic.
fn exercise(bytes: &[u8]) {
    if let Ok(frame) = decode_frame(bytes) {
        // Whatever decodes re-encodes to something that decodes to the same frame (bytes may
        // differ: overlong varints and upper-case UUIDs are accepted but written canonically).
        assert_eq!(decode_frame(&encode_frame(&frame)).as_ref(), Ok(&frame));
        if let Some(update) = frame.document_update() {
            assert!(
                decode_update(update).is_ok(),
                "validated update did not decode"
            );
        }
        if let Frame::Awareness(payload) = &frame {
            assert!(decode_awareness(payload).is_ok());
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let len = rng.below(64);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Bias the first byte towards known types so the inner decoders get exercised.
        if let Some(first) = bytes.first_mut() {
            *first = [0, 1, 2, 3, 100, 101, *first][rng.below(7)];
        }
        exercise(&bytes);
    }
}

#[test]
fn mutated_valid_frames_never_panic() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let seeds: Vec<Vec<u8>> = all_sample_frames().iter().map(encode_frame).collect();
    for _ in 0..50_000 {
        let mut bytes = seeds[rng.below(seeds.len())].clone();
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len().max(1));
            match rng.below(4) {
                0 if !bytes.is_empty() => bytes[at] ^= 1 << rng.below(8),
                1 if !bytes.is_empty() => bytes[at] = rng.next() as u8,
                2 => bytes.insert(at.min(bytes.len()), rng.next() as u8),
                _ => bytes.truncate(at),
            }
        }
        exercise(&bytes);
    }
}

#[test]
fn validator_accepts_what_yrs_produces() {
    // Exercise every content kind yrs writes: maps, arrays, nested types, text with
    // formatting, binary, deletions (delete set), and GC'd blocks.
    let doc = Doc::with_client_id(1);
    let map = doc.get_or_insert_map("nodes");
    let text = doc.get_or_insert_text("notes");
    let array = doc.get_or_insert_array("log");
    {
        let mut txn = doc.transact_mut();
        let inner = map.insert(&mut txn, "n1", yrs::MapPrelim::default());
        inner.insert(
            &mut txn,
            "params",
            yrs::Any::from(vec![yrs::Any::from(1.5), yrs::Any::Null]),
        );
        inner.insert(&mut txn, "blob", yrs::Any::Buffer(vec![1u8, 2, 3].into()));
        yrs::Array::push_back(&array, &mut txn, "x");
        yrs::Array::push_back(&array, &mut txn, 12i64);
        text.insert(&mut txn, 0, "abcdef");
        text.format(
            &mut txn,
            1,
            2,
            std::collections::HashMap::from([("bold".into(), true.into())]),
        );
    }
    {
        let mut txn = doc.transact_mut();
        text.remove_range(&mut txn, 0, 3);
        map.remove(&mut txn, "n1");
    }
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    check_update_v1(&update).unwrap();
    let reference = Update::decode_v1(&update).unwrap();
    assert_eq!(
        decode_update(&update).unwrap().state_vector(),
        reference.state_vector()
    );
}

/// The bytes of every message kind, written out by hand from y-protocols' layout (and the
/// extensions' in `protocol/README.md`): encoding through yrs's `Message` and writer must give
/// exactly what stock clients and the studio decode.
#[test]
fn every_message_kind_has_its_golden_bytes() {
    let job_id: JobId = "00000000-0000-4000-8000-000000000001".parse().unwrap();
    let long_update = vec![7u8; 200];
    let mut state_vector = StateVector::default();
    state_vector.set_max(yrs::ClientID::new(9), 1);
    let cases: Vec<(Frame, Vec<u8>)> = vec![
        (Frame::step1(StateVector::default()), vec![0, 0, 1, 0]),
        (Frame::step1(state_vector), vec![0, 0, 3, 1, 9, 1]),
        (
            Frame::Sync(SyncMessage::SyncStep2(vec![1, 2, 3])),
            vec![0, 1, 3, 1, 2, 3],
        ),
        (Frame::update(vec![1, 2, 3]), vec![0, 2, 3, 1, 2, 3]),
        (
            Frame::update(long_update.clone()),
            [&[0u8, 2, 0xc8, 0x01][..], &long_update].concat(),
        ),
        (
            Frame::Awareness(vec![1, 42, 3, 4, b'n', b'u', b'l', b'l']),
            vec![1, 8, 1, 42, 3, 4, b'n', b'u', b'l', b'l'],
        ),
        (
            Frame::read_only(),
            [&[2u8, 0, 9][..], b"read-only"].concat(),
        ),
        (Frame::QueryAwareness, vec![3]),
        (
            Frame::Event(r#"{"type":"x"}"#.into()),
            [&[100u8, 12][..], br#"{"type":"x"}"#].concat(),
        ),
        (
            Frame::Preview {
                job_id,
                step: 300,
                mime: "image/png".into(),
                image: vec![0, 1, 2, 255],
            },
            [
                &[101u8, 36][..],
                b"00000000-0000-4000-8000-000000000001",
                &[0xac, 0x02, 9],
                b"image/png",
                &[4, 0, 1, 2, 255],
            ]
            .concat(),
        ),
    ];
    for (frame, golden) in cases {
        assert_eq!(encode_frame(&frame), golden, "{frame:?}");
        assert_eq!(frame.clone().into_encoded(), golden, "{frame:?}");
        if let Some(update) = frame
            .document_update()
            .filter(|_| matches!(frame, Frame::Sync(SyncMessage::Update(_))))
        {
            assert_eq!(encode_update_frame(update), golden, "{frame:?}");
        }
    }
}
