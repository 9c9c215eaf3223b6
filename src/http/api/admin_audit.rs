//! Middleware: an admin API call that fails (a 4xx or 5xx after the caller was found to be an
//! admin) is still in the audit log, as `failed_call` with the method, path and status. The
//! handlers record what succeeded themselves, with the reason and the details.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use serde_json::json;

use crate::db::admin::AuditActor;
use crate::state::AppState;

/// Put in the request's extensions by [`crate::auth::AdminAuth`] once the caller is an admin.
#[derive(Clone)]
pub struct AdminCaller(pub AuditActor);

pub async fn record_failures(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let res = next.call(req).await?;
    let status = res.status();
    if status.is_client_error() || status.is_server_error() {
        let caller = res.request().extensions().get::<AdminCaller>().cloned();
        if let (Some(AdminCaller(actor)), Some(state)) = (caller, state) {
            let request = res.request();
            let detail = json!({"method": request.method().as_str(), "status": status.as_u16()});
            if let Err(error) = state
                .db
                .record_audit(
                    &actor,
                    "failed_call",
                    Some(request.path()),
                    None,
                    Some(&detail),
                )
                .await
            {
                tracing::error!(%error, "could not record a failed admin call in the audit log");
            }
        }
    }
    Ok(res)
}
