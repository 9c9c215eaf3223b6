//! The HTTP API under `/api/v1`: one module per resource, errors in one shape.

pub mod admin;
pub mod admin_audit;
pub mod api_keys;
pub mod auth;
pub mod billing;
pub mod body;
pub mod graph;
pub mod invitations;
pub mod jobs;
pub mod me;
pub mod me_events;
pub mod media;
pub mod media_upload;
pub mod openapi;
pub mod ops;
pub mod rate_limit_headers;
pub mod runtime;
pub mod sessions;
pub mod share_links;
pub mod usage_log;
pub mod versions;
pub mod webhooks;

use actix_web::{middleware, web, HttpRequest};

use crate::error::{extract, Error};

/// Registers `/api/v1/...` and `/metrics`.
pub fn configure(cfg: &mut web::ServiceConfig, max_json_bytes: usize) {
    cfg.route("/metrics", web::get().to(ops::metrics)).service(
        web::scope("/api/v1")
            .wrap(middleware::from_fn(admin_audit::record_failures))
            .wrap(middleware::from_fn(usage_log::record))
            .wrap(middleware::from_fn(rate_limit_headers::add))
            .app_data(
                web::JsonConfig::default()
                    .limit(max_json_bytes)
                    .error_handler(extract::json),
            )
            .app_data(web::PathConfig::default().error_handler(extract::path))
            .app_data(web::QueryConfig::default().error_handler(extract::query))
            .service(auth::signup)
            .service(auth::login)
            .service(auth::logout)
            .service(me::me)
            .service(me_events::events)
            .service(me::usage)
            .service(me::export)
            .service(me::delete_me)
            .service(api_keys::create)
            .service(api_keys::list)
            .service(api_keys::revoke)
            .service(sessions::create)
            .service(sessions::list)
            .service(sessions::get_one)
            .service(sessions::update)
            .service(sessions::delete_one)
            .service(sessions::members)
            .service(sessions::add_member)
            .service(sessions::change_role)
            .service(sessions::remove_member)
            .service(invitations::create)
            .service(invitations::list)
            .service(invitations::revoke)
            .service(invitations::preview)
            .service(invitations::accept)
            .service(invitations::mine)
            .service(invitations::accept_mine)
            .service(invitations::decline_mine)
            .service(graph::get_graph)
            .service(graph::put_graph)
            .service(graph::patch_graph)
            .service(versions::list)
            .service(versions::create)
            .service(versions::diff)
            .service(versions::restore)
            .service(versions::get_one)
            .service(versions::delete_one)
            .service(share_links::create)
            .service(share_links::list)
            .service(share_links::revoke)
            .service(media::upload)
            .service(media::list)
            .service(media::session_images)
            .service(media::download)
            .service(media::delete_one)
            .service(runtime::start)
            .service(runtime::get_one)
            .service(runtime::stop)
            .service(runtime::extend)
            .service(billing::prices)
            .service(billing::balance)
            .service(billing::ledger)
            .service(billing::usage)
            .service(billing::webhook)
            .service(billing::packs)
            .service(billing::checkout)
            .service(billing::ledger_csv)
            .service(billing::statement)
            .service(me::change_password)
            .service(admin::accounts)
            .service(admin::account)
            .service(admin::grant_credits)
            .service(admin::suspend)
            .service(admin::unsuspend)
            .service(admin::set_role)
            .service(admin::workers)
            .service(admin::drain)
            .service(admin::create_worker_token)
            .service(admin::revoke_worker_token)
            .service(admin::leases)
            .service(admin::stop_lease)
            .service(admin::jobs)
            .service(admin::cancel_job)
            .service(admin::audit_log)
            .service(ops::healthz)
            .service(ops::readyz)
            .service(jobs::node_types)
            .service(jobs::run)
            .service(jobs::list)
            .service(jobs::get_one)
            .service(jobs::cancel)
            .service(webhooks::get_secret)
            .service(webhooks::rotate)
            .service(webhooks::deliveries)
            .service(crate::jobs::worker_socket::worker_ws)
            .service(openapi::openapi_json)
            .default_service(web::to(not_found)),
    );
}

async fn not_found(req: HttpRequest) -> actix_web::HttpResponse {
    actix_web::ResponseError::error_response(&Error::NoRoute(format!(
        "no API route {} {}",
        req.method(),
        req.path()
    )))
}
