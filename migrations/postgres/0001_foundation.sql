-- Foundation schema (PostgreSQL). Kept column-for-column identical to migrations/sqlite:
-- ids are UUID strings, times are epoch milliseconds (BIGINT) so one set of queries runs on both.
CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    token_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX api_tokens_account ON api_tokens(account_id);

CREATE TABLE studio_sessions (
    id         TEXT PRIMARY KEY,
    owner_id   TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    title      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX studio_sessions_owner ON studio_sessions(owner_id);

CREATE TABLE session_members (
    session_id TEXT NOT NULL REFERENCES studio_sessions(id) ON DELETE CASCADE,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    role       TEXT NOT NULL,
    added_at   BIGINT NOT NULL,
    PRIMARY KEY (session_id, account_id)
);
CREATE INDEX session_members_account ON session_members(account_id);

CREATE TABLE share_links (
    id         TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES studio_sessions(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    created_by TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX share_links_session ON share_links(session_id);

CREATE TABLE media (
    id           TEXT PRIMARY KEY,
    owner_id     TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    session_id   TEXT REFERENCES studio_sessions(id) ON DELETE SET NULL,
    content_type TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    object_key   TEXT NOT NULL,
    filename     TEXT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX media_owner ON media(owner_id);
CREATE INDEX media_session ON media(session_id);

CREATE TABLE api_usage (
    id          BIGSERIAL PRIMARY KEY,
    account_id  TEXT REFERENCES accounts(id) ON DELETE CASCADE,
    method      TEXT NOT NULL,
    route       TEXT NOT NULL,
    status      BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX api_usage_account ON api_usage(account_id, id);
