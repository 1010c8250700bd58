-- The states a stack's engine events refer to, one row per (stack, state) instead of per
-- (update, state): an update that repeats the stack's states (its `same` steps) writes no
-- row for them, so its events cost O(its changes) of index writes. The GC drops a stack's
-- row when its retained events no longer refer to the state (procella/workers/gc.py).
CREATE TABLE stack_event_states (
    stack_id  TEXT NOT NULL REFERENCES stacks (id) ON DELETE CASCADE,
    digest    TEXT NOT NULL REFERENCES event_states (digest),
    PRIMARY KEY (stack_id, digest)
);
CREATE INDEX stack_event_states_digest ON stack_event_states (digest);

INSERT INTO stack_event_states (stack_id, digest)
SELECT DISTINCT u.stack_id, r.digest
FROM event_state_refs r JOIN updates u ON u.id = r.update_id;

DROP TABLE event_state_refs;
