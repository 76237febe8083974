//! Sandbox variables claimed twice: by two `[[secret]]`s, or by a secret
//! and a provider in use (a `[[provider]]`, or a catalog provider with an
//! `[[app]]`), or by two such providers. Each message names both claims.

use std::collections::BTreeSet;

use indexmap::IndexMap;

use super::Loaded;

/// Who claims a variable, for messages and for the reserved-name rule.
enum Claim {
    Secret(String),
    Provider(String),
}

impl Claim {
    fn text(&self) -> &str {
        match self {
            Self::Secret(t) | Self::Provider(t) => t,
        }
    }
}

impl Loaded {
    pub(super) fn variable_collisions(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (var, claims) in self.claims() {
            let who: Vec<&str> = claims.iter().map(Claim::text).collect();
            if claims.len() > 1 {
                errors.push(format!(
                    "variable {var} is claimed by {}: a sandbox can get only one value for it; rename a secret or set the provider's env",
                    who.join(" and by ")
                ));
            }
            // A secret's own reserved name is reported with the secret.
            if crate::sandbox_env::is_reserved(&var)
                && claims.iter().any(|c| matches!(c, Claim::Provider(_)))
            {
                errors.push(format!(
                    "variable {var} ({}) is one airlock sets itself for sandboxes (proxy, CA); choose another env",
                    who.join(", ")
                ));
            }
        }
        errors
    }

    /// variable -> who claims it, in file order.
    fn claims(&self) -> IndexMap<String, Vec<Claim>> {
        let c = &self.config;
        let mut claims: IndexMap<String, Vec<Claim>> = IndexMap::new();
        let mut claim = |var: &str, who: Claim| {
            claims.entry(var.to_owned()).or_default().push(who);
        };
        for spanned in &c.secrets {
            let line = self.line_of(spanned.span().start);
            let s = spanned.get_ref();
            let name = &s.name;
            claim(
                name,
                Claim::Secret(format!("[[secret]] {name:?} (line {line})")),
            );
            if s.kind == super::file::SecretKind::AwsSigV4 {
                let secret = s.secret_variable();
                claim(
                    secret,
                    Claim::Secret(format!(
                        "[[secret]] {name:?} (line {line}, secret_variable = {secret:?})"
                    )),
                );
                if s.has_session_token() || s.role_arn.is_some() {
                    let token = s.session_token_variable();
                    claim(
                        token,
                        Claim::Secret(format!(
                            "[[secret]] {name:?} (line {line}, session_token_variable = {token:?})"
                        )),
                    );
                }
            }
        }
        let mut providers_seen = BTreeSet::new();
        for spanned in &c.providers {
            let line = self.line_of(spanned.span().start);
            let p = spanned.get_ref();
            if providers_seen.insert(p.name.clone()) {
                claim(
                    &p.env,
                    Claim::Provider(format!(
                        "[[provider]] {:?} (line {line}, env = {:?})",
                        p.name, p.env
                    )),
                );
            }
        }
        if c.vault.catalog_file.is_none() {
            let catalog = airlock_vault::Catalog::built_in();
            for spanned in &c.apps {
                let line = self.line_of(spanned.span().start);
                let name = &spanned.get_ref().provider;
                let Some(p) = catalog.get(name) else { continue };
                if providers_seen.insert(name.clone()) {
                    claim(
                        &p.env,
                        Claim::Provider(format!(
                            "provider {name:?} (built-in catalog, env {:?}; its [[app]] is at line {line})",
                            p.env
                        )),
                    );
                }
            }
        }
        claims
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::load;

    #[test]
    fn two_claims_on_one_variable_name_both() {
        let l = load(
            "[[secret]]\nname = \"GITHUB_TOKEN\"\nvalue = \"x\"\nhosts = [\"a.test\"]\n\n[[app]]\nprovider = \"github\"\nclient_id = \"id\"\n",
        );
        let errors = l.variable_collisions();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("variable GITHUB_TOKEN is claimed by [[secret]] \"GITHUB_TOKEN\" (line 1) and by provider \"github\" (built-in catalog"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_provider_may_not_use_a_reserved_variable() {
        let l = load(
            "[[provider]]\nname = \"p\"\nenv = \"HTTPS_PROXY\"\nhosts = [\"a.test\"]\nauthorize_url = \"https://a.test/a\"\ntoken_url = \"https://a.test/t\"\n",
        );
        let errors = l.variable_collisions();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("variable HTTPS_PROXY ([[provider]] \"p\"")),
            "{errors:?}"
        );
    }
}
