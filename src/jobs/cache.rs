//! Cached nodes: a node whose type, model, parameters, seed (random nodes) and upstream results
//! are unchanged since a stored result reuses it. Results are content-addressed by the step's
//! `cache_key` (see [`Plan::compute_keys`]); an entry holds the node's output tensors, byte-exact,
//! as media of the session, plus the PNG shown for it. A cached node uses no worker time: when
//! every node of a job is cached the job finishes on the server, without a worker or a runtime.
//!
//! Entries are evicted least-recently-used beyond `ATELIER_NODE_CACHE_MAX_BYTES` per session,
//! and removed with their session.

use std::collections::{BTreeMap, BTreeSet};

use atelier_protocol::ids::{AccountId, MediaId, SessionId};
use atelier_protocol::worker::ProvidedTensor;
use bytes::Bytes;

use super::graph::Plan;
use crate::db::media::NewMedia;
use crate::db::node_cache::CacheEntry;
use crate::db::Db;
use crate::error::Result;
use crate::storage::Blobs;

/// The content type of a stored tensor (see `inference::tensor`).
pub const TENSOR_CONTENT_TYPE: &str = "application/x-atelier-tensor";

/// What the cache found for a plan: the PNG of each cached node, and the cached tensors the
/// nodes that do run consume.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    pub cached: BTreeMap<String, MediaId>,
    pub provided: Vec<ProvidedTensor>,
}

/// Marks the plan's cached steps (`step.cached`) and loads the tensors the others need. Nodes in
/// `forced` (run from a node: it and what depends on it) are not looked up. A cached node whose
/// tensor cannot be read any more runs again.
pub async fn resolve(
    db: &Db,
    blobs: &Blobs,
    session: SessionId,
    plan: &mut Plan,
    forced: &BTreeSet<String>,
    enabled: bool,
) -> Result<Resolution> {
    let mut entries: BTreeMap<String, CacheEntry> = BTreeMap::new();
    if enabled {
        for step in &mut plan.steps {
            if forced.contains(&step.node_id) {
                continue;
            }
            if let Some(entry) = db.cache_hit(session, &step.cache_key).await? {
                step.cached = true;
                entries.insert(step.node_id.clone(), entry);
            }
        }
    }
    // From the last step back: a running step's inputs come from earlier steps, so a cached
    // source that has to run after all is visited later in this loop.
    let mut provided: BTreeMap<(String, String), Bytes> = BTreeMap::new();
    for i in (0..plan.steps.len()).rev() {
        if plan.steps[i].cached {
            continue;
        }
        let inputs: Vec<(String, String)> = plan.steps[i]
            .inputs
            .values()
            .map(|r| (r.node_id.clone(), r.port.clone()))
            .collect();
        for (node, port) in inputs {
            let Some(source) = plan.steps.iter_mut().find(|s| s.node_id == node) else {
                continue;
            };
            if !source.cached || provided.contains_key(&(node.clone(), port.clone())) {
                continue;
            }
            let loaded = match entries.get(&node).and_then(|e| e.tensors.get(&port)) {
                Some(media) => load_tensor(db, blobs, *media).await,
                None => None,
            };
            match loaded {
                Some(bytes) => {
                    provided.insert((node, port), bytes);
                }
                None => {
                    tracing::warn!(%session, node = %node, "cached tensor unreadable: the node runs again");
                    source.cached = false;
                    entries.remove(&node);
                }
            }
        }
    }
    Ok(Resolution {
        cached: entries
            .into_iter()
            .map(|(node, e)| (node, e.display))
            .collect(),
        provided: provided
            .into_iter()
            .map(|((node_id, port), data)| ProvidedTensor {
                node_id,
                port,
                data,
            })
            .collect(),
    })
}

async fn load_tensor(db: &Db, blobs: &Blobs, media: MediaId) -> Option<Bytes> {
    let row = db.media(media).await.ok()??;
    blobs.get(&row.object_key).await.ok()
}

/// A finished node's result to keep.
pub struct NewEntry<'a> {
    pub session: SessionId,
    pub account: AccountId,
    pub node_id: &'a str,
    pub node_type: &'a str,
    pub key: &'a str,
    pub display: MediaId,
    /// Port → tensor bytes.
    pub tensors: Vec<(String, Vec<u8>)>,
}

/// Stores a node's tensors as media of the session and records the entry, then evicts the
/// session's least recently used entries beyond `max_bytes`. Failures are logged: a result not
/// cached is only computed again.
pub async fn store(db: &Db, blobs: &Blobs, new: NewEntry<'_>, max_bytes: u64) {
    if max_bytes == 0 || new.key.is_empty() {
        return;
    }
    let mut tensors = BTreeMap::new();
    let mut size = 0i64;
    for (port, bytes) in new.tensors {
        let id = MediaId::new_random();
        let key = format!("media/{}/{id}", new.account);
        let len = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        let filename = format!("{}.{port}.tensor", new.node_id);
        let stored = async {
            blobs.put(&key, Bytes::from(bytes)).await?;
            db.insert_media(NewMedia {
                id,
                owner: new.account,
                session: Some(new.session),
                content_type: TENSOR_CONTENT_TYPE,
                size_bytes: len,
                object_key: &key,
                filename: Some(&filename),
            })
            .await?;
            Ok::<_, crate::error::Error>(())
        }
        .await;
        if let Err(e) = stored {
            tracing::warn!(node = new.node_id, error = %e, "could not cache a node's result");
            remove_media(db, blobs, tensors.values().copied()).await;
            return;
        }
        size = size.saturating_add(len);
        tensors.insert(port, id);
    }
    let entry = CacheEntry {
        key: new.key.to_string(),
        node_type: new.node_type.to_string(),
        tensors,
        display: new.display,
        size_bytes: size,
    };
    match db.cache_put(new.session, &entry).await {
        Ok(true) => {}
        Ok(false) => {
            // Another job stored the same result first.
            remove_media(db, blobs, entry.tensors.values().copied()).await;
        }
        Err(e) => {
            tracing::warn!(node = new.node_id, error = %e, "could not record a cache entry");
            remove_media(db, blobs, entry.tensors.values().copied()).await;
            return;
        }
    }
    evict(db, blobs, new.session, max_bytes).await;
}

/// Drops least recently used entries until the session's cache fits `max_bytes`.
pub async fn evict(db: &Db, blobs: &Blobs, session: SessionId, max_bytes: u64) {
    let max = i64::try_from(max_bytes).unwrap_or(i64::MAX);
    loop {
        match db.cache_bytes(session).await {
            Ok(total) if total > max => {}
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(%session, error = %e, "node cache size unknown");
                return;
            }
        }
        let Ok(Some(lru)) = db.cache_lru(session).await else {
            return;
        };
        if let Err(e) = db.cache_remove(session, &lru.key).await {
            tracing::warn!(%session, error = %e, "could not evict a cache entry");
            return;
        }
        tracing::debug!(%session, key = %lru.key, bytes = lru.size_bytes, "cache entry evicted");
        remove_media(db, blobs, lru.tensors.values().copied()).await;
    }
}

/// Removes a session's cache (its tensors' media and objects); called before the session row
/// goes, since media outlive their session otherwise.
pub async fn purge_session(db: &Db, blobs: &Blobs, session: SessionId) {
    match db.cache_entries(session).await {
        Ok(entries) => {
            for e in entries {
                let _ = db.cache_remove(session, &e.key).await;
                remove_media(db, blobs, e.tensors.values().copied()).await;
            }
        }
        Err(e) => tracing::warn!(%session, error = %e, "could not list the node cache"),
    }
}

async fn remove_media(db: &Db, blobs: &Blobs, ids: impl Iterator<Item = MediaId>) {
    for id in ids {
        if let Ok(Some(m)) = db.media(id).await {
            if let Err(e) = blobs.delete(&m.object_key).await {
                tracing::warn!(media = %id, error = %e, "could not delete a cached tensor");
            }
        }
        if let Err(e) = db.delete_media(id).await {
            tracing::warn!(media = %id, error = %e, "could not delete a cached tensor's row");
        }
    }
}
