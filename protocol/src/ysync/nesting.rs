//! How deep shared types nest, decided before an update is stored.
//!
//! yrs recurses once per level of nested shared types when it deletes a type
//! (`TransactionMut::delete`), garbage-collects one (`Item::gc` ↔ `ItemContent::gc`) or turns one
//! into JSON (`to_json`). An update of a few hundred kilobytes can nest tens of thousands of
//! `Y.Map`s; overwriting that key later overflows the stack, which aborts the whole process —
//! and, the update being stored, every later load of the document aborts it again. So a session
//! refuses any update that would make types nest deeper than [`MAX_TYPE_DEPTH`], before storing
//! it.
//!
//! **Depth.** A root type (`nodes`) has depth 1, a type inside it depth 2, and so on: the session
//! document's `nodes → node → params` is 3 deep. An item's parent is, as yrs decides it
//! (`Update::decode_block`, `Update::missing_dependency`): a root named in the update, the type
//! created by an item whose id the update names, or — when the item has neighbours — *the parent
//! of the item holding its left origin* (else its right origin). So a depth depends on items in
//! the same update, in updates accepted but not applied yet, and in the document.
//!
//! **The index.** yrs does not let anyone outside the crate walk from an item to its parent
//! (`Item::parent` and `Branch::item` are private), so the session keeps its own
//! [`NestingIndex`]: for every run of item ids, the depth of the type that holds them (or that
//! they were garbage-collected). Consecutive ids at the same depth share one run, so a document
//! typed into one place costs one run, and a run costs 12 bytes.
//!
//! **Resolving an update** ([`resolve`]) finds the placement of each of its new blocks from the
//! index layers it is given (the document, then the updates still queued) and from the update
//! itself, in dependency order (an iterative walk: hostile updates can chain references as deep
//! as they like), with at most two look-ups per block. It refuses, rather than guesses, when:
//!
//! - a type would be deeper than [`MAX_TYPE_DEPTH`] (or an item claims a deeper parent);
//! - a block depends on an item nobody knows (yrs would park it until that item arrives, and
//!   its depth could then be anything), on itself through a cycle (counting that yrs integrates
//!   each client's blocks in clock order), or starts after a gap in its client's clocks;
//! - the delete set names items nobody knows (yrs would keep those ranges and re-apply them on
//!   every later update).
//!
//! Stock Yjs clients never send such updates: a client only refers to items it got from the
//! server (which stores everything before anyone sees it) or made itself.
//!
//! **Repairing** ([`resolve_repairing`]) is for documents already stored: instead of refusing,
//! it rewrites what the strict mode refuses as garbage-collected ranges (yrs then drops them and
//! whatever would have hung below them, as it does for deleted types), cuts sections at a gap
//! and clips the delete set. The session applies every stored update this way, so a document
//! written before this check existed loads safely and the next compaction stores it clean.
//!
//! **Other recursion in yrs**, and why it is bounded: `Any` values (validator: 64 levels),
//! embed and format JSON (serde_json's 128-level limit), JSON content (kept as strings), XML
//! (XML types are types: same depth bound), delete sets (applied iteratively; the recursion
//! inside is the type depth), dropping a document (flat: branches hold raw pointers).

use std::collections::HashMap;

use thiserror::Error;

use crate::close_code;
use crate::ysync::update::{BlockKind, DeletedRange, ItemId, ParentRef, Repairs, UpdateSummary};

/// Deepest nesting of shared types accepted (a root type counts as 1). The studio document
/// needs 3; a generous margin for other Yjs clients, far below where yrs's recursion hurts, and
/// with `Any` values (≤ 64 levels) still under serde_json's 128-level limit when the document is
/// turned into JSON.
pub const MAX_TYPE_DEPTH: u8 = 32;

/// Where a run of items sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Garbage-collected (or about to be): no parent, can hold nothing.
    Collected,
    /// Held by a shared type of this depth (1 = a root type).
    Under(u8),
}

/// New items of an update and where they sit, `[start, end)` of one client's clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub client: u64,
    pub start: u32,
    pub end: u32,
    pub placement: Placement,
}

/// Why an update is refused. All of them close the connection with
/// [`close_code::UPDATE_REFUSED`]: a stock client would send the same update again after
/// reconnecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NestingError {
    #[error("shared types nested deeper than {MAX_TYPE_DEPTH} levels")]
    TooDeep,
    #[error("update depends on items this session does not have")]
    MissingDependency,
    #[error("update deletes items this session does not have")]
    UnknownDeletion,
}

impl NestingError {
    pub fn close_code(&self) -> u16 {
        close_code::UPDATE_REFUSED
    }
}

/// For each client, runs of item ids and where they sit; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct NestingIndex {
    clients: HashMap<u64, Runs>,
}

#[derive(Debug, Clone, Default)]
struct Runs {
    /// Every clock below this is known (possibly as a hole without a run).
    end: u32,
    /// Sorted, non-overlapping.
    runs: Vec<Run>,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    start: u32,
    end: u32,
    placement: Placement,
}

impl NestingIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// The clock after the last known item of `client` (0 if none).
    pub fn end(&self, client: u64) -> u32 {
        self.clients.get(&client).map_or(0, |runs| runs.end)
    }

    /// Where the item `id` sits; `None` when it is not known (beyond [`Self::end`], or a hole).
    pub fn placement(&self, id: ItemId) -> Option<Placement> {
        let runs = self.clients.get(&id.client)?;
        let after = runs.runs.partition_point(|run| run.start <= id.clock);
        let run = runs.runs.get(after.checked_sub(1)?)?;
        (id.clock < run.end).then_some(run.placement)
    }

    /// Records the part of `placed` at or after both [`Self::end`] and `floor` (what is already
    /// known stays as it is: yrs ignores items it already has).
    pub fn record(&mut self, placed: &Placed, floor: u32) {
        let runs = self.clients.entry(placed.client).or_default();
        let start = placed.start.max(runs.end).max(floor);
        if start >= placed.end {
            return;
        }
        match runs.runs.last_mut() {
            Some(last) if last.end == start && last.placement == placed.placement => {
                last.end = placed.end;
            }
            _ => runs.runs.push(Run {
                start,
                end: placed.end,
                placement: placed.placement,
            }),
        }
        runs.end = placed.end;
    }

    /// How many runs the index holds (its memory is about 12 bytes each).
    pub fn runs(&self) -> usize {
        self.clients.values().map(|runs| runs.runs.len()).sum()
    }

    pub fn clear(&mut self) {
        self.clients.clear();
    }
}

/// What resolving an update found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// The update's new items and where they sit: record them once the update is applied.
    pub placed: Vec<Placed>,
    /// What must change before the update may be applied (always empty in strict mode).
    pub repairs: Repairs,
}

/// Places the new items of `summary` against `known` (index layers, searched in order: the
/// document, then updates accepted before this one). Refuses the update on the first problem.
pub fn resolve(
    summary: &UpdateSummary,
    known: &[&NestingIndex],
) -> Result<Resolution, NestingError> {
    Resolver::new(summary, known, false).run()
}

/// Like [`resolve`], but turns every problem into a repair (see the module docs).
pub fn resolve_repairing(summary: &UpdateSummary, known: &[&NestingIndex]) -> Resolution {
    Resolver::new(summary, known, true)
        .run()
        // Repairing turns every problem into a repair, so this cannot happen; if it did, the
        // safe answer is to apply nothing of the update.
        .unwrap_or_else(|_| Resolution {
            placed: Vec::new(),
            repairs: Repairs {
                collect: Vec::new(),
                keep: (0..summary.sections.len()).map(|s| (s, 0)).collect(),
                deletes: Some(Vec::new()),
            },
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A skip, or cut off after a gap: holds nothing anyone may refer to.
    Absent,
    /// Entirely known already: look its ids up in the known layers.
    Known,
    Pending,
    InProgress,
    Done(Placement),
}

enum Step {
    Need(usize),
    Done(Placement),
}

struct Resolver<'a> {
    summary: &'a UpdateSummary,
    known: &'a [&'a NestingIndex],
    repair: bool,
    state: Vec<State>,
    /// Per block: its parent reference once the known prefix of the block is trimmed off.
    parents: Vec<Option<ParentRef>>,
    /// Per client: its section, and the clock after its last block kept.
    sections: HashMap<u64, (usize, u32)>,
    /// Per client: how many of its blocks are being resolved (on the walk's stack).
    in_progress: HashMap<u64, usize>,
    repairs: Repairs,
}

impl<'a> Resolver<'a> {
    fn new(summary: &'a UpdateSummary, known: &'a [&'a NestingIndex], repair: bool) -> Self {
        Self {
            summary,
            known,
            repair,
            state: vec![State::Absent; summary.blocks.len()],
            parents: vec![None; summary.blocks.len()],
            sections: HashMap::new(),
            in_progress: HashMap::new(),
            repairs: Repairs::default(),
        }
    }

    fn known_end(&self, client: u64) -> u32 {
        self.known
            .iter()
            .map(|layer| layer.end(client))
            .max()
            .unwrap_or(0)
    }

    fn run(mut self) -> Result<Resolution, NestingError> {
        self.prepare()?;
        for index in 0..self.state.len() {
            if self.state.get(index) == Some(&State::Pending) {
                self.visit(index)?;
            }
        }
        let deletes = self.check_deletes()?;
        if let Some(deletes) = deletes {
            self.repairs.deletes = Some(deletes);
        }
        Ok(Resolution {
            placed: self.placed(),
            repairs: self.repairs,
        })
    }

    /// Classifies every block: known, absent, or to resolve (trimming what is already known the
    /// way yrs does: the rest of a block continues from its last known clock).
    fn prepare(&mut self) -> Result<(), NestingError> {
        for (section_index, section) in self.summary.sections.iter().enumerate() {
            let known = self.known_end(section.client);
            let mut frontier = known;
            for index in section.blocks.clone() {
                let Some(block) = self.summary.blocks.get(index) else {
                    continue;
                };
                let parent = match block.kind {
                    BlockKind::Skip => continue,
                    BlockKind::Collected => None,
                    BlockKind::Item { parent, .. } => Some(parent),
                };
                if block.end() <= known {
                    self.set(index, State::Known);
                    continue;
                }
                if block.clock > frontier {
                    // A gap in this client's clocks: yrs would leave a hole it fills later.
                    if !self.repair {
                        return Err(NestingError::MissingDependency);
                    }
                    let keep = index - section.blocks.start;
                    self.repairs.keep.push((section_index, keep));
                    break;
                }
                frontier = block.end();
                let trimmed = match parent {
                    Some(ParentRef::Neighbours { right_origin, .. }) if block.clock < known => {
                        Some(ParentRef::Neighbours {
                            origin: Some(ItemId::new(block.client, known - 1)),
                            right_origin,
                        })
                    }
                    other => other,
                };
                if let Some(slot) = self.parents.get_mut(index) {
                    *slot = trimmed;
                }
                // Collected blocks too: yrs integrates them in their client's order like any
                // other, and a block referring to one waits until it is there.
                self.set(index, State::Pending);
            }
            self.sections
                .insert(section.client, (section_index, frontier));
        }
        Ok(())
    }

    fn set(&mut self, index: usize, state: State) {
        if let Some(slot) = self.state.get_mut(index) {
            *slot = state;
        }
    }

    /// Resolves `root` and whatever it depends on, depth first, without recursion.
    fn visit(&mut self, root: usize) -> Result<(), NestingError> {
        let mut stack = vec![root];
        while let Some(&index) = stack.last() {
            if self.state.get(index) == Some(&State::Pending) {
                self.set(index, State::InProgress);
                *self.in_progress.entry(self.client_of(index)).or_default() += 1;
            }
            let step = match self.step(index) {
                Ok(step) => step,
                Err(_) if self.repair => {
                    self.repairs.collect.push(index);
                    Step::Done(Placement::Collected)
                }
                Err(error) => return Err(error),
            };
            match step {
                Step::Need(dependency) => stack.push(dependency),
                Step::Done(placement) => {
                    self.set(index, State::Done(placement));
                    if let Some(count) = self.in_progress.get_mut(&self.client_of(index)) {
                        *count = count.saturating_sub(1);
                    }
                    stack.pop();
                }
            }
        }
        Ok(())
    }

    fn client_of(&self, index: usize) -> u64 {
        self.summary.blocks.get(index).map_or(0, |b| b.client)
    }

    /// The placement of block `index`, or the block it must wait for.
    fn step(&self, index: usize) -> Result<Step, NestingError> {
        let Some(block) = self.summary.blocks.get(index) else {
            return Ok(Step::Done(Placement::Collected));
        };
        // yrs integrates each client's blocks in clock order: a block also waits for the one
        // before it. (A reference to a later block of a client whose earlier block is still
        // waiting is a cycle, found in `find`: yrs would leave them all pending for good.)
        let first_of_section = self
            .sections
            .get(&block.client)
            .and_then(|(section, _)| self.summary.sections.get(*section))
            .is_none_or(|section| section.blocks.start == index);
        if !first_of_section {
            match self.state.get(index - 1) {
                Some(State::Pending) => return Ok(Step::Need(index - 1)),
                Some(State::InProgress) => return Err(NestingError::MissingDependency),
                _ => {}
            }
        }
        let Some(Some(parent)) = self.parents.get(index) else {
            return Ok(Step::Done(Placement::Collected));
        };
        let placement = match *parent {
            ParentRef::Root => Placement::Under(1),
            ParentRef::Item(id) => match self.find(id)? {
                Found::Block(dependency) => return Ok(Step::Need(dependency)),
                Found::At(Placement::Collected) => Placement::Collected,
                // The parent is the type the item creates, one level below where it sits.
                Found::At(Placement::Under(depth)) if depth < MAX_TYPE_DEPTH => {
                    Placement::Under(depth + 1)
                }
                Found::At(Placement::Under(_)) => return Err(NestingError::TooDeep),
            },
            ParentRef::Neighbours {
                origin,
                right_origin,
            } => {
                // yrs takes the left neighbour's parent, else the right one's; both are
                // neighbours in one list, so the deeper of the two is the safe answer.
                let mut deepest = None;
                for id in [origin, right_origin].into_iter().flatten() {
                    match self.find(id)? {
                        Found::Block(dependency) => return Ok(Step::Need(dependency)),
                        Found::At(Placement::Collected) => {}
                        Found::At(Placement::Under(depth)) => {
                            deepest = deepest.max(Some(depth));
                        }
                    }
                }
                deepest.map_or(Placement::Collected, Placement::Under)
            }
        };
        if let (BlockKind::Item { is_type: true, .. }, Placement::Under(depth)) =
            (block.kind, placement)
        {
            if depth >= MAX_TYPE_DEPTH {
                return Err(NestingError::TooDeep);
            }
        }
        Ok(Step::Done(placement))
    }

    /// Where the item `id` is: known, resolved, still to resolve, or nowhere.
    fn find(&self, id: ItemId) -> Result<Found, NestingError> {
        if id.clock < self.known_end(id.client) {
            let layer = self
                .known
                .iter()
                .find(|layer| id.clock < layer.end(id.client));
            return layer
                .and_then(|layer| layer.placement(id))
                .map(Found::At)
                .ok_or(NestingError::MissingDependency);
        }
        let (section, _) = self
            .sections
            .get(&id.client)
            .ok_or(NestingError::MissingDependency)?;
        let blocks = self
            .summary
            .sections
            .get(*section)
            .map(|s| s.blocks.clone())
            .unwrap_or_default();
        let all = self.summary.blocks.get(blocks.clone()).unwrap_or_default();
        let position = all.partition_point(|block| block.end() <= id.clock);
        let index = blocks.start + position;
        if !blocks.contains(&index) {
            return Err(NestingError::MissingDependency);
        }
        match (self.summary.blocks.get(index), self.state.get(index)) {
            (Some(block), Some(state)) if block.clock <= id.clock => match state {
                State::Done(placement) => Ok(Found::At(*placement)),
                // Its client is waiting further down: it cannot go before that.
                State::Pending if self.in_progress.get(&id.client).is_some_and(|n| *n > 0) => {
                    Err(NestingError::MissingDependency)
                }
                State::Pending => Ok(Found::Block(index)),
                // A cycle: yrs would park every block in it for good.
                State::InProgress | State::Absent | State::Known => {
                    Err(NestingError::MissingDependency)
                }
            },
            _ => Err(NestingError::MissingDependency),
        }
    }

    /// Checks the delete set against what is known; returns a clipped one when repairing.
    fn check_deletes(&self) -> Result<Option<Vec<DeletedRange>>, NestingError> {
        let known_end = |client: u64| {
            let in_update = self.sections.get(&client).map_or(0, |(_, end)| *end);
            self.known_end(client).max(in_update)
        };
        let mut clipped = Vec::new();
        let mut changed = false;
        for range in &self.summary.deletes {
            let end = known_end(range.client);
            if range.end <= end {
                clipped.push(*range);
                continue;
            }
            if !self.repair {
                return Err(NestingError::UnknownDeletion);
            }
            changed = true;
            if range.start < end {
                clipped.push(DeletedRange { end, ..*range });
            }
        }
        Ok(changed.then_some(clipped))
    }

    /// The new items, merged into runs.
    fn placed(&self) -> Vec<Placed> {
        let mut placed: Vec<Placed> = Vec::new();
        for (index, block) in self.summary.blocks.iter().enumerate() {
            let Some(State::Done(placement)) = self.state.get(index).copied() else {
                continue;
            };
            let start = block.clock.max(self.known_end(block.client));
            match placed.last_mut() {
                Some(last)
                    if last.client == block.client
                        && last.end == start
                        && last.placement == placement =>
                {
                    last.end = block.end();
                }
                _ => placed.push(Placed {
                    client: block.client,
                    start,
                    end: block.end(),
                    placement,
                }),
            }
        }
        placed
    }
}

enum Found {
    At(Placement),
    Block(usize),
}

#[cfg(test)]
mod tests;
