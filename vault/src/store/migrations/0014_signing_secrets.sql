-- Static secrets of a signing kind (docs/SIGNING.md). kind: static (every
-- older row), aws_sigv4 or hmac. signing: JSON of the settings that are no
-- secret (an AWS binding's variables, an HMAC secret's signature_… keys).
-- An aws_sigv4 secret's value is its access key id, and its secret access
-- key and session token are sealed like it (kinds secrets.secret_access_key
-- and secrets.session_token).
ALTER TABLE secrets ADD COLUMN kind TEXT NOT NULL DEFAULT 'static';
ALTER TABLE secrets ADD COLUMN signing TEXT;
ALTER TABLE secrets ADD COLUMN secret_access_key TEXT;
ALTER TABLE secrets ADD COLUMN session_token TEXT
