-- Cached node results: a node's output tensors, content-addressed by `cache_key` (a hash of its
-- type, model, parameters, seed and upstream keys), kept per session as media of the session.
-- `tensors` is {"port": "media id"}; `display_media` the PNG people saw. The session's entries
-- together stay under ATELIER_NODE_CACHE_MAX_BYTES, evicting the least recently used.
CREATE TABLE node_cache (
    session_id    TEXT NOT NULL REFERENCES studio_sessions(id) ON DELETE CASCADE,
    cache_key     TEXT NOT NULL,
    node_type     TEXT NOT NULL,
    tensors       TEXT NOT NULL,
    display_media TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT NOT NULL,
    PRIMARY KEY (session_id, cache_key)
);
CREATE INDEX node_cache_lru ON node_cache(session_id, last_used_at);
