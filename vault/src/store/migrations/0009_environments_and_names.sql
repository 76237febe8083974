-- Environments and named connections. A connection is one per tenant,
-- environment, owner, provider and name: development and production
-- connections of one owner coexist, and one owner may hold several named
-- accounts of a provider (name '' is the unnamed one). A machine account is
-- named after itself. env_name and hosts are a connection's own variable and
-- hosts (machine accounts given expose_as_env and hosts), NULL meaning its
-- provider's. SQLite cannot drop a table constraint, so the table is rebuilt
-- the same way in both databases.
CREATE TABLE connections_v9 (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    scope_kind TEXT NOT NULL,
    scope_name TEXT NOT NULL,
    provider TEXT NOT NULL,
    grant_kind TEXT NOT NULL,
    status TEXT NOT NULL,
    scopes TEXT NOT NULL,
    access_token TEXT,
    refresh_token TEXT,
    expires_at BIGINT,
    obtained_at BIGINT,
    client_id TEXT,
    client_secret TEXT,
    token_url TEXT,
    environment TEXT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    pending_grant TEXT,
    refreshed_at BIGINT,
    token_version BIGINT NOT NULL DEFAULT 0,
    previous_access_token TEXT,
    previous_expires_at BIGINT,
    needed_scopes TEXT,
    name TEXT NOT NULL DEFAULT '',
    env_name TEXT,
    hosts TEXT,
    UNIQUE (tenant, environment, scope_kind, scope_name, provider, name)
);
INSERT INTO connections_v9 (id, tenant, scope_kind, scope_name, provider, grant_kind, status, scopes,
    access_token, refresh_token, expires_at, obtained_at, client_id, client_secret, token_url, environment,
    last_error, created_at, updated_at, lease_owner, lease_expires_at, pending_grant, refreshed_at,
    token_version, previous_access_token, previous_expires_at, needed_scopes, name)
SELECT id, tenant, scope_kind, scope_name, provider, grant_kind, status, scopes,
    access_token, refresh_token, expires_at, obtained_at, client_id, client_secret, token_url, environment,
    last_error, created_at, updated_at, lease_owner, lease_expires_at, pending_grant, refreshed_at,
    token_version, previous_access_token, previous_expires_at, needed_scopes,
    CASE WHEN scope_kind = 'machine' THEN scope_name ELSE '' END
FROM connections;
DROP TABLE connections;
ALTER TABLE connections_v9 RENAME TO connections;
-- A name picks one connection of a provider in a tenant's environment,
-- whoever owns it: a pin never has two candidates.
CREATE UNIQUE INDEX connections_by_name ON connections (tenant, environment, provider, name) WHERE name <> '';
-- A sandbox resolves the connections of its environment only.
ALTER TABLE sandboxes ADD COLUMN environment TEXT NOT NULL DEFAULT 'default';
-- A binding pinned to one named connection (NULL: the most specific one).
ALTER TABLE bindings ADD COLUMN connection_name TEXT;
-- The name a connect flow gives the connection it makes.
ALTER TABLE oauth_states ADD COLUMN name TEXT NOT NULL DEFAULT '';
-- A connect link of a pinned binding connects that name.
ALTER TABLE connect_links ADD COLUMN connection_name TEXT
