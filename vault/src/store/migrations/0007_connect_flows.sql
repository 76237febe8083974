-- Connect flows a platform can follow (POST /v1/connect-flows, GET …?wait=):
-- one row per OAuth state, keyed by a public id, holding the flow's outcome
-- once the callback (or a cancel, or the state's expiry) decides it. Rows are
-- kept a day after they finish, then deleted.
CREATE TABLE connect_flows (
    id TEXT PRIMARY KEY,
    state_hash TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    scope_kind TEXT NOT NULL,
    scope_name TEXT NOT NULL,
    provider TEXT NOT NULL,
    sandbox_id TEXT,
    outcome TEXT NOT NULL,
    connection_id TEXT,
    provider_error TEXT,
    provider_error_description TEXT,
    reason TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX connect_flows_by_end ON connect_flows (expires_at);
