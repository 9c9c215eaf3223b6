//! Media: uploads checked by sniffing their bytes, stored in object storage, access-checked reads.

use actix_multipart::Multipart;
use actix_web::http::header;
use actix_web::{delete, get, post, web, HttpResponse};
use atelier_protocol::ids::{MediaId, SessionId};
use bytes::{Bytes, BytesMut};
use futures_util::TryStreamExt;
use utoipa::ToSchema;

use super::media_upload::{IncomingFile, UploadLimits};
use crate::auth::{AccountAuth, Auth};
use crate::authz::{authorize, can_read_media, Action};
use crate::db::media::Media;
use crate::error::{Error, Result};
use crate::state::AppState;

/// What may be uploaded, decided from the bytes themselves (never from the client's header).
pub const ALLOWED_TYPES: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/webp",
    "video/mp4",
    "audio/x-wav",
    "audio/mpeg",
];

const MAX_TEXT_FIELD_BYTES: usize = 256;
const MAX_FILENAME_CHARS: usize = 255;

/// The multipart form of an upload.
#[allow(dead_code)] // documents the form for the OpenAPI schema
#[derive(ToSchema)]
pub struct UploadForm {
    /// The file (PNG, JPEG, WebP, MP4, WAV or MP3).
    #[schema(format = Binary, value_type = String)]
    file: Vec<u8>,
    /// A session that uses this media: its members and share links may then read it.
    session_id: Option<SessionId>,
}

/// The content type of the bytes, if it is one we accept.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    let kind = infer::get(bytes)?;
    let mime = match kind.mime_type() {
        "audio/wav" | "audio/x-wav" => "audio/x-wav",
        other => other,
    };
    ALLOWED_TYPES
        .iter()
        .copied()
        .find(|allowed| *allowed == mime)
}

pub(crate) fn multipart_error(e: actix_multipart::MultipartError) -> Error {
    Error::invalid(format!("malformed multipart upload: {e}"))
}

async fn read_small_field(field: &mut actix_multipart::Field, limit: usize) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = field.try_next().await.map_err(multipart_error)? {
        if buf.len() + chunk.len() > limit {
            return Err(Error::invalid(format!(
                "the field {:?} is longer than {limit} bytes",
                field.name().unwrap_or("")
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Upload a file (multipart field `file`, optional field `session_id`). The file streams to
/// object storage as it arrives; its bytes count against the quota from the first one.
#[utoipa::path(security(("api_key" = ["sessions:write"])), tag = "media", request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 201, body = Media), (status = 400), (status = 413), (status = 415)))]
#[post("/media")]
pub async fn upload(
    state: web::Data<AppState>,
    auth: AccountAuth,
    mut form: Multipart,
) -> Result<HttpResponse> {
    let limits = UploadLimits {
        max_bytes: state.config.max_upload_bytes,
        quota_bytes: i64::try_from(state.config.storage_quota_bytes).unwrap_or(i64::MAX),
    };
    let principal = crate::auth::Principal::Account(auth.account.clone());
    let mut file: Option<IncomingFile> = None;
    let mut session: Option<SessionId> = None;
    while let Some(mut field) = form.try_next().await.map_err(multipart_error)? {
        match field.name().unwrap_or("") {
            "file" => {
                if file.is_some() {
                    return Err(Error::invalid("send one `file` field per upload"));
                }
                let filename = field
                    .content_disposition()
                    .and_then(|cd| cd.get_filename())
                    .map(|f| {
                        f.chars()
                            .filter(|c| !c.is_control())
                            .take(MAX_FILENAME_CHARS)
                            .collect()
                    });
                let received = IncomingFile::receive(
                    &state.db,
                    &state.blobs,
                    auth.account.id,
                    &mut field,
                    filename,
                    &limits,
                )
                .await?;
                file = Some(received);
            }
            "session_id" => {
                if session.is_some() {
                    return Err(Error::invalid("send one `session_id` field per upload"));
                }
                let raw = read_small_field(&mut field, MAX_TEXT_FIELD_BYTES).await?;
                let text = std::str::from_utf8(&raw)
                    .map_err(|_| Error::invalid("session_id must be text"))?;
                let id: SessionId = text.trim().parse().map_err(|_| {
                    Error::invalid(format!("session_id {text:?} is not a session id"))
                })?;
                // Checked as soon as it is known: before the file, when it comes first.
                authorize(&state, &principal, id, Action::EditDocument).await?;
                session = Some(id);
            }
            other => {
                return Err(Error::invalid(format!(
                    "unexpected form field {other:?}; expected `file` and optionally `session_id`"
                )))
            }
        }
    }
    let file = file.ok_or_else(|| Error::invalid("the upload has no `file` field"))?;
    if let Some(id) = session {
        // Again now that the file is stored: access may have ended meanwhile.
        authorize(&state, &principal, id, Action::EditDocument).await?;
    }
    let media = file.commit(session).await?;
    Ok(HttpResponse::Created().json(media))
}

/// The caller's media.
#[utoipa::path(security(("api_key" = ["sessions:read"])), tag = "media", responses((status = 200, body = Vec<Media>), (status = 401)))]
#[get("/media")]
pub async fn list(state: web::Data<AppState>, auth: AccountAuth) -> Result<web::Json<Vec<Media>>> {
    Ok(web::Json(state.db.media_of(auth.account.id).await?))
}

/// Most images `GET /sessions/{id}/media` lists.
const SESSION_IMAGES_LIMIT: i64 = 500;

/// The session's images, newest first: every member's uploads for it and its runs' outputs —
/// what an `image-input` node can pick. Readable by whoever may view the session.
#[utoipa::path(security(("api_key" = ["sessions:read"])), tag = "media", params(("id" = SessionId, Path,)),
    responses((status = 200, body = Vec<Media>), (status = 401), (status = 403), (status = 404)))]
#[get("/sessions/{id}/media")]
pub async fn session_images(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<SessionId>,
) -> Result<web::Json<Vec<Media>>> {
    let (session, _) = authorize(&state, &auth.principal, *id, Action::View).await?;
    Ok(web::Json(
        state
            .db
            .images_of_session(session.id, SESSION_IMAGES_LIMIT)
            .await?,
    ))
}

/// The file's bytes (its owner, members of a session that uses it, and that session's share links).
#[utoipa::path(security(("api_key" = ["sessions:read"])), tag = "media", params(("id" = MediaId, Path,)),
    responses((status = 200, description = "the file"), (status = 401), (status = 404)))]
#[get("/media/{id}")]
pub async fn download(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<MediaId>,
) -> Result<HttpResponse> {
    let media = state.db.media(*id).await?.ok_or(Error::NotFound("media"))?;
    if !can_read_media(&state, &auth.principal, &media).await? {
        return Err(Error::NotFound("media"));
    }
    // Streamed from storage: a large file is never held whole.
    let bytes = state.blobs.get_stream(&media.object_key).await?;
    let size = u64::try_from(media.size_bytes).unwrap_or(0);
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, media.content_type.as_str()))
        .insert_header((header::CACHE_CONTROL, "private, max-age=3600"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .no_chunking(size)
        .streaming(bytes.map_err(Error::from)))
}

/// Delete media the caller owns, bytes included.
#[utoipa::path(security(("api_key" = ["sessions:write"])), tag = "media", params(("id" = MediaId, Path,)),
    responses((status = 204), (status = 403), (status = 404)))]
#[delete("/media/{id}")]
pub async fn delete_one(
    state: web::Data<AppState>,
    auth: Auth,
    id: web::Path<MediaId>,
) -> Result<HttpResponse> {
    let media = state.db.media(*id).await?.ok_or(Error::NotFound("media"))?;
    if auth.principal.account_id() != Some(media.owner_id) {
        return Err(if can_read_media(&state, &auth.principal, &media).await? {
            Error::forbidden("only the media's owner can delete it")
        } else {
            Error::NotFound("media")
        });
    }
    state.db.delete_media(media.id).await?;
    state.blobs.delete(&media.object_key).await?;
    Ok(HttpResponse::NoContent().finish())
}
