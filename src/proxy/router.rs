//! Route matching, compiled once per config generation into per-host segment tries, so a
//! lookup only visits trie branches the request path can reach instead of scanning every
//! route, and allocates nothing.
//!
//! Precedence, from strongest to weakest:
//! 1. Host tier: the exact host, then wildcards (longest suffix first), then host-less
//!    routes. The first tier with a route for this path *and* method wins.
//! 2. Within a tier, any full (non-prefix) match beats any prefix match.
//! 3. Among full matches, and among prefix matches, segments compare left to right: a static
//!    segment beats `{param}`, which beats a prefix `/*` ending at that depth; so along one
//!    branch a deeper prefix beats a shallower one.
//! 4. On one pattern, a route listing the method beats a route with no method list.
//!
//! A pattern that matches the path but not the method does not stop the search: the next
//! candidate in this order is tried, and only if none accepts the method is the answer
//! `MethodNotAllowed` (rather than `NotFound`).

#![deny(clippy::unwrap_used, clippy::expect_used)]

use super::normalize::{normalize_path, NormalizeError};
use ahash::AHashMap;

/// Index of a route in the config generation it was built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteId(pub u32);

/// One route as written in config (DESIGN.md section 3), borrowed for the build.
#[derive(Clone, Copy, Debug)]
pub struct RouteSpec<'a> {
    pub id: RouteId,
    /// `None`: any host. `"api.example.com"`: exact. `"*.example.com"`: any subdomain.
    pub host: Option<&'a str>,
    /// `/v1/orders`, `{name}` = one non-empty segment, final `/*` = prefix.
    pub path: &'a str,
    /// Empty: any method.
    pub methods: &'a [&'a str],
}

/// Outcome of [`Router::lookup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    Found(RouteId),
    /// Some route has this host and path, but none accepts the method (405).
    MethodNotAllowed,
    NotFound,
}

/// Longest host that can match an exact or wildcard host (DNS names are at most 253).
const MAX_HOST: usize = 255;

/// Compiled routes of one config generation; immutable, shared by the workers.
#[derive(Debug, Default)]
pub struct Router {
    /// Keyed by lower-case host without trailing dot; IPv6 literals in brackets.
    exact_hosts: AHashMap<Box<[u8]>, Trie>,
    /// Keyed by the part after "*.", e.g. "example.com".
    wildcard_hosts: AHashMap<Box<[u8]>, Trie>,
    any_host: Trie,
}

impl Router {
    /// Compiles the routes.
    ///
    /// # Errors
    /// Every problem of every route as (index into `specs`, message), e.g.
    /// `(3, "path \"/a/{\": ...")` or a duplicate host+path+method.
    pub fn build(specs: &[RouteSpec]) -> Result<Router, Vec<(usize, String)>> {
        let mut router = Router::default();
        let mut errors = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            let host = spec.host.map(parse_host).transpose();
            let pattern = parse_pattern(spec.path);
            let methods = check_methods(spec.methods);
            let (host, pattern) = match (host, pattern, methods) {
                (Ok(host), Ok(pattern), Ok(())) => (host, pattern),
                (host, pattern, methods) => {
                    let problems = [host.err(), pattern.err(), methods.err()];
                    errors.extend(problems.into_iter().flatten().map(|msg| (index, msg)));
                    continue;
                }
            };
            let trie = match host {
                None => &mut router.any_host,
                Some(HostKey::Exact(key)) => router.exact_hosts.entry(key).or_default(),
                Some(HostKey::Wildcard(key)) => router.wildcard_hosts.entry(key).or_default(),
            };
            if let Err(msg) = trie.insert(&pattern, spec.methods, spec.id, index) {
                errors.push((index, msg));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        router.any_host.finish();
        router.exact_hosts.values_mut().for_each(Trie::finish);
        router.wildcard_hosts.values_mut().for_each(Trie::finish);
        Ok(router)
    }

    /// Finds the route for a request. `host`: raw Host header value (any case, may carry
    /// ":port" or be "[v6]:port"). `path`: output of `normalize_path`. `method`: e.g. b"GET".
    #[must_use]
    pub fn lookup(&self, host: &[u8], method: &[u8], path: &str) -> Match {
        let mut path_seen = false;
        let has_host_routes = !self.exact_hosts.is_empty() || !self.wildcard_hosts.is_empty();
        let mut buf = [0u8; MAX_HOST];
        if let Some(host) = has_host_routes
            .then(|| canonical_host(host, &mut buf))
            .flatten()
        {
            if let Some(id) = self
                .exact_hosts
                .get(host)
                .and_then(|t| t.find(method, path, &mut path_seen))
            {
                return Match::Found(id);
            }
            // Suffixes after each dot, longest first; a leading dot has no label before it,
            // so "example.com" itself never matches "*.example.com".
            let dots = host.iter().enumerate().skip(1).filter(|&(_, &c)| c == b'.');
            for (i, _) in dots.take_while(|_| !self.wildcard_hosts.is_empty()) {
                if let Some(id) = self
                    .wildcard_hosts
                    .get(&host[i + 1..])
                    .and_then(|t| t.find(method, path, &mut path_seen))
                {
                    return Match::Found(id);
                }
            }
        }
        match self.any_host.find(method, path, &mut path_seen) {
            Some(id) => Match::Found(id),
            None if path_seen => Match::MethodNotAllowed,
            None => Match::NotFound,
        }
    }
}

/// Strips the port, one trailing dot and case, into `buf`. `None`: cannot match a host route.
fn canonical_host<'b>(raw: &[u8], buf: &'b mut [u8; MAX_HOST]) -> Option<&'b [u8]> {
    let host = if raw.first() == Some(&b'[') {
        let end = raw.iter().position(|&c| c == b']')?;
        &raw[..=end]
    } else {
        let end = raw.iter().position(|&c| c == b':').unwrap_or(raw.len());
        &raw[..end]
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.is_empty() || host.len() > MAX_HOST {
        return None;
    }
    let dst = &mut buf[..host.len()];
    for (d, s) in dst.iter_mut().zip(host) {
        *d = s.to_ascii_lowercase();
    }
    Some(dst)
}

/// Splits "a/b/c" into ("a", Some("b/c")) and "c" into ("c", None).
fn split_segment(rest: &str) -> (&str, Option<&str>) {
    match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    }
}

/// One host tier's routes; `nodes[0]` is the root, empty when the tier has no routes.
#[derive(Debug, Default)]
struct Trie {
    nodes: Vec<Node>,
}

#[derive(Debug, Default)]
struct Node {
    statics: AHashMap<Box<str>, usize>,
    /// Parameter names do not matter to matching, so `{id}` and `{key}` share this child.
    param: Option<usize>,
    /// Routes whose pattern ends exactly here.
    exact: Endpoint,
    /// Routes whose pattern is this node followed by `/*`.
    prefix: Endpoint,
    /// A prefix route ends here or below: lets the prefix pass skip dead subtrees.
    prefix_below: bool,
}

#[derive(Debug, Default)]
struct Endpoint {
    by_method: Vec<MethodRoute>,
    /// The route with no method list, and its index in the specs.
    any_method: Option<(RouteId, usize)>,
}

#[derive(Debug)]
struct MethodRoute {
    method: Box<[u8]>,
    id: RouteId,
    spec_index: usize,
}

impl Endpoint {
    fn is_empty(&self) -> bool {
        self.by_method.is_empty() && self.any_method.is_none()
    }

    fn add(&mut self, methods: &[&str], id: RouteId, index: usize) -> Result<(), String> {
        let conflict = |other: usize, what: &str| {
            format!("same host, path and {what} as route at index {other}")
        };
        if methods.is_empty() {
            if let Some((_, other)) = self.any_method {
                return Err(conflict(other, "no method list"));
            }
            self.any_method = Some((id, index));
            return Ok(());
        }
        for m in methods {
            if let Some(r) = self.by_method.iter().find(|r| *r.method == *m.as_bytes()) {
                return Err(conflict(r.spec_index, &format!("method {m:?}")));
            }
        }
        self.by_method.extend(methods.iter().map(|m| MethodRoute {
            method: m.as_bytes().into(),
            id,
            spec_index: index,
        }));
        Ok(())
    }

    /// The route for `method`; notes in `path_seen` that this path has routes at all.
    fn select(&self, method: &[u8], path_seen: &mut bool) -> Option<RouteId> {
        if self.is_empty() {
            return None;
        }
        *path_seen = true;
        self.by_method
            .iter()
            .find(|r| *r.method == *method)
            .map(|r| r.id)
            .or(self.any_method.map(|(id, _)| id))
    }
}

impl Trie {
    fn insert(
        &mut self,
        pattern: &Pattern,
        methods: &[&str],
        id: RouteId,
        index: usize,
    ) -> Result<(), String> {
        if self.nodes.is_empty() {
            self.nodes.push(Node::default());
        }
        let mut n = 0;
        for seg in &pattern.segments {
            let existing = match seg {
                Segment::Static(s) => self.nodes[n].statics.get(*s).copied(),
                Segment::Param => self.nodes[n].param,
            };
            n = if let Some(child) = existing {
                child
            } else {
                let child = self.nodes.len();
                self.nodes.push(Node::default());
                match seg {
                    Segment::Static(s) => {
                        self.nodes[n].statics.insert((*s).into(), child);
                    }
                    Segment::Param => self.nodes[n].param = Some(child),
                }
                child
            };
        }
        let node = &mut self.nodes[n];
        let endpoint = if pattern.prefix {
            &mut node.prefix
        } else {
            &mut node.exact
        };
        endpoint
            .add(methods, id, index)
            .map_err(|why| format!("path {:?}: {why}", pattern.source))
    }

    fn finish(&mut self) {
        // Children are pushed after their parent, so a reverse walk sees children first.
        for i in (0..self.nodes.len()).rev() {
            let node = &self.nodes[i];
            let below = !node.prefix.is_empty()
                || node.param.is_some_and(|c| self.nodes[c].prefix_below)
                || node.statics.values().any(|&c| self.nodes[c].prefix_below);
            self.nodes[i].prefix_below = below;
        }
    }

    fn find(&self, method: &[u8], path: &str, path_seen: &mut bool) -> Option<RouteId> {
        if self.nodes.is_empty() {
            return None;
        }
        // `None` = no segments left (the root path "/"); "/a/" has segments "a" and "".
        let rest = match path.strip_prefix('/')? {
            "" => None,
            rest => Some(rest),
        };
        if let Some(id) = self.find_full(0, rest, method, path_seen) {
            return Some(id);
        }
        self.find_prefix(0, rest, method, path_seen)
    }

    /// Depth-first, static child before param child, backtracking when a branch fails.
    fn find_full(
        &self,
        n: usize,
        rest: Option<&str>,
        method: &[u8],
        seen: &mut bool,
    ) -> Option<RouteId> {
        let node = &self.nodes[n];
        let Some(rest) = rest else {
            return node.exact.select(method, seen);
        };
        let (seg, next) = split_segment(rest);
        if let Some(&child) = node.statics.get(seg) {
            if let Some(id) = self.find_full(child, next, method, seen) {
                return Some(id);
            }
        }
        match node.param {
            Some(child) if !seg.is_empty() => self.find_full(child, next, method, seen),
            _ => None,
        }
    }

    /// Like `find_full`, but tries this node's own prefix routes only after everything
    /// deeper on the path failed, which makes deeper prefixes win.
    fn find_prefix(
        &self,
        n: usize,
        rest: Option<&str>,
        method: &[u8],
        seen: &mut bool,
    ) -> Option<RouteId> {
        let node = &self.nodes[n];
        if !node.prefix_below {
            return None;
        }
        if let Some(rest) = rest {
            let (seg, next) = split_segment(rest);
            if let Some(&child) = node.statics.get(seg) {
                if let Some(id) = self.find_prefix(child, next, method, seen) {
                    return Some(id);
                }
            }
            if let Some(child) = node.param.filter(|_| !seg.is_empty()) {
                if let Some(id) = self.find_prefix(child, next, method, seen) {
                    return Some(id);
                }
            }
        }
        node.prefix.select(method, seen)
    }
}

enum HostKey {
    Exact(Box<[u8]>),
    Wildcard(Box<[u8]>),
}

/// Validates a configured host and puts it in the form `canonical_host` produces.
fn parse_host(host: &str) -> Result<HostKey, String> {
    let err = |why: &str| format!("host {host:?}: {why}");
    let lower = host.to_ascii_lowercase();
    let h = lower.strip_suffix('.').unwrap_or(&lower);
    let is_v6_char = |c: char| c.is_ascii_hexdigit() || c == ':' || c == '.';
    let key = if let Some(inner) = h.strip_prefix('[') {
        match inner.strip_suffix(']') {
            Some(addr) if addr.contains(':') && addr.chars().all(is_v6_char) => {
                HostKey::Exact(h.as_bytes().into())
            }
            _ => return Err(err("not a bracketed IPv6 address")),
        }
    } else if h.matches(':').count() >= 2 && h.chars().all(is_v6_char) {
        // An unbracketed IPv6 literal; Host headers always carry the brackets.
        HostKey::Exact(format!("[{h}]").into_bytes().into())
    } else if h.contains(':') {
        return Err(err(
            "must not include a port (ports are ignored when matching)",
        ));
    } else {
        let (name, wildcard) = match h.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (h, false),
        };
        if h.is_empty() {
            return Err(err(
                "must not be empty (leave the host out to match any host)",
            ));
        }
        if name.contains('*') || name.is_empty() {
            return Err(err(
                "'*' is only allowed as a whole leading label followed by a domain, e.g. \"*.example.com\"",
            ));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !name.split('.').all(label_ok) {
            return Err(err(
                "labels must be non-empty and use only letters, digits, '-' and '_'",
            ));
        }
        let key = name.as_bytes().into();
        if wildcard {
            HostKey::Wildcard(key)
        } else {
            HostKey::Exact(key)
        }
    };
    match &key {
        HostKey::Exact(k) | HostKey::Wildcard(k) if k.len() > MAX_HOST => {
            Err(err("longer than 255 bytes"))
        }
        _ => Ok(key),
    }
}

enum Segment<'a> {
    Static(&'a str),
    Param,
}

struct Pattern<'a> {
    source: &'a str,
    segments: Vec<Segment<'a>>,
    /// Ends in `/*`.
    prefix: bool,
}

fn parse_pattern(path: &str) -> Result<Pattern<'_>, String> {
    let err = |why: String| format!("path {path:?}: {why}");
    let mut pattern = Pattern {
        source: path,
        segments: Vec::new(),
        prefix: false,
    };
    let rest = match path.strip_prefix('/') {
        None => return Err(err("must start with '/'".into())),
        Some("") => return Ok(pattern),
        Some(rest) => rest,
    };
    let mut names: Vec<&str> = Vec::new();
    let mut segments = rest.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if seg.is_empty() {
            return Err(err(
                "empty segment (no \"//\" or trailing '/'; write \"/*\" for a prefix)".into(),
            ));
        } else if seg == "*" {
            if !last {
                return Err(err("'*' is only allowed as the final segment".into()));
            }
            pattern.prefix = true;
        } else if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let mut chars = name.chars();
            let valid = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(err(format!(
                    "parameter name {name:?} must be letters, digits and '_', not starting with a digit"
                )));
            }
            if names.contains(&name) {
                return Err(err(format!("parameter {name:?} appears twice")));
            }
            names.push(name);
            pattern.segments.push(Segment::Param);
        } else if seg.contains(['{', '}', '*']) {
            return Err(err(format!(
                "segment {seg:?}: '{{', '}}' and '*' are only allowed as a whole segment (\"{{name}}\", or a final \"*\")"
            )));
        } else {
            check_static_segment(seg).map_err(err)?;
            pattern.segments.push(Segment::Static(seg));
        }
    }
    Ok(pattern)
}

/// A static segment must already be normalized, or no request path could ever equal it.
fn check_static_segment(seg: &str) -> Result<(), String> {
    if seg == "." || seg == ".." {
        return Err(format!(
            "segment {seg:?} is resolved away before routing and can never match"
        ));
    }
    let candidate = format!("/{seg}");
    let mut normalized = String::new();
    match normalize_path(candidate.as_bytes(), &mut normalized) {
        Ok(()) if normalized == candidate => Ok(()),
        Ok(()) => Err(format!(
            "segment {seg:?} can never match: request paths normalize it to {:?}",
            &normalized[1..]
        )),
        Err(NormalizeError::InvalidByte { byte, .. }) => Err(format!(
            "segment {seg:?} contains byte 0x{byte:02X}, which request paths cannot contain (percent-encode it)"
        )),
        Err(e) => Err(format!("segment {seg:?}: {e}")),
    }
}

fn check_methods(methods: &[&str]) -> Result<(), String> {
    for (i, m) in methods.iter().enumerate() {
        // RFC 9110 token characters.
        let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if m.is_empty() || !m.chars().all(is_tchar) {
            return Err(format!("method {m:?} is not a valid HTTP method"));
        }
        // Methods are case-sensitive; a lower-case "get" would silently never match.
        if m.chars().any(|c| c.is_ascii_lowercase()) {
            return Err(format!(
                "method {m:?}: methods are case-sensitive, write {:?}",
                m.to_ascii_uppercase()
            ));
        }
        if methods[..i].contains(m) {
            return Err(format!("method {m:?} is listed twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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
}
