//! Request rules: which requests a binding's token may be sent on.
//!
//! A binding's hosts say *where* its token may go; its rules say *which
//! requests* may carry it: `METHOD path-glob`, optionally narrowed to GraphQL
//! operations, tried in order (first match wins), else the binding's default.
//! `require` refuses requests to the binding's hosts that do not carry its
//! placeholder, so an agent cannot bring a credential of its own.
//!
//! ```text
//! allow GET /repos/acme/web/**
//! allow GET,HEAD /user
//! deny  * /repos/*/*/hooks/**
//! allow POST /graphql query *
//! deny  POST /graphql mutation delete*
//! ```
//!
//! Paths: `*` is any run of characters inside one segment, `**` a whole
//! segment run of any length (none included). The query string is not
//! matched. A path with `.`/`..` segments (also percent-encoded) is never
//! matched by anything and is refused whenever rules apply.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a rule (or the default) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// Enforce the rules, or only log and audit what they would refuse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RulesMode {
    #[default]
    Enforce,
    DryRun,
}

/// The rules as written: config (`rules`, `rules_default`, `require`,
/// `rules_mode` on a `[[secret]]` or `[[provider]]`), the admin API and the
/// service API. [`RequestRules::compile`] checks them.
///
/// As a binding's own policy (`PUT /v1/sandboxes/ID/rules/VARIABLE`) it may
/// also say `inject_when_absent`: the vault decides that (host policy), so
/// it never reaches a proxy's compiled rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// When no rule matches. Left out: `deny` if any rule allows, else `allow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Verdict>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require: bool,
    #[serde(default, skip_serializing_if = "is_enforce")]
    pub mode: RulesMode,
    /// A binding's own say on injecting its token into requests that carry
    /// none; `None` leaves it to the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject_when_absent: Option<bool>,
}

fn is_enforce(mode: &RulesMode) -> bool {
    *mode == RulesMode::Enforce
}

impl RulesSpec {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// The request rules alone, without the binding's injection say.
    pub fn request_rules(&self) -> RulesSpec {
        RulesSpec {
            inject_when_absent: None,
            ..self.clone()
        }
    }
}

/// A GraphQL operation type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationType {
    Query,
    Mutation,
    Subscription,
}

impl OperationType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Mutation => "mutation",
            Self::Subscription => "subscription",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "query" => Some(Self::Query),
            "mutation" => Some(Self::Mutation),
            "subscription" => Some(Self::Subscription),
            _ => None,
        }
    }
}

/// One operation of a GraphQL document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphqlOperation {
    pub kind: OperationType,
    /// `None` for an anonymous operation.
    pub name: Option<String>,
}

/// What the proxy could read of a request's GraphQL operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphqlFacts {
    /// Every operation of every document in the request (never empty).
    Operations(Vec<GraphqlOperation>),
    /// Why no operation could be read (no body kept, not JSON, a syntax
    /// error, a persisted query): a GraphQL rule then refuses.
    Unreadable(String),
}

/// The request a binding's rules are asked about.
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// The path as sent, without the query.
    pub path: &'a str,
    /// Asked only when a GraphQL rule's method and path match.
    pub graphql: &'a dyn Fn() -> GraphqlFacts,
}

/// Why a request was refused, for the sandbox's error and the audit line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// `rule 2 (deny DELETE /**)`, `the default (deny)`, …
    pub rule: String,
    /// Set when the request was refused before any rule was tried, or a
    /// GraphQL rule could not read the operation.
    pub detail: Option<String>,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rule)?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

/// A rule that cannot be used, named by its position and text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {index} ({text:?}): {problem}")]
pub struct RuleError {
    /// 1-based, as an operator counts.
    pub index: usize,
    pub text: String,
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Methods {
    Any,
    Listed(Vec<String>),
}

impl Methods {
    fn matches(&self, method: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Listed(list) => list.iter().any(|m| m == method),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GraphqlPattern {
    /// `None`: any operation type (`*`).
    kind: Option<OperationType>,
    name: Glob,
}

impl GraphqlPattern {
    fn matches(&self, op: &GraphqlOperation) -> bool {
        self.kind.is_none_or(|k| k == op.kind)
            && self.name.matches(op.name.as_deref().unwrap_or(""))
    }
}

/// `*` is any run of characters (none included); everything else is literal.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Glob(String);

impl Glob {
    fn matches(&self, text: &str) -> bool {
        glob_match(self.0.as_bytes(), text.as_bytes())
    }
}

/// Iterative wildcard match with one backtrack point: linear in practice,
/// never exponential.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// `**`
    Any,
    One(Glob),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PathGlob(Vec<Segment>);

impl PathGlob {
    fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err("the path must start with /".into());
        }
        if text.contains(['?', '#']) {
            return Err(
                "a path glob cannot match a query or fragment; rules match the path only".into(),
            );
        }
        let mut segments = Vec::new();
        for s in text[1..].split('/') {
            if s == "**" {
                if segments.last() != Some(&Segment::Any) {
                    segments.push(Segment::Any);
                }
            } else if s.contains("**") {
                return Err(format!("{s:?}: ** must be a whole segment"));
            } else if s == "." || s == ".." {
                return Err("a path glob cannot hold . or .. segments".into());
            } else if !s.is_empty() {
                // Matched against the normalised path: lower case, no empty segments.
                segments.push(Segment::One(Glob(s.to_ascii_lowercase())));
            }
        }
        Ok(Self(segments))
    }

    fn matches_everything(&self) -> bool {
        self.0 == [Segment::Any]
    }

    fn matches(&self, path: &[&str]) -> bool {
        segments_match(&self.0, path)
    }
}

/// `**` backtracks over whole segments; patterns are short, so the depth is
/// bounded by the pattern's own `**` count.
fn segments_match(pattern: &[Segment], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((Segment::Any, rest)) => {
            (0..=path.len()).any(|skip| segments_match(rest, &path[skip..]))
        }
        Some((Segment::One(glob), rest)) => match path.split_first() {
            Some((first, tail)) => glob.matches(first) && segments_match(rest, tail),
            None => false,
        },
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    text: String,
    verdict: Verdict,
    methods: Methods,
    path: PathGlob,
    graphql: Option<GraphqlPattern>,
}

impl Rule {
    fn parse(text: &str) -> Result<Self, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let (verdict, methods, path, graphql) = match words.as_slice() {
            [v, m, p] => (v, m, p, None),
            [v, m, p, kind, name] => (v, m, p, Some((kind, name))),
            [_, _, _, _] => {
                return Err("a GraphQL rule names an operation type and a name glob: `allow POST /graphql query *`".into())
            }
            _ => return Err("expected `allow|deny METHOD /path-glob [query|mutation|subscription|* NAME-GLOB]`".into()),
        };
        let verdict = match *verdict {
            "allow" => Verdict::Allow,
            "deny" => Verdict::Deny,
            other => return Err(format!("{other:?} is not allow or deny")),
        };
        let methods = if *methods == "*" {
            Methods::Any
        } else {
            let mut list = Vec::new();
            for m in methods.split(',') {
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(format!(
                        "method {m:?}: write methods in capitals (GET, POST, …), comma-separated, or *"
                    ));
                }
                list.push(m.to_owned());
            }
            Methods::Listed(list)
        };
        let path = PathGlob::parse(path)?;
        let graphql = match graphql {
            None => None,
            Some((kind, name)) => {
                let kind = match *kind {
                    "*" => None,
                    k => Some(OperationType::parse(k).ok_or_else(|| {
                        format!("{k:?} is not a GraphQL operation type (query, mutation, subscription or *)")
                    })?),
                };
                if !name
                    .bytes()
                    .all(|b| b == b'*' || b == b'_' || b.is_ascii_alphanumeric())
                {
                    return Err(format!("{name:?} is not a GraphQL name glob"));
                }
                if let Methods::Listed(list) = &methods {
                    if !list.iter().any(|m| m == "GET" || m == "POST") {
                        return Err(
                            "GraphQL travels in GET or POST: this rule can never match".into()
                        );
                    }
                }
                Some(GraphqlPattern {
                    kind,
                    name: Glob((*name).to_owned()),
                })
            }
        };
        Ok(Self {
            text: words.join(" "),
            verdict,
            methods,
            path,
            graphql,
        })
    }

    /// Matches every request (so no later rule is ever tried).
    fn matches_everything(&self) -> bool {
        self.methods == Methods::Any && self.path.matches_everything() && self.graphql.is_none()
    }

    fn matches_route(&self, method: &str, path: &[&str]) -> bool {
        self.methods.matches(method) && self.path.matches(path)
    }
}

/// A binding's compiled rules. The empty set allows everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestRules {
    /// As written, for the service API and admin reads.
    spec: RulesSpec,
    rules: Vec<Rule>,
    default: Option<Verdict>,
    require: bool,
    mode: RulesMode,
}

impl RequestRules {
    /// Checks every rule; reports all problems at once.
    pub fn compile(spec: &RulesSpec) -> Result<Self, Vec<RuleError>> {
        let mut rules: Vec<Rule> = Vec::new();
        // 1-based positions as written, for rules that parsed.
        let mut written_at: Vec<usize> = Vec::new();
        let mut errors = Vec::new();
        for (i, text) in spec.rules.iter().enumerate() {
            let error = |problem: String| RuleError {
                index: i + 1,
                text: text.clone(),
                problem,
            };
            match Rule::parse(text) {
                Ok(rule) => {
                    if let Some(j) = rules.iter().position(Rule::matches_everything) {
                        errors.push(error(format!(
                            "can never match: rule {} ({}) matches every request before it",
                            written_at[j], rules[j].text
                        )));
                    } else if let Some(j) = rules.iter().position(|r| r == &rule) {
                        errors.push(error(format!("repeats rule {}", written_at[j])));
                    }
                    rules.push(rule);
                    written_at.push(i + 1);
                }
                Err(problem) => {
                    errors.push(error(problem));
                }
            }
        }
        if errors.is_empty() {
            Ok(Self {
                spec: spec.request_rules(),
                rules,
                default: spec.default,
                require: spec.require,
                mode: spec.mode,
            })
        } else {
            Err(errors)
        }
    }

    /// Refuses every request: for rules that arrive unreadable (a newer
    /// vault's), since guessing them open would widen a binding.
    pub fn deny_all() -> Self {
        let spec = RulesSpec {
            default: Some(Verdict::Deny),
            ..Default::default()
        };
        Self::compile(&spec).expect("no rules to get wrong")
    }

    pub fn spec(&self) -> &RulesSpec {
        &self.spec
    }

    /// No rules, no `require`: every request is allowed.
    pub fn is_open(&self) -> bool {
        self.rules.is_empty() && self.default != Some(Verdict::Deny) && !self.require
    }

    pub fn require(&self) -> bool {
        self.require
    }

    pub fn mode(&self) -> RulesMode {
        self.mode
    }

    /// The default when no rule matches.
    pub fn default_verdict(&self) -> Verdict {
        self.default
            .unwrap_or(if self.rules.iter().any(|r| r.verdict == Verdict::Allow) {
                Verdict::Deny
            } else {
                Verdict::Allow
            })
    }

    /// Whether any GraphQL rule's method and path match: only then is the
    /// body read for its operations.
    pub fn wants_graphql(&self, method: &str, path: &str) -> bool {
        let Some(path) = normalize_path(path) else {
            return false;
        };
        let segments = split_path(&path);
        self.rules
            .iter()
            .any(|r| r.graphql.is_some() && r.matches_route(method, &segments))
    }

    /// `Ok` when the request may carry this binding's token.
    pub fn check(&self, facts: &RequestFacts<'_>) -> Result<(), Denial> {
        if self.rules.is_empty() && self.default_verdict() == Verdict::Allow {
            return Ok(());
        }
        let Some(path) = normalize_path(facts.path) else {
            return Err(Denial {
                rule: "the path check".into(),
                detail: Some(
                    "the path holds . or .. segments or backslashes; send the path the server will see"
                        .into(),
                ),
            });
        };
        let segments = split_path(&path);
        let route: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| r.matches_route(facts.method, &segments))
            .collect();
        // First match wins: a rule that does not look at GraphQL and comes
        // before every GraphQL rule decides without reading the body.
        let first_graphql = route.iter().position(|r| r.graphql.is_some());
        let first_plain = route.iter().position(|r| r.graphql.is_none());
        match (first_graphql, first_plain) {
            (None, _) => return self.verdict_of(route.first().copied(), None),
            (Some(g), Some(p)) if p < g => return self.verdict_of(Some(route[p]), None),
            _ => {}
        }
        // Every operation of the request must be allowed on its own.
        let operations = match (facts.graphql)() {
            GraphqlFacts::Operations(ops) => ops,
            GraphqlFacts::Unreadable(why) => {
                let rule = route
                    .iter()
                    .find(|r| r.graphql.is_some())
                    .expect("checked above");
                return Err(Denial {
                    rule: self.name_of(rule),
                    detail: Some(format!("cannot read the GraphQL operation: {why}")),
                });
            }
        };
        for op in &operations {
            let rule = route
                .iter()
                .copied()
                .find(|r| r.graphql.as_ref().is_none_or(|g| g.matches(op)));
            self.verdict_of(rule, Some(op))?;
        }
        Ok(())
    }

    fn verdict_of(&self, rule: Option<&Rule>, op: Option<&GraphqlOperation>) -> Result<(), Denial> {
        let (verdict, name) = match rule {
            Some(r) => (r.verdict, self.name_of(r)),
            None => {
                let v = self.default_verdict();
                (v, format!("the default ({})", v.as_str()))
            }
        };
        match verdict {
            Verdict::Allow => Ok(()),
            Verdict::Deny => Err(Denial {
                rule: name,
                detail: op.map(|op| {
                    format!(
                        "GraphQL {} {}",
                        op.kind.as_str(),
                        op.name.as_deref().unwrap_or("(anonymous)")
                    )
                }),
            }),
        }
    }

    fn name_of(&self, rule: &Rule) -> String {
        let index = self
            .rules
            .iter()
            .position(|r| std::ptr::eq(r, rule))
            .unwrap_or(0);
        format!("rule {} ({})", index + 1, rule.text)
    }
}

fn split_path(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// The path as the server will route it, for matching: percent-encoded
/// unreserved characters decoded (`%61` is `a`), ASCII lower case (GitHub's
/// owners and repositories are case-insensitive), empty segments dropped
/// (servers merge `//`). `None` when it holds `.`/`..` segments or
/// backslashes in any spelling: servers resolve those, so the path matched
/// would not be the path served.
fn normalize_path(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() {
            let hex = &bytes[i + 1..i + 3];
            if hex.iter().all(u8::is_ascii_hexdigit) {
                let v = u8::from_str_radix(std::str::from_utf8(hex).expect("hex digits"), 16)
                    .expect("hex digits");
                if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                    out.push(v.to_ascii_lowercase() as char);
                    i += 3;
                    continue;
                }
                if v == b'\\' {
                    return None;
                }
                out.push('%');
                out.push_str(&path[i + 1..i + 3].to_ascii_lowercase());
                i += 3;
                continue;
            }
        }
        if b == b'\\' {
            return None;
        }
        out.push(b.to_ascii_lowercase() as char);
        i += 1;
    }
    if split_path(&out).iter().any(|s| *s == "." || *s == "..") {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> RequestRules {
        RequestRules::compile(&RulesSpec {
            rules: list.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    fn check(r: &RequestRules, method: &str, path: &str) -> Result<(), Denial> {
        r.check(&RequestFacts {
            method,
            path,
            graphql: &|| GraphqlFacts::Unreadable("no body".into()),
        })
    }

    fn check_gql(r: &RequestRules, ops: &[(OperationType, Option<&str>)]) -> Result<(), Denial> {
        let facts = GraphqlFacts::Operations(
            ops.iter()
                .map(|(kind, name)| GraphqlOperation {
                    kind: *kind,
                    name: name.map(str::to_owned),
                })
                .collect(),
        );
        r.check(&RequestFacts {
            method: "POST",
            path: "/graphql",
            graphql: &|| facts.clone(),
        })
    }

    #[test]
    fn first_match_wins_and_allow_rules_make_the_default_deny() {
        let r = rules(&[
            "deny DELETE /**",
            "allow * /repos/acme/web/**",
            "allow GET,HEAD /user",
        ]);
        assert!(check(&r, "GET", "/repos/acme/web").is_ok());
        assert!(check(&r, "POST", "/repos/acme/web/issues").is_ok());
        assert!(check(&r, "HEAD", "/user").is_ok());
        let denied = check(&r, "DELETE", "/repos/acme/web").unwrap_err();
        assert_eq!(denied.rule, "rule 1 (deny DELETE /**)");
        let other = check(&r, "GET", "/repos/acme/api").unwrap_err();
        assert_eq!(other.rule, "the default (deny)");
        assert!(check(&r, "POST", "/user").is_err());
    }

    #[test]
    fn deny_rules_alone_leave_the_default_allow() {
        let r = rules(&["deny * /repos/*/*/hooks/**"]);
        assert!(check(&r, "GET", "/repos/a/b").is_ok());
        assert!(check(&r, "GET", "/repos/a/b/hooks").is_err());
        assert!(check(&r, "POST", "/repos/a/b/hooks/1/pings").is_err());
    }

    #[test]
    fn an_explicit_default_wins_over_the_guess() {
        let spec = RulesSpec {
            rules: vec!["allow GET /a".into()],
            default: Some(Verdict::Allow),
            ..Default::default()
        };
        let r = RequestRules::compile(&spec).unwrap();
        assert!(check(&r, "POST", "/b").is_ok());
        let deny_all = RequestRules::compile(&RulesSpec {
            default: Some(Verdict::Deny),
            ..Default::default()
        })
        .unwrap();
        assert!(!deny_all.is_open());
        assert!(check(&deny_all, "GET", "/").is_err());
        assert!(RequestRules::default().is_open());
        assert!(check(&RequestRules::default(), "GET", "/../x").is_ok());
    }

    #[test]
    fn single_star_stays_in_its_segment_and_double_star_spans_any() {
        let r = rules(&["allow GET /repos/*/web/**", "allow GET /files/*.json"]);
        assert!(check(&r, "GET", "/repos/acme/web/pulls/1").is_ok());
        assert!(check(&r, "GET", "/repos/acme/x/web").is_err());
        assert!(check(&r, "GET", "/files/a.json").is_ok());
        assert!(check(&r, "GET", "/files/a/b.json").is_err());
        assert!(check(&r, "GET", "/files/.json").is_ok());
        assert!(glob_match(b"a*b*c", b"aXbYbZc"));
        assert!(!glob_match(b"a*b*c", b"aXbYbZ"));
        assert!(glob_match(b"**", b""));
    }

    #[test]
    fn dot_segments_in_any_spelling_are_refused_once_rules_apply() {
        let r = rules(&["allow * /repos/acme/web/**"]);
        for path in [
            "/repos/acme/web/../../other/x",
            "/repos/acme/web/%2e%2E/x",
            "/repos/acme/web/./x",
            "/repos/acme/web/a%5cb",
            "/repos/acme/web/a\\..\\b",
        ] {
            let denied = check(&r, "GET", path).unwrap_err();
            assert_eq!(denied.rule, "the path check", "{path}");
        }
    }

    #[test]
    fn spellings_the_server_reads_as_the_same_path_match_the_same_rules() {
        let r = rules(&["deny DELETE /repos/acme/web", "allow * /**"]);
        for path in [
            "/repos/ACME/Web",
            "/repos/ac%6De/web",
            "/repos//acme/web/",
            "/Repos/acme/web",
        ] {
            assert!(check(&r, "DELETE", path).is_err(), "{path}");
        }
        // An encoded slash stays inside its segment, as servers route it.
        let r = rules(&["allow GET /projects/*/issues"]);
        assert!(check(&r, "GET", "/projects/acme%2fweb/issues").is_ok());
        assert!(check(&r, "GET", "/projects/acme/web/issues").is_err());
    }

    #[test]
    fn graphql_rules_judge_every_operation() {
        let r = rules(&[
            "deny POST /graphql mutation delete*",
            "allow POST /graphql query *",
            "allow POST /graphql mutation addComment",
        ]);
        use OperationType::*;
        assert!(check_gql(&r, &[(Query, Some("Viewer"))]).is_ok());
        assert!(check_gql(&r, &[(Query, None)]).is_ok());
        assert!(check_gql(&r, &[(Mutation, Some("addComment"))]).is_ok());
        let denied =
            check_gql(&r, &[(Query, Some("A")), (Mutation, Some("deleteRepo"))]).unwrap_err();
        assert_eq!(denied.rule, "rule 1 (deny POST /graphql mutation delete*)");
        assert_eq!(
            denied.detail.as_deref(),
            Some("GraphQL mutation deleteRepo")
        );
        let unmatched = check_gql(&r, &[(Subscription, Some("s"))]).unwrap_err();
        assert_eq!(unmatched.rule, "the default (deny)");
        // A body the proxy cannot read is refused, never guessed.
        let unreadable = check(&r, "POST", "/graphql").unwrap_err();
        assert!(unreadable
            .detail
            .unwrap()
            .contains("cannot read the GraphQL operation"));
        assert!(r.wants_graphql("POST", "/graphql"));
        assert!(!r.wants_graphql("GET", "/graphql"));
    }

    #[test]
    fn bad_rules_are_named_all_at_once() {
        let spec = RulesSpec {
            rules: [
                "allow GET repos",
                "permit GET /a",
                "allow get /a",
                "allow GET /a?x=1",
                "allow DELETE /graphql mutation *",
                "allow POST /graphql mutation",
                "allow GET /a/**b",
                "deny * /**",
                "allow GET /never",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            ..Default::default()
        };
        let errors = RequestRules::compile(&spec).unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 8, "{text:#?}");
        assert!(text[0].contains("must start with /"));
        assert!(text[1].contains("not allow or deny"));
        assert!(text[2].contains("capitals"));
        assert!(text[3].contains("query"));
        assert!(text[4].contains("never match"));
        assert!(text[5].contains("operation type and a name"));
        assert!(text[6].contains("whole segment"));
        assert!(
            text[7].starts_with("rule 9") && text[7].contains("rule 8 (deny * /**)"),
            "{}",
            text[7]
        );
        let dup = RequestRules::compile(&RulesSpec {
            rules: vec!["allow GET /a".into(), "allow  GET /a".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(dup[0].problem.contains("repeats rule 1"));
    }

    #[test]
    fn the_spec_round_trips_and_refuses_unknown_fields() {
        let spec: RulesSpec = serde_json::from_str(
            r#"{"rules":["allow GET /**"],"default":"deny","require":true,"mode":"dry_run"}"#,
        )
        .unwrap();
        assert_eq!(spec.mode, RulesMode::DryRun);
        assert_eq!(serde_json::to_value(&spec).unwrap()["mode"], "dry_run");
        assert_eq!(serde_json::to_string(&RulesSpec::default()).unwrap(), "{}");
        assert!(serde_json::from_str::<RulesSpec>(r#"{"allow":[]}"#).is_err());
    }

    #[test]
    fn the_injection_say_is_kept_as_written_but_never_compiled_into_rules() {
        let spec: RulesSpec =
            serde_json::from_str(r#"{"rules":["allow GET /a"],"inject_when_absent":false}"#)
                .unwrap();
        assert_eq!(spec.inject_when_absent, Some(false));
        assert!(!spec.is_empty());
        assert_eq!(
            serde_json::to_value(&spec).unwrap()["inject_when_absent"],
            false
        );
        let compiled = RequestRules::compile(&spec).unwrap();
        // What proxies receive: the rules only, so an older proxy reads them.
        assert_eq!(compiled.spec().inject_when_absent, None);
        assert_eq!(compiled.spec(), &spec.request_rules());
        let only: RulesSpec = serde_json::from_str(r#"{"inject_when_absent":true}"#).unwrap();
        assert!(only.request_rules().is_empty());
    }
}
