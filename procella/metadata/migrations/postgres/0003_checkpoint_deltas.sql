-- Checkpoint steps store what changed, not a new full copy of the state.
--
-- A checkpoint row describes the state after step `seq` of its version. It either holds a
-- full text (data or blob_key) taken at step `full_seq`, or none, and then its text is the
-- text of row `base_version` of the same stack. Either way the deltas of its version with
-- full_seq < seq' <= seq apply on top, in order. `chain_bytes` is the size of all deltas
-- between the nearest full text and this state: past a limit the next step stores a full
-- text again (compaction), so reads stay bounded.
ALTER TABLE checkpoints DROP CONSTRAINT checkpoints_check;
ALTER TABLE checkpoints ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE checkpoints ADD COLUMN full_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE checkpoints ADD COLUMN base_version BIGINT;
ALTER TABLE checkpoints ADD COLUMN chain_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE checkpoints ADD CONSTRAINT checkpoints_text CHECK (
    (base_version IS NULL AND (data IS NULL) <> (blob_key IS NULL))
    OR (base_version IS NOT NULL AND data IS NULL AND blob_key IS NULL AND full_seq = 0)
);

CREATE TABLE checkpoint_deltas (
    stack_id  TEXT NOT NULL REFERENCES stacks (id) ON DELETE CASCADE,
    version   BIGINT NOT NULL,
    seq       BIGINT NOT NULL,
    edits     BYTEA NOT NULL,
    PRIMARY KEY (stack_id, version, seq)
);

-- The update's running total of chain_bytes, compare-and-set with its checkpoint sequence.
ALTER TABLE updates ADD COLUMN checkpoint_chain BIGINT NOT NULL DEFAULT 0;
