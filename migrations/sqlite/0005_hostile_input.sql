-- Bounded work for hostile input (SQLite). Kept column-for-column identical to
-- migrations/postgres/0005_hostile_input.sql.

-- Upload reservations: bytes an upload in flight has claimed from its account's quota, taken in
-- the same transaction that checks the quota (stored media + every reservation), so concurrent
-- uploads cannot all pass the check. An upload that ends turns its reservation into a media row
-- (or releases it); ones not touched for an hour belonged to a crashed process and are purged.
CREATE TABLE storage_reservations (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    bytes      BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX storage_reservations_account ON storage_reservations(account_id);
CREATE INDEX storage_reservations_updated ON storage_reservations(updated_at);

-- The row every quota decision of an account locks first (the `account_balances` pattern).
CREATE TABLE storage_locks (
    account_id TEXT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    locked_at  BIGINT NOT NULL
);

-- The usage log keeps accounts' requests only, for a retention period purged by age.
DELETE FROM api_usage WHERE account_id IS NULL;
CREATE INDEX api_usage_at ON api_usage(at);
