//! The OpenAPI document, generated from the handlers' annotations (utoipa).

use actix_web::{get, web};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin, auth, billing, jobs, me, media, ops, runtime, sessions, share_links};

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
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("atelier_session"))),
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
        me::me, me::usage, me::export, me::delete_me,
        sessions::create, sessions::list, sessions::get_one, sessions::update, sessions::delete_one,
        sessions::members, sessions::add_member, sessions::remove_member,
        share_links::create, share_links::list, share_links::revoke,
        media::upload, media::list, media::download, media::delete_one,
        jobs::node_types, jobs::run, jobs::list, jobs::get_one, jobs::cancel,
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

#[get("/openapi.json")]
pub async fn openapi_json() -> web::Json<utoipa::openapi::OpenApi> {
    web::Json(ApiDoc::openapi())
}
