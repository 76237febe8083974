-- Scope step-up: the scopes an upstream said a connection's token lacks
-- (space-separated, NULL when none), shown as insufficient_scope until a
-- connect grants them, and the scopes a connect link asks for (NULL means
-- the provider's defaults). No semicolon in comments: the runner splits on it.
ALTER TABLE connections ADD COLUMN needed_scopes TEXT;
ALTER TABLE connect_links ADD COLUMN scopes TEXT;
