//! The console's management sections: environments, connect, providers,
//! the app editor, the config file's secrets and sandboxes. Every value that
//! comes from data goes through `escape`.

use std::collections::HashMap;

use super::{escape, ConfigSecretView};
use crate::store::GrantKind;
use crate::{AppView, ConnectionView, Provider, SandboxView, TenantView};

/// What the dashboard was asked to show (`/?environment=…&connect=…&edit_app=…`).
pub struct View<'a> {
    pub environment: Option<&'a str>,
    pub query: &'a HashMap<String, String>,
    pub csrf_field: &'a str,
}

impl View<'_> {
    pub fn shows(&self, environment: &str) -> bool {
        self.environment.is_none_or(|e| e == environment)
    }
}

fn options<'a>(items: impl IntoIterator<Item = &'a str>, selected: &str) -> String {
    items
        .into_iter()
        .map(|i| {
            format!(
                "<option value=\"{0}\"{1}>{0}</option>",
                escape(i),
                if i == selected { " selected" } else { "" }
            )
        })
        .collect()
}

pub fn environments(view: &View, environments: &[String]) -> String {
    let mut links = format!(
        "<a href=\"/\" class=\"env{}\">all</a>",
        if view.environment.is_none() {
            " current"
        } else {
            ""
        }
    );
    for e in environments {
        links.push_str(&format!(
            " <a href=\"/?environment={0}\" class=\"env{1}\" data-environment=\"{0}\">{0}</a>",
            escape(e),
            if view.environment == Some(e.as_str()) {
                " current"
            } else {
                ""
            }
        ));
    }
    let note = match view.environment {
        Some(e) => format!(
            "<p class=\"hint filter\">Showing the connections, apps and sandboxes of environment <code>{}</code>.</p>",
            escape(e)
        ),
        None => String::new(),
    };
    format!(
        "<section class=\"card\" id=\"environments\"><h2>Environments</h2><nav class=\"envs\">{links}</nav>{note}\
         <p class=\"hint\">An environment exists once an OAuth app is registered in it or a machine account is added to it.</p></section>"
    )
}

/// Every tenant the vault knows of: the default one, those with settings,
/// apps or connections; sorted, the default first.
pub fn known_tenants(
    settings: &[TenantView],
    apps: &[AppView],
    connections: &[ConnectionView],
) -> Vec<String> {
    let mut others: Vec<&str> = settings
        .iter()
        .map(|t| t.tenant.as_str())
        .chain(apps.iter().map(|a| a.tenant.as_str()))
        .chain(connections.iter().map(|c| c.tenant.as_str()))
        .filter(|t| *t != crate::DEFAULT_TENANT)
        .collect();
    others.sort_unstable();
    others.dedup();
    std::iter::once(crate::DEFAULT_TENANT)
        .chain(others)
        .map(str::to_owned)
        .collect()
}

/// The connect form: tenant, provider, owner level and name, environment,
/// a connection name and the scopes (the provider's defaults, editable).
pub fn connect(
    view: &View,
    providers: &[Provider],
    environments: &[String],
    tenants: &[String],
) -> String {
    let oauth: Vec<&Provider> = providers
        .iter()
        .filter(|p| p.authorize_url.is_some())
        .collect();
    let chosen = view
        .query
        .get("connect")
        .and_then(|c| oauth.iter().find(|p| &p.name == c))
        .or(oauth.first())
        .copied();
    let provider_options: String = oauth
        .iter()
        .map(|p| {
            format!(
                "<option value=\"{0}\" data-scopes=\"{1}\"{2}>{3}</option>",
                escape(&p.name),
                escape(&p.scopes.join("\n")),
                if Some(p.name.as_str()) == chosen.map(|c| c.name.as_str()) {
                    " selected"
                } else {
                    ""
                },
                escape(p.label()),
            )
        })
        .collect();
    let scopes = chosen.map(|p| p.scopes.join("\n")).unwrap_or_default();
    let environment = view.environment.unwrap_or(crate::DEFAULT_ENVIRONMENT);
    format!(
        "<section class=\"card\" id=\"connect\"><h2>Connect an account</h2>\
         <form method=\"post\" action=\"/console/connect\" class=\"grid connect-form\" data-connect-form target=\"airlock-connect\">{csrf}\
         <label>Tenant<select name=\"tenant\">{tenants}</select></label>\
         <label>Provider<select name=\"provider\" data-scopes-for=\"connect-scopes\">{provider_options}</select></label>\
         <label>Owner level<select name=\"owner\"><option value=\"tenant\">tenant</option><option value=\"workspace\">workspace</option><option value=\"user\">user</option></select></label>\
         <label>Workspace or user name<input name=\"owner_name\" placeholder=\"for workspace or user\"></label>\
         <label>Environment<select name=\"environment\">{envs}</select></label>\
         <label>Connection name<input name=\"name\" placeholder=\"optional, e.g. work\"></label>\
         <label class=\"wide\">Scopes<textarea name=\"scopes\" id=\"connect-scopes\" rows=\"3\">{scopes}</textarea>\
         <span class=\"hint\">the provider's defaults; one per line, or separated by spaces or commas</span></label>\
         <button type=\"submit\" class=\"primary\">Connect</button></form></section>",
        csrf = view.csrf_field,
        envs = options(environments.iter().map(String::as_str), environment),
        scopes = escape(&scopes),
        tenants = options(
            tenants.iter().map(String::as_str),
            view.query
                .get("tenant")
                .map_or(crate::DEFAULT_TENANT, String::as_str)
        ),
    )
}

/// A connection's "change scopes" form: a new authorization for the same
/// provider, owner, environment and name.
pub fn reauthorize(view: &View, c: &ConnectionView, provider: &Provider) -> String {
    if c.kind != GrantKind::AuthorizationCode || provider.authorize_url.is_none() {
        return String::new();
    }
    let (level, owner_name) = c.scope.split_once(':').unwrap_or((c.scope.as_str(), ""));
    format!(
        "<details class=\"reauthorize\"><summary>Change scopes…</summary>\
         <form method=\"post\" action=\"/console/connect\" data-connect-form target=\"airlock-connect\">{csrf}\
         <input type=\"hidden\" name=\"provider\" value=\"{provider}\"><input type=\"hidden\" name=\"tenant\" value=\"{tenant}\">\
         <input type=\"hidden\" name=\"owner\" value=\"{level}\"><input type=\"hidden\" name=\"owner_name\" value=\"{owner_name}\">\
         <input type=\"hidden\" name=\"environment\" value=\"{environment}\"><input type=\"hidden\" name=\"name\" value=\"{name}\">\
         <label>Scopes<textarea name=\"scopes\" rows=\"3\">{scopes}</textarea></label>\
         <button type=\"submit\">Re-authorize</button></form></details>",
        csrf = view.csrf_field,
        provider = escape(&c.provider),
        tenant = escape(&c.tenant),
        level = escape(level),
        owner_name = escape(owner_name),
        environment = escape(&c.environment),
        name = escape(c.name.as_deref().unwrap_or("")),
        scopes = escape(&c.scopes.join("\n")),
    )
}

/// Apps of the shown environment, each with Edit and Delete, and the
/// create/edit form (`?edit_app=PROVIDER&app_tenant=T&app_environment=E` fills it).
pub fn apps(
    view: &View,
    apps: &[AppView],
    providers: &[Provider],
    stored: &[String],
    environments: &[String],
    redirect_uri: &str,
    own_redirects: &[(String, String)],
) -> String {
    let mut body = format!(
        "<section class=\"card\" id=\"apps\"><h2>OAuth apps</h2><p class=\"hint\">Redirect URI to register in each provider's app settings: \
         <code class=\"redirect-uri\">{}</code></p>",
        escape(redirect_uri)
    );
    // Tenants with their own callback origin (white-label) register that one.
    if !own_redirects.is_empty() {
        body.push_str(
            "<p class=\"hint\">Tenants with their own redirect URI:</p><ul class=\"hint\">",
        );
        for (tenant, redirect) in own_redirects {
            body.push_str(&format!(
                "<li>{}: <code class=\"redirect-uri tenant-redirect-uri\">{}</code></li>",
                escape(tenant),
                escape(redirect)
            ));
        }
        body.push_str("</ul>");
    }
    body.push_str(
        "<table><thead><tr><th>Provider</th><th>Tenant</th><th>Environment</th><th>Client id</th>\
         <th>Client secret</th><th></th></tr></thead><tbody>",
    );
    for a in apps.iter().filter(|a| view.shows(&a.environment)) {
        body.push_str(&format!(
            "<tr data-app=\"{0}/{2}\"><td>{0}</td><td>{1}</td><td>{2}</td><td><code>{3}</code></td><td><code>{4}</code></td>\
             <td><a class=\"button\" href=\"/?edit_app={0}&amp;app_tenant={1}&amp;app_environment={2}#app-form\">Edit</a> \
             <form method=\"post\" action=\"/console/apps/delete\" class=\"inline\">{csrf}\
             <input type=\"hidden\" name=\"provider\" value=\"{0}\"><input type=\"hidden\" name=\"tenant\" value=\"{1}\">\
             <input type=\"hidden\" name=\"environment\" value=\"{2}\"><button type=\"submit\" class=\"danger\">Delete</button></form></td></tr>",
            escape(&a.provider),
            escape(&a.tenant),
            escape(&a.environment),
            escape(&a.client_id),
            escape(a.client_secret.as_deref().unwrap_or("not set")),
            csrf = view.csrf_field,
        ));
    }
    body.push_str("</tbody></table>");

    let q = |k: &str| view.query.get(k).map(String::as_str).unwrap_or("");
    let editing = apps.iter().find(|a| {
        a.provider == q("edit_app")
            && a.tenant == q("app_tenant")
            && a.environment == q("app_environment")
    });
    let provider_name = editing.map_or("", |a| a.provider.as_str());
    let provider = providers.iter().find(|p| p.name == provider_name);
    let custom = provider.is_some_and(|p| stored.contains(&p.name));
    let provider_options: String = providers
        .iter()
        .map(|p| {
            format!(
                "<option value=\"{0}\"{1}>{2}</option>",
                escape(&p.name),
                if p.name == provider_name {
                    " selected"
                } else {
                    ""
                },
                escape(p.label())
            )
        })
        .collect();
    let env_list: String = environments
        .iter()
        .map(|e| format!("<option value=\"{}\">", escape(e)))
        .collect();
    let (title, secret_hint) = match editing {
        Some(_) => ("Edit app", "write-only: leave empty to keep the stored one"),
        None => ("Add an app", "write-only: never shown again"),
    };
    let endpoints = match provider {
        Some(p) if custom => format!(
            "<label>Authorize URL<input name=\"authorize_url\" value=\"{}\"></label>\
             <label>Token URL<input name=\"token_url\" value=\"{}\"></label>\
             <label class=\"wide\">Scopes<textarea name=\"scopes\" rows=\"3\">{}</textarea>\
             <span class=\"hint\">the provider's default scopes; one per line, or separated by spaces or commas</span></label>",
            escape(p.authorize_url.as_deref().unwrap_or("")),
            escape(&p.token_url),
            escape(&p.scopes.join("\n")),
        ),
        Some(_) => "<p class=\"hint wide\">This provider comes from the catalog or the config file: its URLs and scopes are fixed. \
                    Duplicate it under Providers to change them.</p>"
            .to_owned(),
        None => "<label>Authorize URL<input name=\"authorize_url\" placeholder=\"providers added here only; empty: unchanged\"></label>\
                 <label>Token URL<input name=\"token_url\" placeholder=\"providers added here only; empty: unchanged\"></label>\
                 <label class=\"wide\">Scopes<textarea name=\"scopes\" rows=\"2\" placeholder=\"providers added here only; empty: unchanged\"></textarea></label>"
            .to_owned(),
    };
    body.push_str(&format!(
        "<h3 id=\"app-form\">{title}</h3><form method=\"post\" action=\"/console/apps\" class=\"grid app-form\">{csrf}\
         <label>Provider<select name=\"provider\">{provider_options}</select></label>\
         <label>Tenant<input name=\"tenant\" value=\"{tenant}\"></label>\
         <label>Environment<input name=\"environment\" list=\"environment-names\" value=\"{environment}\"></label>\
         <datalist id=\"environment-names\">{env_list}</datalist>\
         <label>Client id<input name=\"client_id\" value=\"{client_id}\" autocomplete=\"off\"></label>\
         <label>Client secret<input type=\"password\" name=\"client_secret\" autocomplete=\"off\" placeholder=\"{secret_hint}\"></label>\
         {endpoints}<button type=\"submit\">Save app</button></form></section>",
        csrf = view.csrf_field,
        tenant = escape(editing.map_or(crate::DEFAULT_TENANT, |a| a.tenant.as_str())),
        environment = escape(editing.map_or_else(
            || view.environment.unwrap_or(crate::DEFAULT_ENVIRONMENT),
            |a| a.environment.as_str()
        )),
        client_id = escape(editing.map_or("", |a| a.client_id.as_str())),
    ));
    body
}

/// Every provider (catalog, config file, added here), with delete for
/// those added here, duplicate for all, and the form to add one.
pub fn providers(
    view: &View,
    providers: &[Provider],
    stored: &[String],
    apps: &[AppView],
) -> String {
    let mut body = String::from(
        "<section class=\"card\" id=\"providers\"><h2>Providers</h2><table><thead><tr><th>Name</th><th>Label</th><th>Source</th>\
         <th>Hosts</th><th>Default scopes</th><th>Apps</th><th></th></tr></thead><tbody>",
    );
    for p in providers {
        let added = stored.contains(&p.name);
        let delete = if added {
            format!(
                "<form method=\"post\" action=\"/console/providers/delete\" class=\"inline\">{}\
                 <input type=\"hidden\" name=\"name\" value=\"{}\"><button type=\"submit\" class=\"danger\">Delete</button></form> ",
                view.csrf_field,
                escape(&p.name)
            )
        } else {
            String::new()
        };
        body.push_str(&format!(
            "<tr data-provider-def=\"{0}\"><td><code>{0}</code></td><td class=\"label\">{1}</td><td>{2}{protocol}</td><td>{3}</td><td>{4}</td><td>{5}</td>\
             <td>{delete}<details class=\"duplicate\"><summary>Duplicate…</summary>\
             <form method=\"post\" action=\"/console/providers/duplicate\">{csrf}<input type=\"hidden\" name=\"source\" value=\"{0}\">\
             <label>New name<input name=\"name\"></label><label>Variable<input name=\"env\" placeholder=\"default: NAME_TOKEN\"></label>\
             <label>Label<input name=\"display_name\"></label><label class=\"check\"><input type=\"checkbox\" name=\"apps\" value=\"1\"> copy its apps</label>\
             <button type=\"submit\">Duplicate</button></form></details></td></tr>",
            escape(&p.name),
            escape(p.label()),
            if added {
                "<span class=\"badge\">added here</span>"
            } else {
                "<span class=\"badge muted\">catalog or config file</span>"
            },
            escape(&p.hosts.join(", ")),
            escape(&p.scopes.join(" ")),
            apps.iter().filter(|a| a.provider == p.name).count(),
            csrf = view.csrf_field,
            protocol = if p.is_oauth1() {
                " <span class=\"badge oauth1\">OAuth 1.0a</span>"
            } else {
                ""
            },
        ));
    }
    body.push_str(&format!(
        "</tbody></table><h3>Add a custom OAuth 2 or OAuth 1.0a provider</h3>\
         <form method=\"post\" action=\"/console/providers\" class=\"grid provider-form\">{csrf}\
         <label>Name<input name=\"name\" placeholder=\"lower-case, e.g. acme\"></label>\
         <label>Label<input name=\"display_name\" placeholder=\"optional\"></label>\
         <label>Authorize URL<input name=\"authorize_url\" placeholder=\"https://…/authorize\"></label>\
         <label>Token URL<input name=\"token_url\" placeholder=\"https://…/token (OAuth 1.0a: access token URL)\"></label>\
         <label>Request token URL<input name=\"request_token_url\" placeholder=\"OAuth 1.0a only: https://…/request_token\"></label>\
         <label>Revoke URL<input name=\"revoke_url\" placeholder=\"optional (RFC 7009)\"></label>\
         <label>Hosts<input name=\"hosts\" placeholder=\"api.acme.com, *.acme.com\"></label>\
         <label>Variable<input name=\"env\" placeholder=\"ACME_TOKEN\"></label>\
         <label>Inject<input name=\"inject\" value=\"bearer\"></label>\
         <label class=\"wide\">Default scopes<textarea name=\"scopes\" rows=\"2\"></textarea></label>\
         <span class=\"hint wide\">With a request token URL the provider is OAuth 1.0a (RFC 5849, HMAC-SHA1): the app's client id and \
         secret are the consumer key and secret, scopes and revocation do not apply, and sandboxes sign with placeholders.</span>\
         <button type=\"submit\">Add provider</button></form></section>",
        csrf = view.csrf_field
    ));
    body
}

/// Machine accounts (client credentials) of the shown environment, each
/// with Delete, and the form that adds one in one call: with a provider,
/// its token URL, variable and hosts are the defaults; without, they are
/// required and a provider of the account's name is made from them.
pub fn machine_accounts(
    view: &View,
    connections: &[ConnectionView],
    providers: &[Provider],
    tenants: &[String],
) -> String {
    let mut body = String::from(
        "<section class=\"card\" id=\"machine-accounts\"><h2>Machine accounts</h2><table><thead><tr><th>Name</th><th>Provider</th>\
         <th>Tenant</th><th>Environment</th><th>Variable</th><th>Hosts</th><th>Scopes</th><th>Status</th><th></th></tr></thead><tbody>",
    );
    for c in connections
        .iter()
        .filter(|c| c.kind == GrantKind::ClientCredentials && view.shows(&c.environment))
    {
        let provider = providers.iter().find(|p| p.name == c.provider);
        let variable = c
            .variable
            .as_deref()
            .or(provider.map(|p| p.env.as_str()))
            .unwrap_or("");
        let hosts = c
            .hosts
            .as_ref()
            .or(provider.map(|p| &p.hosts))
            .map(|h| h.join(", "))
            .unwrap_or_default();
        body.push_str(&format!(
            "<tr data-machine-account=\"{name}\"><td><code>{name}</code></td><td>{provider}</td><td>{tenant}</td><td>{environment}</td>\
             <td><code>{variable}</code></td><td>{hosts}</td><td class=\"scopes\">{scopes}</td><td>{status}</td>\
             <td><form method=\"post\" action=\"/console/disconnect/{id}\" class=\"inline\">{csrf}\
             <button type=\"submit\" class=\"danger\">Delete</button></form></td></tr>",
            name = escape(c.name.as_deref().unwrap_or("")),
            provider = escape(&c.provider),
            tenant = escape(&c.tenant),
            environment = escape(&c.environment),
            variable = escape(variable),
            hosts = escape(&hosts),
            scopes = escape(&c.scopes.join(" ")),
            status = escape(c.status.as_str()),
            id = escape(&c.id),
            csrf = view.csrf_field,
        ));
    }
    body.push_str("</tbody></table>");
    // OAuth 1.0a has no client-credentials grant.
    let provider_options: String = providers
        .iter()
        .filter(|p| !p.is_oauth1())
        .map(|p| {
            format!(
                "<option value=\"{}\">{}</option>",
                escape(&p.name),
                escape(p.label())
            )
        })
        .collect();
    body.push_str(&format!(
        "<h3>Add a machine account</h3><form method=\"post\" action=\"/console/machine-accounts\" class=\"grid machine-form\">{csrf}\
         <label>Name<input name=\"name\" placeholder=\"e.g. ci-bot\"></label>\
         <label>Provider<select name=\"provider\"><option value=\"\">none: made from the fields below</option>{provider_options}</select></label>\
         <label>Tenant<select name=\"tenant\">{tenants}</select></label>\
         <label>Environment<input name=\"environment\" list=\"environment-names\" value=\"{environment}\"></label>\
         <label>Client id<input name=\"client_id\" autocomplete=\"off\"></label>\
         <label>Client secret<input type=\"password\" name=\"client_secret\" autocomplete=\"off\" placeholder=\"write-only: never shown again\"></label>\
         <label>Token URL<input name=\"token_url\" placeholder=\"https://…/token (default: the provider's)\"></label>\
         <label>Variable<input name=\"expose_as_env\" placeholder=\"CI_BOT_TOKEN (default: the provider's)\"></label>\
         <label>Hosts<input name=\"hosts\" placeholder=\"api.example.com (default: the provider's)\"></label>\
         <label class=\"wide\">Scopes<textarea name=\"scopes\" rows=\"2\"></textarea>\
         <span class=\"hint\">one per line, or separated by spaces or commas; the token is fetched now, so a wrong secret or URL is reported and nothing is kept</span></label>\
         <button type=\"submit\">Add machine account</button></form></section>",
        csrf = view.csrf_field,
        tenants = options(tenants.iter().map(String::as_str), crate::DEFAULT_TENANT),
        environment = escape(view.environment.unwrap_or(crate::DEFAULT_ENVIRONMENT)),
    ));
    body
}

/// How a logo is listed: a `data:` image by its size, not its bytes.
fn logo_text(logo: &str) -> String {
    if logo.starts_with("data:") {
        format!("inline image, {} KiB", logo.len().div_ceil(1024))
    } else {
        logo.to_owned()
    }
}

/// Tenants' white-label settings, each with Edit and Delete, and the form
/// (`?edit_tenant=NAME` fills it; saving replaces them all, as `PUT
/// /v1/tenants/NAME` does).
pub fn tenants(view: &View, tenants: &[TenantView]) -> String {
    let mut body = String::from(
        "<section class=\"card\" id=\"tenants\"><h2>Tenants (white-label)</h2>\
         <p class=\"hint\">A tenant's name, colour and logo on its connect and callback pages, its own OAuth redirect URI \
         (its handler finishes flows with <code>POST /v1/connect/complete</code>), where a connect may return, and whether it \
         may use the default tenant's apps. A tenant of the config file's <code>[[tenant]]</code> gets the file's settings again at start.</p>\
         <table><thead><tr><th>Tenant</th><th>Name</th><th>Colour</th><th>Logo</th><th>Support</th><th>Return URL</th>\
         <th>Redirect URI</th><th>Default apps</th><th></th></tr></thead><tbody>",
    );
    for t in tenants {
        let s = &t.settings;
        let text = |v: &Option<String>| escape(v.as_deref().unwrap_or(""));
        body.push_str(&format!(
            "<tr data-tenant-settings=\"{tenant}\"><td><code>{tenant}</code></td><td class=\"display-name\">{name}</td>\
             <td><code>{colour}</code></td><td class=\"logo\">{logo}</td><td>{support}</td><td>{return_url}</td>\
             <td><code class=\"redirect-uri\">{redirect}</code></td><td>{defaults}</td>\
             <td><a class=\"button\" href=\"/?edit_tenant={tenant}#tenant-form\">Edit</a> \
             <form method=\"post\" action=\"/console/tenants/delete\" class=\"inline\">{csrf}\
             <input type=\"hidden\" name=\"tenant\" value=\"{tenant}\"><button type=\"submit\" class=\"danger\">Delete</button></form></td></tr>",
            tenant = escape(&t.tenant),
            name = text(&s.display_name),
            colour = text(&s.accent_color),
            logo = escape(&s.logo_url.as_deref().map(logo_text).unwrap_or_default()),
            support = text(&s.support_url),
            return_url = text(&s.return_url),
            redirect = escape(&t.effective_redirect_uri),
            defaults = if s.use_default_apps { "yes" } else { "no" },
            csrf = view.csrf_field,
        ));
    }
    body.push_str("</tbody></table>");
    let editing = view
        .query
        .get("edit_tenant")
        .and_then(|name| tenants.iter().find(|t| &t.tenant == name));
    let settings = editing.map(|t| &t.settings);
    let value = |v: Option<&Option<String>>| escape(v.and_then(Option::as_deref).unwrap_or(""));
    body.push_str(&format!(
        "<h3 id=\"tenant-form\">{title}</h3><form method=\"post\" action=\"/console/tenants\" class=\"grid tenant-form\">{csrf}\
         <label>Tenant<input name=\"tenant\" value=\"{tenant}\" placeholder=\"e.g. acme-corp\" required></label>\
         <label>Display name<input name=\"display_name\" value=\"{display_name}\" placeholder=\"shown instead of airlock\"></label>\
         <label>Accent colour<input name=\"accent_color\" value=\"{accent_color}\" placeholder=\"#rgb or #rrggbb\"></label>\
         <label>Logo URL<input name=\"logo_url\" value=\"{logo_url}\" placeholder=\"https://… or data:image/png;base64,…\"></label>\
         <label>Support URL<input name=\"support_url\" value=\"{support_url}\" placeholder=\"https://…\"></label>\
         <label>Return URL<input name=\"return_url\" value=\"{return_url}\" placeholder=\"https://… (where a connect may return)\"></label>\
         <label>Redirect URI<input name=\"redirect_uri\" value=\"{redirect_uri}\" placeholder=\"empty: the vault's callback\"></label>\
         <label class=\"check\"><input type=\"checkbox\" name=\"use_default_apps\" value=\"1\"{checked}> may use the default tenant's apps</label>\
         <span class=\"hint wide\">Saving replaces every setting of the tenant; an empty field is unset.</span>\
         <button type=\"submit\">Save tenant</button></form></section>",
        title = if editing.is_some() { "Edit tenant" } else { "Add a tenant" },
        csrf = view.csrf_field,
        tenant = escape(editing.map_or("", |t| t.tenant.as_str())),
        display_name = value(settings.map(|s| &s.display_name)),
        accent_color = value(settings.map(|s| &s.accent_color)),
        logo_url = value(settings.map(|s| &s.logo_url)),
        support_url = value(settings.map(|s| &s.support_url)),
        return_url = value(settings.map(|s| &s.return_url)),
        redirect_uri = value(settings.map(|s| &s.redirect_uri)),
        checked = if editing.is_some_and(|t| t.settings.use_default_apps) {
            " checked"
        } else {
            ""
        },
    ));
    body
}

/// The config file's `[[secret]]`s (read-only) and the vault's own.
pub fn secrets(
    view: &View,
    from_config: Option<&[ConfigSecretView]>,
    stored: &[serde_json::Value],
) -> String {
    let mut body = String::from(
        "<section class=\"card\" id=\"secrets\"><h2>Static secrets</h2><table><thead><tr><th>Name</th><th>Kind</th><th>Hosts</th><th>Source</th><th></th></tr></thead><tbody>",
    );
    for s in from_config.unwrap_or_default() {
        body.push_str(&format!(
            "<tr data-secret=\"{0}\" class=\"config-secret\"><td><code>{0}</code></td><td>{1}</td><td>{2}</td>\
             <td><span class=\"badge muted\">config file</span> <span class=\"hint\">read-only: edit the file and reload (SIGHUP)</span></td><td></td></tr>",
            escape(&s.name),
            escape(&s.kind),
            escape(&s.hosts.join(", ")),
        ));
    }
    for s in stored {
        let hosts: Vec<&str> = s["hosts"]
            .as_array()
            .map(|a| a.iter().filter_map(|h| h.as_str()).collect())
            .unwrap_or_default();
        // The vault refuses while a sandbox holds its placeholder, naming them.
        body.push_str(&format!(
            "<tr data-secret=\"{0}\" data-tenant=\"{2}\"><td><code>{0}</code></td><td>static</td><td>{1}</td><td><span class=\"badge\">vault</span> {2}</td>\
             <td><form method=\"post\" action=\"/console/secrets/delete\" class=\"inline\">{csrf}\
             <input type=\"hidden\" name=\"name\" value=\"{0}\"><input type=\"hidden\" name=\"tenant\" value=\"{2}\">\
             <button type=\"submit\" class=\"danger\">Delete</button></form></td></tr>",
            escape(s["name"].as_str().unwrap_or("")),
            escape(&hosts.join(", ")),
            escape(s["tenant"].as_str().unwrap_or("")),
            csrf = view.csrf_field,
        ));
    }
    body.push_str(&format!(
        "</tbody></table><form method=\"post\" action=\"/console/secrets\" class=\"grid secret-form\">{csrf}\
         <label>Name<input name=\"name\" required pattern=\"[A-Za-z_][A-Za-z0-9_]*\"></label>\
         <label>Value<input type=\"password\" name=\"value\" autocomplete=\"off\" required></label>\
         <label>Hosts<input name=\"hosts\" placeholder=\"api.example.com, *.example.com\" required></label>\
         <label>Tenant<input name=\"tenant\" value=\"{tenant}\"></label>\
         <button type=\"submit\">Add secret</button></form></section>",
        csrf = view.csrf_field,
        tenant = crate::DEFAULT_TENANT,
    ));
    body
}

/// Sandboxes of the shown environment, each with Delete, and the create
/// form: providers, connections pinned by name, and vault secrets.
pub fn sandboxes(
    view: &View,
    sandboxes: &[SandboxView],
    connections: &[ConnectionView],
    secrets: &[serde_json::Value],
    environments: &[String],
) -> String {
    let mut body = String::from(
        "<section class=\"card\" id=\"sandboxes\"><h2>Sandboxes</h2><table><thead><tr><th>Id</th><th>Environment</th><th>Owner</th>\
         <th>Credentials</th><th></th></tr></thead><tbody>",
    );
    for s in sandboxes.iter().filter(|s| view.shows(&s.environment)) {
        let vars: Vec<String> = s
            .bindings
            .iter()
            .map(|(k, v)| format!("{k} ({v})"))
            .collect();
        let owner = match (&s.workspace, &s.user) {
            (Some(w), Some(u)) => format!("workspace {w}, user {u}"),
            (Some(w), None) => format!("workspace {w}"),
            (None, Some(u)) => format!("user {u}"),
            (None, None) => format!("tenant {}", s.tenant),
        };
        body.push_str(&format!(
            "<tr data-sandbox=\"{0}\"><td><code>{0}</code></td><td>{1}</td><td>{2}</td><td>{3}</td>\
             <td><form method=\"post\" action=\"/console/sandboxes/delete\" class=\"inline\">{csrf}\
             <input type=\"hidden\" name=\"id\" value=\"{0}\"><button type=\"submit\" class=\"danger\">Delete</button></form></td></tr>",
            escape(&s.id),
            escape(&s.environment),
            escape(&owner),
            escape(&vars.join(", ")),
            csrf = view.csrf_field,
        ));
    }
    body.push_str("</tbody></table>");

    let mut providers: Vec<&str> = connections.iter().map(|c| c.provider.as_str()).collect();
    providers.sort_unstable();
    providers.dedup();
    let checks = |field: &str, items: Vec<(String, String)>| -> String {
        if items.is_empty() {
            return "<span class=\"hint\">none</span>".into();
        }
        items
            .into_iter()
            .map(|(value, label)| {
                format!(
                    "<label class=\"check\"><input type=\"checkbox\" name=\"{field}\" value=\"{}\"> {}</label>",
                    escape(&value),
                    escape(&label)
                )
            })
            .collect()
    };
    let provider_checks = checks(
        "provider",
        providers
            .iter()
            .map(|p| ((*p).to_owned(), (*p).to_owned()))
            .collect(),
    );
    let pin_checks = checks(
        "pin",
        connections
            .iter()
            .filter(|c| view.shows(&c.environment))
            .filter_map(|c| {
                let name = c.name.as_deref()?;
                Some((
                    format!("{}:{name}", c.provider),
                    format!("{}:{name} ({}, {})", c.provider, c.scope, c.environment),
                ))
            })
            .collect(),
    );
    let secret_checks = checks(
        "secret",
        secrets
            .iter()
            .filter_map(|s| s["name"].as_str())
            .map(|n| (n.to_owned(), n.to_owned()))
            .collect(),
    );
    body.push_str(&format!(
        "<h3>Create a sandbox</h3><form method=\"post\" action=\"/console/sandboxes\" class=\"grid sandbox-form\">{csrf}\
         <label>Workspace<input name=\"workspace\" placeholder=\"optional\"></label>\
         <label>User<input name=\"user\" placeholder=\"optional\"></label>\
         <label>Environment<select name=\"environment\">{envs}</select></label>\
         <fieldset class=\"wide\"><legend>Providers (most specific connection)</legend>{provider_checks}</fieldset>\
         <fieldset class=\"wide\"><legend>Pinned connections (by name)</legend>{pin_checks}</fieldset>\
         <fieldset class=\"wide\"><legend>Vault secrets</legend>{secret_checks}</fieldset>\
         <button type=\"submit\">Create sandbox</button></form></section>",
        csrf = view.csrf_field,
        envs = options(
            environments.iter().map(String::as_str),
            view.environment.unwrap_or(crate::DEFAULT_ENVIRONMENT)
        ),
    ));
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TenantSettings;

    const MARKUP: &str = "<img src=x onerror=\"alert(1)\">";

    fn provider() -> Provider {
        serde_json::from_value(serde_json::json!({
            "name": "beta",
            "display_name": MARKUP,
            "authorize_url": "https://auth.beta.test/authorize?a=1&b=2",
            "token_url": "https://auth.beta.test/token",
            "scopes": ["read", "x\"y"],
            "hosts": ["api.beta.test"],
            "env": "BETA_TOKEN",
        }))
        .unwrap()
    }

    #[test]
    fn data_with_markup_is_rendered_as_text() {
        let query = HashMap::from([
            ("connect".to_owned(), "beta".to_owned()),
            ("edit_app".to_owned(), "beta".to_owned()),
            ("app_tenant".to_owned(), "default".to_owned()),
            ("app_environment".to_owned(), "default".to_owned()),
        ]);
        let view = View {
            environment: None,
            query: &query,
            csrf_field: "",
        };
        let providers = [provider()];
        let app = AppView {
            tenant: "default".into(),
            provider: "beta".into(),
            environment: "default".into(),
            client_id: "<script>id</script>".into(),
            client_secret: Some("••••abcd".into()),
        };
        let stored = ["beta".to_owned()];
        let html = [
            super::providers(&view, &providers, &stored, std::slice::from_ref(&app)),
            connect(&view, &providers, &["default".into()], &["default".into()]),
            apps(
                &view,
                &[app],
                &providers,
                &stored,
                &["default".into()],
                "https://v/cb",
                &[("acme".into(), "https://c.example/cb?a=1&b=\"<x>".into())],
            ),
        ]
        .concat();
        assert!(
            html.contains("acme: <code class=\"redirect-uri tenant-redirect-uri\">https://c.example/cb?a=1&amp;b=&quot;&lt;x&gt;</code>"),
            "{html}"
        );
        assert!(
            !html.contains("<img") && !html.contains("<script"),
            "{html}"
        );
        assert!(html.contains("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"));
        assert!(html.contains("&lt;script&gt;id&lt;/script&gt;"));
        assert!(
            html.contains("authorize?a=1&amp;b=2"),
            "URLs in attributes are escaped"
        );
        assert!(html.contains("x&quot;y"));
    }

    #[test]
    fn tenant_settings_and_the_tenant_list_are_rendered_as_text() {
        let query = HashMap::from([("edit_tenant".to_owned(), "acme".to_owned())]);
        let view = View {
            environment: None,
            query: &query,
            csrf_field: "",
        };
        let acme = TenantView {
            tenant: "acme".into(),
            settings: TenantSettings {
                display_name: Some(MARKUP.into()),
                logo_url: Some(format!("data:image/png;base64,{}", "A".repeat(3000))),
                return_url: Some("https://app.acme.test/?a=1&b=\"2\"".into()),
                use_default_apps: true,
                ..TenantSettings::default()
            },
            effective_redirect_uri: "https://v/oauth/callback".into(),
        };
        let html = tenants(&view, std::slice::from_ref(&acme));
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"));
        assert!(
            html.contains("<td class=\"logo\">inline image, 3 KiB</td>"),
            "a data: logo is listed by its size: {html}"
        );
        assert!(html.contains("value=\"https://app.acme.test/?a=1&amp;b=&quot;2&quot;\""));
        assert!(html.contains(" checked>"), "the editor holds the checkbox");
        assert!(html.contains("<h3 id=\"tenant-form\">Edit tenant</h3>"));

        let app = AppView {
            tenant: "zeta".into(),
            provider: "beta".into(),
            environment: "default".into(),
            client_id: "id".into(),
            client_secret: None,
        };
        assert_eq!(
            known_tenants(std::slice::from_ref(&acme), &[app], &[]),
            ["default", "acme", "zeta"]
        );
    }

    #[test]
    fn the_environment_filter_keeps_only_its_rows() {
        let query = HashMap::new();
        let view = View {
            environment: Some("staging"),
            query: &query,
            csrf_field: "",
        };
        let app = |environment: &str| AppView {
            tenant: "default".into(),
            provider: "beta".into(),
            environment: environment.into(),
            client_id: format!("id-{environment}"),
            client_secret: None,
        };
        let html = apps(
            &view,
            &[app("default"), app("staging")],
            &[provider()],
            &[],
            &["default".into(), "staging".into()],
            "https://v/cb",
            &[],
        );
        assert!(
            html.contains("id-staging") && !html.contains("id-default"),
            "{html}"
        );
        assert!(html.contains("name=\"environment\" list=\"environment-names\" value=\"staging\""));
    }
}
