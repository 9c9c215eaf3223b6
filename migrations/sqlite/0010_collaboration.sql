-- Working together (issue 14): version history and invitations. Kept column-for-column
-- identical to the other engine's 0010_collaboration.sql (PostgreSQL).

-- Document states kept by versions, stored once per session however many versions show them
-- (a job run on an unchanged graph adds a version, not a copy). `size_bytes` is what the
-- session's version storage counts.
CREATE TABLE version_states (
    session_id TEXT NOT NULL REFERENCES studio_sessions(id) ON DELETE CASCADE,
    state_hash TEXT NOT NULL,
    state      BLOB NOT NULL,
    size_bytes BIGINT NOT NULL,
    PRIMARY KEY (session_id, state_hash)
);

-- Versions of a session's document. `kind`: auto (a burst of editing settled), named (an
-- editor named the current state), job (the graph a job ran), restore (the document after a
-- restore). `authors`: JSON array of the account ids whose edits an automatic version holds.
CREATE TABLE session_versions (
    id            TEXT PRIMARY KEY,
    session_id    TEXT NOT NULL REFERENCES studio_sessions(id) ON DELETE CASCADE,
    kind          TEXT NOT NULL,
    name          TEXT,
    created_by    TEXT REFERENCES accounts(id) ON DELETE SET NULL,
    authors       TEXT NOT NULL DEFAULT '[]',
    restored_from TEXT,
    state_hash    TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX session_versions_session ON session_versions(session_id, created_at);

-- The version a job ran (NULL for jobs from before versions, or whose version was evicted).
ALTER TABLE jobs ADD COLUMN version_id TEXT;

-- Invitations to a session. A link invitation has `token_hash` (SHA-256 of its secret; the
-- secret is shown once) and may be used `max_uses` times (NULL: any number) until `expires_at`
-- or revocation. An email invitation has `email` (normalised) and becomes a membership when an
-- account with that email signs up (or accepts it while signed in).
CREATE TABLE session_invitations (
    id          TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES studio_sessions(id) ON DELETE CASCADE,
    role        TEXT NOT NULL,
    token_hash  TEXT UNIQUE,
    email       TEXT,
    created_by  TEXT REFERENCES accounts(id) ON DELETE SET NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    max_uses    BIGINT,
    uses        BIGINT NOT NULL DEFAULT 0,
    revoked_at  BIGINT
);
CREATE INDEX session_invitations_session ON session_invitations(session_id);
CREATE INDEX session_invitations_email ON session_invitations(email);
