-- Billing (SQLite). Kept column-for-column identical to migrations/postgres/0003_billing.sql.
-- Credits are integer millicredits. `ledger_entries` is append-only: each row has a unique
-- idempotency key, its effect on the account's `balance` (`amount`) and on its reserved credits
-- (`held_delta`), and the account's totals after it. `account_balances` is the materialised sum,
-- updated in the same transaction as every entry; its row is also the account's ledger lock.

CREATE TABLE account_balances (
    account_id TEXT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    balance    BIGINT NOT NULL DEFAULT 0,
    held       BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);
INSERT INTO account_balances (account_id, balance, held, updated_at)
    SELECT id, 0, 0, created_at FROM accounts;

CREATE TABLE ledger_entries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,
    amount          BIGINT NOT NULL,
    held_delta      BIGINT NOT NULL,
    balance_after   BIGINT NOT NULL,
    held_after      BIGINT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    hold_id         TEXT,
    lease_id        TEXT,
    reference       TEXT,
    usage_ms        BIGINT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX ledger_entries_account ON ledger_entries(account_id, id);
CREATE INDEX ledger_entries_reference ON ledger_entries(reference);
CREATE INDEX ledger_entries_lease ON ledger_entries(lease_id);

-- Two-phase reservations: `amount` is reserved when placed; charges consume it; settling once
-- releases the rest (`amount = charged + released` for every settled hold).
CREATE TABLE credit_holds (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    amount     BIGINT NOT NULL,
    charged    BIGINT NOT NULL DEFAULT 0,
    released   BIGINT NOT NULL DEFAULT 0,
    status     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    settled_at BIGINT
);
CREATE INDEX credit_holds_account ON credit_holds(account_id);

-- Pro runtime leases. `used_ms`/`charged` are the last checkpoint; `segment_started_at` is when
-- metering (re)started (assignment, or a resume after a restart) and `segment_base_ms` the used
-- time before that segment, so the server's downtime is never metered.
CREATE TABLE runtime_leases (
    id                 TEXT PRIMARY KEY,
    session_id         TEXT NOT NULL,
    account_id         TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    gpu_class          TEXT NOT NULL,
    price_per_minute   BIGINT NOT NULL,
    prepaid_ms         BIGINT NOT NULL,
    hold_id            TEXT NOT NULL REFERENCES credit_holds(id) ON DELETE CASCADE,
    hold_amount        BIGINT NOT NULL,
    status             TEXT NOT NULL,
    worker_id          TEXT,
    device             TEXT,
    created_at         BIGINT NOT NULL,
    assigned_at        BIGINT,
    segment_started_at BIGINT,
    segment_base_ms    BIGINT NOT NULL DEFAULT 0,
    used_ms            BIGINT NOT NULL DEFAULT 0,
    charged            BIGINT NOT NULL DEFAULT 0,
    checkpoint_seq     BIGINT NOT NULL DEFAULT 0,
    checkpointed_at    BIGINT,
    stopped_at         BIGINT,
    stop_reason        TEXT,
    refunded           BIGINT
);
CREATE INDEX runtime_leases_session ON runtime_leases(session_id, created_at);
CREATE INDEX runtime_leases_account ON runtime_leases(account_id);
CREATE INDEX runtime_leases_status ON runtime_leases(status);
-- At most one lease that is not stopped per session.
CREATE UNIQUE INDEX runtime_leases_one_active ON runtime_leases(session_id) WHERE status <> 'stopped';
