-- Operators (sqlite). Kept column-for-column identical to the other engine's 0006_operators.sql.

-- Account roles (`user`, `admin`) and suspension (a suspended account cannot log in, its tokens
-- are refused, its sockets are closed and its leases settled).
ALTER TABLE accounts ADD COLUMN role TEXT NOT NULL DEFAULT 'user';
ALTER TABLE accounts ADD COLUMN suspended_at BIGINT;
ALTER TABLE accounts ADD COLUMN suspended_reason TEXT;

-- Grants and adjustments made by an admin carry the admin and their reason.
ALTER TABLE ledger_entries ADD COLUMN admin_id TEXT;
ALTER TABLE ledger_entries ADD COLUMN note TEXT;

-- Prepaid-time extensions of a lease (each a further hold, keyed lease:{id}:extend:{n}).
ALTER TABLE runtime_leases ADD COLUMN extensions BIGINT NOT NULL DEFAULT 0;

-- Every admin action, from the API or the command line. `admin_id` is not a foreign key: the
-- record outlives the account. `actor` names who acted (the admin's email, or `cli:<os user>`).
CREATE TABLE admin_audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    admin_id TEXT,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT,
    reason   TEXT,
    detail   TEXT,
    at       BIGINT NOT NULL
);
