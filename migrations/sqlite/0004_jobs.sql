-- Jobs: one run of (part of) a session's graph. `plan` is the compiled steps as JSON.
CREATE TABLE jobs (
    id          TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES studio_sessions(id) ON DELETE CASCADE,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    status      TEXT NOT NULL,
    plan        TEXT NOT NULL,
    worker_id   TEXT,
    device      TEXT,
    error       TEXT,
    outputs     TEXT NOT NULL DEFAULT '[]',
    created_at  BIGINT NOT NULL,
    started_at  BIGINT,
    finished_at BIGINT
);
CREATE INDEX jobs_session ON jobs(session_id, created_at);
CREATE INDEX jobs_status ON jobs(status);

-- Tokens that let a worker host connect (made by `atelier admin create-worker-token`).
CREATE TABLE worker_tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
