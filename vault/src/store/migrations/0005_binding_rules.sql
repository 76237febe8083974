-- A binding's own request rules (JSON of RulesSpec), replacing its
-- provider's. NULL means the provider's rules, or none.
ALTER TABLE bindings ADD COLUMN rules TEXT;
