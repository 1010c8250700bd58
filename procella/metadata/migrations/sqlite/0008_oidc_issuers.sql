-- OIDC token exchange (procella/auth/oidc.py): the issuers an org trusts, each with the
-- audiences its tokens must carry, the longest a minted token may live, and its policies
-- (a JSON list, replaced whole by the policy API, versioned so a concurrent edit is
-- detected). A token minted by an exchange names its issuer, so deleting the issuer
-- revokes what it minted.
CREATE TABLE oidc_issuers (
    id                 TEXT PRIMARY KEY,
    org_id             TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    url                TEXT NOT NULL,
    audiences          TEXT NOT NULL,
    max_expiration_s   INTEGER NOT NULL,
    policies           TEXT NOT NULL DEFAULT '[]',
    policy_version     INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    modified_at        INTEGER NOT NULL,
    UNIQUE (org_id, name),
    UNIQUE (org_id, url)
);
ALTER TABLE api_tokens ADD COLUMN oidc_issuer_id TEXT;
CREATE INDEX api_tokens_oidc_issuer ON api_tokens (oidc_issuer_id);
