//! Hostile frames, written byte by byte where yrs would refuse (or be unable) to build them: a
//! chain of maps nested far past the server's depth bound, messages over the size limit, garbage,
//! awareness states nobody should send, state vectors naming clients the server has never seen.

use atelier_protocol::ysync::{encode_frame, encode_update_frame, Frame, MSG_AWARENESS};
use yrs::{ClientID, StateVector};

/// lib0 variable-length unsigned integer.
pub fn var(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// lib0 length-prefixed string.
pub fn string(out: &mut Vec<u8>, s: &str) {
    var(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A small, fast, seedable generator (xorshift64*): the soak must be cheap on the client side, and
/// a run reproducible from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self((0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xBF58_476D_1CE4_E5B9)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    /// A yrs client id no honest editor uses (they sit at `WRITER_CLIENT_BASE` + a small index),
    /// kept under 2^53 like the ids JavaScript clients make.
    pub fn client_id(&mut self) -> u64 {
        self.between(1 << 40, (1 << 52) - 1)
    }
}

/// A sync `update` frame holding `levels` `Y.Map`s, each at key `k` of the one before, the first
/// under the root map `nodes`: one transaction by `client` from clock 0. yrs recurses once per level
/// when it deletes, collects or serializes such a chain; the server must refuse it (4422) before it
/// is stored. About 8 bytes per level.
pub fn nested_maps_frame(client: u64, levels: u64) -> Vec<u8> {
    let mut update = Vec::with_capacity(16 + levels as usize * 8);
    var(&mut update, 1); // one client
    var(&mut update, levels); // structs
    var(&mut update, client);
    var(&mut update, 0); // first clock
    for clock in 0..levels {
        update.push(0b0010_0000 | 7); // has a parent key; content: a shared type
        if clock == 0 {
            var(&mut update, 1); // parent is a root type, by name
            string(&mut update, "nodes");
        } else {
            var(&mut update, 0); // parent is an item, by id
            var(&mut update, client);
            var(&mut update, clock - 1);
        }
        string(&mut update, "k");
        update.push(1); // type ref: Y.Map
    }
    var(&mut update, 0); // empty delete set
    encode_update_frame(&update)
}

/// A sync `update` frame whose payload alone is `payload_bytes` of zeros: the size check must close
/// the connection (1009) before anything looks inside.
pub fn oversize_update_frame(payload_bytes: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload_bytes + 16);
    var(&mut frame, 0); // sync
    var(&mut frame, 2); // update
    var(&mut frame, payload_bytes as u64);
    frame.resize(frame.len() + payload_bytes, 0);
    frame
}

/// An awareness frame setting one state: `{"user":{"name":"…"}}` of about `bytes` bytes for
/// `client` at `clock`.
pub fn awareness_frame(client: u64, clock: u64, bytes: usize) -> Vec<u8> {
    let json = format!(
        r##"{{"user":{{"name":"{}","color":"#ff0000"}}}}"##,
        "m".repeat(bytes.saturating_sub(40))
    );
    let mut payload = Vec::with_capacity(json.len() + 24);
    var(&mut payload, 1);
    var(&mut payload, client);
    var(&mut payload, clock);
    string(&mut payload, &json);
    let mut frame = Vec::with_capacity(payload.len() + 8);
    var(&mut frame, u64::from(MSG_AWARENESS));
    var(&mut frame, payload.len() as u64);
    frame.extend_from_slice(&payload);
    frame
}

/// A sync step 1 whose state vector names an edit the server does not have: every answer is the
/// whole document, the most expensive thing a viewer can ask for.
pub fn step1_unknown_frame(client: u64) -> Vec<u8> {
    let mut sv = StateVector::default();
    sv.set_max(ClientID::new(client), 1);
    encode_frame(&Frame::step1(sv))
}

/// Binary messages no client should send, each refused with a protocol close (1002 malformed,
/// 1003 unsupported), picked by `variant`.
pub fn garbage_frame(rng: &mut Rng, variant: u64) -> Vec<u8> {
    let mut frame = Vec::new();
    match variant % 5 {
        // Unknown message type.
        0 => var(&mut frame, 7 + rng.between(0, 80)),
        // Unknown sync message type.
        1 => {
            var(&mut frame, 0);
            var(&mut frame, 3 + rng.between(0, 100));
        }
        // A length prefix far past the end of the frame.
        2 => {
            var(&mut frame, 0);
            var(&mut frame, 2);
            var(&mut frame, 1 << 40);
        }
        // A varint that never ends.
        3 => frame.extend_from_slice(&[0xff; 12]),
        // An update payload of random bytes.
        _ => {
            let junk: Vec<u8> = (0..rng.between(8, 4096))
                .map(|_| rng.next_u64() as u8)
                .collect();
            return encode_update_frame(&junk);
        }
    }
    let tail = rng.between(0, 64);
    frame.extend((0..tail).map(|_| rng.next_u64() as u8));
    frame
}

#[cfg(test)]
mod tests {
    use atelier_protocol::ysync::{decode_frame, SyncMessage};

    use super::*;

    #[test]
    fn crafted_frames_are_what_they_claim() {
        // The nested chain decodes as a valid update (the depth bound, not the decoder, refuses it).
        let frame = nested_maps_frame(1 << 41, 100);
        assert!(matches!(
            decode_frame(&frame),
            Ok(Frame::Sync(SyncMessage::Update(_)))
        ));
        let frame = awareness_frame(1 << 41, 1, 4096);
        assert!(matches!(decode_frame(&frame), Ok(Frame::Awareness(_))));
        assert!((4096..4200).contains(&frame.len()), "{}", frame.len());
        assert!(matches!(
            decode_frame(&step1_unknown_frame(1 << 41)),
            Ok(Frame::Sync(SyncMessage::SyncStep1(_)))
        ));
        let mut rng = Rng::new(7);
        for variant in 0..50 {
            assert!(decode_frame(&garbage_frame(&mut rng, variant)).is_err());
        }
        assert_eq!(oversize_update_frame(2 << 20).len(), (2 << 20) + 6);
    }
}
