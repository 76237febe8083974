-- Refresh leases instead of a row lock held across the provider call, the
-- provider's raw answer (sealed) until it is read, the last refresh (cool-down).
ALTER TABLE connections ADD COLUMN lease_owner TEXT;
ALTER TABLE connections ADD COLUMN lease_expires_at BIGINT;
ALTER TABLE connections ADD COLUMN pending_grant TEXT;
ALTER TABLE connections ADD COLUMN refreshed_at BIGINT;
ALTER TABLE connections ADD COLUMN token_version BIGINT NOT NULL DEFAULT 0;
