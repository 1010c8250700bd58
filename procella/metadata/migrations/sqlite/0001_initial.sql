-- Times are milliseconds since the Unix epoch, taken from the database clock (NOW_MS).
CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    login       TEXT NOT NULL UNIQUE,
    site_admin  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE memberships (
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id      TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('viewer', 'member', 'admin')),
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, org_id)
);

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (user_id, name)
);

CREATE TABLE stacks (
    id                TEXT PRIMARY KEY,
    org_id            TEXT NOT NULL REFERENCES orgs (id),
    project           TEXT NOT NULL,
    name              TEXT NOT NULL,
    version           INTEGER NOT NULL DEFAULT 0,
    active_update_id  TEXT,
    created_at        INTEGER NOT NULL,
    last_update_at    INTEGER,
    UNIQUE (org_id, project, name)
);

CREATE TABLE stack_tags (
    stack_id  TEXT NOT NULL REFERENCES stacks (id) ON DELETE CASCADE,
    name      TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (stack_id, name)
);
CREATE INDEX stack_tags_name_value ON stack_tags (name, value);

CREATE TABLE updates (
    id                TEXT PRIMARY KEY,
    stack_id          TEXT NOT NULL REFERENCES stacks (id) ON DELETE CASCADE,
    kind              TEXT NOT NULL,
    is_preview        BOOLEAN NOT NULL,
    status            TEXT NOT NULL,
    version           INTEGER,
    created_by        TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    started_at        INTEGER,
    ended_at          INTEGER,
    lease_hash        TEXT,
    lease_expires_at  INTEGER,
    checkpoint_seq    INTEGER NOT NULL DEFAULT 0,
    checkpoint_sha    TEXT,
    program           TEXT NOT NULL DEFAULT '{}',
    config            TEXT NOT NULL DEFAULT '{}',
    metadata          TEXT NOT NULL DEFAULT '{}',
    resource_changes  TEXT,
    resource_count    INTEGER
);
-- The database, not a process, guarantees one running non-preview update per stack.
CREATE UNIQUE INDEX updates_one_running ON updates (stack_id)
    WHERE status = 'running' AND is_preview = FALSE;
CREATE INDEX updates_stack_version ON updates (stack_id, version);
CREATE INDEX updates_status ON updates (status);

CREATE TABLE checkpoints (
    stack_id    TEXT NOT NULL REFERENCES stacks (id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    update_id   TEXT,
    sha256      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    -- Resources in this state: what `stack ls` shows and what `stack rm` refuses to orphan.
    resource_count INTEGER NOT NULL DEFAULT 0,
    data        BLOB,
    blob_key    TEXT,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (stack_id, version),
    CHECK ((data IS NULL) <> (blob_key IS NULL))
);
CREATE INDEX checkpoints_blob_key ON checkpoints (blob_key) WHERE blob_key IS NOT NULL;

CREATE TABLE update_events (
    update_id  TEXT NOT NULL REFERENCES updates (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (update_id, seq)
);
