//! The OpenAPI document, generated from the handlers' annotations (utoipa).
//!
//! Security: a login token (`bearer`), the session cookie (`cookie`), or an API key (`api_key`,
//! with scopes). An endpoint that API keys may call declares `security(("api_key" = [scope]))`;
//! [`document`] adds the login alternatives to it (a login may call everything a key may), and the
//! server enforces each declaration as written here ([`crate::authz::permit_api_key`]).

use std::sync::OnceLock;

use actix_web::{get, HttpResponse};
use serde_json::{json, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    admin, api_keys, auth, billing, graph, invitations, jobs, me, me_events, media, ops, runtime,
    sessions, share_links, versions, webhooks,
};

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "atelier_session",
                "The studio's login cookie. Changes also need the `X-CSRF-Token` header.",
            ))),
        );
        components.add_security_scheme(
            crate::authz::API_KEY_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("atk_…")
                    .description(Some(
                        "An API key (`POST /me/api-keys`) as a bearer token. Each operation \
                         lists the scopes it needs: `sessions:read`, `sessions:write`, \
                         `jobs:run`, `billing:read`. Operations without this scheme do not \
                         take API keys (403 `insufficient_scope`). Each key has its own rate \
                         limit: answers carry `X-RateLimit-Limit`, `X-RateLimit-Remaining` and \
                         `X-RateLimit-Reset`; beyond it, 429 with `Retry-After`.",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Atelier API", description = "Collaborative AI studio server. Errors are `{\"error\":{\"code\",\"message\"}}`."),
    servers((url = "/api/v1")),
    modifiers(&Security),
    security(("bearer" = []), ("cookie" = [])),
    paths(
        auth::signup, auth::login, auth::logout,
        me::me, me::usage, me::export, me::delete_me, me_events::events,
        api_keys::create, api_keys::list, api_keys::revoke,
        sessions::create, sessions::list, sessions::get_one, sessions::update, sessions::delete_one,
        sessions::members, sessions::add_member, sessions::change_role, sessions::remove_member,
        invitations::create, invitations::list, invitations::revoke, invitations::preview,
        invitations::accept, invitations::mine, invitations::accept_mine,
        invitations::decline_mine,
        graph::get_graph, graph::put_graph, graph::patch_graph,
        versions::list, versions::create, versions::get_one, versions::diff, versions::restore,
        versions::delete_one,
        share_links::create, share_links::list, share_links::revoke,
        media::upload, media::list, media::session_images, media::download, media::delete_one,
        jobs::node_types, jobs::run, jobs::list, jobs::get_one, jobs::cancel,
        webhooks::get_secret, webhooks::rotate, webhooks::deliveries,
        ops::healthz, ops::readyz,
        me::change_password,
        runtime::start, runtime::get_one, runtime::stop, runtime::extend,
        billing::prices, billing::balance, billing::ledger, billing::usage, billing::webhook,
        billing::packs, billing::checkout, billing::ledger_csv, billing::statement,
        admin::accounts, admin::account, admin::grant_credits, admin::suspend, admin::unsuspend,
        admin::set_role, admin::workers, admin::drain, admin::create_worker_token,
        admin::revoke_worker_token, admin::leases, admin::stop_lease, admin::jobs,
        admin::cancel_job, admin::audit_log,
    )
)]
pub struct ApiDoc;

/// The shape of every error answer.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "Every error answer. `code` is machine-readable (e.g. `invalid_input`, \
            `unauthenticated`, `invalid_credentials`, `forbidden`, `insufficient_scope`, \
            `csrf_rejected`, `not_found`, `conflict`, `gone`, `precondition_failed`, \
            `payload_too_large`, `unsupported_media_type`, `payment_required`, \
            `insufficient_credits`, `rate_limited`, `too_many_jobs`, `internal`); `message` \
            says what went wrong, for a person.",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "example": "insufficient_scope"},
                "message": {"type": "string",
                    "example": "this API key lacks the sessions:write scope that PATCH /api/v1/sessions/{id} needs"}
            }
        }},
    })
}

/// What an operation that takes API keys may also answer because of the key.
fn key_refusals() -> (Value, Value) {
    let int = json!({"type": "integer"});
    (
        json!({"description": "not allowed: the caller's role, or the API key's scope (`insufficient_scope`)"}),
        json!({
            "description": "the API key's rate limit is spent (or another limit of the endpoint)",
            "headers": {
                "Retry-After": {"description": "seconds to wait", "schema": int},
                "X-RateLimit-Limit": {"description": "requests per minute of the key", "schema": int},
                "X-RateLimit-Remaining": {"description": "requests left this minute", "schema": int},
                "X-RateLimit-Reset": {"description": "seconds until the minute ends", "schema": int}
            }
        }),
    )
}

/// The document as served, built once from the generated one:
/// - every operation that takes API keys also lists the login alternatives, and documents the
///   key's refusals (403 `insufficient_scope`; 429 with `Retry-After`, its rate limit);
/// - every error answer has the error shape ([`error_schema`]).
pub fn document() -> Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        if let Some(schemas) = doc
            .pointer_mut("/components/schemas")
            .and_then(Value::as_object_mut)
        {
            schemas.insert("Error".into(), error_schema());
        }
        let error_content =
            json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
        let (forbidden, limited) = key_refusals();
        let paths = doc.get_mut("paths").and_then(Value::as_object_mut);
        for item in paths.into_iter().flat_map(|p| p.values_mut()) {
            let ops = item
                .as_object_mut()
                .into_iter()
                .flat_map(|i| i.values_mut());
            for op in ops {
                let takes_keys = op
                    .get("security")
                    .and_then(Value::as_array)
                    .is_some_and(|s| {
                        s.iter()
                            .any(|r| r.get(crate::authz::API_KEY_SCHEME).is_some())
                    });
                if takes_keys {
                    if let Some(security) = op.get_mut("security").and_then(Value::as_array_mut) {
                        security.push(json!({"bearer": []}));
                        security.push(json!({"cookie": []}));
                    }
                }
                let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                    continue;
                };
                if takes_keys {
                    responses.entry("403").or_insert_with(|| forbidden.clone());
                    responses.insert("429".into(), limited.clone());
                }
                for (status, response) in responses.iter_mut() {
                    let is_error = status.starts_with('4') || status.starts_with('5');
                    if let Some(response) = response.as_object_mut() {
                        if is_error && !response.contains_key("content") {
                            response.insert("content".into(), error_content.clone());
                        }
                        response.entry("description").or_insert_with(|| json!(""));
                    }
                }
            }
        }
        doc
    })
    .clone()
}

#[get("/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(document())
}
