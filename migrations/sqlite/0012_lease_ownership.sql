-- Meters that survive their node (issue 12): each open runtime lease is metered by exactly one
-- node, its owner. `epoch` is the fencing token: a node that takes a lease over bumps it, and
-- every checkpoint, extension and settlement is an UPDATE conditional on the epoch its meter
-- holds, in the transaction of its ledger postings, so a stale owner's write changes nothing.
-- `owner_heartbeat_at` is refreshed by the owner every few seconds; a lease whose owner has
-- been silent longer than the takeover delay may be claimed by another node. Kept
-- column-for-column identical to the other engine's 0012_lease_ownership.sql (PostgreSQL).
ALTER TABLE runtime_leases ADD COLUMN owner_node TEXT;
ALTER TABLE runtime_leases ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runtime_leases ADD COLUMN owner_heartbeat_at BIGINT;
