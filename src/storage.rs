//! Object storage for media bytes, through object_store: `file://`, `memory://`, `s3://`.
//!
//! The local-filesystem store runs its blocking file I/O on tokio's blocking pool (object_store
//! does that itself), so nothing here blocks the async executor.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

#[derive(Debug, thiserror::Error)]
pub enum StorageConfigError {
    #[error("ATELIER_STORAGE_URL must start with file://, memory:// or s3://, got {0:?}")]
    UnsupportedScheme(String),
    #[error("ATELIER_STORAGE_URL {url:?}: {reason}")]
    Invalid { url: String, reason: String },
}

/// A cheap-to-clone handle to the configured object store.
#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
}

impl Blobs {
    pub async fn from_url(url: &str) -> Result<Blobs, StorageConfigError> {
        let invalid = |reason: String| StorageConfigError::Invalid {
            url: url.to_string(),
            reason,
        };
        let store: Arc<dyn ObjectStore> = if let Some(dir) = url.strip_prefix("file://") {
            if dir.is_empty() {
                return Err(invalid("a directory is required after file://".into()));
            }
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| invalid(format!("cannot create the directory: {e}")))?;
            Arc::new(LocalFileSystem::new_with_prefix(dir).map_err(|e| invalid(e.to_string()))?)
        } else if url == "memory://" || url == "memory:" {
            Arc::new(InMemory::new())
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("a bucket name is required after s3://".into()));
            }
            let s3 = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| invalid(e.to_string()))?;
            if prefix.trim_matches('/').is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(PrefixStore::new(s3, prefix.trim_matches('/')))
            }
        } else {
            return Err(StorageConfigError::UnsupportedScheme(url.to_string()));
        };
        Ok(Blobs { store })
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> object_store::Result<()> {
        self.store
            .put(&Path::from(key), PutPayload::from_bytes(bytes))
            .await?;
        Ok(())
    }

    /// Starts a multipart upload to `key`, sent in parts of `part_bytes` (at least 5 MiB for
    /// S3). Finish it, or abort it — an upload dropped unfinished may leave parts behind.
    pub async fn start_multipart(
        &self,
        key: &str,
        part_bytes: usize,
    ) -> object_store::Result<WriteMultipart> {
        let upload = self.store.put_multipart(&Path::from(key)).await?;
        Ok(WriteMultipart::new_with_chunk_size(upload, part_bytes))
    }

    /// The object's bytes as a stream of chunks (nothing held whole in memory).
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> object_store::Result<BoxStream<'static, object_store::Result<Bytes>>> {
        Ok(self.store.get(&Path::from(key)).await?.into_stream())
    }

    pub async fn get(&self, key: &str) -> object_store::Result<Bytes> {
        self.store.get(&Path::from(key)).await?.bytes().await
    }

    /// Deletes an object; deleting one that is already gone is not an error.
    pub async fn delete(&self, key: &str) -> object_store::Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn exists(&self, key: &str) -> object_store::Result<bool> {
        match self.store.head(&Path::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Readiness: a small write and read round trip.
    pub async fn check(&self) -> object_store::Result<()> {
        let key = ".atelier-readyz";
        self.put(key, Bytes::from_static(b"ok")).await?;
        self.get(key).await.map(|_| ())
    }
}
