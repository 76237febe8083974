//! The console's state-changing forms beyond sign-in: connect with an owner,
//! environment, name and scopes; providers added, deleted, duplicated;
//! sandboxes created and deleted; machine accounts added; tenants'
//! white-label settings saved and deleted; vault static secrets deleted.
//! Each checks the session and its CSRF token first; a refusal is a page
//! naming what was wrong, and changes nothing.

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use super::{authorized_post, error_page, escape, input, page};
use crate::api::state::ApiState;
use crate::{
    ConnectRequest, ConnectionPin, DuplicateProvider, MachineAccountSpec, NewSandbox, Provider,
    TenantSettings, VaultError, DEFAULT_ENVIRONMENT, DEFAULT_TENANT,
};

fn default_tenant() -> String {
    DEFAULT_TENANT.into()
}

#[derive(Deserialize)]
pub struct ConnectForm {
    #[serde(default)]
    csrf: String,
    provider: String,
    #[serde(default = "default_tenant")]
    tenant: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    owner_name: String,
    #[serde(default)]
    environment: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    scopes: String,
}

impl ConnectForm {
    fn request(&self) -> Result<ConnectRequest, VaultError> {
        let scopes = input::scopes(&self.scopes)?;
        Ok(ConnectRequest {
            tenant: input::optional(&self.tenant).unwrap_or_else(default_tenant),
            scope: input::owner(&self.owner, &self.owner_name)?,
            provider: self.provider.trim().to_owned(),
            // Empty: the provider's defaults.
            scopes: (!scopes.is_empty()).then_some(scopes),
            environment: input::optional(&self.environment)
                .unwrap_or_else(|| DEFAULT_ENVIRONMENT.into()),
            name: input::optional(&self.name),
        })
    }
}

/// Starts a connect flow (new, or the same connection with other scopes)
/// and sends the window on to the provider. The console's CSP allows forms
/// to post only to this origin, redirects included, so this answers a page
/// whose script (or link) continues to the provider.
pub async fn connect(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<ConnectForm>,
) -> Response {
    if let Err(r) = authorized_post(&state, &headers, &form.csrf) {
        return *r;
    }
    let started = match form.request() {
        Ok(request) => state.vault.start_connect_request(&request).await,
        Err(e) => Err(e),
    };
    match started {
        Ok(started) => page(
            StatusCode::OK,
            "Connecting",
            format!(
                "<section class=\"card narrow\"><h1>Connecting</h1><p>On to the provider to consent…</p>\
                 <p><a class=\"button primary\" data-continue href=\"{}\">Continue to {}</a></p></section>",
                escape(&started.authorization_url),
                escape(form.provider.trim())
            ),
        ),
        Err(e) => error_page("Not connected", &e),
    }
}

#[derive(Deserialize)]
pub struct ProviderForm {
    #[serde(default)]
    csrf: String,
    name: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    authorize_url: String,
    #[serde(default)]
    token_url: String,
    /// Set: the provider is OAuth 1.0a (`token_url` is its access-token URL).
    #[serde(default)]
    request_token_url: String,
    #[serde(default)]
    revoke_url: String,
    #[serde(default)]
    scopes: String,
    #[serde(default)]
    hosts: String,
    #[serde(default)]
    env: String,
    #[serde(default)]
    inject: String,
}

impl ProviderForm {
    fn provider(&self) -> Result<Provider, VaultError> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err(VaultError::Invalid("the provider needs a name".into()));
        }
        if input::optional(&self.token_url).is_none() {
            return Err(VaultError::Invalid(format!(
                "provider {name:?} needs a token URL"
            )));
        }
        let env = input::optional(&self.env).unwrap_or_default();
        let provider: Provider = serde_json::from_value(json!({
            "name": name,
            "display_name": input::optional(&self.display_name),
            "authorize_url": input::optional(&self.authorize_url),
            "token_url": self.token_url.trim(),
            "request_token_url": input::optional(&self.request_token_url),
            "revoke_url": input::optional(&self.revoke_url),
            "scopes": input::scopes(&self.scopes)?,
            "hosts": input::hosts(&self.hosts),
            "env": env,
            "inject": input::optional(&self.inject).unwrap_or_else(|| "bearer".into()),
        }))
        .map_err(|e| VaultError::Invalid(format!("provider {name:?}: {e}")))?;
        provider.validate()?;
        Ok(provider)
    }
}

/// Adds a custom OAuth 2 (or, with a request-token URL, OAuth 1.0a)
/// provider; an existing name is refused (an added provider's URLs and
/// scopes are edited from its app).
pub async fn add_provider(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<ProviderForm>,
) -> Response {
    if let Err(r) = authorized_post(&state, &headers, &form.csrf) {
        return *r;
    }
    let provider = match form.provider() {
        Ok(p) => p,
        Err(e) => return error_page("Provider not added", &e),
    };
    if state.vault.provider(&provider.name).is_ok() {
        return error_page(
            "Provider not added",
            &VaultError::Conflict(format!(
                "provider {:?} exists already: choose another name, or duplicate it",
                provider.name
            )),
        );
    }
    match state.vault.add_provider(provider).await {
        Ok(()) => Redirect::to("/#providers").into_response(),
        Err(e) => error_page("Provider not added", &e),
    }
}

#[derive(Deserialize)]
pub struct NameForm {
    #[serde(default)]
    csrf: String,
    name: String,
}

/// Deletes a provider added here; the vault refuses, naming what uses it.
pub async fn delete_provider(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<NameForm>,
) -> Response {
    if let Err(r) = authorized_post(&state, &headers, &form.csrf) {
        return *r;
    }
    match state.vault.delete_provider(form.name.trim()).await {
        Ok(()) => Redirect::to("/#providers").into_response(),
        Err(e) => error_page("Provider not deleted", &e),
    }
}

#[derive(Deserialize)]
pub struct DuplicateForm {
    #[serde(default)]
    csrf: String,
    source: String,
    name: String,
    #[serde(default)]
    env: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    apps: Option<String>,
}

pub async fn duplicate_provider(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<DuplicateForm>,
) -> Response {
    if let Err(r) = authorized_post(&state, &headers, &form.csrf) {
        return *r;
    }
    let new = DuplicateProvider {
        name: form.name.trim().to_owned(),
        env: input::optional(&form.env),
        display_name: input::optional(&form.display_name),
        apps: form.apps.is_some(),
    };
    if new.name.is_empty() {
        return error_page(
            "Provider not duplicated",
            &VaultError::Invalid("the copy needs a name".into()),
        );
    }
    match state
        .vault
        .duplicate_provider(form.source.trim(), new)
        .await
    {
        Ok(_) => Redirect::to("/#providers").into_response(),
        Err(e) => error_page("Provider not duplicated", &e),
    }
}

/// The sandbox form, read from its pairs (checkboxes repeat their name).
fn new_sandbox(pairs: &[(String, String)]) -> Result<NewSandbox, VaultError> {
    let one = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .and_then(|(_, v)| input::optional(v))
    };
    let all = |k: &str| -> Vec<String> {
        pairs
            .iter()
            .filter(|(key, _)| key == k)
            .filter_map(|(_, v)| input::optional(v))
            .collect()
    };
    let connections = all("pin")
        .iter()
        .map(|p| p.parse::<ConnectionPin>())
        .collect::<Result<Vec<_>, _>>()?;
    let new = json!({
        "workspace": one("workspace"),
        "user": one("user"),
        "environment": one("environment").unwrap_or_else(|| DEFAULT_ENVIRONMENT.into()),
        "providers": all("provider"),
        "secrets": all("secret"),
        "connections": connections,
    });
    serde_json::from_value(new).map_err(|e| VaultError::Invalid(format!("sandbox: {e}")))
}

pub async fn create_sandbox(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let csrf = pairs
        .iter()
        .find(|(k, _)| k == "csrf")
        .map_or("", |(_, v)| v.as_str());
    if let Err(r) = authorized_post(&state, &headers, csrf) {
        return *r;
    }
    let created = match new_sandbox(&pairs) {
        Ok(new) => state.vault.create_sandbox(new).await,
        Err(e) => Err(e),
    };
    match created {
        // Shown once, as the API does: the vault keeps only the proxy secret's hash.
        Ok(c) => {
            let env: String = c
                .env
                .iter()
                .map(|(k, v)| format!("{}={}\n", escape(k), escape(v)))
                .collect();
            page(
                StatusCode::CREATED,
                "Sandbox created",
                format!(
                    "<section class=\"card\"><h1 class=\"ok\">Sandbox <code class=\"sandbox-id\">{}</code> created</h1>\
                     <p>Its environment, shown this once (the proxy secret is not kept):</p><pre class=\"env\">{env}</pre>\
                     <p><a href=\"/#sandboxes\">Back to the console</a></p></section>",
                    escape(&c.id)
                ),
            )
        }
        Err(e) => error_page("Sandbox not created", &e),
    }
}

#[derive(Deserialize)]
pub struct IdForm {
    #[serde(default)]
    csrf: String,
    id: String,
}

pub async fn delete_sandbox(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<IdForm>,
) -> Response {
    if let Err(r) = authorized_post(&state, &headers, &form.csrf) {
        return *r;
    }
    match state.vault.delete_sandbox(form.id.trim()).await {
        Ok(()) => Redirect::to("/#sandboxes").into_response(),
        Err(e) => error_page("Sandbox not deleted", &e),
    }
}

#[derive(Deserialize)]
pub struct MachineAccountForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    provider: String,
    #[serde(default = "default_tenant")]
    tenant: String,
    #[serde(default)]
    environment: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: Option<SecretString>,
    #[serde(default)]
    token_url: String,
    #[serde(default)]
    expose_as_env: String,
    #[serde(default)]
    hosts: String,
    #[serde(default)]
    scopes: String,
}

impl MachineAccountForm {
    /// The API's spec: empty fields are the provider's defaults (or, without
    /// a provider, missing, which the vault names).
    fn spec(self) -> Result<MachineAccountSpec, VaultError> {
        let hosts = input::hosts(&self.hosts);
        Ok(MachineAccountSpec {
            tenant: input::optional(&self.tenant).unwrap_or_else(default_tenant),
            environment: input::optional(&self.environment)
                .unwrap_or_else(|| DEFAULT_ENVIRONMENT.into()),
            name: self.name.trim().to_owned(),
            provider: input::optional(&self.provider),
            client_id: self.client_id.trim().to_owned(),
            // Absent or empty: the vault says both are required.
            client_secret: self.client_secret.unwrap_or_else(|| SecretString::from("")),
            token_url: input::optional(&self.token_url),
            scopes: input::scopes(&self.scopes)?,
            expose_as_env: input::optional(&self.expose_as_env),
            hosts: (!hosts.is_empty()).then_some(hosts),
        })
    }
}

/// Adds a machine account in one call, as `POST /v1/machine-accounts`: its
/// token is fetched first, so a wrong secret or URL stores nothing.
pub async fn add_machine_account(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<MachineAccountForm>,
) -> Response {
    if let Err(r) = authorized_post(&state, &headers, &form.csrf) {
        return *r;
    }
    let added = match form.spec() {
        Ok(spec) => state.vault.add_machine_account(spec).await,
        Err(e) => Err(e),
    };
    match added {
        Ok(_) => Redirect::to("/#machine-accounts").into_response(),
        Err(e) => error_page("Machine account not added", &e),
    }
}

#[derive(Deserialize)]
pub struct TenantForm {
    #[serde(default)]
    csrf: String,
    tenant: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    accent_color: String,
    #[serde(default)]
    logo_url: String,
    #[serde(default)]
    support_url: String,
    #[serde(default)]
    return_url: String,
    #[serde(default)]
    redirect_uri: String,
    /// A checkbox: present when checked.
    #[serde(default)]
    use_default_apps: Option<String>,
}

impl TenantForm {
    /// Every setting, as `PUT /v1/tenants/NAME` takes them (the vault checks
    /// them all, as it does for the API).
    fn settings(&self) -> TenantSettings {
        TenantSettings {
            display_name: input::optional(&self.display_name),
            accent_color: input::optional(&self.accent_color),
            logo_url: input::optional(&self.logo_url),
            support_url: input::optional(&self.support_url),
            return_url: input::optional(&self.return_url),
            redirect_uri: input::optional(&self.redirect_uri),
            use_default_apps: self.use_default_apps.is_some(),
        }
    }
}

/// Saves a tenant's white-label settings (all of them, like the API's `PUT`).
pub async fn save_tenant(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<TenantForm>,
) -> Response {
    if let Err(r) = authorized_post(&state, &headers, &form.csrf) {
        return *r;
    }
    match state
        .vault
        .set_tenant(form.tenant.trim(), form.settings())
        .await
    {
        Ok(_) => Redirect::to("/#tenants").into_response(),
        Err(e) => error_page("Tenant not saved", &e),
    }
}

#[derive(Deserialize)]
pub struct TenantNameForm {
    #[serde(default)]
    csrf: String,
    tenant: String,
}

/// Forgets a tenant's settings: its pages and redirect URI go back to the
/// defaults (its apps and connections stay).
pub async fn delete_tenant(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<TenantNameForm>,
) -> Response {
    if let Err(r) = authorized_post(&state, &headers, &form.csrf) {
        return *r;
    }
    match state.vault.delete_tenant(form.tenant.trim()).await {
        Ok(()) => Redirect::to("/#tenants").into_response(),
        Err(e) => error_page("Tenant settings not deleted", &e),
    }
}

#[derive(Deserialize)]
pub struct SecretKeyForm {
    #[serde(default)]
    csrf: String,
    name: String,
    #[serde(default = "default_tenant")]
    tenant: String,
}

/// Deletes a vault static secret; refused, naming the sandboxes, while one
/// holds its placeholder. The config file's secrets have no such form.
pub async fn delete_secret(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<SecretKeyForm>,
) -> Response {
    if let Err(r) = authorized_post(&state, &headers, &form.csrf) {
        return *r;
    }
    let tenant = input::optional(&form.tenant).unwrap_or_else(default_tenant);
    match state.vault.delete_secret(&tenant, form.name.trim()).await {
        Ok(()) => Redirect::to("/#secrets").into_response(),
        Err(e) => error_page("Secret not deleted", &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_sandbox_form_reads_repeated_checkboxes() {
        let new = new_sandbox(&pairs(&[
            ("csrf", "x"),
            ("workspace", " ws "),
            ("user", ""),
            ("provider", "acme"),
            ("provider", "github"),
            ("pin", "acme:work"),
            ("secret", "API_KEY"),
        ]))
        .unwrap();
        assert_eq!(new.workspace.as_deref(), Some("ws"));
        assert_eq!(new.user, None);
        assert_eq!(new.providers, ["acme", "github"]);
        assert_eq!(new.secrets, ["API_KEY"]);
        assert_eq!(new.environment, DEFAULT_ENVIRONMENT);
        assert_eq!(new.connections.len(), 1);
        assert_eq!(new.connections[0].name, "work");
        assert_eq!(new.connections[0].provider.as_deref(), Some("acme"));
    }

    #[test]
    fn a_provider_form_is_checked_before_anything_is_stored() {
        let form = |authorize: &str, scopes: &str| ProviderForm {
            csrf: String::new(),
            name: "beta".into(),
            display_name: String::new(),
            authorize_url: authorize.into(),
            token_url: "https://auth.beta.test/token".into(),
            request_token_url: String::new(),
            revoke_url: String::new(),
            scopes: scopes.into(),
            hosts: "api.beta.test".into(),
            env: "BETA_TOKEN".into(),
            inject: String::new(),
        };
        let p = form("https://auth.beta.test/authorize", "read\nwrite")
            .provider()
            .unwrap();
        assert_eq!(p.scopes, ["read", "write"]);
        assert_eq!(p.inject, "bearer");
        let e = form("not a url", "").provider().unwrap_err().to_string();
        assert!(
            e.contains("authorize_url") && e.contains("is not a URL"),
            "{e}"
        );
        let e = form("https://a.test/x", "re\"ad")
            .provider()
            .unwrap_err()
            .to_string();
        assert!(e.contains("may not contain"), "{e}");
    }

    #[test]
    fn a_request_token_url_makes_an_oauth1_provider() {
        let form = |authorize: &str| ProviderForm {
            csrf: String::new(),
            name: "legacy".into(),
            display_name: String::new(),
            authorize_url: authorize.into(),
            token_url: "https://api.legacy.test/oauth/access_token".into(),
            request_token_url: "https://api.legacy.test/oauth/request_token".into(),
            revoke_url: String::new(),
            scopes: String::new(),
            hosts: "api.legacy.test".into(),
            env: "LEGACY_TOKEN".into(),
            inject: String::new(),
        };
        let p = form("https://api.legacy.test/oauth/authorize")
            .provider()
            .unwrap();
        assert!(p.is_oauth1());
        assert_eq!(p.token_url, "https://api.legacy.test/oauth/access_token");
        let e = form("").provider().unwrap_err().to_string();
        assert!(e.contains("needs authorize_url"), "{e}");
    }

    #[test]
    fn a_machine_account_form_leaves_empty_fields_to_the_provider() {
        // As the browser posts it: every field, the empty ones too.
        let form: MachineAccountForm = serde_json::from_value(json!({
            "csrf": "x", "name": "ci-bot", "provider": "", "client_id": " id ",
            "client_secret": "s3cret", "token_url": "https://a.test/token",
            "expose_as_env": "", "hosts": "api.a.test, b.test", "scopes": "read\nwrite",
        }))
        .unwrap();
        let spec = form.spec().unwrap();
        assert_eq!(spec.name, "ci-bot");
        assert_eq!(spec.provider, None);
        assert_eq!(spec.client_id, "id");
        assert_eq!(spec.tenant, DEFAULT_TENANT);
        assert_eq!(spec.environment, DEFAULT_ENVIRONMENT);
        assert_eq!(spec.token_url.as_deref(), Some("https://a.test/token"));
        assert_eq!(spec.expose_as_env, None);
        assert_eq!(spec.hosts.unwrap(), ["api.a.test", "b.test"]);
        assert_eq!(spec.scopes, ["read", "write"]);
    }

    #[test]
    fn a_tenant_form_sets_every_field_and_the_checkbox() {
        let form: TenantForm = serde_json::from_value(json!({
            "csrf": "x", "tenant": "acme", "display_name": " Acme ", "accent_color": "#ABC",
            "logo_url": "", "support_url": "", "return_url": "", "redirect_uri": "",
        }))
        .unwrap();
        let s = form.settings();
        assert_eq!(s.display_name.as_deref(), Some("Acme"));
        assert_eq!(s.accent_color.as_deref(), Some("#ABC"));
        assert_eq!(s.logo_url, None);
        assert!(!s.use_default_apps);
        let form: TenantForm =
            serde_json::from_value(json!({ "tenant": "acme", "use_default_apps": "1" })).unwrap();
        assert!(form.settings().use_default_apps);
    }
}
