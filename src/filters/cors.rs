//! Cross-origin requests from browsers (`[routes.cors]`). A preflight (`OPTIONS` with
//! `Origin` and `Access-Control-Request-Method`) is answered here, before the request is
//! asked for a signature or spends any limit, and never reaches the upstream. An actual
//! request from an allowed origin gets `Access-Control-Allow-Origin` (and the credentials
//! and exposed-headers answers) on whatever response it receives; a disallowed origin
//! gets no CORS header at all, which is how a browser learns "no". The gateway owns CORS
//! on such a route: the upstream's own `Access-Control-*` headers are dropped.
//!
//! Origins are exact (`https://app.example.com`), a wildcard host
//! (`https://*.example.com`: any subdomain, same scheme and port) or `*` (any origin;
//! not with credentials, which browsers refuse). Responses on a route whose answer
//! depends on the origin carry `Vary: Origin`, so caches keep them apart.

use super::{BuildCtx, Env, Filter, Flow, MadeResponse, Phases, Reply, RequestCtx, RequestView};
use crate::config::{parse_duration, ConfigError};
use crate::error::{ErrorKind, ProxyError};
use crate::http::headers::{push_decimal, write_header};

pub struct Cors {
    origins: Origins,
    /// `Access-Control-Allow-Methods`, joined.
    methods: Box<str>,
    /// `Access-Control-Allow-Headers`, joined; `None`: what the preflight asks for.
    allow_headers: Option<Box<str>>,
    /// `Access-Control-Expose-Headers`, joined; empty: not sent.
    expose_headers: Box<str>,
    credentials: bool,
    max_age: Option<u64>,
}

enum Origins {
    Any,
    Listed(Vec<Pattern>),
}

enum Pattern {
    /// Lower-cased, compared whole.
    Exact(Box<str>),
    /// `https://*.example.com`: `scheme` is `https://`, `suffix` is `.example.com`.
    Subdomains { scheme: Box<str>, suffix: Box<str> },
}

const DEFAULT_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE";

pub fn build(b: &BuildCtx) -> Result<Option<Filter>, Vec<ConfigError>> {
    let Some(file) = &b.route.cors else {
        return Ok(None);
    };
    let mut errors = Vec::new();
    let mut patterns = Vec::new();
    let mut any = false;
    if file.allow_origins.is_empty() {
        errors.push(b.error(
            "cors.allow_origins",
            "must name at least one origin (or \"*\")",
        ));
    }
    for (i, o) in file.allow_origins.iter().enumerate() {
        match parse_origin(o) {
            Ok(None) => any = true,
            Ok(Some(p)) => patterns.push(p),
            Err(message) => errors.push(b.error(&format!("cors.allow_origins[{i}]"), message)),
        }
    }
    if any && file.allow_credentials {
        errors.push(b.error(
            "cors.allow_credentials",
            "cannot be true with allow_origins = [\"*\"]: browsers refuse credentials for any origin; list the origins",
        ));
    }
    let mut token_list = |field: &str, names: &[String]| -> Box<str> {
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() || !n.bytes().all(crate::http::is_token_byte) {
                errors.push(b.error(&format!("{field}[{i}]"), format!("invalid name {n:?}")));
            }
        }
        names.join(", ").into()
    };
    let methods = match &file.allow_methods {
        Some(m) => token_list("cors.allow_methods", m),
        None if !b.route.methods.is_empty() => b.route.methods.join(", ").into(),
        None => DEFAULT_METHODS.into(),
    };
    let allow_headers = file
        .allow_headers
        .as_ref()
        .map(|h| token_list("cors.allow_headers", h));
    let expose_headers = token_list("cors.expose_headers", &file.expose_headers);
    let max_age = match file.max_age.as_deref().map(parse_duration) {
        None => None,
        Some(Ok(d)) => Some(d.as_secs()),
        Some(Err(e)) => {
            errors.push(b.error("cors.max_age", e));
            None
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Some(Filter::Cors(Cors {
        origins: if any {
            Origins::Any
        } else {
            Origins::Listed(patterns)
        },
        methods,
        allow_headers,
        expose_headers,
        credentials: file.allow_credentials,
        max_age,
    })))
}

/// `Ok(None)`: `*`.
fn parse_origin(o: &str) -> Result<Option<Pattern>, String> {
    if o == "*" {
        return Ok(None);
    }
    let lower = o.to_ascii_lowercase();
    let Some((scheme, host)) = lower.split_once("://") else {
        return Err(format!(
            "origin {o:?} needs a scheme, e.g. \"https://app.example.com\""
        ));
    };
    let valid_host = |h: &str| {
        !h.is_empty()
            && h.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b':' | b'[' | b']'))
    };
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'+')
    {
        return Err(format!("origin {o:?} has an invalid scheme"));
    }
    if let Some(rest) = host.strip_prefix("*.") {
        if !valid_host(rest) || rest.contains('*') {
            return Err(format!("origin {o:?}: expected \"scheme://*.domain\""));
        }
        return Ok(Some(Pattern::Subdomains {
            scheme: format!("{scheme}://").into(),
            suffix: format!(".{rest}").into(),
        }));
    }
    if !valid_host(host) {
        return Err(format!(
            "origin {o:?}: expected \"scheme://host[:port]\" without a path"
        ));
    }
    Ok(Some(Pattern::Exact(lower.into())))
}

impl Pattern {
    fn matches(&self, origin: &str) -> bool {
        match self {
            Pattern::Exact(o) => o.eq_ignore_ascii_case(origin),
            Pattern::Subdomains { scheme, suffix } => {
                let lower = origin.to_ascii_lowercase();
                let Some(host) = lower.strip_prefix(&**scheme) else {
                    return false;
                };
                let Some(sub) = host.strip_suffix(&**suffix) else {
                    return false;
                };
                !sub.is_empty()
                    && sub
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
            }
        }
    }
}

impl Cors {
    fn allows(&self, origin: &str) -> bool {
        match &self.origins {
            Origins::Any => true,
            Origins::Listed(list) => list.iter().any(|p| p.matches(origin)),
        }
    }

    /// Whether responses differ by origin (anything but `*` without credentials).
    fn varies(&self) -> bool {
        !matches!(self.origins, Origins::Any) || self.credentials
    }

    fn preflight(&self, req: &RequestView) -> Reply {
        let mut headers = Vec::with_capacity(256);
        write_header(
            &mut headers,
            "access-control-allow-methods",
            self.methods.as_bytes(),
        );
        match (
            &self.allow_headers,
            req.header("access-control-request-headers"),
        ) {
            (Some(list), _) if !list.is_empty() => write_header(
                &mut headers,
                "access-control-allow-headers",
                list.as_bytes(),
            ),
            (None, Some(asked)) if !asked.is_empty() => {
                write_header(&mut headers, "access-control-allow-headers", asked)
            }
            _ => {}
        }
        if let Some(secs) = self.max_age {
            headers.extend_from_slice(b"access-control-max-age: ");
            push_decimal(&mut headers, secs);
            headers.extend_from_slice(b"\r\n");
        }
        // One Vary line with everything the answer depends on (`on_response` leaves out its
        // own `vary: origin` when the answer already has a Vary).
        headers.extend_from_slice(if self.varies() {
            b"vary: origin, access-control-request-method, access-control-request-headers\r\n"
                as &[u8]
        } else {
            b"vary: access-control-request-method, access-control-request-headers\r\n"
        });
        Reply::Made(MadeResponse {
            status: 204,
            headers,
            body: std::sync::Arc::from(&[][..]),
            instead_of: None,
        })
    }
}

impl Phases for Cors {
    const EDITS_REQUEST_HEADERS: bool = false;

    fn on_request<'g>(
        &'g self,
        req: &RequestView,
        ctx: &mut RequestCtx<'g>,
        _env: &Env<'g>,
    ) -> Flow {
        let Some(origin) = req.header("origin") else {
            return Flow::Continue;
        };
        let origin = std::str::from_utf8(origin).unwrap_or("");
        let allowed = !origin.is_empty() && self.allows(origin);
        if allowed {
            ctx.cors_origin = Some(origin.into());
        }
        let preflight =
            req.method == "OPTIONS" && req.header("access-control-request-method").is_some();
        match (preflight, allowed) {
            (false, _) => Flow::Continue,
            (true, true) => Flow::Respond(self.preflight(req)),
            (true, false) => Flow::Respond(
                ProxyError::client(
                    ErrorKind::Forbidden,
                    "origin not allowed by this API's CORS policy",
                )
                .into(),
            ),
        }
    }

    fn drops_response_header(&self, name: &str) -> bool {
        name.len() > 15 && name.as_bytes()[..15].eq_ignore_ascii_case(b"access-control-")
    }

    fn on_response(&self, ctx: &RequestCtx, out: &mut Vec<u8>) {
        if self.varies() {
            out.extend_from_slice(b"vary: origin\r\n");
        }
        let Some(origin) = ctx.cors_origin.as_deref() else {
            return;
        };
        let allow = if self.varies() { origin } else { "*" };
        write_header(out, "access-control-allow-origin", allow.as_bytes());
        if self.credentials {
            out.extend_from_slice(b"access-control-allow-credentials: true\r\n");
        }
        if !self.expose_headers.is_empty() {
            write_header(
                out,
                "access-control-expose-headers",
                self.expose_headers.as_bytes(),
            );
        }
    }
}
