//! Receiving one uploaded file: streamed to object storage as it arrives, under the account's
//! quota, with nothing left behind when it fails.
//!
//! Memory per upload is bounded whatever the file's size: a file that fits in one
//! [`PART_BYTES`] buffer is stored with one PUT; a larger one goes as a multipart upload, with at
//! most [`PARTS_IN_FLIGHT`] parts on their way while the next one fills. The quota is claimed
//! ahead of the bytes, [`RESERVE_STEP_BYTES`] at a time, in the database transaction that checks
//! it (`crate::db::storage_quota`), so concurrent uploads cannot overrun it. The type is sniffed
//! from the first bytes, before anything is written.
//!
//! An [`IncomingFile`] that is dropped without [`IncomingFile::commit`] — an error, a refused
//! session, a client that went away mid-upload (actix-web then drops the handler) — aborts the
//! upload, deletes what was stored and releases the reservation, on a task of its own.

use actix_multipart::Field;
use atelier_protocol::ids::{AccountId, MediaId, SessionId};
use bytes::{Bytes, BytesMut};
use futures_util::TryStreamExt;
use object_store::WriteMultipart;

use super::media::sniff;
use crate::db::media::{Media, NewMedia};
use crate::db::storage_quota::{object_key, ReservationId};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::storage::Blobs;

/// Bytes buffered before they go to storage; also the multipart part size (S3 needs ≥ 5 MiB).
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts uploading at once while the next one fills.
pub const PARTS_IN_FLIGHT: usize = 2;
/// Quota claimed at a time as the file streams in.
pub const RESERVE_STEP_BYTES: u64 = 8 * 1024 * 1024;
/// Bytes looked at to decide the file's type.
const SNIFF_BYTES: usize = 4096;

/// Where the bytes are going.
enum Sink {
    /// Still in the first buffer: stored with one PUT if the file ends here.
    Buffer(BytesMut),
    Multipart(WriteMultipart),
}

/// One file being received. Commit it, or drop it to undo everything.
pub struct IncomingFile {
    db: Db,
    blobs: Blobs,
    owner: AccountId,
    id: MediaId,
    key: String,
    reservation: ReservationId,
    content_type: &'static str,
    size: u64,
    filename: Option<String>,
    /// Set once the media row exists: nothing to undo.
    committed: bool,
    /// Where the bytes are going; an unfinished multipart upload is aborted on drop.
    sink: Sink,
    /// Whether anything may have reached storage (deleted on drop).
    stored: bool,
}

/// What bounds one upload.
pub struct UploadLimits {
    pub max_bytes: u64,
    pub quota_bytes: i64,
}

impl IncomingFile {
    /// Streams the multipart field `file` into storage; returns once all of it is stored.
    pub async fn receive(
        db: &Db,
        blobs: &Blobs,
        owner: AccountId,
        field: &mut Field,
        filename: Option<String>,
        limits: &UploadLimits,
    ) -> Result<IncomingFile> {
        let id = MediaId::new_random();
        let mut file = IncomingFile {
            db: db.clone(),
            blobs: blobs.clone(),
            owner,
            id,
            key: object_key(owner, id),
            reservation: ReservationId::new_random(),
            content_type: "",
            size: 0,
            filename,
            committed: false,
            sink: Sink::Buffer(BytesMut::new()),
            stored: false,
        };
        let mut reserved: u64 = 0;
        while let Some(chunk) = field
            .try_next()
            .await
            .map_err(super::media::multipart_error)?
        {
            file.size += chunk.len() as u64;
            if file.size > limits.max_bytes {
                return Err(Error::PayloadTooLarge(format!(
                    "the file is larger than the limit of {} bytes",
                    limits.max_bytes
                )));
            }
            if file.size > reserved {
                // What arrived must fit; a step ahead is claimed when there is room for it, so
                // a large file costs a claim per step, not per chunk.
                let needed = to_i64(file.size - reserved)?;
                let ahead = to_i64(RESERVE_STEP_BYTES.min(limits.max_bytes - reserved))?;
                let granted = db
                    .reserve_storage(
                        owner,
                        file.reservation,
                        needed,
                        needed.max(ahead),
                        limits.quota_bytes,
                    )
                    .await?;
                reserved += u64::try_from(granted).unwrap_or(0);
            }
            file.write(chunk).await?;
        }
        if file.size == 0 {
            return Err(Error::invalid("the file is empty"));
        }
        let buffer = match &mut file.sink {
            Sink::Buffer(buffer) => Some(std::mem::take(buffer)),
            Sink::Multipart(upload) => {
                upload.wait_for_capacity(0).await?;
                None
            }
        };
        match buffer {
            Some(buffer) => {
                file.decide_type(&buffer)?;
                file.stored = true;
                file.blobs.put(&file.key, buffer.freeze()).await?;
            }
            None => {
                // Finished here or aborted by the drop, never both.
                if let Sink::Multipart(upload) =
                    std::mem::replace(&mut file.sink, Sink::Buffer(BytesMut::new()))
                {
                    upload.finish().await?;
                }
            }
        }
        Ok(file)
    }

    /// Adds a chunk: into the first buffer, or — once that is full — into the multipart upload,
    /// then waits until few enough parts are in flight (the client is slowed down, not
    /// buffered).
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if let Sink::Buffer(buffer) = &mut self.sink {
            buffer.extend_from_slice(&chunk);
            let head = (self.content_type.is_empty() && buffer.len() >= SNIFF_BYTES)
                .then(|| Bytes::copy_from_slice(&buffer[..SNIFF_BYTES]));
            let full = buffer.len() >= PART_BYTES;
            if let Some(head) = head {
                self.decide_type(&head)?;
            }
            if !full {
                return Ok(());
            }
            self.stored = true;
            let upload = self.blobs.start_multipart(&self.key, PART_BYTES).await?;
            let first = match std::mem::replace(&mut self.sink, Sink::Multipart(upload)) {
                Sink::Buffer(buffer) => buffer.freeze(),
                Sink::Multipart(_) => Bytes::new(),
            };
            if let Sink::Multipart(upload) = &mut self.sink {
                upload.put(first);
            }
        } else if let Sink::Multipart(upload) = &mut self.sink {
            upload.put(chunk);
        }
        if let Sink::Multipart(upload) = &mut self.sink {
            upload.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        }
        Ok(())
    }

    fn decide_type(&mut self, head: &[u8]) -> Result<()> {
        if self.content_type.is_empty() {
            self.content_type = sniff(head).ok_or_else(|| {
                Error::UnsupportedMediaType(
                    "unsupported file type: upload PNG, JPEG, WebP, MP4, WAV or MP3".into(),
                )
            })?;
        }
        Ok(())
    }

    /// Records the media row (the reservation becomes it, in one transaction).
    pub async fn commit(mut self, session: Option<SessionId>) -> Result<Media> {
        let size = i64::try_from(self.size).map_err(|_| Error::invalid("file too large"))?;
        let media = self
            .db
            .commit_upload(
                self.reservation,
                NewMedia {
                    id: self.id,
                    owner: self.owner,
                    session,
                    content_type: self.content_type,
                    size_bytes: size,
                    object_key: &self.key,
                    filename: self.filename.as_deref(),
                },
            )
            .await?;
        self.committed = true;
        Ok(media)
    }
}

fn to_i64(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::invalid("file too large"))
}

impl Drop for IncomingFile {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let db = self.db.clone();
        let blobs = self.blobs.clone();
        let key = std::mem::take(&mut self.key);
        let reservation = self.reservation;
        let unfinished = match std::mem::replace(&mut self.sink, Sink::Buffer(BytesMut::new())) {
            Sink::Multipart(upload) => Some(upload),
            Sink::Buffer(_) => None,
        };
        let stored = self.stored;
        // Drop cannot wait: the clean-up runs on a task of its own.
        actix_web::rt::spawn(async move {
            if let Some(upload) = unfinished {
                if let Err(error) = upload.abort().await {
                    tracing::warn!(%key, %error, "could not abort a multipart upload");
                }
            }
            if stored {
                if let Err(error) = blobs.delete(&key).await {
                    tracing::error!(%key, %error, "object of a failed upload left behind");
                }
            }
            if let Err(error) = db.release_storage(reservation).await {
                tracing::warn!(%error, "could not release an upload reservation; it expires in an hour");
            }
        });
    }
}
