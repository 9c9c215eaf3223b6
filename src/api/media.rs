//! Media: uploads checked by sniffing their bytes, stored in object storage, access-checked reads.

use actix_multipart::Multipart;
use actix_web::http::header;
use actix_web::{delete, get, post, web, HttpResponse};
use atelier_protocol::ids::{MediaId, SessionId};
use bytes::{Bytes, BytesMut};
use futures_util::TryStreamExt;
use utoipa::ToSchema;

use crate::auth::{AccountAuth, Auth};
use crate::authz::{authorize, can_read_media, Action};
use crate::db::media::{Media, NewMedia};
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

fn multipart_error(e: actix_multipart::MultipartError) -> Error {
    Error::invalid(format!("malformed multipart upload: {e}"))
}

async fn read_field(
    field: &mut actix_multipart::Field,
    limit: u64,
    too_large: impl Fn() -> Error,
) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = field.try_next().await.map_err(multipart_error)? {
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Upload a file (multipart field `file`, optional field `session_id`).
#[utoipa::path(tag = "media", request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 201, body = Media), (status = 400), (status = 413), (status = 415)))]
#[post("/media")]
pub async fn upload(
    state: web::Data<AppState>,
    auth: AccountAuth,
    mut form: Multipart,
) -> Result<HttpResponse> {
    let limit = state.config.max_upload_bytes;
    let mut file: Option<(Bytes, Option<String>)> = None;
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
                let bytes = read_field(&mut field, limit, || {
                    Error::PayloadTooLarge(format!(
                        "the file is larger than the limit of {limit} bytes"
                    ))
                })
                .await?;
                file = Some((bytes, filename));
            }
            "session_id" => {
                let raw = read_field(&mut field, MAX_TEXT_FIELD_BYTES as u64, || {
                    Error::invalid("session_id is too long")
                })
                .await?;
                let text = std::str::from_utf8(&raw)
                    .map_err(|_| Error::invalid("session_id must be text"))?;
                session = Some(text.trim().parse().map_err(|_| {
                    Error::invalid(format!("session_id {text:?} is not a session id"))
                })?);
            }
            other => {
                return Err(Error::invalid(format!(
                    "unexpected form field {other:?}; expected `file` and optionally `session_id`"
                )))
            }
        }
    }
    let (bytes, filename) = file.ok_or_else(|| Error::invalid("the upload has no `file` field"))?;
    if bytes.is_empty() {
        return Err(Error::invalid("the file is empty"));
    }
    let content_type = sniff(&bytes).ok_or_else(|| {
        Error::UnsupportedMediaType(
            "unsupported file type: upload PNG, JPEG, WebP, MP4, WAV or MP3".into(),
        )
    })?;
    if let Some(session_id) = session {
        authorize(
            &state,
            &crate::auth::Principal::Account(auth.account.clone()),
            session_id,
            Action::EditDocument,
        )
        .await?;
    }
    let size = i64::try_from(bytes.len()).map_err(|_| Error::invalid("file too large"))?;
    let used = state.db.media_bytes_of(auth.account.id).await?;
    let quota = i64::try_from(state.config.storage_quota_bytes).unwrap_or(i64::MAX);
    if used.saturating_add(size) > quota {
        return Err(Error::QuotaExceeded(format!(
            "storage quota exceeded: {used} of {quota} bytes used, this file needs {size} more; delete media to make room"
        )));
    }
    let id = MediaId::new_random();
    let key = format!("media/{}/{}", auth.account.id, id);
    state.blobs.put(&key, bytes).await?;
    let inserted = state
        .db
        .insert_media(NewMedia {
            id,
            owner: auth.account.id,
            session,
            content_type,
            size_bytes: size,
            object_key: &key,
            filename: filename.as_deref(),
        })
        .await;
    match inserted {
        Ok(media) => Ok(HttpResponse::Created().json(media)),
        Err(e) => {
            // Do not leave bytes behind that no row points at.
            if let Err(del) = state.blobs.delete(&key).await {
                tracing::error!(%key, error = %del, "orphaned object after failed insert");
            }
            Err(e)
        }
    }
}

/// The caller's media.
#[utoipa::path(tag = "media", responses((status = 200, body = Vec<Media>), (status = 401)))]
#[get("/media")]
pub async fn list(state: web::Data<AppState>, auth: AccountAuth) -> Result<web::Json<Vec<Media>>> {
    Ok(web::Json(state.db.media_of(auth.account.id).await?))
}

/// The file's bytes (its owner, members of a session that uses it, and that session's share links).
#[utoipa::path(tag = "media", params(("id" = MediaId, Path,)),
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
    let bytes = state.blobs.get(&media.object_key).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, media.content_type.as_str()))
        .insert_header((header::CACHE_CONTROL, "private, max-age=3600"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(bytes))
}

/// Delete media the caller owns, bytes included.
#[utoipa::path(tag = "media", params(("id" = MediaId, Path,)),
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
