//! Bounded decoding of a Yjs state vector (the payload of sync step 1).

use yrs::{ClientID, StateVector};

use crate::lib0::Reader;
use crate::ysync::FrameError;

/// Decodes a v1 state vector: `varUint(n)` then `n` × (`varUint(client)`, `varUint(clock)`).
///
/// Unlike `StateVector::decode_v1`, the map grows only with entries actually present, and client
/// ids are checked against the 53-bit bound before they reach `ClientID::new`.
pub fn decode_state_vector(bytes: &[u8]) -> Result<StateVector, FrameError> {
    let mut reader = Reader::new(bytes);
    let count = reader.var_u64()?;
    let mut entries = Vec::new();
    for _ in 0..count {
        let client = reader.client_id()?;
        let clock = reader.var_u32()?;
        entries.push((ClientID::new(client), clock));
    }
    reader.finish()?;
    Ok(entries.into_iter().collect())
}
