-- The public API (PostgreSQL). Kept column-for-column identical to the other engine's 0008_public_api.sql.

-- API keys: named, scoped credentials for scripts and integrations. Only the SHA-256 of the
-- secret is stored; `prefix` is its first characters, so a list can say which key is which.
-- `scopes` is a space-separated list (`sessions:read sessions:write jobs:run billing:read`).
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    expires_at   BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_keys_account ON api_keys(account_id);

-- Which key made each logged call (NULL: a login token or cookie). Not a foreign key: the log
-- outlives a revoked key, and revoked keys keep their rows.
ALTER TABLE api_usage ADD COLUMN api_key_id TEXT;
CREATE INDEX api_usage_key ON api_usage(api_key_id, at);

-- Job webhooks. Each account signs its deliveries with its own secret (Standard Webhooks,
-- `whsec_` + base64 of the key bytes), made on first use.
CREATE TABLE webhook_secrets (
    account_id TEXT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    secret     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- A job's webhook: where to deliver and which events (space-separated).
ALTER TABLE jobs ADD COLUMN webhook_url TEXT;
ALTER TABLE jobs ADD COLUMN webhook_events TEXT;

-- One message per (job, event occurrence). `id` is the stable `webhook-id` every attempt of it
-- carries, so receivers dedupe. `status`: pending, delivered, failed (gave up).
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    job_id          TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    url             TEXT NOT NULL,
    event           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT,
    finished_at     BIGINT
);
CREATE INDEX webhook_deliveries_job ON webhook_deliveries(job_id, created_at);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);

-- Every attempt of a delivery: the receiver's status code (NULL: no answer) or the error.
CREATE TABLE webhook_attempts (
    id          BIGSERIAL PRIMARY KEY,
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt     BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    status_code BIGINT,
    error       TEXT,
    latency_ms  BIGINT NOT NULL
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts(delivery_id, attempt);
