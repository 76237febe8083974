//! AWS's published SigV4 vectors: the signature-v4 test suite
//! (`AKIDEXAMPLE`, 2015-08-30T12:36:00Z, us-east-1, service `service`) and
//! the S3 examples of "Authenticating Requests (AWS Signature Version 4)".

use super::*;

const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SUITE_DATE: &str = "20150830T123600Z";
const S3_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const S3_DATE: &str = "20130524T000000Z";

fn suite_scope() -> Scope {
    Scope {
        date: "20150830".into(),
        region: "us-east-1".into(),
        service: "service".into(),
    }
}

fn h(name: &str, values: &[&str]) -> (String, Vec<Vec<u8>>) {
    (
        name.into(),
        values.iter().map(|v| v.as_bytes().to_vec()).collect(),
    )
}

fn suite_signature(
    method: &str,
    path: &str,
    query: &str,
    extra: &[(String, Vec<Vec<u8>>)],
) -> String {
    let mut headers = vec![
        h("host", &["example.amazonaws.com"]),
        h("x-amz-date", &[SUITE_DATE]),
    ];
    headers.extend(extra.iter().cloned());
    let creq = CanonicalRequest {
        method,
        path,
        query,
        skip_query: &[],
        headers: &headers,
        payload_hash: EMPTY_SHA256,
        s3: false,
    };
    let sts = string_to_sign(SUITE_DATE, &suite_scope(), &creq.to_canonical_string());
    sign(&signing_key(SUITE_SECRET, &suite_scope()), &sts)
}

#[test]
fn the_test_suite_vectors() {
    assert_eq!(
        suite_signature("GET", "/", "", &[]),
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        "get-vanilla"
    );
    assert_eq!(
        suite_signature("POST", "/", "", &[]),
        "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        "post-vanilla"
    );
    assert_eq!(
        suite_signature("GET", "/", "Param2=value2&Param1=value1", &[]),
        "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        "get-vanilla-query-order-key-case"
    );
    assert_eq!(
        suite_signature("POST", "/", "", &[h("my-header1", &["VALUE1"])]),
        "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d",
        "post-header-value-case"
    );
    assert_eq!(
        suite_signature(
            "GET",
            "/",
            "",
            &[h("my-header1", &["value2", "value2", "value1"])]
        ),
        "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
        "get-header-key-duplicate"
    );
    assert_eq!(
        suite_signature("GET", "/example/$delete", "", &[]),
        "a853c9b21b528b19643d00910d35b83a10c366a10833ceefb45edd6c80e40f27",
        "normalize-path/get-special-character"
    );
}

#[test]
fn the_canonical_request_of_get_vanilla_query_order_key_case() {
    let headers = [
        h("x-amz-date", &[SUITE_DATE]),
        h("host", &["example.amazonaws.com"]),
    ];
    let creq = CanonicalRequest {
        method: "GET",
        path: "/",
        query: "Param2=value2&Param1=value1",
        skip_query: &[],
        headers: &headers,
        payload_hash: EMPTY_SHA256,
        s3: false,
    }
    .to_canonical_string();
    assert_eq!(
        creq,
        "GET\n/\nParam1=value1&Param2=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        sha256_hex(creq.as_bytes()),
        "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0"
    );
}

fn s3_scope() -> Scope {
    Scope {
        date: "20130524".into(),
        region: "us-east-1".into(),
        service: "s3".into(),
    }
}

#[test]
fn the_s3_get_object_example() {
    let headers = [
        h("host", &["examplebucket.s3.amazonaws.com"]),
        h("range", &["bytes=0-9"]),
        h("x-amz-content-sha256", &[EMPTY_SHA256]),
        h("x-amz-date", &[S3_DATE]),
    ];
    let creq = CanonicalRequest {
        method: "GET",
        path: "/test.txt",
        query: "",
        skip_query: &[],
        headers: &headers,
        payload_hash: EMPTY_SHA256,
        s3: true,
    }
    .to_canonical_string();
    let sts = string_to_sign(S3_DATE, &s3_scope(), &creq);
    assert!(sts.ends_with("7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"));
    assert_eq!(
        sign(&signing_key(S3_SECRET, &s3_scope()), &sts),
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    );
}

#[test]
fn the_s3_chunked_upload_example() {
    // PUT /examplebucket/chunkObject.txt: 65536 + 1024 bytes of 'a'.
    let headers = [
        h("content-encoding", &["aws-chunked"]),
        h("content-length", &["66824"]),
        h("host", &["s3.amazonaws.com"]),
        h("x-amz-content-sha256", &[STREAMING_PAYLOAD]),
        h("x-amz-date", &[S3_DATE]),
        h("x-amz-decoded-content-length", &["66560"]),
        h("x-amz-storage-class", &["REDUCED_REDUNDANCY"]),
    ];
    let creq = CanonicalRequest {
        method: "PUT",
        path: "/examplebucket/chunkObject.txt",
        query: "",
        skip_query: &[],
        headers: &headers,
        payload_hash: STREAMING_PAYLOAD,
        s3: true,
    }
    .to_canonical_string();
    let key = signing_key(S3_SECRET, &s3_scope());
    let seed = sign(&key, &string_to_sign(S3_DATE, &s3_scope(), &creq));
    assert_eq!(
        seed,
        "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    );
    let mut previous = seed;
    for (len, want) in [
        (
            65536,
            "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        ),
        (
            1024,
            "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        ),
        (
            0,
            "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
        ),
    ] {
        let data = vec![b'a'; len];
        let sig = sign(
            &key,
            &chunk_string_to_sign(S3_DATE, &s3_scope(), &previous, &data),
        );
        assert_eq!(sig, want, "chunk of {len} bytes");
        previous = sig;
    }
}

#[test]
fn authorization_headers_parse_or_say_what_is_wrong() {
    let ok = parse_authorization(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    )
    .unwrap();
    assert_eq!(ok.credential.key_id, "AKIDEXAMPLE");
    assert_eq!(ok.credential.scope, suite_scope());
    assert_eq!(ok.signed_headers, ["host", "x-amz-date"]);
    // botocore writes ", " between parts; others write ",".
    assert!(parse_authorization(
        "AWS4-HMAC-SHA256 Credential=A/20150830/us-east-1/s3/aws4_request,SignedHeaders=host,Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    )
    .is_ok());
    let sig = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
    let cred = "Credential=A/20150830/us-east-1/s3/aws4_request";
    let cases = [
        (
            "AWS4-HMAC-SHA512 Credential=x".to_string(),
            ParseError::Algorithm,
        ),
        (
            format!("AWS4-HMAC-SHA256 Credential=A/2015/us-east-1/s3/aws4_request, SignedHeaders=host, Signature={sig}"),
            ParseError::Credential,
        ),
        (
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host, Signature={sig}, Signature={sig}"),
            ParseError::Repeated("Signature"),
        ),
        (
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=x-amz-date, Signature={sig}"),
            ParseError::SignedHeaders,
        ),
        (
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host, Signature=XYZ"),
            ParseError::Signature,
        ),
        (
            format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host"),
            ParseError::Missing("Signature"),
        ),
        (
            format!("AWS4-HMAC-SHA256 {cred}, Foo=1, SignedHeaders=host, Signature={sig}"),
            ParseError::Unknown("Foo".into()),
        ),
    ];
    for (value, want) in cases {
        assert_eq!(parse_authorization(&value), Err(want), "{value}");
    }
}

#[test]
fn presigned_parameters_parse() {
    let q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
    assert!(is_presigned(q));
    let auth = parse_query_auth(q).unwrap();
    assert_eq!(auth.credential.key_id, "AKIAIOSFODNN7EXAMPLE");
    assert_eq!(auth.expires, 86400);
    // AWS's presigned GET example, recomputed.
    let headers = [h("host", &["examplebucket.s3.amazonaws.com"])];
    let creq = CanonicalRequest {
        method: "GET",
        path: "/test.txt",
        query: q,
        skip_query: &["X-Amz-Signature"],
        headers: &headers,
        payload_hash: UNSIGNED_PAYLOAD,
        s3: true,
    }
    .to_canonical_string();
    let sts = string_to_sign(S3_DATE, &s3_scope(), &creq);
    assert_eq!(
        sign(&signing_key(S3_SECRET, &s3_scope()), &sts),
        auth.signature
    );
    assert_eq!(
        parse_query_auth(&q.replace("86400", "604801")),
        Err(ParseError::Expires)
    );
    assert_eq!(
        parse_query_auth(&q.replace("20130524T000000Z", "20130525T000000Z")),
        Err(ParseError::Date),
        "the date must be the credential's"
    );
}

#[test]
fn dates_and_encodings() {
    assert_eq!(parse_amz_date("19700101T000000Z"), Ok(0));
    assert_eq!(parse_amz_date("20150830T123600Z"), Ok(1_440_938_160));
    assert_eq!(parse_amz_date("20151330T123600Z"), Err(ParseError::Date));
    assert_eq!(parse_amz_date("2015-08-30T12:36"), Err(ParseError::Date));
    // A presigned X-Amz-Date is percent-decoded: it may be any UTF-8.
    assert_eq!(parse_amz_date("201é830T123600Z"), Err(ParseError::Date));
    assert_eq!(parse_amz_date("20150830T1é3600Z"), Err(ParseError::Date));
    assert_eq!(uri_encode("a b/ሴ~", true), "a%20b/%E1%88%B4~");
    assert_eq!(canonical_uri("/a/./b/../c//d%20", false), "/a/c/d%2520");
    assert_eq!(canonical_uri("/a/./b%20", true), "/a/./b%20");
    assert_eq!(canonical_query("b=2&a=&c", &[]), "a=&b=2&c=");
    assert_eq!(canonical_query("k=a+b%2fc", &[]), "k=a%2Bb%2Fc");
    assert_eq!(trim_all(b"  a   b\t c "), "a b c");
}
