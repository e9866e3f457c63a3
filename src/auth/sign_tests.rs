//! Unit tests for the signature scheme, including known answers computed independently
//! with python3 (hmac, hashlib).
#![allow(clippy::unwrap_used)]
use super::*;

fn canon(raw: &str) -> Result<String, SignError> {
    let mut out = String::from("stale");
    canonical_query(raw, &mut out).map(|()| out)
}

const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// Expected values below were computed independently with python3's `hmac`, `hashlib`
// and `urllib.parse` (not with this code).
const EX_STS: &str = "GET\n/v1/orders/42\na=0&a=1&b=2&flag=&name=caf%C3%A9&q=x%20y%2Bz&tilde=~\n1700000000\nn0nce-0123456789abcdef\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const EX_SIG: &str = "364e980572b9169bd56dbb2882d2add561f66e3efdff1db90dcff7fc200ab13c";

fn example() -> SignedRequest {
    let r = sign_request(
        "app-7f3a",
        b"current-secret",
        "GET",
        "/v1/orders/42",
        "b=2&a=1&a=0&q=x%20y+z&tilde=%7e&name=caf%C3%A9&flag",
        b"",
        1_700_000_000,
        "n0nce-0123456789abcdef",
    );
    r.unwrap()
}

#[test]
fn known_answer_worked_example() {
    let r = example();
    assert_eq!(r.string_to_sign, EX_STS);
    assert_eq!(r.signature, EX_SIG);
    assert_eq!(r.key, "app-7f3a");
    assert_eq!(r.timestamp, "1700000000");
    assert_eq!(r.nonce, "n0nce-0123456789abcdef");
    assert!(verify(&[b"current-secret"], EX_STS, EX_SIG.as_bytes()));
    // Pair ordering ("a" before "a-"), as python's tuple sort gives it.
    assert_eq!(
        signed_with(2, "a-=1&a=2").signature,
        "5b70b1d8228d87451ab917ab922494086c4c63d0dafdb83223b2372461a6898e"
    );
}

#[test]
fn known_answer_body_and_long_keys() {
    let body = br#"{"sku":"A-1","qty":2}"#;
    let hash = body_sha256_hex(body);
    assert_eq!(
        &hash[..],
        b"d3c95de2d66db9a042603637d7c75dcdb810c4f4a5e5530d450ffd344b022636"
    );
    let mut sts = String::new();
    string_to_sign(
        "POST",
        "/v1/orders",
        "",
        "1700000123",
        "abcdefghijklmnop",
        &hash,
        &mut sts,
    );
    assert_eq!(
        sts,
        format!(
            "POST\n/v1/orders\n\n1700000123\nabcdefghijklmnop\n{}",
            "d3c95de2d66db9a042603637d7c75dcdb810c4f4a5e5530d450ffd344b022636"
        )
    );
    assert_eq!(
        &sign(b"current-secret", &sts)[..],
        b"23953f3090a4b3505f63b4933a3ff11c6e3d7c727b9f0fac162f1fae74cc5614"
    );
    // Longer than the block (pre-hashed) and exactly the block (used as is).
    assert_eq!(
        &sign(&[b'k'; 100], &sts)[..],
        b"8f457ea173a7da98e30c57ced479c6d68d85bc098ed7aa23d69f4b1b0bd3746a"
    );
    assert_eq!(
        &sign(&[b'x'; 64], &sts)[..],
        b"7da14a7951d6b9885ade370cbadab940938b6aab371a6600dcdc5ae400a2a55b"
    );
}

#[test]
fn body_hashes() {
    assert_eq!(&body_sha256_hex(b"")[..], EMPTY_SHA.as_bytes());
    let mut h = BodyHasher::new();
    for _ in 0..10 {
        h.update(&[b'a'; 100]);
    }
    let whole = body_sha256_hex(&[b'a'; 1000]);
    assert_eq!(h.finish(), whole);
    assert_eq!(
        &whole[..],
        b"41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
    );
    assert_eq!(&BodyHasher::default().finish()[..], EMPTY_SHA.as_bytes());
}

#[test]
fn canonical_query_ordering_and_duplicates() {
    assert_eq!(canon("").unwrap(), "");
    assert_eq!(canon("b=2&a=1").unwrap(), "a=1&b=2");
    // Duplicate names are all kept, ordered by value.
    assert_eq!(canon("a=2&a=10&a=1").unwrap(), "a=1&a=10&a=2");
    // Pair order, not string order: "a" sorts before "a-" although '-' < '='.
    assert_eq!(canon("a-=1&a=2").unwrap(), "a=2&a-=1");
    // Bytewise: upper-case before lower-case.
    assert_eq!(canon("b=1&B=1&_=1").unwrap(), "B=1&_=1&b=1");
    // Identical pairs stay duplicated.
    assert_eq!(canon("x=1&x=1").unwrap(), "x=1&x=1");
}

#[test]
fn canonical_query_encoding() {
    // Space, '+' (stays a literal plus) and an encoded plus all normalize.
    assert_eq!(canon("q=a%20b").unwrap(), "q=a%20b");
    assert_eq!(canon("q=a+b").unwrap(), "q=a%2Bb");
    assert_eq!(canon("q=a%2Bb").unwrap(), "q=a%2Bb");
    assert_eq!(canon("q=a%2bb").unwrap(), "q=a%2Bb");
    // Unreserved escapes decode, reserved bytes encode, hex is upper-case.
    assert_eq!(canon("t=%7e&u=~&v=%41%2d%2E%5f").unwrap(), "t=~&u=~&v=A-._");
    assert_eq!(canon("p=a/b:c?d@e").unwrap(), "p=a%2Fb%3Ac%3Fd%40e");
    // A second '=' belongs to the value.
    assert_eq!(canon("k=a=b").unwrap(), "k=a%3Db");
    // Unicode: raw UTF-8 bytes and their escapes agree; invalid UTF-8 is still fine.
    assert_eq!(canon("n=café").unwrap(), "n=caf%C3%A9");
    assert_eq!(canon("n=caf%c3%a9").unwrap(), "n=caf%C3%A9");
    assert_eq!(canon("n=%ff%FE").unwrap(), "n=%FF%FE");
    // Encoded names are sorted after encoding.
    assert_eq!(canon("%62=1&a=2").unwrap(), "a=2&b=1");
}

#[test]
fn canonical_query_empty_pieces_and_bare_names() {
    assert_eq!(canon("&&a=1&&b&").unwrap(), "a=1&b=");
    assert_eq!(canon("flag").unwrap(), "flag=");
    assert_eq!(canon("=v").unwrap(), "=v");
    assert_eq!(canon("=").unwrap(), "=");
    assert_eq!(canon("&").unwrap(), "");
    // The rows of the table in docs/signing.md not covered above.
    assert_eq!(canon("t=%7e&p=a/b:c").unwrap(), "p=a%2Fb%3Ac&t=~");
    assert_eq!(canon("&&flag&k=a=b&").unwrap(), "flag=&k=a%3Db");
}

#[test]
fn canonical_query_bad_escapes() {
    for raw in [
        "a=%",
        "a=%4",
        "a=%g1",
        "a=%1g",
        "%zz=1",
        "a=1&b=%%41",
        "a=%4%41",
    ] {
        let mut out = String::from("stale");
        assert_eq!(
            canonical_query(raw, &mut out),
            Err(SignError::BadQueryEscape),
            "{raw}"
        );
        assert!(out.is_empty(), "{raw}");
    }
    assert!(!SignError::BadQueryEscape.to_string().is_empty());
}

/// Signs with the example's key and secret; `part` replaces one input (index as in the
/// string to sign, 5 = body).
fn signed_with(part: usize, value: &str) -> SignedRequest {
    let mut p = [
        "GET",
        "/v1/orders/42",
        "b=2&a=1&a=0",
        "1700000000",
        "n0nce-0123456789abcdef",
        "",
    ];
    p[part] = value;
    let ts = p[3].parse().unwrap();
    sign_request(
        "app-7f3a",
        b"current-secret",
        p[0],
        p[1],
        p[2],
        p[5].as_bytes(),
        ts,
        p[4],
    )
    .unwrap()
}

#[test]
fn tampering_any_part_changes_the_signature() {
    let reference = signed_with(0, "GET");
    let sig = reference.signature.as_bytes();
    let tampered = [
        (0, "POST"),
        (0, "get"),
        (1, "/v1/orders/43"),
        (1, "/v1/orders/42/"),
        (2, "b=2&a=1&a=1"),
        (2, "b=2&a=1&a=0&c"),
        (2, "b=2&a=1&a=%30+"),
        (3, "1700000001"),
        (4, "n0nce-0123456789abcdeF"),
        (5, "x"),
    ];
    for (part, value) in tampered {
        let r = signed_with(part, value);
        assert_ne!(r.signature, reference.signature, "{part} {value}");
        assert!(
            !verify(&[b"current-secret"], &r.string_to_sign, sig),
            "{part} {value}"
        );
    }
    // Query order and escape spelling do not matter (canonicalized); '+' vs %20 does.
    assert_eq!(
        signed_with(2, "a=0&a=%31&b=2").signature,
        reference.signature
    );
    assert_ne!(
        signed_with(2, "q=a+b").signature,
        signed_with(2, "q=a%20b").signature
    );
    // Another secret, and one flipped byte of the string to sign.
    let sts = &reference.string_to_sign;
    assert!(!verify(&[b"current-secreT"], sts, sig));
    assert!(!verify(
        &[b"current-secret"],
        &sts.replacen("GET", "GEt", 1),
        sig
    ));
}

#[test]
fn verify_with_two_secrets() {
    let r = example();
    let sig = r.signature.as_bytes();
    let sts = &r.string_to_sign;
    assert!(verify(&[b"current-secret", b"previous-secret"], sts, sig));
    assert!(verify(&[b"previous-secret", b"current-secret"], sts, sig));
    let old = sign(b"previous-secret", sts);
    assert!(verify(&[b"current-secret", b"previous-secret"], sts, &old));
    assert!(!verify(&[b"current-secret"], sts, &old));
    assert!(!verify(&[b"other", b"another"], sts, sig));
    assert!(!verify(&[], sts, sig));
}

#[test]
fn verify_rejects_malformed_signatures() {
    let r = example();
    let sts = &r.string_to_sign;
    let ok = [b"current-secret".as_slice()];
    let upper = r.signature.to_ascii_uppercase();
    assert!(!verify(&ok, sts, upper.as_bytes()));
    assert!(!verify(&ok, sts, &r.signature.as_bytes()[..63]));
    assert!(!verify(&ok, sts, format!("{}0", r.signature).as_bytes()));
    assert!(!verify(&ok, sts, b""));
    let mut bad = r.signature.clone().into_bytes();
    bad[10] = b'g';
    assert!(!verify(&ok, sts, &bad));
    bad[10] = 0xff;
    assert!(!verify(&ok, sts, &bad));
    // The raw 32 MAC bytes are not the hex form.
    assert!(!verify(&ok, sts, &[0u8; 32]));
}

#[test]
fn window_edges() {
    let now = 1_700_000_000;
    assert!(timestamp_in_window(now, now, 300));
    assert!(timestamp_in_window(now - 300, now, 300));
    assert!(!timestamp_in_window(now - 301, now, 300));
    assert!(timestamp_in_window(now + 300, now, 300));
    assert!(!timestamp_in_window(now + 301, now, 300));
    assert!(timestamp_in_window(0, 0, 0));
    assert!(!timestamp_in_window(u64::MAX, 0, 300));
    assert!(!timestamp_in_window(0, u64::MAX, 300));
}

#[test]
fn timestamp_parsing() {
    assert_eq!(parse_timestamp(b"1700000000"), Some(1_700_000_000));
    assert_eq!(parse_timestamp(b"0"), Some(0));
    assert_eq!(parse_timestamp(b"0001"), Some(1));
    assert_eq!(parse_timestamp(b"18446744073709551615"), Some(u64::MAX));
    for bad in [
        &b""[..],
        b"18446744073709551616",
        b"000000000000000000001",
        b"-1",
        b"+1",
        b" 1",
        b"1 ",
        b"1.0",
        b"1e9",
        b"0x10",
    ] {
        assert_eq!(
            parse_timestamp(bad),
            None,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn nonce_edges() {
    assert!(!valid_nonce(&[b'a'; 15]));
    assert!(valid_nonce(&[b'a'; 16]));
    assert!(valid_nonce(&[b'Z'; 64]));
    assert!(!valid_nonce(&[b'a'; 65]));
    assert!(!valid_nonce(b""));
    assert!(valid_nonce(b"AZaz09-_AZaz09-_"));
    for c in [b' ', b'.', b'~', b'+', b'/', b'=', b'\n', 0, 0xc3] {
        let mut n = *b"abcdefghijklmnop";
        n[7] = c;
        assert!(!valid_nonce(&n), "{c:#x}");
    }
}

#[test]
fn sign_request_refuses_what_the_gateway_would() {
    let go = |m: &str, p: &str, q: &str, n: &str| {
        sign_request("k", b"s", m, p, q, b"", 1, n).map(|_| ())
    };
    let n = "abcdefghijklmnop";
    assert_eq!(go("GET", "/", "", n), Ok(()));
    assert_eq!(go("GET", "/", "", "short"), Err(SignError::BadNonce));
    assert_eq!(go("", "/", "", n), Err(SignError::BadMethod));
    assert_eq!(go("GE T", "/", "", n), Err(SignError::BadMethod));
    assert_eq!(go("GET\n", "/", "", n), Err(SignError::BadMethod));
    assert_eq!(go("GET", "v1", "", n), Err(SignError::BadPath));
    assert_eq!(go("GET", "/a\nb", "", n), Err(SignError::BadPath));
    assert_eq!(go("GET", "/", "a=%", n), Err(SignError::BadQueryEscape));
}

#[test]
fn string_to_sign_reuses_its_buffer() {
    let mut out = String::from("old contents");
    let h = body_sha256_hex(b"");
    string_to_sign("GET", "/", "", "1", "n", &h, &mut out);
    assert_eq!(out, format!("GET\n/\n\n1\nn\n{EMPTY_SHA}"));
}
