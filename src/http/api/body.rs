//! Reading a raw request body within the JSON size limit (`ATELIER_MAX_JSON_BYTES`), for handlers
//! that parse their body themselves (a merge patch, an optional body): a body over the limit is
//! 413 in the API's error shape as soon as the limit is passed, never buffered whole.

use actix_web::web;
use bytes::BytesMut;
use futures_util::StreamExt;

use crate::error::{Error, Result};
use crate::state::AppState;

pub async fn read_limited(state: &AppState, mut payload: web::Payload) -> Result<BytesMut> {
    let limit = usize::try_from(state.config.max_json_bytes).unwrap_or(usize::MAX);
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Error::invalid(format!("could not read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(Error::PayloadTooLarge(format!(
                "request body is larger than the limit of {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
