//! The console's management sections: environments, connect, providers,
//! the app editor, the config file's secrets and sandboxes. Every value that
//! comes from data goes through `escape`.

use std::collections::HashMap;

use super::{escape, ConfigSecretView};
use crate::store::GrantKind;
use crate::{AppView, ConnectionView, Provider, SandboxView};

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

/// The connect form: provider, owner level and name, environment, a
/// connection name and the scopes (the provider's defaults, editable).
pub fn connect(view: &View, providers: &[Provider], environments: &[String]) -> String {
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
            "<tr data-provider-def=\"{0}\"><td><code>{0}</code></td><td class=\"label\">{1}</td><td>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td>\
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
        ));
    }
    body.push_str(&format!(
        "</tbody></table><h3>Add a custom OAuth2 provider</h3>\
         <form method=\"post\" action=\"/console/providers\" class=\"grid provider-form\">{csrf}\
         <label>Name<input name=\"name\" placeholder=\"lower-case, e.g. acme\"></label>\
         <label>Label<input name=\"display_name\" placeholder=\"optional\"></label>\
         <label>Authorize URL<input name=\"authorize_url\" placeholder=\"https://…/authorize\"></label>\
         <label>Token URL<input name=\"token_url\" placeholder=\"https://…/token\"></label>\
         <label>Revoke URL<input name=\"revoke_url\" placeholder=\"optional (RFC 7009)\"></label>\
         <label>Hosts<input name=\"hosts\" placeholder=\"api.acme.com, *.acme.com\"></label>\
         <label>Variable<input name=\"env\" placeholder=\"ACME_TOKEN\"></label>\
         <label>Inject<input name=\"inject\" value=\"bearer\"></label>\
         <label class=\"wide\">Default scopes<textarea name=\"scopes\" rows=\"2\"></textarea></label>\
         <button type=\"submit\">Add provider</button></form></section>",
        csrf = view.csrf_field
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
        "<section class=\"card\" id=\"secrets\"><h2>Static secrets</h2><table><thead><tr><th>Name</th><th>Kind</th><th>Hosts</th><th>Source</th></tr></thead><tbody>",
    );
    for s in from_config.unwrap_or_default() {
        body.push_str(&format!(
            "<tr data-secret=\"{0}\" class=\"config-secret\"><td><code>{0}</code></td><td>{1}</td><td>{2}</td>\
             <td><span class=\"badge muted\">config file</span> <span class=\"hint\">read-only: edit the file and reload (SIGHUP)</span></td></tr>",
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
        body.push_str(&format!(
            "<tr data-secret=\"{0}\"><td><code>{0}</code></td><td>static</td><td>{1}</td><td><span class=\"badge\">vault</span> {2}</td></tr>",
            escape(s["name"].as_str().unwrap_or("")),
            escape(&hosts.join(", ")),
            escape(s["tenant"].as_str().unwrap_or("")),
        ));
    }
    body.push_str(&format!(
        "</tbody></table><form method=\"post\" action=\"/console/secrets\" class=\"grid\">{csrf}\
         <label>Name<input name=\"name\" required pattern=\"[A-Za-z_][A-Za-z0-9_]*\"></label>\
         <label>Value<input type=\"password\" name=\"value\" autocomplete=\"off\" required></label>\
         <label>Hosts<input name=\"hosts\" placeholder=\"api.example.com, *.example.com\" required></label>\
         <button type=\"submit\">Add secret</button></form></section>",
        csrf = view.csrf_field
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
            connect(&view, &providers, &["default".into()]),
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
