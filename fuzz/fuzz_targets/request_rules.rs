//! Request rules: `RequestRules::compile` on fuzz rule text, `check` on a
//! fuzz method and path, and the GraphQL reader on a fuzz body.
//!
//! Input: lines. Line 1: the method and the path-and-query (`GET /a?b`).
//! Lines 2 up to an empty line: rules, one per line. The rest: the body.
//!
//! Properties: nothing panics or runs away (a hostile GraphQL document is
//! bounded); a rule set that compiles is deterministic (the same request
//! judged twice gets the same verdict); `deny * /**` first refuses every
//! request; a path with a `..` segment is refused by any rule set that has
//! rules; a GraphQL rule never allows a body whose operations cannot be read.
#![no_main]

use airlock_proxy::rules::{operations_of, RuleRequest};
use airlock_vault_client::{GraphqlFacts, RequestRules, RulesSpec};
use bytes::Bytes;
use http::Method;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or("");
    let (method, pq) = first.split_once(' ').unwrap_or(("GET", first));
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let pq = if pq.starts_with('/') { pq.to_owned() } else { format!("/{pq}") };
    // The proxy only ever judges a target that parsed as a URI's.
    let Ok(target) = http::uri::PathAndQuery::try_from(pq.as_str()) else {
        return;
    };
    let mut rules: Vec<String> = Vec::new();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        rules.push(line.to_owned());
    }
    let body: Vec<&str> = lines.collect();
    let body = Bytes::from(body.join("\n"));
    let request = || {
        RuleRequest::new(&method, target.clone()).with_body(body.clone(), Some("application/json"))
    };

    // The GraphQL reader alone, on every input.
    let path = target.path();
    let query = target.query();
    let facts = operations_of(&method, query, Some(&body), Some("application/json"));
    if let GraphqlFacts::Operations(ops) = &facts {
        assert!(!ops.is_empty());
    }

    let spec = RulesSpec {
        rules: rules.clone(),
        ..Default::default()
    };
    if let Ok(compiled) = RequestRules::compile(&spec) {
        let first = request().check(&compiled);
        let again = request().check(&compiled);
        assert_eq!(first, again, "the same request, two verdicts");
        let dotted = path.split('/').any(|s| s == ".." || s == ".");
        if dotted && !rules.is_empty() {
            assert!(first.is_err(), "a dot segment matched a rule: {pq:?} {rules:?}");
        }
        let graphql_only = !rules.is_empty()
            && rules.iter().all(|r| r.split_whitespace().count() == 5 && r.starts_with("allow"));
        if graphql_only && matches!(facts, GraphqlFacts::Unreadable(_)) {
            assert!(first.is_err(), "allowed an unreadable GraphQL request: {rules:?}");
        }
    }
    let deny_all = RequestRules::compile(&RulesSpec {
        rules: vec!["deny * /**".to_owned()],
        ..Default::default()
    })
    .expect("deny * /** compiles");
    assert!(request().check(&deny_all).is_err());
});
