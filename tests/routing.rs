//! Routing over real sockets: host tiers (exact, wildcard, host-less), path precedence
//! (static over `{param}` over prefix, deeper prefix first), methods (405 vs 404), path
//! normalization before routing, prefix rewrites, and absolute-form request targets.
//! Every route has its own upstream that names itself, so a response says which route
//! took the request and what path the upstream received.

mod support;

use support::*;

/// An upstream that answers `<name> <target>` and names itself in `x-route` (so HEAD
/// responses say it too).
fn named(name: &'static str) -> Upstream {
    Upstream::start(move |mut c, seen| {
        while let Some(req) = c.read_request() {
            let body = format!("{name} {}", req.target);
            let head = format!(
                "HTTP/1.1 200 OK\r\nx-route: {name}\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let head_only = req.method == "HEAD";
            seen.lock().unwrap().push(req);
            if !c.write(head.as_bytes()) || (!head_only && !c.write(body.as_bytes())) {
                return;
            }
        }
    })
}

/// A gateway where each `(name, route lines)` is a route to its own `named` upstream.
struct Routed {
    gw: Gateway,
    _ups: Vec<Upstream>,
}

impl Routed {
    fn start(driver: Driver, routes: &[(&'static str, &str)]) -> Routed {
        let mut body = String::new();
        let mut ups = Vec::new();
        for (name, lines) in routes {
            let up = named(name);
            body += &format!(
                "[[upstreams]]\nname = \"{name}\"\ntargets = [\"{}\"]\n",
                up.addr
            );
            body += &format!("[[routes]]\nname = \"{name}\"\nupstream = \"{name}\"\n{lines}\n");
            ups.push(up);
        }
        Routed {
            gw: Gateway::start(driver, 1, "", &body),
            _ups: ups,
        }
    }

    /// `METHOD target` with a Host header; the response.
    fn req(&self, method: &str, host: &str, target: &str) -> Response {
        exchange(
            self.gw.addr,
            format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        )
    }

    /// The route and upstream target for a GET, or "<status> <code>" when the gateway
    /// answered itself.
    fn get(&self, host: &str, target: &str) -> String {
        outcome(&self.req("GET", host, target))
    }
}

fn outcome(r: &Response) -> String {
    if r.header("x-route").is_some() {
        r.body_str()
    } else {
        format!("{} {}", r.status, r.error_code())
    }
}

// ---------------------------------------------------------------- hosts

fn host_routes(driver: Driver) -> Routed {
    Routed::start(
        driver,
        &[
            ("exact", "host = \"api.example.com\"\npath = \"/*\""),
            ("wild", "host = \"*.example.com\"\npath = \"/*\""),
            ("shop-v1", "host = \"shop.example.com\"\npath = \"/v1/*\""),
            ("any", "path = \"/*\""),
        ],
    )
}

fn exact_host_any_case_and_port(driver: Driver) {
    let r = host_routes(driver);
    for host in [
        "api.example.com",
        "API.Example.COM",
        "api.example.com:8080",
        "Api.Example.Com:1",
        "api.example.com.",
    ] {
        assert_eq!(r.get(host, "/x"), "exact /x", "Host: {host}");
    }
}

fn wildcard_host_matches_subdomains_only(driver: Driver) {
    let r = host_routes(driver);
    for host in [
        "a.example.com",
        "a.b.example.com",
        "x-1.deep.er.example.com",
        "A.EXAMPLE.com:99",
    ] {
        assert_eq!(r.get(host, "/w"), "wild /w", "Host: {host}");
    }
    for host in [
        "example.com",
        "notexample.com",
        "example.com.evil.test",
        "example.org",
    ] {
        assert_eq!(r.get(host, "/w"), "any /w", "Host: {host}");
    }
}

fn host_tiers_fall_through_by_path(driver: Driver) {
    let r = host_routes(driver);
    assert_eq!(r.get("shop.example.com", "/v1/cart"), "shop-v1 /v1/cart");
    // The exact host has no route for this path: the wildcard tier gets it.
    assert_eq!(r.get("shop.example.com", "/v2/cart"), "wild /v2/cart");
    assert_eq!(r.get("other.test", "/v1/cart"), "any /v1/cart");
}

fn hostless_request_uses_hostless_routes(driver: Driver) {
    let r = host_routes(driver);
    let mut c = r.gw.connect();
    c.send(b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(c.read_response().body_str(), "any /old");
    // Without a fallback, a host nobody routes is a 404.
    let r = Routed::start(
        driver,
        &[("exact", "host = \"api.example.com\"\npath = \"/*\"")],
    );
    assert_eq!(r.get("other.test", "/x"), "404 route_not_found");
    assert_eq!(r.get("api.example.com", "/x"), "exact /x");
}

fn absolute_form_target_routes_by_its_host(driver: Driver) {
    let r = host_routes(driver);
    let res = r.req("GET", "other.test", "http://api.example.com/path?q=1");
    assert_eq!(outcome(&res), "exact /path?q=1");
    let res = r.req("GET", "other.test", "http://A.Example.com:8080/a/../b");
    assert_eq!(outcome(&res), "wild /b");
    let res = r.req("GET", "api.example.com", "http://other.test");
    assert_eq!(outcome(&res), "any /");
    // The upstream gets the authority as its Host.
    r.req("GET", "other.test", "http://api.example.com/h");
    let seen = r._ups[0].last();
    assert_eq!(
        (seen.target.as_str(), seen.header("host")),
        ("/h", Some("api.example.com"))
    );
    assert_eq!(seen.headers_named("host").len(), 1);
}

// ---------------------------------------------------------------- paths and methods

fn path_routes(driver: Driver) -> Routed {
    Routed::start(
        driver,
        &[
            ("users", "path = \"/users\""),
            ("users-me", "path = \"/users/me\""),
            ("user", "path = \"/users/{id}\""),
            ("user-posts", "path = \"/users/{id}/posts\""),
            ("users-any", "path = \"/users/*\""),
            ("files", "path = \"/files/*\""),
            ("images", "path = \"/files/images/*\""),
            (
                "orders-get",
                "path = \"/orders\"\nmethods = [\"GET\", \"HEAD\"]",
            ),
            ("orders-post", "path = \"/orders\"\nmethods = [\"POST\"]"),
            ("shop-items", "path = \"/shop/items\"\nmethods = [\"GET\"]"),
            ("shop", "path = \"/shop/*\""),
            ("public", "path = \"/public/*\""),
            ("admin", "path = \"/admin\""),
            ("norm", "path = \"/norm/*\""),
            (
                "api",
                "path = \"/api/*\"\nstrip_prefix = \"/api\"\nadd_prefix = \"/internal\"",
            ),
            ("strip", "path = \"/strip/*\"\nstrip_prefix = \"/strip\""),
            ("add", "path = \"/add/*\"\nadd_prefix = \"/v2\""),
            ("loose", "path = \"/loose/*\"\nstrip_prefix = \"/lo\""),
        ],
    )
}

fn exact_param_and_prefix_paths(driver: Driver) {
    let r = path_routes(driver);
    for (path, want) in [
        ("/users", "users /users"),
        ("/users/me", "users-me /users/me"),
        ("/users/42", "user /users/42"),
        ("/users/42/posts", "user-posts /users/42/posts"),
        // "me" is static, but only {id} continues with "posts": backtrack to the param.
        ("/users/me/posts", "user-posts /users/me/posts"),
        ("/users/42/other", "users-any /users/42/other"),
        ("/users/42/posts/7", "users-any /users/42/posts/7"),
        // A trailing slash is an empty last segment: {id} does not match it, the prefix does.
        ("/users/", "users-any /users/"),
        ("/files", "files /files"),
        ("/files/doc.txt", "files /files/doc.txt"),
        ("/files/images", "images /files/images"),
        ("/files/images/a/b.png", "images /files/images/a/b.png"),
        ("/files/imagesx", "files /files/imagesx"),
        ("/admin", "admin /admin"),
    ] {
        assert_eq!(r.get("h", path), want, "GET {path}");
    }
    for path in [
        "/",
        "/nothing",
        "/adminx",
        "/admin/",
        "/admin/sub",
        "/user",
        "/Users",
    ] {
        assert_eq!(r.get("h", path), "404 route_not_found", "GET {path}");
    }
}

fn methods_select_routes_405_and_404(driver: Driver) {
    let r = path_routes(driver);
    assert_eq!(outcome(&r.req("GET", "h", "/orders")), "orders-get /orders");
    assert_eq!(
        outcome(&r.req("POST", "h", "/orders")),
        "orders-post /orders"
    );
    let mut c = r.gw.connect();
    c.send(b"HEAD /orders HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.read_head_response().header("x-route"), Some("orders-get"));
    // The path matches, the method does not: 405, and the connection carries on.
    c.send(b"DELETE /orders HTTP/1.1\r\nHost: h\r\n\r\n");
    let res = c.read_response();
    assert_eq!(
        (res.status, res.error_code().as_str()),
        (405, "method_not_allowed")
    );
    let res = c.get("/nope");
    assert_eq!(
        (res.status, res.error_code().as_str()),
        (404, "route_not_found")
    );
    assert_eq!(c.get("/orders").body_str(), "orders-get /orders");
    // Methods are case-sensitive.
    assert_eq!(
        outcome(&r.req("get", "h", "/orders")),
        "405 method_not_allowed"
    );
    // A method-restricted pattern that refuses the method lets the next candidate try.
    assert_eq!(
        outcome(&r.req("GET", "h", "/shop/items")),
        "shop-items /shop/items"
    );
    assert_eq!(
        outcome(&r.req("POST", "h", "/shop/items")),
        "shop /shop/items"
    );
}

// ---------------------------------------------------------------- normalization

fn normalized_path_routes_and_is_forwarded(driver: Driver) {
    let r = path_routes(driver);
    for (raw, want) in [
        // Never the /public/* route, and the upstream sees the resolved path.
        ("/public/../admin", "admin /admin"),
        ("/public/%2e%2E/admin", "admin /admin"),
        ("/public/x/../../admin", "admin /admin"),
        ("/public/./x", "public /public/x"),
        ("//norm///a//b", "norm /norm/a/b"),
        ("/norm/a/./b/.", "norm /norm/a/b/"),
        ("/%61dmin", "admin /admin"),
        ("/%41DMIN/../%61dmin", "admin /admin"),
        ("/norm/%7Euser/%2d", "norm /norm/~user/-"),
        // Reserved escapes stay encoded (upper-cased) and never separate segments.
        ("/norm/a%2fb", "norm /norm/a%2Fb"),
        ("/norm/a%2F..%2Fb", "norm /norm/a%2F..%2Fb"),
        ("/norm/%c3%a9", "norm /norm/%C3%A9"),
        // The query is passed on untouched.
        (
            "/norm/./q?x=/../%2e&y=%41//z",
            "norm /norm/q?x=/../%2e&y=%41//z",
        ),
        ("/norm/q?", "norm /norm/q?"),
    ] {
        assert_eq!(r.get("h", raw), want, "GET {raw}");
    }
    for raw in ["/admin%2Fx", "/public%2F..%2Fadmin", "/admin%2F"] {
        assert_eq!(r.get("h", raw), "404 route_not_found", "GET {raw}");
    }
}

fn path_escaping_root_is_400(driver: Driver) {
    let r = path_routes(driver);
    for raw in [
        "/..",
        "/../admin",
        "/norm/../../admin",
        "/%2e%2e/admin",
        "/norm/.%2E/.%2e/x",
        "/a/b/../../../admin",
    ] {
        let mut c = r.gw.connect();
        c.send(format!("GET {raw} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        let res = c.read_response();
        assert_eq!(
            (res.status, res.error_code().as_str()),
            (400, "bad_request"),
            "GET {raw}"
        );
        assert!(
            c.is_closed(std::time::Duration::from_secs(2)),
            "GET {raw}: closed after a 400"
        );
    }
    for raw in ["/norm/%zz", "/norm/a%2"] {
        assert_eq!(r.get("h", raw), "400 bad_request", "GET {raw}");
    }
    assert!(
        r._ups.iter().all(|u| u.requests().is_empty()),
        "nothing reached an upstream"
    );
}

// ---------------------------------------------------------------- prefix rewrites

fn strip_and_add_prefix(driver: Driver) {
    let r = path_routes(driver);
    for (raw, want) in [
        ("/api/v1/x?q=1", "api /internal/v1/x?q=1"),
        ("/api/v1/x/", "api /internal/v1/x/"),
        ("/api/", "api /internal/"),
        ("/api", "api /internal"),
        ("/api?q=1", "api /internal?q=1"),
        // Rewrites apply to the normalized path.
        ("//api/./v1/../v2", "api /internal/v2"),
        ("/x/../api/a%2fb", "api /internal/a%2Fb"),
        ("/strip/a/b?c", "strip /a/b?c"),
        ("/strip/", "strip /"),
        ("/strip", "strip /"),
        ("/strip?q", "strip /?q"),
        ("/add/a", "add /v2/add/a"),
        ("/add", "add /v2/add"),
        // A strip prefix only removes whole segments.
        ("/loose/a", "loose /loose/a"),
    ] {
        assert_eq!(r.get("h", raw), want, "GET {raw}");
    }
}

on_both_drivers!(
    exact_host_any_case_and_port,
    wildcard_host_matches_subdomains_only,
    host_tiers_fall_through_by_path,
    hostless_request_uses_hostless_routes,
    absolute_form_target_routes_by_its_host,
    exact_param_and_prefix_paths,
    methods_select_routes_405_and_404,
    normalized_path_routes_and_is_forwarded,
    path_escaping_root_is_400,
    strip_and_add_prefix,
);
