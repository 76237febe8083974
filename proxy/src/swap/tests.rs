use super::*;
use airlock_vault_client::{generate_placeholder, HostPattern, StaticSecret, StaticSecrets};

const REAL: &str = "ghp_REALSECRETVALUE123";

fn setup(swap_in: &[SwapLocation]) -> (Arc<StaticSecrets>, String) {
    let placeholder = generate_placeholder("miosa-tok-");
    let secrets = StaticSecrets::new(
        "miosa-tok-",
        SandboxId::default_sandbox(),
        vec![StaticSecret {
            name: "GITHUB_TOKEN".into(),
            value: SecretString::from(REAL),
            placeholder: placeholder.clone(),
            hosts: vec![HostPattern::parse("api.github.com").unwrap()],
            swap_in: swap_in.iter().copied().collect(),
            on_foreign_body: Default::default(),
            rules: Default::default(),
            signing: None,
            inject_when_absent: None,
        }],
    );
    (Arc::new(secrets), placeholder)
}

fn swapper(src: Arc<StaticSecrets>, host: &str) -> Swapper {
    Swapper::new(
        src,
        Arc::new(Scanner::new("miosa-tok-")),
        SandboxId::default_sandbox(),
        host,
    )
}

#[test]
fn scanner_finds_whole_placeholders_in_every_spelling() {
    let scanner = Scanner::new("miosa-tok-");
    let p = generate_placeholder("miosa-tok-");
    let random = &p["miosa-tok-".len()..];
    let text =
        format!("a miosa-tok-short {p}, miosa\\u002dtok\\u002d{random} miosa%2Dtok%2D{random}");
    let (found, hold) = scanner.scan(text.as_bytes(), true);
    assert_eq!(hold, text.len());
    assert_eq!(found.len(), 3);
    assert!(found.iter().all(|f| f.placeholder == p));
    assert_eq!(found[1].spelling, Spelling::JsonEscaped);
    assert_eq!(found[2].spelling, Spelling::Percent);
    assert!(!scanner.contains(b"miosa-tok-"));
}

#[test]
fn the_shortest_placeholder_is_found_and_shorter_text_is_not_searched() {
    let scanner = Scanner::new("miosa-tok-");
    let min = airlock_vault_client::PLACEHOLDER_MIN_RANDOM_LEN;
    for prefix in ["miosa-tok-", "miosa%2Dtok%2D"] {
        let shortest = format!("{prefix}{}", "a".repeat(min));
        assert_eq!(
            scanner.scan(shortest.as_bytes(), true).0.len(),
            1,
            "{shortest}"
        );
        assert!(scanner.whole(shortest.as_bytes()).is_some(), "{shortest}");
        let short = &shortest[..shortest.len() - 1];
        assert!(scanner.scan(short.as_bytes(), true).0.is_empty());
        assert!(scanner.whole(short.as_bytes()).is_none());
    }
    // A stream still holds back a prefix that may go on.
    let (found, hold) = scanner.scan(b"ab miosa-t", false);
    assert!(found.is_empty());
    assert_eq!(hold, 3);
}

#[test]
fn whole_agrees_with_a_scan_that_spans_the_text() {
    let scanner = Scanner::new("miosa-tok-");
    let p = generate_placeholder("miosa-tok-");
    let random = &p["miosa-tok-".len()..];
    let escaped = format!("miosa%2Dtok%2D{random}");
    let long = format!("miosa-tok-{}", "a".repeat(MAX_RANDOM_LEN + 2));
    let cases = [
        p.as_str(),
        escaped.as_str(),
        long.as_str(),
        "miosa-tok-short",
        "miosa-tok-miosa-tok-AbCdEfGhIjKlMnOpQrStUv",
        "xmiosa-tok-AbCdEfGhIjKlMnOpQrStUv",
        "miosa-tok-AbCdEfGhIjKlMnOpQrStUv!",
        "",
    ];
    for text in cases {
        let by_scan = scanner
            .scan(text.as_bytes(), true)
            .0
            .into_iter()
            .next()
            .filter(|f| f.range == (0..text.len()));
        let whole = scanner.whole(text.as_bytes());
        assert_eq!(
            whole.as_ref().map(|f| (&f.placeholder, f.spelling)),
            by_scan.as_ref().map(|f| (&f.placeholder, f.spelling)),
            "{text}"
        );
    }
    assert_eq!(scanner.whole(p.as_bytes()).unwrap().placeholder, p);
    assert_eq!(
        scanner.whole(escaped.as_bytes()).unwrap().spelling,
        Spelling::Percent
    );
}

#[test]
fn a_prefix_inside_a_false_start_is_still_found() {
    // Found by the `scanner` fuzz target.
    let scanner = Scanner::new("miosa-tok-");
    let text = b"\0\0\0miosa-tok-miosa-tok-AbCdEfGhIjKlMnOpQrStUv ";
    let (found, _) = scanner.scan(text, true);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].placeholder, "miosa-tok-AbCdEfGhIjKlMnOpQrStUv");
    let (found, hold) = scanner.scan(&text[..text.len() - 1], false);
    assert!(found.is_empty());
    assert_eq!(hold, 13, "the inner placeholder may still be growing");
}

#[test]
fn streams_hold_back_only_what_could_become_a_placeholder() {
    let scanner = Scanner::new("miosa-tok-");
    assert_eq!(scanner.scan(b"hello world", false).1, 11);
    assert_eq!(scanner.scan(b"hello mio", false).1, 6);
    assert_eq!(scanner.scan(b"hello miosa%2", false).1, 6);
    assert_eq!(scanner.scan(b"x miosa-tok-abc", false).1, 2);
    assert_eq!(scanner.scan(b"x miosa-tok-abc ", false).1, 16);
    assert_eq!(
        scanner.scan(b"data: event\n\n", false).1,
        13,
        "SSE events are never held"
    );
}

#[test]
fn tokens_are_written_for_their_context() {
    assert_eq!(
        encode_token("a+b/c", Spelling::Plain, Context::Url),
        b"a%2Bb%2Fc"
    );
    assert_eq!(
        encode_token("a\"b", Spelling::Plain, Context::Json),
        b"a\\\"b"
    );
    assert_eq!(
        encode_token("a+b", Spelling::Percent, Context::Raw),
        b"a%2Bb"
    );
    assert_eq!(encode_token("a+b", Spelling::Plain, Context::Raw), b"a+b");
}

#[tokio::test]
async fn swaps_bearer_and_basic() {
    let (src, p) = setup(&[SwapLocation::Header, SwapLocation::Basic]);
    let mut swap = swapper(src, "api.github.com");
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, format!("Bearer {p}").parse().unwrap());
    headers.append("x-other", "plain".parse().unwrap());
    swap.swap_headers(&mut headers).await.unwrap();
    assert_eq!(headers[AUTHORIZATION], format!("Bearer {REAL}").as_str());
    assert!(headers[AUTHORIZATION].is_sensitive());

    let mut headers = HeaderMap::new();
    let basic = BASE64.encode(format!("x-access-token:{p}"));
    headers.insert(AUTHORIZATION, format!("basic {basic}").parse().unwrap());
    swap.swap_headers(&mut headers).await.unwrap();
    let expected = format!("Basic {}", BASE64.encode(format!("x-access-token:{REAL}")));
    assert_eq!(headers[AUTHORIZATION], expected.as_str());
    assert_eq!(swap.swapped_bindings().len(), 1);
}

#[tokio::test]
async fn refuses_other_hosts_locations_and_plaintext() {
    let (src, p) = setup(&[SwapLocation::Header]);
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, format!("Bearer {p}").parse().unwrap());

    let mut swap = swapper(src.clone(), "evil.test");
    let err = swap.swap_headers(&mut headers.clone()).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("secret:GITHUB_TOKEN") && msg.contains("evil.test"),
        "{msg}"
    );
    assert!(!msg.contains(REAL));

    let mut swap = swapper(src.clone(), "api.github.com");
    let err = swap
        .swap_path_and_query(&format!("/x?token={p}"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProxyError::LocationNotAllowed { .. }),
        "{err}"
    );

    let mut basic = HeaderMap::new();
    let encoded = BASE64.encode(format!("u:{p}"));
    basic.insert(AUTHORIZATION, format!("Basic {encoded}").parse().unwrap());
    let err = swap.swap_headers(&mut basic).await.unwrap_err();
    assert!(
        matches!(err, ProxyError::LocationNotAllowed { .. }),
        "{err}"
    );

    let mut swap = swapper(src.clone(), "api.github.com").plaintext();
    let err = swap.swap_headers(&mut headers.clone()).await.unwrap_err();
    assert!(matches!(err, ProxyError::PlainHttp { .. }), "{err}");

    let unknown = generate_placeholder("miosa-tok-");
    let mut h = HeaderMap::new();
    h.insert("x-token", unknown.parse().unwrap());
    let mut swap = swapper(src, "api.github.com");
    assert!(matches!(
        swap.swap_headers(&mut h).await.unwrap_err(),
        ProxyError::UnknownPlaceholder
    ));
}

#[tokio::test]
async fn token_with_line_break_is_refused_not_injected() {
    let placeholder = generate_placeholder("miosa-tok-");
    let src = Arc::new(StaticSecrets::new(
        "miosa-tok-",
        SandboxId::default_sandbox(),
        vec![StaticSecret {
            name: "EVIL".into(),
            value: SecretString::from("abc\r\nX-Injected: 1"),
            placeholder: placeholder.clone(),
            hosts: vec![HostPattern::parse("api.github.com").unwrap()],
            swap_in: SwapLocation::defaults(),
            on_foreign_body: Default::default(),
            rules: Default::default(),
            signing: None,
            inject_when_absent: None,
        }],
    ));
    let mut swap = swapper(src, "api.github.com");
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        format!("Bearer {placeholder}").parse().unwrap(),
    );
    let err = swap.swap_headers(&mut headers).await.unwrap_err();
    assert!(matches!(err, ProxyError::InvalidToken { .. }));
    assert!(!err.to_string().contains("Injected"));
}

#[tokio::test]
async fn a_placeholder_in_a_header_name_is_refused() {
    let (src, p) = setup(&[SwapLocation::Header]);
    let mut s = swapper(src, "api.github.com");
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_bytes(format!("x-{p}").to_ascii_lowercase().as_bytes()).unwrap(),
        HeaderValue::from_static("1"),
    );
    // Header names are lower-cased on the wire; the base62 run changes, so
    // the name holds an unknown placeholder: still refused, never forwarded.
    let err = s.swap_headers(&mut headers).await.unwrap_err();
    assert_eq!(err.code(), "unknown_placeholder", "{err}");
}

#[tokio::test]
async fn only_a_token_in_its_injection_slot_counts_as_evidence() {
    let (src, p) = setup(&[SwapLocation::Header, SwapLocation::Basic]);
    let mut s = swapper(src, "api.github.com");
    let mut headers = HeaderMap::new();
    headers.insert("x-anything", HeaderValue::from_str(&p).unwrap());
    s.swap_headers(&mut headers).await.unwrap();
    assert!(!s.in_injection_slot(&p, Some(&Injection::Bearer)));
    assert!(s.in_injection_slot(
        &p,
        Some(&Injection::Header {
            name: "x-anything".into()
        })
    ));
    assert!(s.in_injection_slot(&p, None));
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {p}")).unwrap(),
    );
    s.swap_headers(&mut headers).await.unwrap();
    assert!(s.in_injection_slot(&p, Some(&Injection::Bearer)));
    assert!(!s.in_injection_slot(&p, Some(&Injection::Basic { user: "x".into() })));
}

#[tokio::test]
async fn marks_are_made_only_to_note_something_and_a_fork_shares_them() {
    let (src, p) = setup(&[SwapLocation::Header, SwapLocation::Body]);
    let mut s = swapper(src.clone(), "api.github.com");
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, format!("Bearer {p}").parse().unwrap());
    s.swap_headers(&mut headers).await.unwrap();
    assert!(s.marks().is_none(), "a plain swap notes nothing");
    // A body's fork may note something after the pipeline is done with the
    // swapper: the fork and the swapper hold the same marks.
    let mut fork = s.fork();
    let shared = s.marks().expect("made for the fork");
    let body = b"miosa-tok-NOTBOUNDNOTBOUNDNOTBOUNDNOTB";
    fork.swap_bytes(body, SwapLocation::Body, Context::Raw)
        .await
        .unwrap();
    assert_eq!(*shared.inert.lock().unwrap(), vec!["unknown"]);
}

#[tokio::test]
async fn bodies_to_other_hosts_keep_placeholders_as_inert_text() {
    let (src, p) = setup(&[SwapLocation::Header, SwapLocation::Body]);
    let mut s = swapper(src.clone(), "api.openai.test");
    let body = format!("the tool printed {p} earlier");
    let out = s
        .swap_bytes(body.as_bytes(), SwapLocation::Body, Context::Raw)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, body.as_bytes());
    assert!(s.swapped_bindings().is_empty(), "nothing was swapped");
    assert_eq!(
        *s.marks().expect("marked").inert.lock().unwrap(),
        vec!["secret:GITHUB_TOKEN"]
    );
    // A header to the same host is a credential position: refused.
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&p).unwrap());
    let err = s.swap_headers(&mut headers).await.unwrap_err();
    assert_eq!(err.code(), "host_not_allowed");
    // Plain http refuses a placeholder in a body too.
    let mut plain = swapper(src, "api.openai.test").plaintext();
    let err = plain
        .swap_bytes(body.as_bytes(), SwapLocation::Body, Context::Raw)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "plain_http");
}

#[tokio::test]
async fn a_placeholder_written_right_after_another_is_still_swapped() {
    // Found by the `swap_stream` fuzz target: `miosa-tok-<A>miosa-tok-<B>`
    // reads first as one unknown placeholder whose run ends in `miosa`; the
    // second, starting inside that run, must not reach the upstream unswapped.
    let (src, p) = setup(&[SwapLocation::Body]);
    let random = &p["miosa-tok-".len()..];
    let body = format!("x miosa-tok-{random}{p}");
    let (found, _) = Scanner::new("miosa-tok-").scan(body.as_bytes(), true);
    assert_eq!(found.len(), 2, "both readings are found");
    let out = swapper(src.clone(), "api.github.com")
        .swap_bytes(body.as_bytes(), SwapLocation::Body, Context::Raw)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("x miosa-tok-{random}{REAL}")
    );
    // Streamed, a run still growing at the end holds the find it starts inside.
    let cut = body.len() - 1;
    let (found, hold) = Scanner::new("miosa-tok-").scan(&body.as_bytes()[..cut], false);
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(hold, 2);
}

/// A `[[secret]]` with `inject_when_absent`: a bare request over TLS gets
/// its placeholder in the secret's slot (then swapped); plain `http://` never.
#[tokio::test]
async fn a_secret_injects_into_a_bare_request_in_its_slot_but_never_over_plain_http() {
    let placeholder = generate_placeholder("miosa-tok-");
    let src = Arc::new(StaticSecrets::new(
        "miosa-tok-",
        SandboxId::default_sandbox(),
        vec![StaticSecret {
            name: "API_KEY".into(),
            value: SecretString::from(REAL),
            placeholder: placeholder.clone(),
            hosts: vec![HostPattern::parse("api.github.com").unwrap()],
            swap_in: SwapLocation::defaults(),
            on_foreign_body: Default::default(),
            rules: Default::default(),
            signing: None,
            inject_when_absent: Some(Injection::Basic { user: "x".into() }),
        }],
    ));
    let mut headers = HeaderMap::new();
    let mut swap = swapper(src.clone(), "api.github.com");
    swap.inject_when_absent(&mut headers).await;
    let expected = format!("Basic {}", BASE64.encode(format!("x:{placeholder}")));
    assert_eq!(headers["authorization"], expected.as_str());
    swap.swap_headers(&mut headers).await.unwrap();
    assert_eq!(
        headers["authorization"],
        format!("Basic {}", BASE64.encode(format!("x:{REAL}"))).as_str()
    );
    let mut bare = HeaderMap::new();
    let mut plain = swapper(src.clone(), "api.github.com").plaintext();
    plain.inject_when_absent(&mut bare).await;
    assert!(bare.is_empty(), "nothing added over plain http");
    let mut elsewhere = HeaderMap::new();
    swapper(src, "example.com")
        .inject_when_absent(&mut elsewhere)
        .await;
    assert!(elsewhere.is_empty(), "only on the secret's hosts");
}
