-- The access token a refresh replaced, sealed, and its expiry: a proxy of the
-- fleet that never saw it must still keep it out of its sandbox's answers.
ALTER TABLE connections ADD COLUMN previous_access_token TEXT;
ALTER TABLE connections ADD COLUMN previous_expires_at BIGINT;
