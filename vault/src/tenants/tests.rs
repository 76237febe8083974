//! White-label settings: what is accepted, and flows of tenants with their
//! own apps, callback origins and return addresses, on SQLite and PostgreSQL.

use super::*;
mod flows;

fn settings() -> TenantSettings {
    TenantSettings::default()
}

#[test]
fn colours_logos_and_urls_are_checked() {
    let ok = TenantSettings {
        display_name: Some("  Acme Connect ".into()),
        accent_color: Some("#FF5500".into()),
        logo_url: Some("data:image/png;base64,iVBORw0KGgo=".into()),
        support_url: Some("https://acme.example/help".into()),
        return_url: Some("http://127.0.0.1:9/done".into()),
        redirect_uri: Some("https://connect.acme.example/oauth/callback".into()),
        use_default_apps: false,
    }
    .validated()
    .unwrap();
    assert_eq!(ok.display_name.as_deref(), Some("Acme Connect"));
    assert_eq!(ok.accent_color.as_deref(), Some("#ff5500"));

    for (bad, says) in [
        (
            TenantSettings {
                accent_color: Some("red;}body{x".into()),
                ..settings()
            },
            "accent_color",
        ),
        (
            TenantSettings {
                logo_url: Some("javascript:alert(1)".into()),
                ..settings()
            },
            "logo_url must be https:// or a data:image",
        ),
        (
            TenantSettings {
                logo_url: Some("http://logo.example/a.png".into()),
                ..settings()
            },
            "logo_url must be https://",
        ),
        (
            TenantSettings {
                logo_url: Some("data:text/html;base64,PHNjcmlwdD4=".into()),
                ..settings()
            },
            "not an image type",
        ),
        (
            TenantSettings {
                logo_url: Some("data:image/png;base64,<script>".into()),
                ..settings()
            },
            "not valid base64",
        ),
        (
            TenantSettings {
                redirect_uri: Some("http://connect.acme.example/cb".into()),
                ..settings()
            },
            "redirect_uri must be https://",
        ),
        (
            TenantSettings {
                return_url: Some("https://acme.example/done#x".into()),
                ..settings()
            },
            "#fragment",
        ),
        (
            TenantSettings {
                display_name: Some("a\u{7}b".into()),
                ..settings()
            },
            "control characters",
        ),
    ] {
        let err = bad.validated().unwrap_err().to_string();
        assert!(err.contains(says), "{err:?} should say {says:?}");
    }
    let big = format!("data:image/png;base64,{}", "A".repeat(MAX_DATA_LOGO));
    let err = TenantSettings {
        logo_url: Some(big),
        ..settings()
    }
    .validated()
    .unwrap_err();
    assert!(err.to_string().contains("at most 64 KiB"), "{err}");
}

#[test]
fn every_bad_field_is_named_at_once() {
    let err = TenantSettings {
        accent_color: Some("blue".into()),
        support_url: Some("ftp://x".into()),
        ..settings()
    }
    .validated()
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("accent_color") && err.contains("support_url"),
        "{err}"
    );
}
