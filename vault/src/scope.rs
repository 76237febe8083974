//! Who a connection belongs to, and the names tenants, workspaces and users may have.

use serde::{Deserialize, Serialize};

use crate::store::ScopeKind;
use crate::VaultError;

/// Where a connection belongs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Scope {
    Tenant,
    Workspace(String),
    User(String),
}

impl Scope {
    pub fn parse(s: &str) -> Result<Self, VaultError> {
        let bad = || {
            VaultError::Invalid(format!(
                "scope {s:?} must be tenant, workspace:NAME or user:NAME"
            ))
        };
        match s.split_once(':') {
            None if s == "tenant" => Ok(Self::Tenant),
            Some(("workspace", name)) if valid_name(name) => Ok(Self::Workspace(name.to_owned())),
            Some(("user", name)) if valid_name(name) => Ok(Self::User(name.to_owned())),
            _ => Err(bad()),
        }
    }

    pub(crate) fn kind_and_name(&self) -> (ScopeKind, &str) {
        match self {
            Self::Tenant => (ScopeKind::Tenant, ""),
            Self::Workspace(n) => (ScopeKind::Workspace, n),
            Self::User(n) => (ScopeKind::User, n),
        }
    }
}

impl From<Scope> for String {
    fn from(s: Scope) -> String {
        match s {
            Scope::Tenant => "tenant".into(),
            Scope::Workspace(n) => format!("workspace:{n}"),
            Scope::User(n) => format!("user:{n}"),
        }
    }
}

impl TryFrom<String> for Scope {
    type Error = VaultError;
    fn try_from(s: String) -> Result<Self, VaultError> {
        Scope::parse(&s)
    }
}

/// Whether `name` may name a tenant, workspace, user, environment or connection.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

pub(crate) fn check_name(field: &str, value: &str) -> Result<(), VaultError> {
    if valid_name(value) {
        Ok(())
    } else {
        Err(VaultError::Invalid(format!(
            "{field} {value:?} must be 1-128 letters, digits, '-', '_', '.' or '@'"
        )))
    }
}
