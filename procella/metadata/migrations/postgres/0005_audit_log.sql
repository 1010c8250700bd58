-- The audit log: every state-changing action, with who, when, from where and the request
-- id (procella/audit.py). org_id is NULL for actions on no org.
CREATE TABLE audit_log (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id       TEXT REFERENCES orgs (id) ON DELETE CASCADE,
    at           BIGINT NOT NULL,
    action       TEXT NOT NULL,
    login        TEXT NOT NULL,
    token_name   TEXT NOT NULL,
    source_ip    TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    target       TEXT NOT NULL,
    description  TEXT NOT NULL
);
CREATE INDEX audit_log_org ON audit_log (org_id, id);
CREATE INDEX audit_log_at ON audit_log (at);
