-- Session documents: an optional snapshot (full Yjs state) plus the tail of updates after it.
-- `last_seq` hands out update sequence numbers; updating it also serialises appends per session.
CREATE TABLE documents (
    session_id   TEXT PRIMARY KEY REFERENCES studio_sessions(id) ON DELETE CASCADE,
    snapshot     BLOB,
    snapshot_seq BIGINT NOT NULL DEFAULT 0,
    last_seq     BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE doc_updates (
    session_id TEXT NOT NULL REFERENCES studio_sessions(id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (session_id, seq)
);
