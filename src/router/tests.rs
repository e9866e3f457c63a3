//! Unit tests for the router (kept apart so router/mod.rs stays readable).
#![allow(clippy::unwrap_used)]
use super::*;

/// (host, path, methods); route i gets RouteId(i).
type R<'a> = (Option<&'a str>, &'a str, &'a [&'a str]);

fn specs<'a>(routes: &[R<'a>]) -> Vec<RouteSpec<'a>> {
    let ids = 0u32..;
    routes
        .iter()
        .zip(ids)
        .map(|(&(host, path, methods), i)| RouteSpec {
            id: RouteId(i),
            host,
            path,
            methods,
        })
        .collect()
}

fn router(routes: &[R]) -> Router {
    Router::build(&specs(routes)).unwrap()
}

fn errors(routes: &[R]) -> Vec<(usize, String)> {
    Router::build(&specs(routes)).err().unwrap()
}

fn get(r: &Router, host: &str, path: &str) -> Match {
    r.lookup(host.as_bytes(), b"GET", path)
}

const ANY: &[&str] = &[];
const GET: &[&str] = &["GET"];
const POST: &[&str] = &["POST"];
use Match::{Found, MethodNotAllowed, NotFound};
const F0: Match = Found(RouteId(0));
const F1: Match = Found(RouteId(1));
const F2: Match = Found(RouteId(2));

#[test]
fn static_paths_and_root() {
    let r = router(&[(None, "/", ANY), (None, "/v1/orders", ANY)]);
    assert_eq!(get(&r, "h", "/"), F0);
    assert_eq!(get(&r, "h", "/v1/orders"), F1);
    assert_eq!(get(&r, "h", "/v1"), NotFound);
    assert_eq!(get(&r, "h", "/v1/orders/1"), NotFound);
    // Trailing slash is a different path; patterns cannot end in '/'.
    assert_eq!(get(&r, "h", "/v1/orders/"), NotFound);
    assert_eq!(get(&r, "h", "/V1/orders"), NotFound);
    assert_eq!(get(&r, "h", "v1/orders"), NotFound);
    assert_eq!(get(&r, "h", ""), NotFound);
}

#[test]
fn empty_router_finds_nothing() {
    let r = router(&[]);
    assert_eq!(get(&r, "h", "/"), NotFound);
}

#[test]
fn param_is_exactly_one_non_empty_segment() {
    let r = router(&[(None, "/v1/orders/{id}", ANY)]);
    assert_eq!(get(&r, "h", "/v1/orders/42"), F0);
    assert_eq!(get(&r, "h", "/v1/orders/a%2Fb"), F0);
    assert_eq!(get(&r, "h", "/v1/orders/"), NotFound);
    assert_eq!(get(&r, "h", "/v1/orders"), NotFound);
    assert_eq!(get(&r, "h", "/v1/orders/42/items"), NotFound);
}

#[test]
fn static_beats_param_beats_prefix() {
    let r = router(&[
        (None, "/a/*", ANY),
        (None, "/a/{x}", ANY),
        (None, "/a/b", ANY),
    ]);
    assert_eq!(get(&r, "h", "/a/b"), F2);
    assert_eq!(get(&r, "h", "/a/c"), F1);
    assert_eq!(get(&r, "h", "/a/c/d"), F0);
    assert_eq!(get(&r, "h", "/a"), F0);
}

#[test]
fn full_match_beats_any_prefix() {
    // Left to right "a" would beat "{x}", but a full match always beats a prefix.
    let r = router(&[(None, "/a/*", ANY), (None, "/{x}/b", ANY)]);
    assert_eq!(get(&r, "h", "/a/b"), F1);
    assert_eq!(get(&r, "h", "/a/c"), F0);
    let r = router(&[(None, "/*", ANY), (None, "/{x}/{y}/{z}", ANY)]);
    assert_eq!(get(&r, "h", "/a/b/c"), F1);
    assert_eq!(get(&r, "h", "/a/b"), F0);
}

#[test]
fn deeper_prefix_beats_shallower() {
    let r = router(&[
        (None, "/*", ANY),
        (None, "/static/*", ANY),
        (None, "/static/img/*", ANY),
    ]);
    assert_eq!(get(&r, "h", "/static/img/a.png"), F2);
    assert_eq!(get(&r, "h", "/static/img"), F2);
    assert_eq!(get(&r, "h", "/static/css/a.css"), F1);
    assert_eq!(get(&r, "h", "/other"), F0);
    // A prefix under a param, deeper than a static prefix on the same path.
    let r = router(&[(None, "/t/*", ANY), (None, "/t/{tenant}/files/*", ANY)]);
    assert_eq!(get(&r, "h", "/t/acme/files/x/y"), F1);
    assert_eq!(get(&r, "h", "/t/acme/other"), F0);
}

#[test]
fn prefix_edges() {
    let r = router(&[(None, "/static/*", ANY)]);
    for p in [
        "/static",
        "/static/",
        "/static/a",
        "/static/a/b/",
        "/static//",
    ] {
        assert_eq!(get(&r, "h", p), F0, "{p}");
    }
    for p in ["/", "/staticx", "/stati", "/x/static"] {
        assert_eq!(get(&r, "h", p), NotFound, "{p}");
    }
    let r = router(&[(None, "/*", ANY)]);
    for p in ["/", "/a", "/a/b/c/"] {
        assert_eq!(get(&r, "h", p), F0, "{p}");
    }
}

#[test]
fn backtracks_out_of_a_dead_static_branch() {
    let r = router(&[(None, "/a/{x}/c", ANY), (None, "/a/b/d", ANY)]);
    assert_eq!(get(&r, "h", "/a/b/c"), F0);
    assert_eq!(get(&r, "h", "/a/b/d"), F1);
    assert_eq!(get(&r, "h", "/a/z/d"), NotFound);
    // Several levels deep, and into a prefix under the param branch.
    let r = router(&[
        (None, "/a/b/c/d", ANY),
        (None, "/a/{x}/c/e", ANY),
        (None, "/a/{x}/*", ANY),
    ]);
    assert_eq!(get(&r, "h", "/a/b/c/e"), F1);
    assert_eq!(get(&r, "h", "/a/b/c/f"), F2);
}

#[test]
fn specific_method_beats_any_method_on_same_pattern() {
    let r = router(&[(None, "/x", ANY), (None, "/x", GET)]);
    assert_eq!(r.lookup(b"h", b"GET", "/x"), F1);
    assert_eq!(r.lookup(b"h", b"DELETE", "/x"), F0);
}

#[test]
fn method_not_allowed_vs_not_found() {
    let r = router(&[(None, "/x", &["GET", "HEAD"]), (None, "/x", POST)]);
    assert_eq!(r.lookup(b"h", b"GET", "/x"), F0);
    assert_eq!(r.lookup(b"h", b"HEAD", "/x"), F0);
    assert_eq!(r.lookup(b"h", b"POST", "/x"), F1);
    assert_eq!(r.lookup(b"h", b"PUT", "/x"), MethodNotAllowed);
    // Case-sensitive.
    assert_eq!(r.lookup(b"h", b"get", "/x"), MethodNotAllowed);
    assert_eq!(r.lookup(b"h", b"PUT", "/y"), NotFound);
}

#[test]
fn method_mismatch_falls_back_to_a_less_specific_pattern() {
    let r = router(&[(None, "/orders/{id}", GET), (None, "/orders/*", ANY)]);
    assert_eq!(r.lookup(b"h", b"GET", "/orders/1"), F0);
    assert_eq!(r.lookup(b"h", b"DELETE", "/orders/1"), F1);
    let r = router(&[(None, "/orders/new", POST), (None, "/orders/{id}", GET)]);
    assert_eq!(r.lookup(b"h", b"GET", "/orders/new"), F1);
    assert_eq!(r.lookup(b"h", b"PUT", "/orders/new"), MethodNotAllowed);
}

#[test]
fn exact_host_matching_ignores_case_port_and_trailing_dot() {
    let r = router(&[(Some("API.example.com"), "/x", ANY)]);
    for h in [
        "api.example.com",
        "API.EXAMPLE.COM",
        "api.example.com:8443",
        "api.example.com.",
        "Api.Example.Com.:80",
    ] {
        assert_eq!(get(&r, h, "/x"), F0, "{h}");
    }
    for h in [
        "example.com",
        "x.api.example.com",
        "api.example.co",
        "",
        ":80",
    ] {
        assert_eq!(get(&r, h, "/x"), NotFound, "{h}");
    }
    let r = router(&[(Some("api.example.com."), "/x", ANY)]);
    assert_eq!(get(&r, "api.example.com", "/x"), F0);
}

#[test]
fn ipv6_and_ipv4_hosts() {
    let r = router(&[
        (Some("[::1]"), "/a", ANY),
        (Some("2001:DB8::1"), "/b", ANY),
        (Some("10.0.0.1"), "/c", ANY),
    ]);
    assert_eq!(get(&r, "[::1]", "/a"), F0);
    assert_eq!(get(&r, "[::1]:8080", "/a"), F0);
    assert_eq!(get(&r, "[2001:db8::1]:443", "/b"), F1);
    assert_eq!(get(&r, "10.0.0.1:80", "/c"), F2);
    assert_eq!(get(&r, "[::2]:8080", "/a"), NotFound);
    assert_eq!(get(&r, "[::1", "/a"), NotFound);
}

#[test]
fn wildcard_matches_subdomains_at_any_depth_but_not_the_apex() {
    let r = router(&[(Some("*.example.com"), "/x", ANY)]);
    for h in [
        "a.example.com",
        "a.b.example.com",
        "A.Example.COM:80",
        "a.example.com.",
    ] {
        assert_eq!(get(&r, h, "/x"), F0, "{h}");
    }
    for h in [
        "example.com",
        ".example.com",
        "aexample.com",
        "example.com.evil",
        "com",
    ] {
        assert_eq!(get(&r, h, "/x"), NotFound, "{h}");
    }
}

#[test]
fn host_tiers_exact_then_longest_wildcard_then_any() {
    let r = router(&[
        (None, "/x", ANY),
        (Some("*.example.com"), "/x", ANY),
        (Some("*.eu.example.com"), "/x", ANY),
        (Some("api.eu.example.com"), "/x", ANY),
    ]);
    assert_eq!(get(&r, "api.eu.example.com", "/x"), Found(RouteId(3)));
    assert_eq!(get(&r, "web.eu.example.com", "/x"), F2);
    assert_eq!(get(&r, "a.b.eu.example.com", "/x"), F2);
    assert_eq!(get(&r, "eu.example.com", "/x"), F1);
    assert_eq!(get(&r, "other.org", "/x"), F0);
    assert_eq!(get(&r, "", "/x"), F0);
}

#[test]
fn tiers_fall_through_on_not_found_and_method_mismatch() {
    let r = router(&[
        (Some("api.example.com"), "/a", GET),
        (Some("*.example.com"), "/b", ANY),
        (None, "/a", ANY),
        (None, "/c", POST),
    ]);
    assert_eq!(get(&r, "api.example.com", "/a"), F0);
    // Path found in the exact tier with another method: falls through to any-host.
    assert_eq!(r.lookup(b"api.example.com", b"POST", "/a"), F2);
    assert_eq!(get(&r, "api.example.com", "/b"), F1);
    assert_eq!(get(&r, "api.example.com", "/c"), MethodNotAllowed);
    assert_eq!(get(&r, "api.example.com", "/d"), NotFound);
    // A more specific pattern in a later tier does not beat an earlier tier.
    let r = router(&[(Some("h.io"), "/*", ANY), (None, "/a/b", ANY)]);
    assert_eq!(get(&r, "h.io", "/a/b"), F0);
    let r = router(&[(Some("h.io"), "/a", GET)]);
    assert_eq!(r.lookup(b"h.io", b"PUT", "/a"), MethodNotAllowed);
    assert_eq!(r.lookup(b"other", b"PUT", "/a"), NotFound);
}

#[test]
fn overlong_host_only_reaches_host_less_routes() {
    let long = format!("{}.example.com", "a".repeat(250));
    let r = router(&[(Some("*.example.com"), "/x", ANY), (None, "/x", ANY)]);
    assert_eq!(get(&r, &long, "/x"), F1);
    assert_eq!(get(&r, "a.example.com", "/x"), F0);
}

#[test]
fn param_names_do_not_matter_but_shapes_share_nodes() {
    let r = router(&[(None, "/u/{id}/a", ANY), (None, "/u/{name}/b", ANY)]);
    assert_eq!(get(&r, "h", "/u/1/a"), F0);
    assert_eq!(get(&r, "h", "/u/1/b"), F1);
    let e = errors(&[(None, "/u/{id}", GET), (None, "/u/{name}", GET)]);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].0, 1);
    assert!(e[0].1.contains("route at index 0"), "{}", e[0].1);
}

#[test]
fn duplicates_are_conflicts_only_for_same_host_path_and_method() {
    // Same path on different hosts, or with different methods, or prefix vs full: fine.
    router(&[
        (None, "/a", GET),
        (None, "/a", POST),
        (None, "/a", ANY),
        (Some("h.io"), "/a", GET),
        (Some("*.h.io"), "/a", GET),
        (None, "/a/*", GET),
    ]);
    let e = errors(&[
        (None, "/a", GET),
        (Some("H.io"), "/a", ANY),
        (None, "/a", &["POST", "GET"]),
        (Some("h.io."), "/a", ANY),
        (None, "/b/*", ANY),
        (None, "/b/*", ANY),
    ]);
    let got: Vec<_> = e.iter().map(|(i, m)| (*i, m.as_str())).collect();
    assert_eq!(
        got,
        [
            (
                2,
                "path \"/a\": same host, path and method \"GET\" as route at index 0"
            ),
            (
                3,
                "path \"/a\": same host, path and no method list as route at index 1"
            ),
            (
                5,
                "path \"/b/*\": same host, path and no method list as route at index 4"
            ),
        ]
    );
}

#[test]
fn path_pattern_errors() {
    let bad = [
        ("", "must start with '/'"),
        ("a/b", "must start with '/'"),
        ("/a/{", "only allowed as a whole segment"),
        ("/a/{x", "only allowed as a whole segment"),
        ("/a/x}", "only allowed as a whole segment"),
        ("/a/{x}y", "only allowed as a whole segment"),
        ("/a/{}", "parameter name \"\""),
        ("/a/{1x}", "parameter name \"1x\""),
        ("/a/{x-y}", "parameter name \"x-y\""),
        ("/{id}/{id}", "parameter \"id\" appears twice"),
        ("/a/*/b", "only allowed as the final segment"),
        ("/a*", "only allowed as a whole segment"),
        ("/a/", "empty segment"),
        ("/a//b", "empty segment"),
        ("//", "empty segment"),
        ("/a/../b", "can never match"),
        ("/./b", "can never match"),
        ("/a%2fb", "normalize it to \"a%2Fb\""),
        ("/%41", "normalize it to \"A\""),
        ("/a b", "byte 0x20"),
        ("/a%zz", "malformed percent-escape"),
    ];
    for (path, want) in bad {
        let e = errors(&[(None, "/ok", ANY), (None, path, ANY)]);
        assert_eq!(e.len(), 1, "{path:?}: {e:?}");
        assert_eq!(e[0].0, 1);
        assert!(
            e[0].1.starts_with(&format!("path {path:?}: ")),
            "{}",
            e[0].1
        );
        assert!(e[0].1.contains(want), "{path:?}: {}", e[0].1);
    }
    router(&[
        (None, "/", ANY),
        (None, "/*", ANY),
        (None, "/a%2Fb/{_x1}/~-._!$&'()+,;=:@", ANY),
    ]);
}

#[test]
fn host_and_method_errors_are_all_reported() {
    let bad_hosts = [
        ("api.example.com:8080", "must not include a port"),
        ("*", "'*' is only allowed"),
        ("*.", "'*' is only allowed"),
        ("a.*.com", "'*' is only allowed"),
        ("**.example.com", "'*' is only allowed"),
        ("a..b", "labels must be"),
        ("", "must not be empty"),
        (".", "must not be empty"),
        ("a b", "labels must be"),
        ("[::1", "bracketed IPv6"),
        ("[zz::1]", "bracketed IPv6"),
    ];
    for (host, want) in bad_hosts {
        let e = errors(&[(Some(host), "/", ANY)]);
        assert!(e[0].1.contains(want), "{host:?}: {e:?}");
    }
    let long = "a.".repeat(128) + "com";
    assert!(errors(&[(Some(&long), "/", ANY)])[0]
        .1
        .contains("longer than 255"));

    for (methods, want) in [
        (&["get"][..], "write \"GET\""),
        (&["GET", "GET"], "listed twice"),
        (&[""], "not a valid HTTP method"),
        (&["GE T"], "not a valid HTTP method"),
    ] {
        let e = errors(&[(None, "/", methods)]);
        assert!(e[0].1.contains(want), "{methods:?}: {e:?}");
    }
    // Every problem of every route, in order.
    let e = errors(&[
        (Some("h:1"), "x", &["get"]),
        (None, "/fine", ANY),
        (None, "/a/{", ANY),
    ]);
    let indexes: Vec<usize> = e.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, [0, 0, 0, 2]);
}
