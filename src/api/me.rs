//! The caller's own account: profile, usage log, export, deletion.

use std::io::Write;

use actix_web::http::header;
use actix_web::{delete, get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{password, AccountAuth};
use crate::db::accounts::Account;
use crate::db::media::Media;
use crate::db::sessions::{Member, StudioSession};
use crate::db::share_links::ShareLink;
use crate::db::usage::UsageEntry;
use crate::error::{Error, Result};
use crate::state::AppState;

/// The account of the caller.
#[utoipa::path(tag = "accounts", responses((status = 200, body = Account), (status = 401)))]
#[get("/me")]
pub async fn me(auth: AccountAuth) -> Result<web::Json<Account>> {
    Ok(web::Json(auth.account))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    pub current_password: String,
    pub new_password: String,
}

/// Change the password (the current one is required). Every other login of the account ends;
/// this one stays.
#[utoipa::path(tag = "accounts", request_body = ChangePassword,
    responses((status = 204), (status = 400, description = "the new password is too weak"),
        (status = 401), (status = 403, description = "wrong current password")))]
#[post("/me/password")]
pub async fn change_password(
    state: web::Data<AppState>,
    auth: AccountAuth,
    body: web::Json<ChangePassword>,
) -> Result<HttpResponse> {
    let body = body.into_inner();
    let stored = state
        .db
        .password_hash(auth.account.id)
        .await?
        .ok_or(Error::NotFound("account"))?;
    if !password::verify(body.current_password, stored).await? {
        return Err(Error::forbidden("the current password is wrong"));
    }
    password::check_strength(&body.new_password)?;
    let hash = password::hash(body.new_password).await?;
    state.db.set_password_hash(auth.account.id, &hash).await?;
    state
        .db
        .delete_tokens_except(auth.account.id, &auth.token_hash)
        .await?;
    tracing::info!(account = %auth.account.id, "password changed");
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct UsageQuery {
    /// How many entries, newest first (1–1000, default 100).
    pub limit: Option<i64>,
}

/// The caller's API usage log, newest first.
#[utoipa::path(tag = "accounts", params(UsageQuery),
    responses((status = 200, body = Vec<UsageEntry>), (status = 401)))]
#[get("/me/usage")]
pub async fn usage(
    state: web::Data<AppState>,
    auth: AccountAuth,
    query: web::Query<UsageQuery>,
) -> Result<web::Json<Vec<UsageEntry>>> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Error::invalid("limit must be between 1 and 1000"));
    }
    Ok(web::Json(state.db.usage_of(auth.account.id, limit).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionExport {
    pub session: StudioSession,
    pub role: atelier_protocol::Role,
    /// Members and share links are included for sessions the account owns.
    pub members: Vec<Member>,
    pub share_links: Vec<ShareLink>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountExport {
    pub account: Account,
    pub sessions: Vec<SessionExport>,
    pub media: Vec<Media>,
    pub usage: Vec<UsageEntry>,
}

fn extension_for(content_type: &str) -> &'static str {
    match content_type {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        "video/mp4" => "mp4",
        "audio/x-wav" | "audio/wav" => "wav",
        "audio/mpeg" => "mp3",
        _ => "bin",
    }
}

/// Everything the account owns, as a zip: `account.json` plus every media file under `media/`.
#[utoipa::path(tag = "accounts",
    responses((status = 200, content_type = "application/zip", description = "zip archive"), (status = 401)))]
#[get("/me/export")]
pub async fn export(state: web::Data<AppState>, auth: AccountAuth) -> Result<HttpResponse> {
    let account = auth.account;
    let mut sessions = Vec::new();
    for (session, role) in state.db.sessions_of(account.id).await? {
        let owned = session.owner_id == account.id;
        let (members, share_links) = if owned {
            (
                state.db.members(session.id).await?,
                state.db.share_links(session.id).await?,
            )
        } else {
            (Vec::new(), Vec::new())
        };
        sessions.push(SessionExport {
            session,
            role,
            members,
            share_links,
        });
    }
    let media = state.db.media_of(account.id).await?;
    let mut files = Vec::with_capacity(media.len());
    for m in &media {
        let bytes = state.blobs.get(&m.object_key).await?;
        files.push((
            format!("media/{}.{}", m.id, extension_for(&m.content_type)),
            bytes,
        ));
    }
    let usage_log = state.db.usage_of(account.id, 10_000).await?;
    let doc = AccountExport {
        account,
        sessions,
        media,
        usage: usage_log,
    };
    let json = serde_json::to_vec_pretty(&doc)
        .map_err(|e| Error::Internal(format!("export json: {e}")))?;
    // Compressing is CPU work: keep it off the async executor.
    let zip = web::block(move || -> Result<Vec<u8>> {
        let zerr = |e: zip::result::ZipError| Error::Internal(format!("zip: {e}"));
        let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default();
        out.start_file("account.json", opts).map_err(zerr)?;
        out.write_all(&json)
            .map_err(|e| Error::Internal(format!("zip write: {e}")))?;
        for (name, bytes) in files {
            // Media is already compressed; store it as is.
            out.start_file(
                name,
                opts.compression_method(zip::CompressionMethod::Stored),
            )
            .map_err(zerr)?;
            out.write_all(&bytes)
                .map_err(|e| Error::Internal(format!("zip write: {e}")))?;
        }
        Ok(out.finish().map_err(zerr)?.into_inner())
    })
    .await
    .map_err(|e| Error::Internal(format!("blocking pool: {e}")))??;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/zip"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"atelier-export.zip\"",
        ))
        .body(zip))
}

/// Delete the account and everything it owns: sessions (with their members, share links and
/// documents), media rows and their stored objects.
#[utoipa::path(tag = "accounts", responses((status = 204), (status = 401)))]
#[delete("/me")]
pub async fn delete_me(state: web::Data<AppState>, auth: AccountAuth) -> Result<HttpResponse> {
    let account = auth.account.id;
    let media = state.db.media_of(account).await?;
    // Rows first (one cascade), then objects: a failure in between leaves unreachable objects,
    // never rows that point at deleted bytes. Object failures are retried once and logged.
    for (session, _) in state.db.sessions_of(account).await? {
        if session.owner_id == account {
            state
                .live
                .close_session(session.id, "the session was deleted")
                .await;
        } else {
            state.live.set_role(session.id, account, None).await;
        }
    }
    state.db.delete_account(account).await?;
    for m in media {
        if let Err(first) = state.blobs.delete(&m.object_key).await {
            tracing::warn!(key = %m.object_key, error = %first, "object delete failed; retrying");
            if let Err(e) = state.blobs.delete(&m.object_key).await {
                tracing::error!(key = %m.object_key, error = %e, "object left behind after account deletion");
            }
        }
    }
    tracing::info!(%account, "account deleted");
    Ok(HttpResponse::NoContent().finish())
}
