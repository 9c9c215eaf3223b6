//! Structural validation of Yjs v1 document updates before yrs decodes them. It exists because
//! yrs's decoder is not safe on hostile input:
//!
//! `Update::decode_v1` reserves memory for the element counts an update *declares* (clients,
//! blocks, `Any` arrays and maps) before reading them, recurses without a depth limit into nested
//! `Any` values (a deep enough nesting overflows the stack, which aborts the process), and calls
//! `ClientID::new`, which asserts a 53-bit bound in debug builds. This module walks the same
//! layout with a bounded [`Reader`] first: once it accepts an update, every declared count is
//! backed by bytes that are really present, nesting is shallow and all ids are in range, so the
//! yrs decoder cannot be driven into any of those paths.
//!
//! The same walk can also describe the update's *structure* ([`summarize_update`]): every block's
//! id, length and where its parent comes from. yrs recurses once per level of nested shared types
//! when it deletes, garbage-collects or serializes them, so [`super::nesting`] uses that summary
//! to bound how deep types may nest before an update is stored; [`repair_update_v1`] rewrites the
//! blocks it rejects as garbage-collected ranges.
//!
//! Deliberate differences from what yrs accepts: updates that create subdocuments are refused
//! (see [`SUBDOCUMENTS_UNSUPPORTED`]), and so are updates listing one client twice (Yjs and yrs
//! write each client once; yrs would append the second list to the first with its clocks out of
//! order, which its integration assumes cannot happen).
//!
//! The walk mirrors yrs 0.28's v1 decoder (`Update::decode`, `Update::decode_block`,
//! `ItemContent::decode`, `TypeRef::decode`, `Any::decode`, `IdSet::decode`), including its
//! quirks, so that both agree on where every field starts. That is why yrs is pinned to exactly
//! that version (`=0.28.1`) in every Cargo.toml that uses it: a new yrs must be re-checked against
//! this walk before it is let in.

use std::collections::HashSet;
use std::ops::Range;

use yrs::encoding::write::Write;
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

/// An item id as written in an update: `(client, clock)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemId {
    pub client: u64,
    pub clock: u32,
}

impl ItemId {
    pub fn new(client: u64, clock: u32) -> Self {
        Self { client, clock }
    }
}

/// Where an item's parent comes from (yrs `Update::decode_block` and `missing_dependency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentRef {
    /// A root type, by name (the name does not matter for nesting).
    Root,
    /// The shared type created by the item with this id.
    Item(ItemId),
    /// Not written: copied from the item holding `origin` (the left neighbour at insertion)
    /// or, failing that, from the item holding `right_origin`.
    Neighbours {
        origin: Option<ItemId>,
        right_origin: Option<ItemId>,
    },
}

/// What a block is, as far as structure goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// A garbage-collected range: no parent, no content.
    Collected,
    /// A hole in the update (clocks it does not carry).
    Skip,
    /// An item; `is_type` when its content creates a shared type (which can have children).
    Item { parent: ParentRef, is_type: bool },
}

/// One block of an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSummary {
    pub client: u64,
    pub clock: u32,
    /// Clock ticks it spans (always ≥ 1).
    pub len: u32,
    pub kind: BlockKind,
    /// Where the block's bytes are in the update.
    pub span: Range<usize>,
}

impl BlockSummary {
    /// The clock after the block's last tick.
    pub fn end(&self) -> u32 {
        self.clock.saturating_add(self.len)
    }
}

/// One client's run of consecutive blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionSummary {
    pub client: u64,
    /// Indices into [`UpdateSummary::blocks`], in clock order.
    pub blocks: Range<usize>,
}

/// A deleted range of one client's clocks, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletedRange {
    pub client: u64,
    pub start: u32,
    pub end: u32,
}

/// The structure of an update: its blocks (in encoding order) and its delete set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateSummary {
    pub sections: Vec<SectionSummary>,
    pub blocks: Vec<BlockSummary>,
    pub deletes: Vec<DeletedRange>,
}

/// Checks that `bytes` is a well-formed v1 update that yrs can decode safely.
pub fn check_update_v1(bytes: &[u8]) -> Result<(), FrameError> {
    walk(bytes, None)
}

/// Validates like [`check_update_v1`] and returns the update's structure.
pub fn summarize_update(bytes: &[u8]) -> Result<UpdateSummary, FrameError> {
    let mut summary = UpdateSummary::default();
    walk(bytes, Some(&mut summary))?;
    Ok(summary)
}

/// Validates, then decodes with yrs. The only way the server turns bytes into an [`Update`].
pub fn decode_update(bytes: &[u8]) -> Result<Update, FrameError> {
    check_update_v1(bytes)?;
    Update::decode_v1(bytes).map_err(|e| FrameError::InvalidUpdate(e.to_string()))
}

/// What [`repair_update_v1`] changes in an update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Blocks (indices into [`UpdateSummary::blocks`]) rewritten as garbage-collected ranges of
    /// the same length: they and everything whose parent depends on them are dropped, the way
    /// yrs drops the content of a deleted type.
    pub collect: Vec<usize>,
    /// Per section, how many of its blocks are kept (the rest are cut off); sections keeping no
    /// block are left out.
    pub keep: Vec<(usize, usize)>,
    /// Replacement delete set, when some of its ranges had to go.
    pub deletes: Option<Vec<DeletedRange>>,
}

impl Repairs {
    pub fn is_empty(&self) -> bool {
        self.collect.is_empty() && self.keep.is_empty() && self.deletes.is_none()
    }
}

/// Rewrites `bytes` (summarized as `summary`) with `repairs` applied. The result is again a
/// well-formed v1 update.
pub fn repair_update_v1(bytes: &[u8], summary: &UpdateSummary, repairs: &Repairs) -> Vec<u8> {
    let collect: HashSet<usize> = repairs.collect.iter().copied().collect();
    let kept = |section: usize| {
        let total = summary.sections.get(section).map_or(0, |s| s.blocks.len());
        repairs
            .keep
            .iter()
            .filter(|(s, _)| *s == section)
            .map(|(_, keep)| *keep)
            .min()
            .unwrap_or(total)
            .min(total)
    };
    let mut out = Vec::with_capacity(bytes.len());
    let sections: Vec<(usize, &SectionSummary)> = summary
        .sections
        .iter()
        .enumerate()
        .filter(|(index, _)| kept(*index) > 0)
        .collect();
    out.write_var::<u64>(sections.len() as u64);
    for (index, section) in sections {
        let keep = kept(index);
        let Some(first) = summary.blocks.get(section.blocks.start) else {
            continue;
        };
        out.write_var::<u64>(keep as u64);
        out.write_var::<u64>(section.client);
        out.write_var::<u64>(u64::from(first.clock));
        for block_index in section.blocks.clone().take(keep) {
            let Some(block) = summary.blocks.get(block_index) else {
                continue;
            };
            if collect.contains(&block_index) {
                out.push(BLOCK_GC);
                out.write_var::<u64>(u64::from(block.len));
            } else {
                out.extend_from_slice(bytes.get(block.span.clone()).unwrap_or_default());
            }
        }
    }
    let deletes = repairs.deletes.as_ref().unwrap_or(&summary.deletes);
    write_delete_set(&mut out, deletes);
    out
}

/// Encodes a delete set (ranges grouped by client, in the order given).
fn write_delete_set(out: &mut Vec<u8>, deletes: &[DeletedRange]) {
    let mut clients: Vec<u64> = Vec::new();
    for range in deletes {
        if !clients.contains(&range.client) {
            clients.push(range.client);
        }
    }
    out.write_var::<u64>(clients.len() as u64);
    for client in clients {
        let ranges: Vec<&DeletedRange> = deletes.iter().filter(|r| r.client == client).collect();
        out.write_var::<u64>(client);
        out.write_var::<u64>(ranges.len() as u64);
        for range in ranges {
            out.write_var::<u64>(u64::from(range.start));
            out.write_var::<u64>(u64::from(range.end - range.start));
        }
    }
}

/// The walk behind [`check_update_v1`] and [`summarize_update`].
fn walk(bytes: &[u8], mut summary: Option<&mut UpdateSummary>) -> Result<(), FrameError> {
    let mut r = Reader::new(bytes);
    let clients = r.var_u32()?;
    let mut seen = HashSet::new();
    for _ in 0..clients {
        let blocks = r.var_u32()?;
        let client = r.client_id()?;
        if !seen.insert(client) {
            return Err(FrameError::Malformed("update lists a client twice"));
        }
        let mut clock = u64::from(r.var_u32()?);
        let first = summary.as_ref().map_or(0, |s| s.blocks.len());
        for _ in 0..blocks {
            let start = r.position();
            let (len, kind) = block(&mut r)?;
            let end = clock + len;
            if end > u64::from(u32::MAX) {
                return Err(FrameError::Malformed("block clock overflows 32 bits"));
            }
            // yrs drops empty items while decoding (old Yjs versions wrote some).
            if let (Some(summary), true) = (summary.as_deref_mut(), len > 0) {
                summary.blocks.push(BlockSummary {
                    client,
                    // Both fit 32 bits: checked just above.
                    clock: clock as u32,
                    len: len as u32,
                    kind,
                    span: start..r.position(),
                });
            }
            clock = end;
        }
        if let Some(summary) = summary.as_deref_mut() {
            summary.sections.push(SectionSummary {
                client,
                blocks: first..summary.blocks.len(),
            });
        }
    }
    delete_set(&mut r, summary.map(|s| &mut s.deletes))?;
    r.finish()
}

/// One block; returns how many clock ticks it spans and what it is.
fn block(r: &mut Reader<'_>) -> Result<(u64, BlockKind), FrameError> {
    let info = r.u8()?;
    if info == BLOCK_GC || info == BLOCK_SKIP {
        return match r.var_u32()? {
            0 => Err(FrameError::Malformed("empty block")),
            len if info == BLOCK_GC => Ok((u64::from(len), BlockKind::Collected)),
            len => Ok((u64::from(len), BlockKind::Skip)),
        };
    }
    let copies_parent_info = info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) != 0;
    let origin = (info & HAS_ORIGIN != 0).then(|| id(r)).transpose()?;
    let right_origin = (info & HAS_RIGHT_ORIGIN != 0).then(|| id(r)).transpose()?;
    let parent = if copies_parent_info {
        ParentRef::Neighbours {
            origin,
            right_origin,
        }
    } else {
        // yrs reads the parent info as a 32-bit varint and treats 1 as "named root type".
        let parent = if r.var_u32()? == 1 {
            r.var_str()?;
            ParentRef::Root
        } else {
            ParentRef::Item(id(r)?)
        };
        if info & HAS_PARENT_SUB != 0 {
            r.var_str()?;
        }
        parent
    };
    let content_ref = info & 0b1111;
    let len = content(r, content_ref)?;
    let kind = BlockKind::Item {
        parent,
        is_type: content_ref == CONTENT_TYPE,
    };
    Ok((len, kind))
}

/// Item content; returns its length in clock ticks.
fn content(r: &mut Reader<'_>, content_ref: u8) -> Result<u64, FrameError> {
    let len = match content_ref {
        CONTENT_DELETED => u64::from(r.var_u32()?),
        CONTENT_JSON => {
            // yrs 0.28 reads `len + 1` strings and reserves `len as i32 as usize` slots first.
            let len = r.var_u32()?;
            if i32::try_from(len).is_err() {
                return Err(FrameError::Malformed("JSON content length out of range"));
            }
            for _ in 0..=len {
                r.var_str()?;
            }
            u64::from(len) + 1
        }
        CONTENT_BINARY => r.var_bytes().map(|_| 1)?,
        // yrs counts UTF-16 units; the UTF-8 byte length is an upper bound for the overflow check.
        CONTENT_STRING => r.var_str()?.len() as u64,
        CONTENT_EMBED => json(r).map(|_| 1)?,
        CONTENT_FORMAT => {
            r.var_str()?;
            json(r).map(|_| 1)?
        }
        CONTENT_TYPE => {
            // yrs reads the type reference as a single byte.
            match r.u8()? {
                TYPE_XML_ELEMENT => r.var_str().map(|_| 1)?,
                type_ref if TYPE_REFS_WITHOUT_DATA.contains(&type_ref) => 1,
                _ => return Err(FrameError::Malformed("unknown shared type reference")),
            }
        }
        CONTENT_ANY => {
            let len = r.var_u32()?;
            for _ in 0..len {
                any(r, 0)?;
            }
            u64::from(len)
        }
        // Subdocuments: yrs leaks the subdocument's store (a reference cycle, found by fuzzing
        // under LeakSanitizer) every time one is decoded and integrated, and the session
        // document has no use for them (nodes, edges, outputs and meta are plain maps).
        CONTENT_DOC => return Err(FrameError::Malformed(SUBDOCUMENTS_UNSUPPORTED)),
        _ => return Err(FrameError::Malformed("unknown item content type")),
    };
    Ok(len)
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
fn id(r: &mut Reader<'_>) -> Result<ItemId, FrameError> {
    let client = r.client_id()?;
    let clock = r.var_u32()?;
    Ok(ItemId { client, clock })
}

/// The delete set: per client, a list of `(clock, len)` ranges that must not wrap 32 bits.
fn delete_set(
    r: &mut Reader<'_>,
    mut out: Option<&mut Vec<DeletedRange>>,
) -> Result<(), FrameError> {
    let clients = r.var_u32()?;
    for _ in 0..clients {
        let client = r.client_id()?;
        let ranges = r.var_u32()?;
        for _ in 0..ranges {
            let clock = r.var_u32()?;
            let len = r.var_u32()?;
            let end = clock
                .checked_add(len)
                .ok_or(FrameError::Malformed("deleted range overflows 32 bits"))?;
            if let Some(out) = out.as_deref_mut() {
                if len > 0 {
                    out.push(DeletedRange {
                        client,
                        start: clock,
                        end,
                    });
                }
            }
        }
    }
    Ok(())
}
