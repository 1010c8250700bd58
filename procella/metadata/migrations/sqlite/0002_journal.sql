-- Journaling (journalVersion 1): the CLI sends journal entries instead of checkpoints, and
-- the state is rebuilt by replaying them onto the update's base state.
ALTER TABLE updates ADD COLUMN journal_version INTEGER NOT NULL DEFAULT 0;
-- Entries stored so far; the next batch's entries are numbered from here (arrival order).
ALTER TABLE updates ADD COLUMN journal_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE updates ADD COLUMN journal_last_at INTEGER;
-- The CLI version from the start request's User-Agent: the rebuilt state's manifest names it.
ALTER TABLE updates ADD COLUMN client_version TEXT NOT NULL DEFAULT '';

CREATE TABLE journal_entries (
    update_id    TEXT NOT NULL REFERENCES updates (id) ON DELETE CASCADE,
    sequence_id  INTEGER NOT NULL,
    position     INTEGER NOT NULL,
    kind         INTEGER NOT NULL,
    body         BLOB NOT NULL,
    PRIMARY KEY (update_id, sequence_id)
);
CREATE UNIQUE INDEX journal_entries_position ON journal_entries (update_id, position);
