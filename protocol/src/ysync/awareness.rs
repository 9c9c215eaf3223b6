//! Bounded decoding of y-protocols awareness updates (message type 1).
//!
//! Payload: `varUint(n)` then `n` × (`varUint(client)`, `varUint(clock)`, `varString(json)`), where
//! `json` is a client's state or the literal `null` for "this client went away".

use std::collections::HashMap;
use std::sync::Arc;

use yrs::sync::awareness::AwarenessUpdateEntry;
use yrs::sync::AwarenessUpdate;
use yrs::updates::encoder::Encode;
use yrs::ClientID;

use crate::lib0::Reader;
use crate::ysync::FrameError;

/// One decoded awareness entry, borrowing its JSON from the frame.
struct Entry<'a> {
    client: u64,
    clock: u32,
    json: &'a str,
}

/// Walks the payload, checking every state is well-formed JSON: stock clients `JSON.parse` what
/// the server relays, so one peer's garbage must not reach (and break) the others.
fn for_each_entry<'a>(bytes: &'a [u8], mut f: impl FnMut(Entry<'a>)) -> Result<(), FrameError> {
    let mut reader = Reader::new(bytes);
    let count = reader.var_u64()?;
    for _ in 0..count {
        let client = reader.client_id()?;
        let clock = reader.var_u32()?;
        let json = reader.var_str()?;
        // serde_json bounds its recursion depth, so hostile nesting is an error, not a crash.
        serde_json::from_str::<serde::de::IgnoredAny>(json)
            .map_err(|_| FrameError::Malformed("awareness state is not valid JSON"))?;
        f(Entry {
            client,
            clock,
            json,
        });
    }
    reader.finish()
}

/// Validates an awareness update without building it.
pub fn check_awareness(bytes: &[u8]) -> Result<(), FrameError> {
    for_each_entry(bytes, |_| {})
}

/// Decodes an awareness update into the yrs type, for `Awareness::apply_update`.
pub fn decode_awareness(bytes: &[u8]) -> Result<AwarenessUpdate, FrameError> {
    let mut clients = HashMap::new();
    for_each_entry(bytes, |entry| {
        clients.insert(
            ClientID::new(entry.client),
            AwarenessUpdateEntry {
                clock: entry.clock,
                json: Arc::from(entry.json),
            },
        );
    })?;
    Ok(AwarenessUpdate { clients })
}

/// Encodes an awareness update as the payload of a [`crate::ysync::Frame::Awareness`].
pub fn encode_awareness(update: &AwarenessUpdate) -> Vec<u8> {
    update.encode_v1()
}
