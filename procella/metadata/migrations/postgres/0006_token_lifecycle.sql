-- Token lifecycle (procella/auth/service.py): a description, an optional expiry, when the
-- token was last used (written at most once a minute), and revocation. A revoked token
-- keeps its row, so listings and the audit log can still name it.
ALTER TABLE api_tokens ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE api_tokens ADD COLUMN last_used_at BIGINT;
ALTER TABLE api_tokens ADD COLUMN revoked_at BIGINT;
