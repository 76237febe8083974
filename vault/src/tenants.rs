//! White-label: a tenant's branding (the connect-link, callback and result
//! pages show its name, logo and colour), its own OAuth redirect URI (a
//! domain of the platform's, whose handler finishes flows with
//! `POST /v1/connect/complete`), where the browser may return after a
//! connect, and whether it may use the default tenant's OAuth apps.
//!
//! Every value is checked here, once, before it is stored: pages only ever
//! render values that passed (and escape them all the same).

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::VaultError;
use crate::scope::check_name;
use crate::store::TenantRow;
use crate::{Vault, DEFAULT_TENANT};

/// The largest `data:` logo kept (the page carries it inline).
pub const MAX_DATA_LOGO: usize = 64 * 1024;
const MAX_URL: usize = 2048;
const MAX_DISPLAY_NAME: usize = 80;

/// A tenant's white-label settings as the admin API takes and shows them.
/// Every field is optional; a `PUT` replaces them all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// The name the pages show instead of "airlock".
    #[serde(default)]
    pub display_name: Option<String>,
    /// `#rgb` or `#rrggbb`.
    #[serde(default)]
    pub accent_color: Option<String>,
    /// `https://…`, or `data:image/png|jpeg|gif|webp|svg+xml;base64,…` (at most 64 KiB).
    #[serde(default)]
    pub logo_url: Option<String>,
    /// A help page the pages link to.
    #[serde(default)]
    pub support_url: Option<String>,
    /// The platform's page a connect may return to: a flow's `return_to`
    /// must be this URL or on its origin.
    #[serde(default)]
    pub return_url: Option<String>,
    /// The OAuth redirect URI of the tenant's flows (its own domain);
    /// unset: the vault's `{public_url}/oauth/callback`.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// Connects of this tenant may use the default tenant's OAuth app when
    /// it has none of its own. Off: such a connect is refused.
    #[serde(default)]
    pub use_default_apps: bool,
}

/// What `GET /v1/tenants/{name}` answers: the settings and what they mean.
#[derive(Debug, Clone, Serialize)]
pub struct TenantView {
    pub tenant: String,
    #[serde(flatten)]
    pub settings: TenantSettings,
    /// The redirect URI its flows use (to register at each provider).
    pub effective_redirect_uri: String,
}

/// What a page shows of a tenant. The default: airlock's own look.
#[derive(Debug, Clone, Default)]
pub struct Branding {
    pub tenant: Option<String>,
    pub display_name: Option<String>,
    pub accent_color: Option<String>,
    pub logo_url: Option<String>,
    pub support_url: Option<String>,
    pub return_url: Option<String>,
}

impl Branding {
    fn from_row(row: &TenantRow) -> Self {
        Self {
            tenant: Some(row.tenant.clone()),
            display_name: row.display_name.clone(),
            accent_color: row.accent_color.clone(),
            logo_url: row.logo_url.clone(),
            support_url: row.support_url.clone(),
            return_url: row.return_url.clone(),
        }
    }
}

impl TenantSettings {
    /// Checks and normalises every field (all errors at once).
    pub fn validated(mut self) -> Result<Self, VaultError> {
        let mut errors = Vec::new();
        let blank = |v: &mut Option<String>| {
            if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
                *v = None;
            }
        };
        blank(&mut self.display_name);
        blank(&mut self.accent_color);
        blank(&mut self.logo_url);
        blank(&mut self.support_url);
        blank(&mut self.return_url);
        blank(&mut self.redirect_uri);
        if let Some(name) = &mut self.display_name {
            *name = name.trim().to_owned();
            if name.chars().count() > MAX_DISPLAY_NAME || name.chars().any(char::is_control) {
                errors.push(format!(
                    "display_name must be at most {MAX_DISPLAY_NAME} characters, without control characters"
                ));
            }
        }
        if let Some(colour) = &mut self.accent_color {
            *colour = colour.trim().to_ascii_lowercase();
            if !is_hex_colour(colour) {
                errors.push(format!(
                    "accent_color {colour:?} must be #rgb or #rrggbb (hex digits)"
                ));
            }
        }
        if let Some(logo) = &self.logo_url {
            if let Err(e) = check_logo(logo) {
                errors.push(e);
            }
        }
        for (field, value) in [
            ("support_url", &self.support_url),
            ("return_url", &self.return_url),
            ("redirect_uri", &self.redirect_uri),
        ] {
            if let Some(v) = value {
                if let Err(e) = web_url(field, v) {
                    errors.push(e);
                }
            }
        }
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(VaultError::Invalid(errors.join("; ")))
        }
    }
}

pub(crate) fn is_hex_colour(s: &str) -> bool {
    s.strip_prefix('#')
        .is_some_and(|hex| matches!(hex.len(), 3 | 6) && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// An `https://` logo, or a base64 `data:` image of a raster or SVG type.
fn check_logo(logo: &str) -> Result<(), String> {
    const TYPES: [&str; 5] = [
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/svg+xml",
    ];
    if let Some(rest) = logo.strip_prefix("data:") {
        if logo.len() > MAX_DATA_LOGO {
            return Err(format!(
                "logo_url: a data: logo may be at most {} KiB",
                MAX_DATA_LOGO / 1024
            ));
        }
        let (media, data) = rest.split_once(";base64,").ok_or_else(|| {
            "logo_url: a data: logo must be data:image/TYPE;base64,… (png, jpeg, gif, webp or svg+xml)"
                .to_owned()
        })?;
        if !TYPES.contains(&media) {
            return Err(format!(
                "logo_url: data: type {media:?} is not an image type airlock shows (png, jpeg, gif, webp, svg+xml)"
            ));
        }
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| "logo_url: the data: logo is not valid base64".to_owned())?;
        return Ok(());
    }
    if logo.len() > MAX_URL {
        return Err(format!("logo_url is longer than {MAX_URL} characters"));
    }
    let url = url::Url::parse(logo)
        .map_err(|e| format!("logo_url is neither https:// nor data: ({e})"))?;
    if url.scheme() != "https" || url.host_str().is_none() {
        return Err(format!(
            "logo_url must be https:// or a data:image/… (got {}:)",
            url.scheme()
        ));
    }
    Ok(())
}

/// A page address: `https://`, or `http://` on loopback (local setups),
/// without a fragment or credentials.
pub(crate) fn web_url(field: &str, value: &str) -> Result<url::Url, String> {
    if value.len() > MAX_URL {
        return Err(format!("{field} is longer than {MAX_URL} characters"));
    }
    let url = url::Url::parse(value).map_err(|e| format!("{field} is not a URL ({e})"))?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    let ok_scheme = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    if !ok_scheme || url.host_str().is_none() {
        return Err(format!(
            "{field} must be https:// (or http:// on 127.0.0.1, localhost or [::1])"
        ));
    }
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{field} may carry no #fragment and no user:password@"
        ));
    }
    Ok(url)
}

impl Vault {
    // ---- tenants (white-label) ---------------------------------------------

    pub async fn set_tenant(
        &self,
        tenant: &str,
        settings: TenantSettings,
    ) -> Result<TenantView, VaultError> {
        check_name("tenant", tenant)?;
        let s = settings.validated()?;
        self.store
            .upsert_tenant(&TenantRow {
                tenant: tenant.to_owned(),
                display_name: s.display_name,
                accent_color: s.accent_color,
                logo_url: s.logo_url,
                support_url: s.support_url,
                return_url: s.return_url,
                redirect_uri: s.redirect_uri,
                use_default_apps: i64::from(s.use_default_apps),
                updated_at: 0,
            })
            .await?;
        self.bump_generation();
        tracing::info!(tenant, "tenant settings saved");
        self.tenant(tenant).await
    }

    /// A tenant's settings; one never set shows the defaults.
    pub async fn tenant(&self, tenant: &str) -> Result<TenantView, VaultError> {
        check_name("tenant", tenant)?;
        let row = self.store.tenant(tenant).await?;
        Ok(self.tenant_view(tenant, row.as_ref()))
    }

    pub async fn tenants(&self) -> Result<Vec<TenantView>, VaultError> {
        Ok(self
            .store
            .tenants()
            .await?
            .iter()
            .map(|r| self.tenant_view(&r.tenant, Some(r)))
            .collect())
    }

    /// Forgets a tenant's settings: its pages, redirect URI and app
    /// fallback go back to the defaults.
    pub async fn delete_tenant(&self, tenant: &str) -> Result<(), VaultError> {
        check_name("tenant", tenant)?;
        if !self.store.delete_tenant(tenant).await? {
            return Err(VaultError::NotFound(format!(
                "settings of tenant {tenant:?}"
            )));
        }
        self.bump_generation();
        Ok(())
    }

    fn tenant_view(&self, tenant: &str, row: Option<&TenantRow>) -> TenantView {
        let settings = row.map_or_else(TenantSettings::default, |r| TenantSettings {
            display_name: r.display_name.clone(),
            accent_color: r.accent_color.clone(),
            logo_url: r.logo_url.clone(),
            support_url: r.support_url.clone(),
            return_url: r.return_url.clone(),
            redirect_uri: r.redirect_uri.clone(),
            use_default_apps: r.use_default_apps != 0,
        });
        TenantView {
            tenant: tenant.to_owned(),
            effective_redirect_uri: settings
                .redirect_uri
                .clone()
                .unwrap_or_else(|| self.redirect_uri()),
            settings,
        }
    }

    /// The redirect URI of `tenant`'s flows: its own, else the vault's.
    pub async fn redirect_uri_for(&self, tenant: &str) -> Result<String, VaultError> {
        Ok(self
            .store
            .tenant(tenant)
            .await?
            .and_then(|t| t.redirect_uri)
            .unwrap_or_else(|| self.redirect_uri()))
    }

    /// Whether `tenant` may fall back to the default tenant's apps.
    pub(crate) async fn uses_default_apps(&self, tenant: &str) -> Result<bool, VaultError> {
        Ok(tenant != DEFAULT_TENANT
            && self
                .store
                .tenant(tenant)
                .await?
                .is_some_and(|t| t.use_default_apps != 0))
    }

    /// What the pages of `tenant` show; airlock's own look when it has none.
    pub async fn branding(&self, tenant: &str) -> Branding {
        match self.store.tenant(tenant).await {
            Ok(Some(row)) => Branding::from_row(&row),
            Ok(None) => Branding::default(),
            Err(e) => {
                // A page still renders, plain.
                tracing::warn!(tenant, error = %e, "tenant branding not read");
                Branding::default()
            }
        }
    }

    /// The tenant of the sandbox a connect link was made for, if the link
    /// (and its sandbox) still exist: whose branding its page shows.
    pub async fn connect_link_tenant(&self, id: &str) -> Option<String> {
        let link = self.store.link(&crate::sha256_hex(id)).await.ok()??;
        let sandbox = self.store.sandbox(&link.sandbox_id).await.ok()??;
        Some(sandbox.tenant)
    }

    /// Checks a flow's `return_to` against the tenant's `return_url`: the
    /// same URL, or another on its origin. No `return_url`, no `return_to`.
    pub(crate) async fn check_return_to(
        &self,
        tenant: &str,
        return_to: &str,
    ) -> Result<String, VaultError> {
        let wanted = web_url("return_to", return_to).map_err(VaultError::Invalid)?;
        let allowed = self
            .store
            .tenant(tenant)
            .await?
            .and_then(|t| t.return_url)
            .ok_or_else(|| {
                VaultError::Invalid(format!(
                    "return_to needs tenant {tenant}'s return_url to be set (PUT /v1/tenants/{tenant}); \
                     the browser is only ever sent back to that origin"
                ))
            })?;
        let allowed = url::Url::parse(&allowed)
            .map_err(|e| VaultError::Store(format!("stored return_url unreadable: {e}")))?;
        if wanted.origin() != allowed.origin() {
            return Err(VaultError::Invalid(format!(
                "return_to must be on tenant {tenant}'s return_url origin {}",
                allowed.origin().ascii_serialization()
            )));
        }
        Ok(wanted.to_string())
    }
}

#[cfg(test)]
mod tests;
