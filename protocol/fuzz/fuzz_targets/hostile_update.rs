//! Structured hostile updates, sent to a model of a session: deep nesting (chains of thousands of
//! maps), parents copied from neighbours, references to items nobody has, gaps in clocks, huge
//! declared counts, long delete sets, deeply nested values, and valid updates with garbage
//! spliced in. Random bytes almost never get past the validator; these do.
//!
//! Each update goes the way a session takes it: validator → nesting check against the document
//! and the updates still queued → (in batches, as group commit does) `integrate`. Then what yrs
//! does recursively is exercised: every root turned into JSON, every entry deleted (delete and
//! garbage collection recurse per level of nesting). A second document receives *every* update,
//! refused or not, through `integrate` alone — a document stored before the check existed.
//!
//! Findings: any abort, stack overflow, leak, OOM or hang, and these invariants: types nest at
//! most `MAX_TYPE_DEPTH` deep, no block is left waiting for a missing dependency, and an update
//! the check accepts is applied without repair when the updates before it were. Panics inside
//! yrs are tolerated (sessions contain them; see `apply_update`).
#![no_main]

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use arbitrary::Arbitrary;
use atelier_protocol::ysync::integrate::{integrate, Integrated};
use atelier_protocol::ysync::nesting::resolve;
use atelier_protocol::ysync::{summarize_update, NestingIndex, MAX_TYPE_DEPTH};
use libfuzzer_sys::fuzz_target;
use yrs::types::text::YChange;
use yrs::types::ToJson;
use yrs::{Array, Doc, GetString, Map, Out, ReadTxn, Text, Transact, XmlFragment, XmlOut};

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Ref {
    /// An item made by an earlier block (any update, refused or not).
    Made(u16),
    /// Whatever id: usually one nobody has.
    Raw { client: u8, clock: u16 },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Parent {
    Root(u8),
    Item(Ref),
    Neighbours {
        origin: Option<Ref>,
        right_origin: Option<Ref>,
    },
}

#[derive(Arbitrary, Debug, Clone)]
enum Content {
    Map,
    Array,
    Text,
    XmlElement,
    XmlFragment,
    XmlText,
    Value(u8),
    Str(u8),
    Deleted(u16),
    Json(u8),
    Embed(u8),
    Format(u8),
    /// An `Any` array nested this deep (the validator allows 64).
    DeepValue(u8),
}

#[derive(Arbitrary, Debug, Clone)]
struct Block {
    parent: Parent,
    key: Option<u8>,
    content: Content,
}

#[derive(Arbitrary, Debug, Clone)]
enum Piece {
    Blocks {
        client: u8,
        /// Start this far past the client's next clock (a gap).
        skip_ahead: Option<u8>,
        blocks: Vec<Block>,
    },
    /// `levels` maps at key `k`, each under the one before, the first under `under`.
    Nest {
        client: u8,
        under: Parent,
        levels: u16,
    },
    Collected {
        client: u8,
        len: u16,
    },
    Skip {
        client: u8,
        len: u16,
    },
}

#[derive(Arbitrary, Debug, Clone)]
enum Corruption {
    Truncate(u16),
    Garbage {
        at: u16,
        bytes: Vec<u8>,
    },
    /// Overwrite a byte with a varint that declares a huge count.
    HugeCount {
        at: u16,
        value: u32,
    },
}

#[derive(Arbitrary, Debug, Clone)]
struct HostileUpdate {
    pieces: Vec<Piece>,
    deletes: Vec<(u8, u32, u32)>,
    /// `count` one-clock ranges of one client, every other clock.
    many_deletes: Option<(u8, u16)>,
    corruption: Option<Corruption>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    updates: Vec<HostileUpdate>,
    /// How many accepted updates wait in the "commit queue" before they are applied.
    batch: u8,
}

const ROOTS: [&str; 3] = ["nodes", "edges", "meta"];

fn client_id(c: u8) -> u64 {
    1 + u64::from(c % 5)
}

fn var(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn string(out: &mut Vec<u8>, s: &str) {
    var(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Writes updates the way Yjs lays them out, remembering ids and clocks across updates.
#[derive(Default)]
struct Writer {
    next_clock: HashMap<u64, u32>,
    made: Vec<(u64, u32)>,
}

impl Writer {
    fn id(&self, r: Ref) -> (u64, u32) {
        match r {
            Ref::Made(i) if !self.made.is_empty() => self.made[usize::from(i) % self.made.len()],
            Ref::Made(_) => (1, 0),
            Ref::Raw { client, clock } => (client_id(client), u32::from(clock)),
        }
    }

    /// Encodes one item; returns its length in clocks.
    fn item(&self, out: &mut Vec<u8>, block: &Block) -> u32 {
        let (content_ref, len) = match &block.content {
            Content::Map
            | Content::Array
            | Content::Text
            | Content::XmlElement
            | Content::XmlFragment
            | Content::XmlText => (7, 1),
            Content::Value(_) | Content::DeepValue(_) => (8, 1),
            Content::Str(n) => (4, u32::from(*n % 16) + 1),
            Content::Deleted(n) => (1, u32::from(*n) + 1),
            Content::Json(n) => (2, u32::from(*n % 8) + 1),
            Content::Embed(_) => (5, 1),
            Content::Format(_) => (6, 1),
        };
        let mut info = content_ref;
        let parent = match block.parent {
            Parent::Neighbours {
                origin: None,
                right_origin: None,
            } => Parent::Root(0),
            other => other,
        };
        if let Parent::Neighbours {
            origin,
            right_origin,
        } = parent
        {
            info |= if origin.is_some() { 0x80 } else { 0 };
            info |= if right_origin.is_some() { 0x40 } else { 0 };
            out.push(info);
            for r in [origin, right_origin].into_iter().flatten() {
                let (client, clock) = self.id(r);
                var(out, client);
                var(out, u64::from(clock));
            }
        } else {
            info |= if block.key.is_some() { 0x20 } else { 0 };
            out.push(info);
            match parent {
                Parent::Root(name) => {
                    var(out, 1);
                    string(out, ROOTS[usize::from(name) % ROOTS.len()]);
                }
                Parent::Item(r) => {
                    let (client, clock) = self.id(r);
                    var(out, 0);
                    var(out, client);
                    var(out, u64::from(clock));
                }
                Parent::Neighbours { .. } => {}
            }
            if let Some(key) = block.key {
                string(out, &format!("k{}", key % 4));
            }
        }
        match &block.content {
            Content::Map => out.push(1),
            Content::Array => out.push(0),
            Content::Text => out.push(2),
            Content::XmlElement => {
                out.push(3);
                string(out, "p");
            }
            Content::XmlFragment => out.push(4),
            Content::XmlText => out.push(6),
            Content::Value(v) => {
                var(out, 1);
                match v % 4 {
                    0 => out.push(126),
                    1 => out.push(120),
                    2 => {
                        out.push(125);
                        out.push(v & 0x3f);
                    }
                    _ => {
                        out.push(119);
                        string(out, "v");
                    }
                }
            }
            Content::DeepValue(depth) => {
                var(out, 1);
                for _ in 0..*depth % 80 {
                    out.push(117);
                    var(out, 1);
                }
                out.push(126);
            }
            Content::Str(_) => string(out, &"s".repeat(len as usize)),
            Content::Deleted(_) => var(out, u64::from(len)),
            Content::Json(_) => {
                var(out, u64::from(len - 1));
                for _ in 0..len {
                    string(out, "1");
                }
            }
            Content::Embed(depth) => string(out, &nested_json(*depth)),
            Content::Format(depth) => {
                string(out, "bold");
                string(out, &nested_json(*depth));
            }
        }
        len
    }

    fn update(&mut self, update: &HostileUpdate) -> Vec<u8> {
        // Blocks per client, in order; one section each.
        let mut sections: Vec<(u64, u32, Vec<u8>, u64)> = Vec::new();
        for piece in &update.pieces {
            let client = match piece {
                Piece::Blocks { client, .. }
                | Piece::Nest { client, .. }
                | Piece::Collected { client, .. }
                | Piece::Skip { client, .. } => client_id(*client),
            };
            let index = match sections.iter().position(|s| s.0 == client) {
                Some(index) => index,
                None => {
                    let mut start = self.next_clock.get(&client).copied().unwrap_or(0);
                    if let Piece::Blocks {
                        skip_ahead: Some(gap),
                        ..
                    } = piece
                    {
                        start += u32::from(*gap);
                    }
                    sections.push((client, start, Vec::new(), 0));
                    sections.len() - 1
                }
            };
            let (_, start, bytes, count) = &mut sections[index];
            // Where this piece starts: the section's start, or after the pieces before it.
            let mut clock = self
                .next_clock
                .get(&client)
                .copied()
                .unwrap_or(0)
                .max(*start);
            match piece {
                Piece::Blocks { blocks, .. } => {
                    for block in blocks.iter().take(64) {
                        let len = self.item(bytes, block);
                        self.made.push((client, clock));
                        clock += len;
                        *count += 1;
                    }
                }
                Piece::Nest { under, levels, .. } => {
                    // Enough to break the bound many times over (the depth invariant catches
                    // that at 33 already), small enough to keep the fuzzer fast.
                    for level in 0..u32::from(*levels % 4096) {
                        if level == 0 {
                            let first = Block {
                                parent: *under,
                                key: Some(0),
                                content: Content::Map,
                            };
                            self.item(bytes, &first);
                        } else {
                            // A map at `k0` of the previous level, named by id.
                            bytes.push(0x20 | 7);
                            var(bytes, 0);
                            var(bytes, client);
                            var(bytes, u64::from(clock - 1));
                            string(bytes, "k0");
                            bytes.push(1);
                        }
                        self.made.push((client, clock));
                        clock += 1;
                        *count += 1;
                    }
                }
                Piece::Collected { len, .. } => {
                    bytes.push(0);
                    var(bytes, u64::from(*len) + 1);
                    clock += u32::from(*len) + 1;
                    *count += 1;
                }
                Piece::Skip { len, .. } => {
                    bytes.push(10);
                    var(bytes, u64::from(*len) + 1);
                    clock += u32::from(*len) + 1;
                    *count += 1;
                }
            }
            self.next_clock.insert(client, clock);
        }
        let mut out = Vec::new();
        var(&mut out, sections.len() as u64);
        for (client, start, bytes, count) in &sections {
            var(&mut out, *count);
            var(&mut out, *client);
            var(&mut out, u64::from(*start));
            out.extend_from_slice(bytes);
        }
        // Delete set, grouped by client.
        let mut deletes: Vec<(u64, Vec<(u32, u32)>)> = Vec::new();
        let mut add = |client: u64, clock: u32, len: u32| match deletes
            .iter_mut()
            .find(|(c, _)| *c == client)
        {
            Some((_, ranges)) => ranges.push((clock, len)),
            None => deletes.push((client, vec![(clock, len)])),
        };
        for (client, clock, len) in update.deletes.iter().take(64) {
            add(client_id(*client), *clock % 4096, *len % 4096);
        }
        if let Some((client, count)) = update.many_deletes {
            for i in 0..u32::from(count) {
                add(client_id(client), i * 2, 1);
            }
        }
        var(&mut out, deletes.len() as u64);
        for (client, ranges) in deletes {
            var(&mut out, client);
            var(&mut out, ranges.len() as u64);
            for (clock, len) in ranges {
                var(&mut out, u64::from(clock));
                var(&mut out, u64::from(len));
            }
        }
        match &update.corruption {
            None => {}
            Some(Corruption::Truncate(at)) => out.truncate(usize::from(*at)),
            Some(Corruption::Garbage { at, bytes }) => {
                let at = usize::from(*at).min(out.len());
                out.splice(at..at, bytes.iter().copied());
            }
            Some(Corruption::HugeCount { at, value }) => {
                let at = usize::from(*at).min(out.len());
                let mut huge = Vec::new();
                var(&mut huge, u64::from(*value) | 0x1000_0000);
                out.splice(at..(at + 1).min(out.len()), huge);
            }
        }
        out
    }
}

fn nested_json(depth: u8) -> String {
    let depth = usize::from(depth % 140);
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// How deep shared types nest in `doc`, walked without recursion.
fn type_depth(doc: &Doc) -> usize {
    let txn = doc.transact();
    let mut stack: Vec<(Out, usize)> = txn.root_refs().map(|(_, root)| (root, 1)).collect();
    let mut deepest = 0;
    while let Some((value, depth)) = stack.pop() {
        let children: Vec<Out> = match &value {
            Out::YMap(map) => map.values(&txn).flatten().collect(),
            Out::YArray(array) => array.iter(&txn).collect(),
            Out::YText(text) => text
                .diff(&txn, YChange::identity)
                .into_iter()
                .map(|d| d.insert)
                .collect(),
            Out::YXmlElement(xml) => xml.children(&txn).map(xml_out).collect(),
            Out::YXmlFragment(xml) => xml.children(&txn).map(xml_out).collect(),
            Out::YXmlText(text) => text
                .diff(&txn, YChange::identity)
                .into_iter()
                .map(|d| d.insert)
                .collect(),
            _ => continue,
        };
        deepest = deepest.max(depth);
        for child in children {
            stack.push((child, depth + 1));
        }
    }
    deepest
}

fn xml_out(node: XmlOut) -> Out {
    match node {
        XmlOut::Element(e) => Out::YXmlElement(e),
        XmlOut::Fragment(f) => Out::YXmlFragment(f),
        XmlOut::Text(t) => Out::YXmlText(t),
    }
}

/// What yrs does recursively: JSON of every root, then deleting everything in them.
fn exercise(doc: &Doc) {
    let roots: Vec<(String, Out)> = doc
        .transact()
        .root_refs()
        .map(|(name, root)| (name.to_owned(), root))
        .collect();
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let txn = doc.transact();
        for (_, root) in &roots {
            let _ = root.to_json(&txn);
            if let Out::YXmlFragment(xml) = root {
                let _ = xml.get_string(&txn);
            }
        }
    }));
    for (_, root) in roots {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let mut txn = doc.transact_mut();
            match root {
                Out::YMap(map) => map.clear(&mut txn),
                Out::YArray(array) => {
                    let len = array.len(&txn);
                    array.remove_range(&mut txn, 0, len);
                }
                Out::YText(text) => {
                    let len = text.len(&txn);
                    text.remove_range(&mut txn, 0, len);
                }
                Out::YXmlFragment(xml) => {
                    let len = xml.len(&txn);
                    xml.remove_range(&mut txn, 0, len);
                }
                _ => {}
            }
        }));
    }
}

/// A broken invariant: says which (panics are silenced for yrs's sake) and aborts.
fn finding(message: String) -> ! {
    eprintln!("FINDING: {message}");
    std::process::abort()
}

fn check(doc: &Doc, what: &str) {
    let depth = type_depth(doc);
    if depth > usize::from(MAX_TYPE_DEPTH) {
        finding(format!("{what}: types nest {depth} deep"));
    }
    if let Some(pending) = doc.transact().store().pending_update() {
        let missing = &pending.missing;
        finding(format!(
            "{what}: blocks wait for missing items ({missing:?})"
        ));
    }
}

static QUIET_PANICS: Once = Once::new();

fuzz_target!(|input: Input| {
    QUIET_PANICS.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let mut writer = Writer::default();
    let updates: Vec<Vec<u8>> = input
        .updates
        .iter()
        .take(16)
        .map(|u| writer.update(u))
        .collect();
    // Reproducing a finding: HOSTILE_UPDATE_DUMP=dir writes the updates there.
    if let Some(dir) = std::env::var_os("HOSTILE_UPDATE_DUMP") {
        for (i, bytes) in updates.iter().enumerate() {
            let _ = std::fs::write(
                std::path::Path::new(&dir).join(format!("{i:02}.bin")),
                bytes,
            );
        }
    }

    // A live session: checked on arrival, applied in batches.
    let live = Doc::new();
    let mut document = NestingIndex::new();
    let mut queue: Vec<Vec<u8>> = Vec::new();
    let mut queued = NestingIndex::new();
    let batch = usize::from(input.batch % 4) + 1;
    let mut sound = true;
    for bytes in &updates {
        let Ok(summary) = summarize_update(bytes) else {
            continue;
        };
        let Ok(resolution) = resolve(&summary, &[&document, &queued]) else {
            continue;
        };
        for placed in &resolution.placed {
            queued.record(placed, document.end(placed.client));
        }
        queue.push(bytes.clone());
        if queue.len() >= batch {
            for bytes in queue.drain(..) {
                match catch_unwind(AssertUnwindSafe(|| integrate(&live, &mut document, &bytes))) {
                    Ok(Ok(Integrated::AsIs)) => {}
                    // yrs refused or panicked part way: later updates may rightly need repair.
                    Ok(Ok(Integrated::Repaired(_))) if sound => {
                        finding("an accepted update needed repair".into())
                    }
                    Ok(Ok(Integrated::Repaired(_))) => {}
                    Ok(Err(_)) | Err(_) => sound = false,
                }
            }
            queued = NestingIndex::new();
            check(&live, "live");
        }
    }
    check(&live, "live");
    exercise(&live);

    // A document stored before the check: every update, through the repairing path only.
    let stored = Doc::new();
    let mut index = NestingIndex::new();
    for bytes in &updates {
        let _ = catch_unwind(AssertUnwindSafe(|| integrate(&stored, &mut index, bytes)));
    }
    check(&stored, "stored");
    exercise(&stored);
});
