-- The first schema. Types mean the same in SQLite and PostgreSQL (TEXT, BIGINT).
CREATE TABLE providers (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE apps (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    provider TEXT NOT NULL,
    environment TEXT NOT NULL,
    client_id TEXT NOT NULL,
    client_secret TEXT,
    secret_last4 TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant, provider, environment)
);
CREATE TABLE connections (
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
    UNIQUE (tenant, scope_kind, scope_name, provider)
);
CREATE TABLE oauth_states (
    state_hash TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    scope_kind TEXT NOT NULL,
    scope_name TEXT NOT NULL,
    provider TEXT NOT NULL,
    scopes TEXT NOT NULL,
    environment TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used BIGINT NOT NULL
);
CREATE TABLE sandboxes (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    workspace TEXT,
    user_name TEXT,
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE bindings (
    placeholder TEXT PRIMARY KEY,
    sandbox_id TEXT NOT NULL,
    env_name TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target TEXT NOT NULL,
    UNIQUE (sandbox_id, env_name)
);
CREATE TABLE secrets (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    hosts TEXT NOT NULL,
    swap_in TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant, name)
);
