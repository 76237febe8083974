-- One-time connect links handed to sandboxes (GET http://airlock.internal/v1/status):
-- the link's id is kept hashed (the key) and sealed (so a later status read
-- hands out the same link instead of piling up new ones). An OAuth state
-- started from a link names it, so completing the flow uses the link up.
CREATE TABLE connect_links (
    id_hash TEXT PRIMARY KEY,
    link_id TEXT NOT NULL,
    sandbox_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX connect_links_by_sandbox ON connect_links (sandbox_id, provider);
ALTER TABLE oauth_states ADD COLUMN connect_link TEXT;
