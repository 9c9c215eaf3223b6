//! The session graph over REST: `GET /sessions/{id}/graph` reads the graph the editors see with
//! its version (the document's state vector); `PUT` replaces it and `PATCH` (JSON Merge Patch,
//! RFC 7396) changes it — both applied through the live session as one collaborative update, so
//! every connected editor sees it at once and concurrent edits of other fields merge.
//!
//! Conditional writes: `If-Match` with the version (the `ETag` of a read) makes a write happen
//! only if the graph has not moved on since (412 otherwise). Without it, a write is still made
//! against the state it was computed from: if the document moved between the read and the write,
//! the patch is computed again on the new state.
//!
//! A written graph is validated as a job validates it: known node types and ports, connected
//! inputs, no cycles, valid params (400 naming the node) — an empty graph is accepted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::http::header::{self, HeaderMap};
use actix_web::{get, patch, put, web, HttpRequest, HttpResponse};
use atelier_actors::session::document_version;
use atelier_protocol::ids::SessionId;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::auth::Auth;
use crate::authz::{authorize, Action};
use crate::error::{Error, Result};
use crate::jobs::graph::Graph;
use crate::jobs::graph_edit;
use crate::state::AppState;

/// Times a write is recomputed when the document moves under it (no `If-Match`).
const WRITE_ATTEMPTS: usize = 5;

/// The media type of a JSON Merge Patch.
pub const MERGE_PATCH: &str = "application/merge-patch+json";

/// The graph and its version.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "nodes": {"n1": {"type": "terrain", "x": 120, "y": 80, "params": {"seed": 7, "steps": 20}},
              "out": {"type": "output", "x": 400, "y": 80, "params": {}}},
    "edges": {"e1": {"source": "n1", "source_port": "image", "target": "out", "target_port": "image"}},
    "version": "AQKWsJ8FBA"
}))]
pub struct GraphDocument {
    /// node id → `{type, x, y, params: {...}}`.
    #[schema(value_type = Object)]
    pub nodes: Value,
    /// edge id → `{source, source_port, target, target_port}`.
    #[schema(value_type = Object)]
    pub edges: Value,
    /// The document's state vector (Yjs v1 encoding, base64url): the `ETag`, for `If-Match`.
    pub version: String,
}

/// A whole graph, for `PUT`.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "nodes": {"n1": {"type": "terrain", "x": 120, "y": 80, "params": {"seed": 7}},
              "out": {"type": "output", "x": 400, "y": 80, "params": {}}},
    "edges": {"e1": {"source": "n1", "source_port": "image", "target": "out", "target_port": "image"}}
}))]
pub struct GraphBody {
    #[schema(value_type = Object)]
    pub nodes: Map<String, Value>,
    #[schema(value_type = Object)]
    pub edges: Map<String, Value>,
}

fn tag(version: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(version)
}

/// What `If-Match` asks for: `None` without the header; otherwise whether `current` matches one
/// of its entity tags (`*` matches any; weak tags compare by their value).
fn if_match(headers: &HeaderMap) -> Result<Option<Vec<String>>> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Error::invalid("the If-Match header is not text"))?;
    let tags = text
        .split(',')
        .map(|t| {
            let t = t.trim();
            let t = t.strip_prefix("W/").unwrap_or(t);
            t.trim_matches('"').to_owned()
        })
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>();
    if tags.is_empty() {
        return Err(Error::invalid("the If-Match header names no version"));
    }
    Ok(Some(tags))
}

fn matches(tags: &[String], current: &str) -> bool {
    tags.iter().any(|t| t == "*" || t == current)
}

fn respond(graph: Value, version: &[u8]) -> HttpResponse {
    let version = tag(version);
    let (nodes, edges) = match graph {
        Value::Object(mut map) => (
            map.remove("nodes")
                .unwrap_or_else(|| Value::Object(Map::new())),
            map.remove("edges")
                .unwrap_or_else(|| Value::Object(Map::new())),
        ),
        _ => (Value::Object(Map::new()), Value::Object(Map::new())),
    };
    HttpResponse::Ok()
        .insert_header((header::ETAG, format!("\"{version}\"")))
        .json(GraphDocument {
            nodes,
            edges,
            version,
        })
}

fn live_error(e: atelier_actors::session::messages::LiveDocError) -> Error {
    Error::Internal(format!("the session's document: {e}"))
}

/// The session's graph as the editors see it, with its version (also the `ETag`).
#[utoipa::path(security(("api_key" = ["sessions:read"])), tag = "graph", params(("id" = SessionId, Path,)),
    responses((status = 200, body = GraphDocument,
               headers(("ETag" = String, description = "the version, quoted"))),
              (status = 401), (status = 403), (status = 404)))]
#[get("/sessions/{id}/graph")]
pub async fn get_graph(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<SessionId>,
) -> Result<HttpResponse> {
    let (session, _) = authorize(&state, &auth.principal, *id, Action::View).await?;
    let view = state
        .live
        .graph_view(session.id)
        .await
        .map_err(live_error)?;
    Ok(respond(view.graph, &view.version))
}

/// Replace the graph (owners and editors). Entries and fields that do not change are left
/// alone, so concurrent edits of them survive.
#[utoipa::path(security(("api_key" = ["sessions:write"])), tag = "graph", params(("id" = SessionId, Path,),
        ("If-Match" = Option<String>, Header, description = "write only if the graph is still at this version")),
    request_body = GraphBody,
    responses((status = 200, body = GraphDocument), (status = 400, description = "the graph does not validate"),
              (status = 401), (status = 403), (status = 404),
              (status = 412, description = "the graph is no longer at the If-Match version")))]
#[put("/sessions/{id}/graph")]
pub async fn put_graph(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    id: web::Path<SessionId>,
    body: web::Json<GraphBody>,
) -> Result<HttpResponse> {
    let (session, _) = authorize(&state, &auth.principal, *id, Action::EditDocument).await?;
    let body = body.into_inner();
    let mut target = Map::new();
    target.insert("nodes".into(), Value::Object(body.nodes));
    target.insert("edges".into(), Value::Object(body.edges));
    let target = Value::Object(target);
    let editor = auth.principal.account_id();
    write(&state, session.id, editor, req.headers(), |_| {
        Ok(target.clone())
    })
    .await
}

/// Change the graph with a JSON Merge Patch (RFC 7396; owners and editors): e.g.
/// `{"nodes": {"n1": {"params": {"seed": 8}}, "n2": null}}` sets one param and removes a node.
#[utoipa::path(security(("api_key" = ["sessions:write"])), tag = "graph", params(("id" = SessionId, Path,),
        ("If-Match" = Option<String>, Header, description = "write only if the graph is still at this version")),
    request_body(content = Object, content_type = "application/merge-patch+json",
                 example = json!({"nodes": {"n1": {"params": {"seed": 8}}}})),
    responses((status = 200, body = GraphDocument), (status = 400, description = "the result does not validate"),
              (status = 401), (status = 403), (status = 404), (status = 412),
              (status = 413), (status = 415)))]
#[patch("/sessions/{id}/graph")]
pub async fn patch_graph(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    id: web::Path<SessionId>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let (session, _) = authorize(&state, &auth.principal, *id, Action::EditDocument).await?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if !matches!(
        content_type.as_deref(),
        Some(MERGE_PATCH | "application/json")
    ) {
        return Err(Error::UnsupportedMediaType(format!(
            "a graph PATCH is a JSON Merge Patch: Content-Type: {MERGE_PATCH}"
        )));
    }
    let body = super::body::read_limited(&state, payload).await?;
    let patch: Value = serde_json::from_slice(&body)
        .map_err(|e| Error::invalid(format!("invalid JSON body: {e}")))?;
    if !patch.is_object() {
        return Err(Error::invalid(
            "a graph patch is a JSON object (e.g. {\"nodes\": {...}})",
        ));
    }
    let editor = auth.principal.account_id();
    write(&state, session.id, editor, req.headers(), |current| {
        let mut target = current.clone();
        json_patch::merge(&mut target, &patch);
        Ok(target)
    })
    .await
}

/// Computes the target graph from the current one, validates it and writes it through the live
/// session, checked against the version it was computed from.
async fn write(
    state: &AppState,
    session: SessionId,
    editor: Option<atelier_protocol::ids::AccountId>,
    headers: &HeaderMap,
    compute: impl Fn(&Value) -> Result<Value>,
) -> Result<HttpResponse> {
    let wanted = if_match(headers)?;
    for _ in 0..WRITE_ATTEMPTS {
        let view = state.live.graph_view(session).await.map_err(live_error)?;
        if let Some(tags) = &wanted {
            if !matches(tags, &tag(&view.version)) {
                return Err(Error::PreconditionFailed(format!(
                    "the graph has moved on: it is at version \"{}\" now",
                    tag(&view.version)
                )));
            }
        }
        let target = compute(&view.graph)?;
        validate(state, &target)?;
        if target == view.graph {
            return Ok(respond(view.graph, &view.version));
        }
        // The change is built on the document as it is when the session applies it: if that
        // is no longer the state the target was computed from, nothing is written.
        let moved = Arc::new(AtomicBool::new(false));
        let read_at = view.version.clone();
        let edit_moved = moved.clone();
        let edit: atelier_actors::session::messages::DocEdit = Arc::new(move |doc| {
            if document_version(doc) != read_at {
                edit_moved.store(true, Ordering::SeqCst);
                return Err("the graph changed while the write was prepared".into());
            }
            Ok(graph_edit::replace_update(doc, &target))
        });
        match state.live.apply_edit_for(session, editor, edit).await {
            Ok(()) => {
                let after = state.live.graph_view(session).await.map_err(live_error)?;
                return Ok(respond(after.graph, &after.version));
            }
            Err(_) if moved.load(Ordering::SeqCst) => {
                if wanted.is_some() {
                    return Err(Error::PreconditionFailed(
                        "the graph has moved on since the If-Match version".into(),
                    ));
                }
            }
            Err(atelier_actors::session::messages::LiveDocError::InvalidEdit(why)) => {
                return Err(Error::invalid(format!("the graph was refused: {why}")));
            }
            Err(e) => return Err(live_error(e)),
        }
    }
    Err(Error::Conflict(
        "the graph kept changing while the write was prepared; try again".into(),
    ))
}

/// The checks a job makes before it runs, for the graph as it would be after the write.
fn validate(state: &AppState, target: &Value) -> Result<()> {
    let Some(root) = target.as_object() else {
        return Err(Error::invalid("the graph must be an object"));
    };
    if let Some(key) = root
        .keys()
        .find(|k| !matches!(k.as_str(), "nodes" | "edges"))
    {
        return Err(Error::invalid(format!(
            "the graph has only nodes and edges, not {key:?}"
        )));
    }
    for root_name in ["nodes", "edges"] {
        match root.get(root_name) {
            None | Some(Value::Object(_)) => {}
            Some(_) => return Err(Error::invalid(format!("{root_name} must be an object"))),
        }
    }
    let graph = Graph::from_json(target).map_err(Error::InvalidInput)?;
    if graph.nodes.is_empty() && graph.edges.is_empty() {
        return Ok(());
    }
    graph
        .compile(&state.catalog, None, 0)
        .map(|_| ())
        .map_err(Error::InvalidInput)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    #[test]
    fn if_match_reads_strong_weak_and_lists() {
        let mut h = HeaderMap::new();
        assert_eq!(if_match(&h).unwrap(), None);
        h.insert(
            header::IF_MATCH,
            HeaderValue::from_static("W/\"abc\", \"def\""),
        );
        let tags = if_match(&h).unwrap().unwrap();
        assert!(matches(&tags, "abc") && matches(&tags, "def") && !matches(&tags, "x"));
        h.insert(header::IF_MATCH, HeaderValue::from_static("*"));
        assert!(matches(&if_match(&h).unwrap().unwrap(), "anything"));
        h.insert(header::IF_MATCH, HeaderValue::from_static(" , "));
        assert!(if_match(&h).is_err());
    }
}
