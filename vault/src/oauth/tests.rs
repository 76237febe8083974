use super::*;

fn answer(status: u16, body: &str) -> RawAnswer {
    RawAnswer {
        status,
        body: body.as_bytes().to_vec(),
        received_at: 1000,
    }
}

#[test]
fn token_answers_are_read_leniently() {
    let cases = [
        (
            r#"{"access_token":"at","token_type":"Bearer","expires_in":60}"#,
            Some(60),
        ),
        (
            r#"{"access_token":"at","token_type":"bearer","expires_in":"60"}"#,
            Some(60),
        ),
        (
            r#"{"access_token":"at","token_type":"BEARER","expires_in":59.9}"#,
            Some(59),
        ),
        (
            r#"{"access_token":"at","expires_in":" 3600 ","extra":{"x":[1]}}"#,
            Some(3600),
        ),
        (
            r#"{"access_token":"at","token_type":"mac","expires_in":null}"#,
            None,
        ),
        (r#"{"access_token":"at","expires_in":"soon"}"#, None),
        (r#"{"access_token":"at","expires_in":-5}"#, Some(0)),
        (
            "access_token=at&token_type=bearer&expires_in=60&scope=repo",
            Some(60),
        ),
    ];
    for (body, expires) in cases {
        let g = interpret(&answer(200, body)).unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_eq!(g.access_token.expose_secret(), "at", "{body}");
        assert_eq!(g.expires_in.map(|d| d.as_secs()), expires, "{body}");
    }
    let g = interpret(&answer(
        200,
        r#"{"access_token":"at","refresh_token":"rt","scope":["a","b"]}"#,
    ))
    .unwrap();
    assert_eq!(g.refresh_token.unwrap().expose_secret(), "rt");
    assert_eq!(g.scopes, Some(vec!["a".to_owned(), "b".to_owned()]));
    let g = interpret(&answer(200, r#"{"access_token":"at","refresh_token":""}"#)).unwrap();
    assert!(g.refresh_token.is_none(), "an empty refresh token is none");
}

#[test]
fn errors_are_classified_and_never_echo_the_body() {
    let reconnect = [
        (
            400,
            r#"{"error":"invalid_grant","error_description":"rotated"}"#,
        ),
        (401, r#"{"error":"invalid_client"}"#),
        // GitHub answers errors with 200.
        (200, r#"{"error":"invalid_grant"}"#),
    ];
    for (status, body) in reconnect {
        assert!(
            matches!(
                interpret(&answer(status, body)),
                Err(VaultError::Reconnect(_))
            ),
            "{body}"
        );
    }
    let transient = [
        (503, r#"{"error":"temporarily_unavailable"}"#),
        (502, "<html>bad gateway</html>"),
        (429, ""),
    ];
    for (status, body) in transient {
        assert!(
            matches!(
                interpret(&answer(status, body)),
                Err(VaultError::ProviderUnavailable(_))
            ),
            "{status} {body}"
        );
    }
    for body in [
        r#"{"token":"acme_at_SECRET","refresh_token":"acme_rt_SECRET"}"#,
        "acme_at_SECRET not json at all",
        r#"["acme_at_SECRET"]"#,
        r#"{"access_token":42,"refresh_token":"acme_rt_SECRET"}"#,
    ] {
        let e = interpret(&answer(200, body)).err().expect(body).to_string();
        assert!(!e.contains("SECRET"), "{e}");
        assert!(e.contains("bytes"), "{e}");
    }
}

#[test]
fn a_rotated_refresh_token_is_found_in_an_unreadable_answer() {
    for body in [
        r#"{"access_token":42,"refresh_token":"acme_rt_new"}"#,
        r#"{"refresh_token" : "acme_rt_new", "access_token": "trunc"#,
        "refresh_token=acme_rt_new&error=weird",
    ] {
        assert_eq!(
            salvage_refresh_token(body.as_bytes())
                .map(|r| r.expose_secret().to_owned())
                .as_deref(),
            Some("acme_rt_new"),
            "{body}"
        );
    }
    for body in ["", "{}", r#"{"refresh_token":""}"#, "garbage"] {
        assert!(salvage_refresh_token(body.as_bytes()).is_none(), "{body}");
    }
}

#[test]
fn a_kept_answer_round_trips_and_its_debug_shows_no_body() {
    let a = answer(200, r#"{"access_token":"acme_at_SECRET"}"#);
    assert_eq!(RawAnswer::from_secret(&a.to_secret()), Some(a.clone()));
    assert!(!format!("{a:?}").contains("SECRET"));
    assert!(RawAnswer::from_secret(&SecretString::from("nonsense")).is_none());
}
