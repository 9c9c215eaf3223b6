//! Applying an update to a session document within the nesting bound: what a session does with
//! every update it has stored, and with every stored update when it loads a document. Kept
//! here, beside the validator and the nesting check, so the fuzz targets exercise exactly this.

use thiserror::Error;
use yrs::{ClientID, Doc, ReadTxn, Transact};

use crate::ysync::nesting::{resolve_repairing, NestingIndex, Placed};
use crate::ysync::update::{decode_update, repair_update_v1, summarize_update};
use crate::ysync::FrameError;

/// How an update was integrated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integrated {
    AsIs,
    /// With the parts the nesting check refused turned into garbage-collected ranges (see
    /// [`super::nesting`]): these are the bytes that were applied.
    Repaired(Vec<u8>),
}

/// Why an update could not be integrated at all.
#[derive(Debug, Error)]
pub enum IntegrateError {
    #[error("invalid update: {0}")]
    Invalid(#[from] FrameError),
    #[error("yrs refused the update: {0}")]
    Refused(String),
}

/// Applies a v1 update to `doc` without letting it nest types beyond the limit or leave blocks
/// waiting for items that are not there, and records its items in `nesting` — only those the
/// document really holds afterwards, so the index always describes the document.
///
/// May panic inside yrs (it has integration paths that do on hostile input); callers contain
/// that with `catch_unwind`.
pub fn integrate(
    doc: &Doc,
    nesting: &mut NestingIndex,
    bytes: &[u8],
) -> Result<Integrated, IntegrateError> {
    integrate_with(doc, nesting, bytes, true).map(|outcome| outcome.unwrap_or(Integrated::AsIs))
}

/// Like [`integrate`], but an update that would need repairing — because it builds on items the
/// document does not hold yet, or nests too deep — is left alone (`Ok(None)`, nothing applied).
/// A cluster replica applies committed updates as other nodes relay them, possibly out of order:
/// one that arrives before what it builds on waits for the replica to read the log in order.
pub fn integrate_complete(
    doc: &Doc,
    nesting: &mut NestingIndex,
    bytes: &[u8],
) -> Result<Option<Integrated>, IntegrateError> {
    integrate_with(doc, nesting, bytes, false)
}

fn integrate_with(
    doc: &Doc,
    nesting: &mut NestingIndex,
    bytes: &[u8],
    repair: bool,
) -> Result<Option<Integrated>, IntegrateError> {
    let summary = summarize_update(bytes)?;
    let resolution = resolve_repairing(&summary, &[nesting]);
    if !repair && !resolution.repairs.is_empty() {
        return Ok(None);
    }
    let (update, outcome) = if resolution.repairs.is_empty() {
        (decode_update(bytes)?, Integrated::AsIs)
    } else {
        let repaired = repair_update_v1(bytes, &summary, &resolution.repairs);
        (decode_update(&repaired)?, Integrated::Repaired(repaired))
    };
    let result = doc.transact_mut().apply_update(update);
    // Whatever yrs integrated: all of it, or a prefix per client when it gave up half way.
    let sv = doc.transact().state_vector();
    for placed in &resolution.placed {
        let end = placed.end.min(sv.get(&ClientID::new(placed.client)));
        if end > placed.start {
            nesting.record(&Placed { end, ..*placed }, 0);
        }
    }
    result.map_err(|e| IntegrateError::Refused(e.to_string()))?;
    Ok(Some(outcome))
}
