//! Structural validation of Yjs v1 document updates before yrs decodes them.
//!
//! `Update::decode_v1` reserves memory for the element counts an update *declares* (clients,
//! blocks, `Any` arrays and maps) before reading them, recurses without a depth limit into nested
//! `Any` values (a deep enough nesting overflows the stack, which aborts the process), and calls
//! `ClientID::new`, which asserts a 53-bit bound in debug builds. This module walks the same
//! layout with a bounded [`Reader`] first: once it accepts an update, every declared count is
//! backed by bytes that are really present, nesting is shallow and all ids are in range, so the
//! yrs decoder cannot be driven into any of those paths.
//!
//! One deliberate difference: updates that create subdocuments are refused (see
//! [`SUBDOCUMENTS_UNSUPPORTED`]).
//!
//! The walk mirrors yrs 0.28's v1 decoder (`Update::decode`, `Update::decode_block`,
//! `ItemContent::decode`, `TypeRef::decode`, `Any::decode`, `IdSet::decode`), including its
//! quirks, so that both agree on where every field starts.

use yrs::updates::decoder::Decode;
use yrs::Update;

use crate::lib0::Reader;
use crate::ysync::FrameError;

/// Why an update containing a subdocument is refused.
pub const SUBDOCUMENTS_UNSUPPORTED: &str = "subdocuments are not supported";

/// Deepest `Any` nesting accepted (Yjs documents hold JSON-like values; real ones are shallow).
pub const MAX_ANY_DEPTH: usize = 64;

// Block and content reference numbers of the v1 encoding (yrs `block.rs`).
const BLOCK_GC: u8 = 0;
const BLOCK_SKIP: u8 = 10;
const HAS_ORIGIN: u8 = 0b1000_0000;
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
const HAS_PARENT_SUB: u8 = 0b0010_0000;
const CONTENT_DELETED: u8 = 1;
const CONTENT_JSON: u8 = 2;
const CONTENT_BINARY: u8 = 3;
const CONTENT_STRING: u8 = 4;
const CONTENT_EMBED: u8 = 5;
const CONTENT_FORMAT: u8 = 6;
const CONTENT_TYPE: u8 = 7;
const CONTENT_ANY: u8 = 8;
const CONTENT_DOC: u8 = 9;
// Shared type references (yrs `types/mod.rs`); only XmlElement carries extra data.
const TYPE_XML_ELEMENT: u8 = 3;
const TYPE_REFS_WITHOUT_DATA: [u8; 8] = [0, 1, 2, 4, 5, 6, 9, 15];

/// Checks that `bytes` is a well-formed v1 update that yrs can decode safely.
pub fn check_update_v1(bytes: &[u8]) -> Result<(), FrameError> {
    let mut r = Reader::new(bytes);
    let clients = r.var_u32()?;
    for _ in 0..clients {
        let blocks = r.var_u32()?;
        r.client_id()?;
        let mut clock = u64::from(r.var_u32()?);
        for _ in 0..blocks {
            clock += block(&mut r)?;
            if clock > u64::from(u32::MAX) {
                return Err(FrameError::Malformed("block clock overflows 32 bits"));
            }
        }
    }
    delete_set(&mut r)?;
    r.finish()
}

/// Validates, then decodes with yrs. The only way the server turns bytes into an [`Update`].
pub fn decode_update(bytes: &[u8]) -> Result<Update, FrameError> {
    check_update_v1(bytes)?;
    Update::decode_v1(bytes).map_err(|e| FrameError::InvalidUpdate(e.to_string()))
}

/// One block; returns how many clock ticks it spans.
fn block(r: &mut Reader<'_>) -> Result<u64, FrameError> {
    let info = r.u8()?;
    if info == BLOCK_GC || info == BLOCK_SKIP {
        return match r.var_u32()? {
            0 => Err(FrameError::Malformed("empty block")),
            len => Ok(u64::from(len)),
        };
    }
    let copies_parent_info = info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) != 0;
    if info & HAS_ORIGIN != 0 {
        id(r)?;
    }
    if info & HAS_RIGHT_ORIGIN != 0 {
        id(r)?;
    }
    if !copies_parent_info {
        // yrs reads the parent info as a 32-bit varint and treats 1 as "named root type".
        if r.var_u32()? == 1 {
            r.var_str()?;
        } else {
            id(r)?;
        }
        if info & HAS_PARENT_SUB != 0 {
            r.var_str()?;
        }
    }
    content(r, info & 0b1111)
}

/// Item content; returns its length in clock ticks.
fn content(r: &mut Reader<'_>, content_ref: u8) -> Result<u64, FrameError> {
    match content_ref {
        CONTENT_DELETED => Ok(u64::from(r.var_u32()?)),
        CONTENT_JSON => {
            // yrs 0.28 reads `len + 1` strings and reserves `len as i32 as usize` slots first.
            let len = r.var_u32()?;
            if i32::try_from(len).is_err() {
                return Err(FrameError::Malformed("JSON content length out of range"));
            }
            for _ in 0..=len {
                r.var_str()?;
            }
            Ok(u64::from(len) + 1)
        }
        CONTENT_BINARY => r.var_bytes().map(|_| 1),
        // yrs counts UTF-16 units; the UTF-8 byte length is an upper bound for the overflow check.
        CONTENT_STRING => Ok(r.var_str()?.len() as u64),
        CONTENT_EMBED => json(r).map(|_| 1),
        CONTENT_FORMAT => {
            r.var_str()?;
            json(r).map(|_| 1)
        }
        CONTENT_TYPE => {
            // yrs reads the type reference as a single byte.
            match r.u8()? {
                TYPE_XML_ELEMENT => r.var_str().map(|_| 1),
                type_ref if TYPE_REFS_WITHOUT_DATA.contains(&type_ref) => Ok(1),
                _ => Err(FrameError::Malformed("unknown shared type reference")),
            }
        }
        CONTENT_ANY => {
            let len = r.var_u32()?;
            for _ in 0..len {
                any(r, 0)?;
            }
            Ok(u64::from(len))
        }
        // Subdocuments: yrs leaks the subdocument's store (a reference cycle, found by fuzzing
        // under LeakSanitizer) every time one is decoded and integrated, and the session
        // document has no use for them (nodes, edges, outputs and meta are plain maps).
        CONTENT_DOC => Err(FrameError::Malformed(SUBDOCUMENTS_UNSUPPORTED)),
        _ => Err(FrameError::Malformed("unknown item content type")),
    }
}

/// A lib0 `Any` value (tags 116–127), nested at most [`MAX_ANY_DEPTH`] deep.
fn any(r: &mut Reader<'_>, depth: usize) -> Result<(), FrameError> {
    if depth >= MAX_ANY_DEPTH {
        return Err(FrameError::Malformed("value nested too deeply"));
    }
    match r.u8()? {
        // undefined, null, false, true
        127 | 126 | 121 | 120 => Ok(()),
        125 => r.skip_var_i64(),
        124 => r.bytes(4).map(drop),
        123 | 122 => r.bytes(8).map(drop),
        119 => r.var_str().map(drop),
        118 => {
            let len = r.var_u64()?;
            for _ in 0..len {
                r.var_str()?;
                any(r, depth + 1)?;
            }
            Ok(())
        }
        117 => {
            let len = r.var_u64()?;
            for _ in 0..len {
                any(r, depth + 1)?;
            }
            Ok(())
        }
        116 => r.var_bytes().map(drop),
        _ => Err(FrameError::Malformed("unknown value type")),
    }
}

/// A JSON string that yrs will parse into an `Any` (embeds and format values). Parsed the same
/// way yrs does (serde_json bounds the nesting depth), so "valid" means "yrs decodes it".
fn json(r: &mut Reader<'_>) -> Result<(), FrameError> {
    yrs::Any::from_json(r.var_str()?)
        .map(drop)
        .map_err(|_| FrameError::Malformed("embedded value is not valid JSON"))
}

/// An item id: `varUint(client)` `varUint(clock)`.
fn id(r: &mut Reader<'_>) -> Result<(), FrameError> {
    r.client_id()?;
    r.var_u32()?;
    Ok(())
}

/// The delete set: per client, a list of `(clock, len)` ranges that must not wrap 32 bits.
fn delete_set(r: &mut Reader<'_>) -> Result<(), FrameError> {
    let clients = r.var_u32()?;
    for _ in 0..clients {
        r.client_id()?;
        let ranges = r.var_u32()?;
        for _ in 0..ranges {
            let clock = r.var_u32()?;
            let len = r.var_u32()?;
            if clock.checked_add(len).is_none() {
                return Err(FrameError::Malformed("deleted range overflows 32 bits"));
            }
        }
    }
    Ok(())
}
