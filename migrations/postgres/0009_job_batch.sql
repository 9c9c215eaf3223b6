-- Batches (`{"batch": N}` on a run): the jobs of one run share `batch_id` (the first job's id)
-- and each holds its place in the batch, so the studio can show a batch as a grid after a reload.
-- NULL for single runs. Kept column-for-column identical to the sqlite 0009_job_batch.sql.
ALTER TABLE jobs ADD COLUMN batch_id TEXT;
ALTER TABLE jobs ADD COLUMN batch_index INTEGER;
