//! What the console's forms send, turned into typed values once: scope
//! lists, host lists, owner levels. Errors name the field and never a secret.

use crate::{Scope, VaultError};

/// Scopes as an operator pastes them: one per line, or separated by spaces
/// or commas; duplicates dropped, order kept.
pub fn scopes(text: &str) -> Result<Vec<String>, VaultError> {
    let mut out: Vec<String> = Vec::new();
    for s in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
    {
        // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
        if let Some(bad) = s
            .chars()
            .find(|&c| !matches!(c, '\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e'))
        {
            return Err(VaultError::Invalid(format!(
                "scope {s:?} holds {bad:?}, which an OAuth scope may not contain (printable ASCII \
                 without '\"' or '\\'); give scopes one per line, or separated by spaces or commas"
            )));
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    }
    Ok(out)
}

/// Hosts separated by commas, spaces or lines.
pub fn hosts(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The owner a connection belongs to, from the form's level and name.
pub fn owner(level: &str, name: &str) -> Result<Scope, VaultError> {
    let name = name.trim();
    match level.trim() {
        "" | "tenant" => Ok(Scope::Tenant),
        level @ ("workspace" | "user") if name.is_empty() => Err(VaultError::Invalid(format!(
            "a {level} connection needs the {level}'s name"
        ))),
        level @ ("workspace" | "user") => Scope::parse(&format!("{level}:{name}")),
        other => Err(VaultError::Invalid(format!(
            "owner level {other:?} must be tenant, workspace or user"
        ))),
    }
}

/// A text field: trimmed, `None` when empty.
pub fn optional(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_read_from_lines_spaces_and_commas() {
        assert_eq!(
            scopes("read\nwrite, admin:org  repo,read\r\n").unwrap(),
            ["read", "write", "admin:org", "repo"]
        );
        assert!(scopes("  \n ").unwrap().is_empty());
        let e = scopes("read \"write\"").unwrap_err().to_string();
        assert!(e.contains("may not contain"), "{e}");
        assert!(scopes("ré").is_err(), "non-ASCII is not a scope-token");
        assert!(scopes("a\\b").is_err());
    }

    #[test]
    fn owners_need_a_name_below_the_tenant() {
        assert_eq!(owner("tenant", "ignored").unwrap(), Scope::Tenant);
        assert_eq!(
            owner("workspace", " ws1 ").unwrap(),
            Scope::Workspace("ws1".into())
        );
        assert_eq!(owner("user", "a@b.c").unwrap(), Scope::User("a@b.c".into()));
        assert!(owner("user", "")
            .unwrap_err()
            .to_string()
            .contains("needs the user's name"));
        assert!(owner("user", "<b>").is_err());
        assert!(owner("team", "x").is_err());
    }

    #[test]
    fn hosts_split_on_commas_and_spaces() {
        assert_eq!(
            hosts("api.a.test, *.b.test\nc.test"),
            ["api.a.test", "*.b.test", "c.test"]
        );
    }
}
