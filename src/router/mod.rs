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

use crate::http::normalize::{normalize_path, NormalizeError};
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
mod tests;
