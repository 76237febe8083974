-- OAuth 1.0a connections: the token secret that signs with the access
-- token, sealed like it (kind connections.token_secret). NULL for OAuth 2.
ALTER TABLE connections ADD COLUMN token_secret TEXT
