//! Version history over HTTP: list (paged, with the session's version storage), read (graph
//! JSON and document state), diff, name the current state, restore, delete.
//!
//! A restore is a collaborative update like any other: the change that makes the live graph
//! equal to the version's (entries not in it removed, missing ones inserted, differing fields
//! set) is built on the live document by its session and fanned out to everyone connected.
//! Edits made concurrently merge with it as any two editors' edits do. The state just before is
//! kept as a version (its id is the restore's `undo`: restoring it undoes the restore), and the
//! state just after as a `restore` version.

use std::sync::{Arc, Mutex, PoisonError};

use actix_web::http::header;
use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use atelier_actors::session::messages::DocEdit;
use atelier_actors::session::{graph_json, rebuild_document};
use atelier_actors::StoredDoc;
use atelier_protocol::ids::{AccountId, SessionId, VersionId};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use yrs::{ReadTxn, StateVector, Transact};

use crate::auth::Auth;
use crate::authz::{authorize, Action};
use crate::db::versions::{NewVersion, VersionKind, VersionRecord};
use crate::error::{Error, Result};
use crate::graph_diff::{self, GraphDiff};
use crate::jobs::graph_edit;
use crate::state::AppState;
use crate::versions::VersionStorage;

/// Longest version name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Versions per page at most (and by default).
pub const MAX_PAGE: i64 = 100;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Versions per page (1–100, default 100).
    pub limit: Option<i64>,
    /// Versions to skip (newest first).
    pub offset: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionList {
    /// Newest first.
    pub versions: Vec<VersionRecord>,
    /// The offset of the next page, if there may be one.
    pub next_offset: Option<i64>,
    pub storage: VersionStorage,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NameVersion {
    pub name: String,
}

/// A version with its content.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionContent {
    #[serde(flatten)]
    pub version: VersionRecord,
    /// `{"nodes": {...}, "edges": {...}}` at this version.
    #[schema(value_type = Object)]
    pub graph: Value,
    /// The document state (a Yjs v1 update from the empty state), base64. Ask with
    /// `Accept: application/octet-stream` for the bytes alone.
    pub state: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionDiff {
    pub from: VersionId,
    pub to: VersionId,
    #[serde(flatten)]
    pub diff: GraphDiff,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Restored {
    /// The `restore` version: the document right after the restore.
    pub version: VersionRecord,
    /// The version of the document just before: restore it to undo this restore.
    pub undo: VersionId,
}

/// The document states just before and just after a restore.
type BeforeAfter = (Vec<u8>, Vec<u8>);

/// The graph a stored state holds, read as a session would load it (off the async threads: a
/// large document takes a while to decode).
async fn graph_of(state: Vec<u8>) -> Result<Value> {
    tokio::task::spawn_blocking(move || {
        let doc = rebuild_document(&StoredDoc {
            snapshot: Some(state),
            updates: Vec::new(),
            snapshot_seq: 0,
        });
        graph_json(&doc)
    })
    .await
    .map_err(|e| Error::Internal(format!("reading a version: {e}")))
}

fn check_name(raw: &str) -> Result<String> {
    let name = raw.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(Error::invalid(format!(
            "name: 1 to {MAX_NAME_CHARS} printable characters"
        )));
    }
    Ok(name.to_owned())
}

async fn version_of(
    state: &AppState,
    session: SessionId,
    id: VersionId,
) -> Result<(VersionRecord, Vec<u8>)> {
    state
        .db
        .version(session, id)
        .await?
        .ok_or(Error::NotFound("version"))
}

async fn record_of(state: &AppState, session: SessionId, id: VersionId) -> Result<VersionRecord> {
    Ok(version_of(state, session, id).await?.0)
}

fn live_error(e: atelier_actors::session::messages::LiveDocError) -> Error {
    Error::Internal(format!("the session's document: {e}"))
}

/// The session's versions, newest first, with how much version storage it uses.
#[utoipa::path(security(("api_key" = ["sessions:read"])), tag = "versions", params(("id" = SessionId, Path,), Page),
    responses((status = 200, body = VersionList), (status = 400), (status = 404)))]
#[get("/sessions/{id}/versions")]
pub async fn list(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<SessionId>,
    page: web::Query<Page>,
) -> Result<web::Json<VersionList>> {
    let (session, _) = authorize(&state, &auth.principal, *id, Action::View).await?;
    let limit = page.limit.unwrap_or(MAX_PAGE);
    let offset = page.offset.unwrap_or(0);
    if !(1..=MAX_PAGE).contains(&limit) || offset < 0 {
        return Err(Error::invalid(format!(
            "limit: 1 to {MAX_PAGE}; offset: 0 or more"
        )));
    }
    let versions = state.db.versions_page(session.id, limit, offset).await?;
    let next_offset =
        (i64::try_from(versions.len()).unwrap_or(0) == limit).then(|| offset.saturating_add(limit));
    Ok(web::Json(VersionList {
        versions,
        next_offset,
        storage: state.versions.storage(session.id).await?,
    }))
}

/// Keep the current state under a name (owners and editors).
#[utoipa::path(security(("api_key" = ["sessions:write"])), tag = "versions", params(("id" = SessionId, Path,)),
    request_body = NameVersion,
    responses((status = 201, body = VersionRecord), (status = 400), (status = 403), (status = 404),
              (status = 413, description = "the session's version storage is full of named versions")))]
#[post("/sessions/{id}/versions")]
pub async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<SessionId>,
    body: web::Json<NameVersion>,
) -> Result<HttpResponse> {
    let (session, _) = authorize(&state, &auth.principal, *id, Action::ManageVersions).await?;
    let name = check_name(&body.name)?;
    let view = state
        .live
        .graph_view(session.id)
        .await
        .map_err(live_error)?;
    let version = state
        .versions
        .record(NewVersion {
            session: session.id,
            kind: VersionKind::Named,
            name: Some(name),
            created_by: auth.principal.account_id(),
            authors: Vec::new(),
            restored_from: None,
            state: view.state.to_vec(),
        })
        .await?;
    Ok(HttpResponse::Created().json(record_of(&state, session.id, version).await?))
}

/// One version: its graph and its document state (base64 in JSON, or the bytes alone with
/// `Accept: application/octet-stream`).
#[utoipa::path(security(("api_key" = ["sessions:read"])), tag = "versions",
    params(("id" = SessionId, Path,), ("version" = VersionId, Path,)),
    responses((status = 200, body = VersionContent), (status = 404)))]
#[get("/sessions/{id}/versions/{version}")]
pub async fn get_one(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<(SessionId, VersionId)>,
) -> Result<HttpResponse> {
    let (id, version) = path.into_inner();
    let (session, _) = authorize(&state, &auth.principal, id, Action::View).await?;
    let (record, doc_state) = version_of(&state, session.id, version).await?;
    let wants_bytes = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/octet-stream"));
    if wants_bytes {
        return Ok(HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(doc_state));
    }
    let encoded = STANDARD.encode(&doc_state);
    let graph = graph_of(doc_state).await?;
    Ok(HttpResponse::Ok().json(VersionContent {
        version: record,
        graph,
        state: encoded,
    }))
}

/// What changed from version `a` to version `b`: nodes and edges added, removed and changed
/// (with the fields and params that changed).
#[utoipa::path(security(("api_key" = ["sessions:read"])), tag = "versions",
    params(("id" = SessionId, Path,), ("a" = VersionId, Path,), ("b" = VersionId, Path,)),
    responses((status = 200, body = VersionDiff), (status = 404)))]
#[get("/sessions/{id}/versions/{a}/diff/{b}")]
pub async fn diff(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(SessionId, VersionId, VersionId)>,
) -> Result<web::Json<VersionDiff>> {
    let (id, a, b) = path.into_inner();
    let (session, _) = authorize(&state, &auth.principal, id, Action::View).await?;
    let (_, state_a) = version_of(&state, session.id, a).await?;
    let (_, state_b) = version_of(&state, session.id, b).await?;
    let (graph_a, graph_b) = (graph_of(state_a).await?, graph_of(state_b).await?);
    Ok(web::Json(VersionDiff {
        from: a,
        to: b,
        diff: graph_diff::diff(&graph_a, &graph_b),
    }))
}

/// Make the live document equal to a version (owners and editors), as one collaborative
/// update everyone connected sees at once. Answers the new `restore` version and the version
/// that undoes it.
#[utoipa::path(security(("api_key" = ["sessions:write"])), tag = "versions",
    params(("id" = SessionId, Path,), ("version" = VersionId, Path,)),
    responses((status = 201, body = Restored), (status = 403), (status = 404), (status = 413)))]
#[post("/sessions/{id}/versions/{version}/restore")]
pub async fn restore(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(SessionId, VersionId)>,
) -> Result<HttpResponse> {
    let (id, version) = path.into_inner();
    let (session, _) = authorize(&state, &auth.principal, id, Action::ManageVersions).await?;
    let (_, doc_state) = version_of(&state, session.id, version).await?;
    let target = graph_of(doc_state).await?;
    // The states just before and after, as the session applies the change (not as read
    // before or after it: others may be editing meanwhile).
    let states: Arc<Mutex<Option<BeforeAfter>>> = Arc::default();
    let seen = states.clone();
    let edit: DocEdit = Arc::new(move |doc| {
        let full = |doc: &yrs::Doc| {
            doc.transact()
                .encode_state_as_update_v1(&StateVector::default())
        };
        let before = full(doc);
        let update = graph_edit::replace_update(doc, &target);
        *seen.lock().unwrap_or_else(PoisonError::into_inner) = Some((before, full(doc)));
        Ok(update)
    });
    state
        .live
        .apply_server_edit(session.id, edit)
        .await
        .map_err(live_error)?;
    let (before, after) = states
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .ok_or_else(|| Error::Internal("the restore ran without its states".into()))?;
    let by: Option<AccountId> = auth.principal.account_id();
    let undo = state
        .versions
        .record(NewVersion {
            session: session.id,
            kind: VersionKind::Auto,
            name: None,
            created_by: by,
            authors: by.into_iter().collect(),
            restored_from: None,
            state: before,
        })
        .await?;
    let restored = state
        .versions
        .record(NewVersion {
            session: session.id,
            kind: VersionKind::Restore,
            name: None,
            created_by: by,
            authors: Vec::new(),
            restored_from: Some(version),
            state: after,
        })
        .await?;
    Ok(HttpResponse::Created().json(Restored {
        version: record_of(&state, session.id, restored).await?,
        undo,
    }))
}

/// Delete a version (owners and editors). Jobs that ran it keep their record.
#[utoipa::path(security(("api_key" = ["sessions:write"])), tag = "versions",
    params(("id" = SessionId, Path,), ("version" = VersionId, Path,)),
    responses((status = 204), (status = 403), (status = 404)))]
#[delete("/sessions/{id}/versions/{version}")]
pub async fn delete_one(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(SessionId, VersionId)>,
) -> Result<HttpResponse> {
    let (id, version) = path.into_inner();
    let (session, _) = authorize(&state, &auth.principal, id, Action::ManageVersions).await?;
    record_of(&state, session.id, version).await?;
    state.db.delete_versions(session.id, &[version]).await?;
    Ok(HttpResponse::NoContent().finish())
}
