-- How long the sandbox's requests wait for a human by default (seconds,
-- NULL means the proxy's consent_wait_secs). A request's own Prefer: wait wins.
ALTER TABLE sandboxes ADD COLUMN consent_wait_secs BIGINT;
