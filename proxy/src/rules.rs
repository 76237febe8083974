//! A binding's request rules applied to one request: the facts they read
//! (method, path, and when a GraphQL rule asks, the request's operations).

use std::sync::OnceLock;

use airlock_vault_client::{
    Denial, GraphqlFacts, GraphqlOperation, OperationType, RequestFacts, RequestRules,
};
use apollo_parser::cst;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::Method;

/// GraphQL documents nest; a hostile one must not cost more than this.
const MAX_GRAPHQL_DEPTH: usize = 64;
const MAX_GRAPHQL_TOKENS: usize = 100_000;

/// What the rules of this request's bindings are asked about. Built once per
/// request; the GraphQL operations are read at most once, and only when a
/// GraphQL rule's method and path match.
#[derive(Clone)]
pub struct RuleRequest {
    method: Method,
    /// Shared with the request's URI, not copied.
    target: PathAndQuery,
    /// The whole (decoded) body, when the proxy kept it.
    body: Option<Bytes>,
    content_type: Option<String>,
    /// The body's length when known before it is sent.
    body_len: Option<u64>,
    graphql: OnceLock<GraphqlFacts>,
}

impl RuleRequest {
    pub fn new(method: &Method, target: PathAndQuery) -> Self {
        Self {
            method: method.clone(),
            target,
            body: None,
            content_type: None,
            body_len: None,
            graphql: OnceLock::new(),
        }
    }

    /// The body the proxy read whole; without it a GraphQL POST is unreadable.
    pub fn with_body(mut self, body: Bytes, content_type: Option<&str>) -> Self {
        self.body_len = Some(body.len() as u64);
        self.body = Some(body);
        self.content_type = content_type.map(str::to_ascii_lowercase);
        self
    }

    /// A body not kept whole: its announced length, if any.
    pub fn with_body_len(mut self, len: Option<u64>) -> Self {
        self.body_len = len;
        self
    }

    pub fn body_len(&self) -> Option<u64> {
        self.body_len
    }

    pub fn check(&self, rules: &RequestRules) -> Result<(), Denial> {
        let graphql = || {
            self.graphql
                .get_or_init(|| {
                    operations_of(
                        &self.method,
                        self.target.query(),
                        self.body.as_deref(),
                        self.content_type.as_deref(),
                    )
                })
                .clone()
        };
        rules.check(&RequestFacts {
            method: self.method.as_str(),
            path: self.target.path(),
            graphql: &graphql,
        })
    }
}

/// Every operation of every GraphQL document the request carries: `?query=`
/// on a GET, an `application/graphql` body, or a JSON body (one request
/// object or a batch). Anything else is unreadable, and a GraphQL rule then
/// refuses: a guess could let a mutation through as a query.
pub fn operations_of(
    method: &Method,
    query: Option<&str>,
    body: Option<&[u8]>,
    content_type: Option<&str>,
) -> GraphqlFacts {
    let mut documents: Vec<String> = Vec::new();
    if method == Method::GET {
        let Some(query) = query else {
            return unreadable("a GET without a query parameter");
        };
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if key == "query" {
                documents.push(value.into_owned());
            }
        }
        if documents.len() != 1 {
            return unreadable("a GET must carry exactly one query parameter");
        }
    } else {
        let Some(body) = body else {
            return unreadable("the body was not kept whole (too large or streamed)");
        };
        if content_type.is_some_and(|c| c.starts_with("application/graphql")) {
            match std::str::from_utf8(body) {
                Ok(text) => documents.push(text.to_owned()),
                Err(_) => return unreadable("the body is not UTF-8"),
            }
        } else {
            let value: serde_json::Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(_) => return unreadable("the body is not JSON"),
            };
            let requests = match value {
                serde_json::Value::Array(batch) => batch,
                single => vec![single],
            };
            for request in requests {
                match request.get("query").and_then(|q| q.as_str()) {
                    Some(q) => documents.push(q.to_owned()),
                    None => {
                        return unreadable("a request without a query string (a persisted query?)")
                    }
                }
            }
        }
    }
    let mut operations = Vec::new();
    for document in &documents {
        match operations_in(document) {
            Ok(ops) => operations.extend(ops),
            Err(why) => return unreadable(why),
        }
    }
    if operations.is_empty() {
        return unreadable("no operation in the document");
    }
    GraphqlFacts::Operations(operations)
}

fn unreadable(why: &str) -> GraphqlFacts {
    GraphqlFacts::Unreadable(why.to_owned())
}

/// Every operation definition of one document; a document that does not
/// parse cleanly is refused whole.
fn operations_in(document: &str) -> Result<Vec<GraphqlOperation>, &'static str> {
    let tree = apollo_parser::Parser::new(document)
        .recursion_limit(MAX_GRAPHQL_DEPTH)
        .token_limit(MAX_GRAPHQL_TOKENS)
        .parse();
    if tree.errors().len() > 0 {
        return Err("the GraphQL document does not parse");
    }
    let mut out = Vec::new();
    for definition in tree.document().definitions() {
        if let cst::Definition::OperationDefinition(op) = definition {
            // No keyword: the `{ … }` shorthand, a query.
            let kind = match op.operation_type() {
                None => OperationType::Query,
                Some(t) if t.mutation_token().is_some() => OperationType::Mutation,
                Some(t) if t.subscription_token().is_some() => OperationType::Subscription,
                Some(_) => OperationType::Query,
            };
            out.push(GraphqlOperation {
                kind,
                name: op.name().map(|n| n.text().to_string()),
            });
        } else if !matches!(definition, cst::Definition::FragmentDefinition(_)) {
            // Schema definitions are not requests.
            return Err("the document holds definitions other than operations and fragments");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(facts: GraphqlFacts) -> Vec<(OperationType, Option<String>)> {
        match facts {
            GraphqlFacts::Operations(ops) => ops.into_iter().map(|o| (o.kind, o.name)).collect(),
            GraphqlFacts::Unreadable(why) => panic!("unreadable: {why}"),
        }
    }

    fn post_json(body: &str) -> GraphqlFacts {
        operations_of(
            &Method::POST,
            None,
            Some(body.as_bytes()),
            Some("application/json"),
        )
    }

    #[test]
    fn operations_are_read_from_json_batches_get_and_graphql_bodies() {
        use OperationType::*;
        assert_eq!(
            ops(post_json(
                r#"{"query":"query Viewer { viewer { login } }"}"#
            )),
            [(Query, Some("Viewer".into()))]
        );
        assert_eq!(
            ops(post_json(r#"{"query":"{ viewer { login } }"}"#)),
            [(Query, None)]
        );
        assert_eq!(
            ops(post_json(
                r#"[{"query":"query A { a }"},{"query":"mutation B($x: ID!) { b(id: $x) { id } } fragment F on T { f }"}]"#
            )),
            [(Query, Some("A".into())), (Mutation, Some("B".into()))]
        );
        // Every operation of a document counts, whatever operationName says.
        assert_eq!(
            ops(post_json(
                r#"{"query":"query Safe { a } mutation Hidden { b }","operationName":"Safe"}"#
            ))
            .len(),
            2
        );
        assert_eq!(
            ops(operations_of(
                &Method::GET,
                Some("query=subscription%20S%20%7B%20s%20%7D&x=1"),
                None,
                None
            )),
            [(Subscription, Some("S".into()))]
        );
        assert_eq!(
            ops(operations_of(
                &Method::POST,
                None,
                Some(b"mutation M { m }"),
                Some("application/graphql; charset=utf-8")
            )),
            [(Mutation, Some("M".into()))]
        );
    }

    #[test]
    fn anything_unclear_is_unreadable() {
        for facts in [
            post_json("not json"),
            post_json(r#"{"extensions":{"persistedQuery":{"sha256Hash":"abc"}}}"#),
            post_json(r#"{"query":"mutation { "}"#),
            post_json(r#"{"query":"type Query { a: Int }"}"#),
            post_json(r#"{"query":"fragment F on T { f }"}"#),
            post_json(r##"{"query":"# only a comment"}"##),
            operations_of(&Method::POST, None, None, None),
            operations_of(&Method::GET, Some("query=a&query=b"), None, None),
            operations_of(&Method::GET, None, None, None),
        ] {
            assert!(matches!(facts, GraphqlFacts::Unreadable(_)), "{facts:?}");
        }
    }

    #[test]
    fn a_deeply_nested_document_is_refused_not_a_crash() {
        let deep = format!(
            "{{\"query\":\"{}{}\"}}",
            "{ a ".repeat(10_000),
            "}".repeat(10_000)
        );
        assert!(matches!(post_json(&deep), GraphqlFacts::Unreadable(_)));
    }

    #[test]
    fn the_request_splits_path_and_query_and_reads_graphql_once() {
        let rules = RequestRules::compile(&airlock_vault_client::RulesSpec {
            rules: vec![
                "allow GET /repos/acme/**".into(),
                "allow POST /graphql query *".into(),
            ],
            ..Default::default()
        })
        .unwrap();
        let get = RuleRequest::new(
            &Method::GET,
            PathAndQuery::from_static("/repos/acme/web?per_page=1"),
        );
        assert!(get.check(&rules).is_ok());
        assert!(
            get.graphql.get().is_none(),
            "no GraphQL rule matched: never read"
        );
        let body = Bytes::from_static(br#"{"query":"mutation M { m }"}"#);
        let post = RuleRequest::new(&Method::POST, PathAndQuery::from_static("/graphql"))
            .with_body(body, Some("application/json"));
        assert!(post.check(&rules).is_err());
        assert!(post.graphql.get().is_some());
        let query = RuleRequest::new(&Method::POST, PathAndQuery::from_static("/graphql"))
            .with_body(
                Bytes::from_static(br#"{"query":"{ viewer { login } }"}"#),
                None,
            );
        assert!(query.check(&rules).is_ok());
    }
}
