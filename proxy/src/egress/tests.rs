use super::*;

fn c(s: &str) -> AddrClass {
    classify(s.parse().unwrap())
}

#[test]
fn classifies_the_addresses_that_must_be_refused() {
    assert_eq!(c("127.0.0.1"), AddrClass::Loopback);
    assert_eq!(c("10.1.2.3"), AddrClass::Private);
    assert_eq!(c("172.16.0.1"), AddrClass::Private);
    assert_eq!(c("172.32.0.1"), AddrClass::Public);
    assert_eq!(c("192.168.1.1"), AddrClass::Private);
    assert_eq!(c("100.64.0.1"), AddrClass::SharedCgnat);
    assert_eq!(c("169.254.169.254"), AddrClass::Metadata);
    assert_eq!(c("169.254.1.1"), AddrClass::LinkLocal);
    assert_eq!(c("0.0.0.0"), AddrClass::Unspecified);
    assert_eq!(c("224.0.0.1"), AddrClass::Multicast);
    assert_eq!(c("::1"), AddrClass::Loopback);
    assert_eq!(c("::"), AddrClass::Unspecified);
    assert_eq!(c("::ffff:127.0.0.1"), AddrClass::Loopback);
    assert_eq!(c("::ffff:169.254.169.254"), AddrClass::Metadata);
    assert_eq!(c("::10.0.0.1"), AddrClass::Private);
    assert_eq!(c("64:ff9b::7f00:1"), AddrClass::Loopback);
    assert_eq!(c("2002:c0a8:0101::1"), AddrClass::Private);
    assert_eq!(c("fd00:ec2::254"), AddrClass::Metadata);
    assert_eq!(c("fc00::1"), AddrClass::UniqueLocal);
    assert_eq!(c("fe80::1"), AddrClass::LinkLocal);
    assert_eq!(c("8.8.8.8"), AddrClass::Public);
    assert_eq!(c("2606:4700::1111"), AddrClass::Public);
}

#[tokio::test]
async fn overrides_are_dialled_but_literals_are_guarded() {
    let overrides =
        ResolveOverrides::new([("api.github.test", "127.0.0.1:8443".parse().unwrap())]).unwrap();
    let dialer = Dialer::new(overrides, false, Duration::from_secs(1));
    let addrs = dialer.resolve("API.github.test.", 443).await.unwrap();
    assert_eq!(addrs, vec!["127.0.0.1:8443".parse().unwrap()]);
    let err = dialer.resolve("127.0.0.1", 443).await.unwrap_err();
    assert!(
        matches!(
            err,
            DialError::Denied {
                class: AddrClass::Loopback,
                ..
            }
        ),
        "{err}"
    );
    let err = dialer.resolve("[::ffff:127.0.0.1]", 443).await.unwrap_err();
    assert!(matches!(err, DialError::Denied { .. }), "{err}");
    let err = dialer.resolve("localhost", 443).await.unwrap_err();
    assert!(matches!(err, DialError::Denied { .. }), "{err}");
}

#[tokio::test]
async fn the_proxy_never_dials_itself() {
    let own: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let dialer =
        Dialer::new(ResolveOverrides::default(), true, Duration::from_secs(1)).with_own_addr(own);
    assert!(dialer.resolve("127.0.0.1", 8080).await.is_err());
    assert!(dialer.resolve("127.0.0.1", 8081).await.is_ok());
}

#[tokio::test]
async fn override_targets_are_dialled_but_never_airlock_itself() {
    let overrides = ResolveOverrides::new([
        ("vault.test", "127.0.0.1:8090".parse().unwrap()),
        ("bare.test", "127.0.0.1".parse().unwrap()),
        ("any.test", "0.0.0.0".parse().unwrap()),
        ("mapped.test", "::ffff:127.0.0.1".parse().unwrap()),
        ("internal.test", "10.0.0.7".parse().unwrap()),
    ])
    .unwrap();
    let dialer = Dialer::new(overrides, false, Duration::from_secs(1))
        .with_own_addr("127.0.0.1:8080".parse().unwrap())
        .with_own_addrs([
            "127.0.0.1:8090".parse().unwrap(),
            "0.0.0.0:9090".parse().unwrap(),
        ]);
    for (host, port) in [
        ("vault.test", 443),
        ("bare.test", 8080),
        ("bare.test", 8090),
        ("bare.test", 9090),
        ("any.test", 8080),
        ("mapped.test", 8090),
        ("internal.test", 9090),
    ] {
        let err = dialer.resolve(host, port).await.unwrap_err();
        assert!(
            matches!(err, DialError::OwnListener { .. }),
            "{host}:{port}: {err}"
        );
        assert!(err.to_string().contains("own listeners"), "{err}");
    }
    // Private, but the operator's decision.
    assert!(dialer.resolve("internal.test", 443).await.is_ok());
    assert!(dialer.resolve("bare.test", 8443).await.is_ok());
    // allow_cidrs never opens airlock's own ports.
    let dialer = Dialer::new(ResolveOverrides::default(), false, Duration::from_secs(1))
        .with_own_addr("127.0.0.1:8080".parse().unwrap())
        .with_lists(EgressLists {
            allow_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
            ..Default::default()
        });
    assert!(dialer.resolve("127.0.0.1", 8080).await.is_err());
    assert!(dialer.resolve("127.0.0.1", 8081).await.is_ok());
}

#[test]
fn ip_literals_in_every_spelling() {
    let ip = |s: &str| match host_literal(s) {
        HostLiteral::Ip(ip) => ip.to_string(),
        other => panic!("{s:?} read as {other:?}"),
    };
    for loopback in [
        "127.0.0.1",
        "2130706433",
        "0x7f000001",
        "0x7f.0.0.1",
        "0x7F.0.0.1",
        "0177.0.0.1",
        "0177.0.0.01",
        "127.1",
        "127.0.1",
        "0x7f.1",
        "017700000001",
    ] {
        assert_eq!(
            ip(&loopback.to_ascii_lowercase()),
            "127.0.0.1",
            "{loopback}"
        );
    }
    assert_eq!(ip("0"), "0.0.0.0");
    assert_eq!(ip("0.0.0.0"), "0.0.0.0");
    assert_eq!(ip("169.254.43518"), "169.254.169.254");
    assert_eq!(ip("2852039166"), "169.254.169.254");
    assert_eq!(ip("10.1"), "10.0.0.1");
    assert_eq!(ip("::1"), "::1");
    assert_eq!(ip("[::1]"), "::1");
    assert_eq!(ip("::ffff:127.0.0.1"), "::ffff:127.0.0.1");
    for name in [
        "example.com",
        "api.github.test",
        "localhost",
        "1.example",
        "x1",
    ] {
        assert_eq!(host_literal(name), HostLiteral::Name, "{name}");
    }
    for bad in [
        "1.2.3.4.5",
        "256.0.0.1",
        "1.2.3.256",
        "1.2.65536",
        "4294967296",
        "0x",
        "08.0.0.1",
        "a.0x12",
        "example.123",
        "99999999999999999999",
    ] {
        assert_eq!(host_literal(bad), HostLiteral::Malformed, "{bad}");
    }
    assert_eq!(host_literal("0x1g"), HostLiteral::Name);
    assert_eq!(host_literal("a.0x1g"), HostLiteral::Name);
}

#[tokio::test]
async fn every_spelling_of_a_private_address_is_denied() {
    let dialer = Dialer::new(ResolveOverrides::default(), false, Duration::from_secs(1));
    for host in [
        "2130706433",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "127.1",
        "0",
        "0.0.0.0",
        "::",
        "[::1]",
        "::ffff:7f00:1",
        "::ffff:169.254.169.254",
        "2852039166",
        "localhost",
        "LOCALHOST.",
        "db.localhost",
        "10.1",
    ] {
        let err = dialer.resolve(host, 443).await.unwrap_err();
        assert!(matches!(err, DialError::Denied { .. }), "{host}: {err}");
    }
    let err = dialer.resolve("1.2.3.4.5", 443).await.unwrap_err();
    assert!(matches!(err, DialError::BadHost { .. }), "{err}");
    // Denied by the operator's CIDR in a spelling the list does not use.
    let dialer = Dialer::new(ResolveOverrides::default(), true, Duration::from_secs(1)).with_lists(
        EgressLists {
            deny_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
            ..Default::default()
        },
    );
    assert!(matches!(
        dialer.resolve("2130706433", 443).await,
        Err(DialError::Policy { .. })
    ));
}

#[tokio::test]
async fn operator_lists_come_first() {
    let lists = EgressLists {
        deny_hosts: vec![HostPattern::parse("*.blocked.test").unwrap()],
        allow_hosts: vec![],
        deny_cidrs: vec!["203.0.113.0/24".parse().unwrap()],
        allow_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
    };
    let dialer =
        Dialer::new(ResolveOverrides::default(), false, Duration::from_secs(1)).with_lists(lists);
    assert!(matches!(
        dialer.resolve("x.blocked.test", 443).await,
        Err(DialError::Policy { .. })
    ));
    assert!(matches!(
        dialer.resolve("203.0.113.9", 443).await,
        Err(DialError::Policy { .. })
    ));
    assert!(
        dialer.resolve("127.0.0.1", 443).await.is_ok(),
        "allow_cidrs opens a private range"
    );
    let only = EgressLists {
        allow_hosts: vec![HostPattern::parse("api.good.test").unwrap()],
        ..Default::default()
    };
    let dialer =
        Dialer::new(ResolveOverrides::default(), true, Duration::from_secs(1)).with_lists(only);
    let err = dialer.resolve("127.0.0.1", 443).await.unwrap_err();
    assert!(err.to_string().contains("allow_hosts"), "{err}");
}

#[test]
fn override_target_parsing() {
    assert!("127.0.0.1".parse::<OverrideTarget>().is_ok());
    assert!("[::1]:8443".parse::<OverrideTarget>().is_ok());
    assert!("example.com".parse::<OverrideTarget>().is_err());
}

#[tokio::test]
async fn airlock_internal_is_never_resolved_even_when_an_override_names_it() {
    let overrides = ResolveOverrides::new([(
        crate::INTERNAL_HOST,
        OverrideTarget {
            ip: "127.0.0.1".parse().unwrap(),
            port: None,
        },
    )])
    .unwrap();
    let dialer = Dialer::new(overrides, true, Duration::from_secs(1));
    for host in ["airlock.internal", "AIRLOCK.internal."] {
        let err = dialer.resolve(host, 443).await.unwrap_err();
        assert!(matches!(err, DialError::Reserved { .. }), "{host}: {err}");
        assert!(dialer.dial(host, 80).await.is_err());
    }
}

#[tokio::test]
async fn a_dial_takes_a_descriptor_until_its_connection_closes_and_none_past_the_budget() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let overrides = ResolveOverrides::new([(
        "api.budget.test",
        OverrideTarget {
            ip: target.ip(),
            port: Some(target.port()),
        },
    )])
    .unwrap();
    // 330 open files: a budget of 10, 5 of them for clients.
    let descriptors = Arc::new(Descriptors::for_open_files(Some(330)));
    assert_eq!((descriptors.limit(), descriptors.clients_up_to()), (10, 5));
    let dialer =
        Dialer::new(overrides, true, Duration::from_secs(1)).with_descriptors(descriptors.clone());
    let clients: Vec<_> = (0..5).map(|_| descriptors.client().unwrap()).collect();
    let mut upstreams = Vec::new();
    for _ in 0..5 {
        upstreams.push(dialer.dial("api.budget.test", 443).await.expect("headroom"));
    }
    assert_eq!(descriptors.in_use(), 10);
    let err = dialer.dial("api.budget.test", 443).await.unwrap_err();
    assert!(
        matches!(err, DialError::OutOfDescriptors { limit: 10, .. }),
        "{err}"
    );
    let answer = crate::error::ProxyError::from(&err);
    assert_eq!(answer.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.code(), "out_of_descriptors");
    let response = answer.to_response();
    assert_eq!(response.headers()[http::header::RETRY_AFTER], "1");
    assert!(
        response.headers().get(http::header::CONNECTION).is_none(),
        "the client's connection stays usable"
    );
    // A refused dial took nothing; a closed connection gives its descriptor back.
    assert_eq!(descriptors.in_use(), 10);
    drop(upstreams.pop());
    assert_eq!(descriptors.in_use(), 9);
    let again = dialer
        .dial("api.budget.test", 443)
        .await
        .expect("a descriptor again");
    assert!(again.get_ref().peer_addr().is_ok());
    drop((again, upstreams, clients));
    assert_eq!(descriptors.in_use(), 0);
}

#[tokio::test]
async fn a_failed_dial_gives_its_descriptor_back() {
    // A port nothing listens on: bind, note the port, close.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let descriptors = Arc::new(Descriptors::for_open_files(Some(330)));
    let dialer = Dialer::new(ResolveOverrides::default(), true, Duration::from_secs(1))
        .with_descriptors(descriptors.clone());
    let err = dialer
        .dial_checked("closed.test", &[closed])
        .await
        .unwrap_err();
    assert!(matches!(err, DialError::Connect { .. }), "{err}");
    assert_eq!(descriptors.in_use(), 0);
}
