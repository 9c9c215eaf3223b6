-- The durable job queue and idempotent submits (issue 12). Kept column-for-column identical to
-- the postgres 0011_job_board.sql.

-- A queued job's row is its durable copy: at start-up the queued rows go back on the board in
-- their order (created_at, id). What that needs besides the plan: the runtime lease the job runs
-- under, the nodes whose images are its outputs (JSON array) and the uploaded images its nodes
-- read (JSON array of media ids). `requeues` counts the times a lost worker sent it back to the
-- queue (at most once).
ALTER TABLE jobs ADD COLUMN lease_id TEXT;
ALTER TABLE jobs ADD COLUMN output_nodes TEXT;
ALTER TABLE jobs ADD COLUMN media_ids TEXT;
ALTER TABLE jobs ADD COLUMN requeues INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_queued ON jobs(status, created_at, id);

-- `Idempotency-Key` of `POST /sessions/{id}/jobs`: one row per (account, session, key), made
-- before the job is; `request_hash` is the SHA-256 of the request body (a reused key with another
-- body is refused); `jobs` the JSON array of the job ids it made (NULL while the first request
-- is still running), `batch` (1 or 0) whether the answer was `{"jobs": [...]}`. Kept at least 24 h.
CREATE TABLE job_idempotency_keys (
    account_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    session_id   TEXT NOT NULL REFERENCES studio_sessions(id) ON DELETE CASCADE,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    jobs         TEXT,
    batch        INTEGER NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (account_id, session_id, key)
);
CREATE INDEX job_idempotency_keys_created ON job_idempotency_keys(created_at);
