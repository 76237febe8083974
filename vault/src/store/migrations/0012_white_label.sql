-- White-label: a tenant's branding, its own OAuth redirect URI, and whether
-- it may use the default tenant's OAuth apps. A flow keeps the redirect URI,
-- app owner and return address it started with, and a connection the tenant
-- whose app issued its grant (what refresh and revoke must use).
CREATE TABLE tenant_settings (
    tenant TEXT PRIMARY KEY,
    display_name TEXT,
    accent_color TEXT,
    logo_url TEXT,
    support_url TEXT,
    return_url TEXT,
    redirect_uri TEXT,
    use_default_apps BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);
ALTER TABLE oauth_states ADD COLUMN redirect_uri TEXT;
ALTER TABLE oauth_states ADD COLUMN app_tenant TEXT;
ALTER TABLE oauth_states ADD COLUMN return_to TEXT;
ALTER TABLE connections ADD COLUMN app_tenant TEXT;
-- Connections made before this knew no owner: the tenant's own app if it has one, else the default tenant's (the old fallback)
UPDATE connections SET app_tenant = CASE WHEN EXISTS (SELECT 1 FROM apps WHERE apps.tenant = connections.tenant AND apps.provider = connections.provider AND apps.environment = connections.environment) THEN connections.tenant ELSE 'default' END WHERE client_id IS NULL;
-- Tenants that used the default tenant's apps before keep doing so
INSERT INTO tenant_settings (tenant, use_default_apps, updated_at) SELECT DISTINCT tenant, 1, 0 FROM connections WHERE client_id IS NULL AND app_tenant = 'default' AND tenant <> 'default'
