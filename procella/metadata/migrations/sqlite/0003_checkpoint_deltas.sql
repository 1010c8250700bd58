-- Checkpoint steps store what changed, not a new full copy of the state.
--
-- A checkpoint row describes the state after step `seq` of its version. It either holds a
-- full text (data or blob_key) taken at step `full_seq`, or none, and then its text is the
-- text of row `base_version` of the same stack. Either way the deltas of its version with
-- full_seq < seq' <= seq apply on top, in order. `chain_bytes` is the size of all deltas
-- between the nearest full text and this state: past a limit the next step stores a full
-- text again (compaction), so reads stay bounded.
--
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt.
CREATE TABLE checkpoints_new (
    stack_id    TEXT NOT NULL REFERENCES stacks (id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    update_id   TEXT,
    sha256      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    resource_count INTEGER NOT NULL DEFAULT 0,
    data        BLOB,
    blob_key    TEXT,
    created_at  INTEGER NOT NULL,
    seq         INTEGER NOT NULL DEFAULT 0,
    full_seq    INTEGER NOT NULL DEFAULT 0,
    base_version INTEGER,
    chain_bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stack_id, version),
    CONSTRAINT checkpoints_text CHECK (
        (base_version IS NULL AND (data IS NULL) <> (blob_key IS NULL))
        OR (base_version IS NOT NULL AND data IS NULL AND blob_key IS NULL AND full_seq = 0)
    )
);
INSERT INTO checkpoints_new (stack_id, version, update_id, sha256, size, resource_count, data,
    blob_key, created_at)
    SELECT stack_id, version, update_id, sha256, size, resource_count, data, blob_key, created_at
    FROM checkpoints;
DROP TABLE checkpoints;
ALTER TABLE checkpoints_new RENAME TO checkpoints;
CREATE INDEX checkpoints_blob_key ON checkpoints (blob_key) WHERE blob_key IS NOT NULL;

CREATE TABLE checkpoint_deltas (
    stack_id  TEXT NOT NULL REFERENCES stacks (id) ON DELETE CASCADE,
    version   INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    edits     BLOB NOT NULL,
    PRIMARY KEY (stack_id, version, seq)
);

-- The update's running total of chain_bytes, compare-and-set with its checkpoint sequence.
ALTER TABLE updates ADD COLUMN checkpoint_chain INTEGER NOT NULL DEFAULT 0;
