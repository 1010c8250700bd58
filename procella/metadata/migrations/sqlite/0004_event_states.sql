-- Engine events keep their resource states apart, stored once by content
-- (procella/updates/events.py): a `same` step's states are the previous update's.
ALTER TABLE update_events ADD COLUMN state_refs TEXT;

CREATE TABLE event_states (
    digest  TEXT PRIMARY KEY,
    body    TEXT NOT NULL
);

-- Which updates' events refer to a state: a state no update refers to is collected.
CREATE TABLE event_state_refs (
    update_id  TEXT NOT NULL REFERENCES updates (id) ON DELETE CASCADE,
    digest     TEXT NOT NULL REFERENCES event_states (digest),
    PRIMARY KEY (update_id, digest)
);
CREATE INDEX event_state_refs_digest ON event_state_refs (digest);
