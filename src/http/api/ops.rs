//! Operations endpoints: liveness, readiness, Prometheus metrics.

use actix_web::http::header;
use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    pub database: String,
    pub storage: String,
    /// `ok`, `degraded` (cluster mode, Redis unreachable: this node serves its own clients
    /// alone; still ready) or `not configured` (single node).
    pub redis: &'static str,
    /// This node's id in a cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

/// The process is up.
#[utoipa::path(security(()), tag = "operations", responses((status = 200, body = Health)))]
#[get("/healthz")]
pub async fn healthz() -> web::Json<Health> {
    web::Json(Health { status: "ok" })
}

/// What `/readyz` says about a dependency that failed. The cause (which may name hosts, paths or
/// credentials' users) goes to the log only: `/readyz` answers anyone.
const UNAVAILABLE: &str = "unavailable";

/// The database and object storage answer.
#[utoipa::path(security(()), tag = "operations", responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database = match state.db.ping().await {
        Ok(()) => "ok",
        Err(error) => {
            tracing::warn!(%error, "readiness: the database does not answer");
            UNAVAILABLE
        }
    };
    let storage = match state.blobs.check().await {
        Ok(()) => "ok",
        Err(error) => {
            tracing::warn!(%error, "readiness: object storage does not answer");
            UNAVAILABLE
        }
    };
    let ready = database == "ok" && storage == "ok";
    // Redis down does not take the node out of rotation: it keeps serving its own clients.
    let redis = match &state.cluster {
        None => "not configured",
        Some(cluster) if cluster.redis_up() => "ok",
        Some(_) => "degraded",
    };
    let body = Readiness {
        status: if ready { "ok" } else { "unavailable" },
        database: database.to_string(),
        storage: storage.to_string(),
        redis,
        node_id: state.cluster.as_ref().map(|c| c.node_id().to_owned()),
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus text exposition (served at `/metrics`, outside `/api/v1`).
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/plain; version=0.0.4"))
        .body(state.metrics.render())
}
