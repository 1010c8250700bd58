-- Teams (procella/auth/teams.py): an org's teams, their members (users of the org) and
-- their grants: a role on one stack, or on every stack of a project (those created later
-- too). A member's role on a stack is the highest of their org role and their teams'
-- grants that cover it (procella/auth/models.py).
CREATE TABLE teams (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE team_members (
    team_id     TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
-- Loading a caller's grants starts from the user.
CREATE INDEX team_members_user ON team_members (user_id);

-- A grant names a project (project set, stack_id NULL) or one stack (stack_id set, project
-- NULL: the stack's own project applies, also after it moves). A stack grant goes with
-- its stack: a deleted stack's grants do not pass to a new stack of the same name.
CREATE TABLE team_grants (
    id          TEXT PRIMARY KEY,
    team_id     TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    project     TEXT,
    stack_id    TEXT REFERENCES stacks (id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('viewer', 'member', 'admin')),
    created_at  BIGINT NOT NULL,
    CHECK ((project IS NULL) <> (stack_id IS NULL))
);
CREATE UNIQUE INDEX team_grants_project ON team_grants (team_id, project)
    WHERE stack_id IS NULL;
CREATE UNIQUE INDEX team_grants_stack ON team_grants (team_id, stack_id)
    WHERE stack_id IS NOT NULL;
CREATE INDEX team_grants_stack_id ON team_grants (stack_id);

-- A team token acts as its team: exactly the team's grants, no personal role. Its user
-- row only names it (login 'team:<org>/<team>', a member of no org).
ALTER TABLE api_tokens ADD COLUMN team_id TEXT REFERENCES teams (id) ON DELETE CASCADE;
CREATE INDEX api_tokens_team ON api_tokens (team_id);
