//! The caller's own account: profile, usage log, export, deletion.

use std::io::{Seek, SeekFrom, Write};

use actix_web::http::header;
use actix_web::{delete, get, post, web, HttpResponse};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
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
#[utoipa::path(security(("api_key" = [])), tag = "accounts", responses((status = 200, body = Account), (status = 401)))]
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
    let ended = state
        .db
        .delete_tokens_except(auth.account.id, &auth.token_hash)
        .await?;
    // The other logins' open sockets end with them.
    for token_hash in &ended {
        crate::lifecycle::logged_out(&state, token_hash);
    }
    tracing::info!(account = %auth.account.id, "password changed");
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct UsageQuery {
    /// How many entries, newest first (1–1000, default 100).
    pub limit: Option<i64>,
}

/// The caller's API usage log, newest first.
#[utoipa::path(security(("api_key" = ["billing:read"])), tag = "accounts", params(UsageQuery),
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

/// Chunks the finished archive is sent in.
const EXPORT_CHUNK_BYTES: usize = 64 * 1024;

/// Everything the account owns, as a zip: `account.json` plus every media file under `media/`.
///
/// The archive is written to an anonymous temporary file (the zip format needs to seek back to
/// each entry's header), each media file streamed from storage into it, then streamed out: memory
/// stays bounded whatever the account holds. At most `ATELIER_MAX_CONCURRENT_EXPORTS` exports
/// are built or sent at once (429 `too_many_exports` beyond), so disk and I/O are bounded too.
#[utoipa::path(tag = "accounts",
    responses((status = 200, content_type = "application/zip", description = "zip archive"), (status = 401), (status = 429)))]
#[get("/me/export")]
pub async fn export(state: web::Data<AppState>, auth: AccountAuth) -> Result<HttpResponse> {
    let permit = state.exports.clone().try_acquire_owned().map_err(|_| {
        Error::TooManyExports(
            "the server is building as many exports as it does at once; try again in a minute"
                .into(),
        )
    })?;
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
    let files: Vec<(String, String)> = media
        .iter()
        .map(|m| {
            (
                format!("media/{}.{}", m.id, extension_for(&m.content_type)),
                m.object_key.clone(),
            )
        })
        .collect();
    let usage_log = state.db.usage_of(account.id, 10_000).await?;
    let doc = AccountExport {
        account,
        sessions,
        media,
        usage: usage_log,
    };
    let json = serde_json::to_vec_pretty(&doc)
        .map_err(|e| Error::Internal(format!("export json: {e}")))?;
    let blobs = state.blobs.clone();
    let runtime = tokio::runtime::Handle::current();
    // Compressing and file writes are blocking work: on the blocking pool, which reads the
    // media streams through the runtime's handle.
    let archive =
        tokio::task::spawn_blocking(move || write_archive(&runtime, &blobs, &json, files))
            .await
            .map_err(|e| Error::Internal(format!("blocking pool: {e}")))??;
    let reader = tokio::fs::File::from_std(archive);
    // The permit lives as long as the body: a client that does not read holds its slot, not
    // another's.
    let body =
        futures_util::stream::try_unfold((reader, permit), |(mut reader, permit)| async move {
            let mut chunk = vec![0u8; EXPORT_CHUNK_BYTES];
            let n = reader.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            chunk.truncate(n);
            Ok(Some((Bytes::from(chunk), (reader, permit))))
        });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/zip"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"atelier-export.zip\"",
        ))
        .streaming(body))
}

/// Writes the export archive to an anonymous temporary file and returns it rewound.
fn write_archive(
    runtime: &tokio::runtime::Handle,
    blobs: &crate::storage::Blobs,
    json: &[u8],
    files: Vec<(String, String)>,
) -> Result<std::fs::File> {
    let zerr = |e: zip::result::ZipError| Error::Internal(format!("zip: {e}"));
    let ioerr = |e: std::io::Error| Error::Internal(format!("export file: {e}"));
    let spool = tempfile::tempfile().map_err(ioerr)?;
    let mut out = zip::ZipWriter::new(spool);
    let opts = zip::write::SimpleFileOptions::default();
    out.start_file("account.json", opts).map_err(zerr)?;
    out.write_all(json).map_err(ioerr)?;
    for (name, key) in files {
        // Media is already compressed; store it as is. Large files need zip64.
        out.start_file(
            name,
            opts.compression_method(zip::CompressionMethod::Stored)
                .large_file(true),
        )
        .map_err(zerr)?;
        let mut stream = runtime.block_on(blobs.get_stream(&key))?;
        while let Some(chunk) = runtime.block_on(stream.next()) {
            out.write_all(&chunk?).map_err(ioerr)?;
        }
    }
    let mut spool = out.finish().map_err(zerr)?;
    spool.seek(SeekFrom::Start(0)).map_err(ioerr)?;
    Ok(spool)
}

/// Delete the account and everything it owns: sessions (with their members, share links and
/// documents), media rows and their stored objects. Its open sockets close (4401), Pro runtimes
/// it pays for and runtimes others pay on its sessions are settled.
#[utoipa::path(tag = "accounts", responses((status = 204), (status = 401)))]
#[delete("/me")]
pub async fn delete_me(state: web::Data<AppState>, auth: AccountAuth) -> Result<HttpResponse> {
    crate::lifecycle::delete_account(&state, auth.account.id).await?;
    Ok(HttpResponse::NoContent().finish())
}
