//! Header edits per route (`[routes.headers.request]` to the upstream,
//! `[routes.headers.response]` to the client): `set` replaces every header of a name,
//! `add` appends one more, `remove` drops them all. Values may name `$request_id`,
//! `$app_key`, `$client_ip`, `$route` and, on HTTPS, `$tls_version`, `$tls_cipher`,
//! `$tls_sni` and `$tls_client_sha256` (the client certificate's fingerprint; `$$` is a
//! literal `$`); a header whose value comes out empty (`$app_key` on an anonymous
//! request, `$tls_*` on plain HTTP or without a client certificate) is not sent. (The
//! client certificate's subject is not offered: it may hold any bytes.)
//!
//! Headers the gateway owns (framing, hop-by-hop, `Host`, the forwarding, trace and
//! request-id headers, `X-Rg-*`, `Date`) cannot be edited: a config naming one is refused.

use std::io::Write;

use super::forwarded::is_forwarding_header;
use super::{BuildCtx, Filter, Phases, RequestCtx, RequestView};
use crate::config::{ConfigError, HeaderEditsFile};

pub struct Headers {
    request: Edits,
    response: Edits,
    route: Box<str>,
}

#[derive(Default)]
struct Edits {
    /// Lower-cased names whose existing headers are dropped (`remove` and `set`).
    drop: Vec<Box<str>>,
    /// Lines to write (`set` and `add`).
    write: Vec<(Box<str>, Template)>,
}

enum Part {
    Text(Box<str>),
    RequestId,
    AppKey,
    ClientIp,
    Route,
    TlsVersion,
    TlsCipher,
    TlsSni,
    TlsClientSha256,
}

struct Template(Vec<Part>);

/// Headers only the gateway writes, in either direction.
const OWNED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "date",
    "tracestate",
];

fn owned_by_gateway(name: &str) -> bool {
    OWNED.iter().any(|o| o.eq_ignore_ascii_case(name)) || is_forwarding_header(name)
}

pub fn build(b: &BuildCtx) -> Result<Option<Filter>, Vec<ConfigError>> {
    let Some(file) = &b.route.headers else {
        return Ok(None);
    };
    let mut errors = Vec::new();
    let request = compile(b, "headers.request", &file.request, &mut errors);
    let response = compile(b, "headers.response", &file.response, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Some(Filter::Headers(Headers {
        request,
        response,
        route: b.route.name.as_str().into(),
    })))
}

fn compile(b: &BuildCtx, at: &str, file: &HeaderEditsFile, errors: &mut Vec<ConfigError>) -> Edits {
    let mut edits = Edits::default();
    let cors = b.route.cors.is_some();
    let mut check_name = |field: String, name: &str| {
        if name.is_empty() || !name.bytes().all(crate::http::is_token_byte) {
            errors.push(b.error(&field, format!("invalid header name {name:?}")));
            false
        } else if owned_by_gateway(name) {
            errors.push(b.error(
                &field,
                format!("{name} is set by the gateway and cannot be edited"),
            ));
            false
        } else if cors
            && name
                .as_bytes()
                .get(..15)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"access-control-"))
        {
            errors.push(b.error(&field, format!("{name} is set by the route's cors section")));
            false
        } else {
            true
        }
    };
    for (i, name) in file.remove.iter().enumerate() {
        if check_name(format!("{at}.remove[{i}]"), name) {
            edits.drop.push(name.to_ascii_lowercase().into());
        }
    }
    let mut templates = Vec::new();
    for (kind, map) in [("set", &file.set), ("add", &file.add)] {
        for (name, value) in map {
            let field = format!("{at}.{kind}.{name}");
            if !check_name(field.clone(), name) {
                continue;
            }
            if kind == "set" {
                edits.drop.push(name.to_ascii_lowercase().into());
            }
            templates.push((field, name, value));
        }
    }
    for (field, name, value) in templates {
        match Template::parse(value) {
            Ok(t) => edits.write.push((name.as_str().into(), t)),
            Err(message) => errors.push(b.error(&field, message)),
        }
    }
    edits
}

impl Template {
    fn parse(value: &str) -> Result<Template, String> {
        if value.bytes().any(|c| (c < 0x20 && c != b'\t') || c == 0x7f) {
            return Err(format!("header value {value:?} has control characters"));
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = value;
        while let Some(i) = rest.find('$') {
            text.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(r) = after.strip_prefix('$') {
                text.push('$');
                rest = r;
                continue;
            }
            let len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            let part = match &after[..len] {
                "request_id" => Part::RequestId,
                "app_key" => Part::AppKey,
                "client_ip" => Part::ClientIp,
                "route" => Part::Route,
                "tls_version" => Part::TlsVersion,
                "tls_cipher" => Part::TlsCipher,
                "tls_sni" => Part::TlsSni,
                "tls_client_sha256" => Part::TlsClientSha256,
                other => {
                    return Err(format!(
                        "unknown variable ${other} in {value:?}: expected $request_id, $app_key, $client_ip, $route, $tls_version, $tls_cipher, $tls_sni or $tls_client_sha256 ($$ for a literal $)"
                    ))
                }
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text).into()));
            }
            parts.push(part);
            rest = &after[len..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text.into()));
        }
        Ok(Template(parts))
    }
}

impl Headers {
    /// Writes the edits' lines; `client_ip` is the address as text when the caller has
    /// it at hand.
    fn write(&self, edits: &Edits, ctx: &RequestCtx, client_ip: Option<&str>, out: &mut Vec<u8>) {
        for (name, template) in &edits.write {
            let start = out.len();
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            let value_at = out.len();
            for part in &template.0 {
                match part {
                    Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                    Part::RequestId => out.extend_from_slice(ctx.request_id.as_bytes()),
                    Part::AppKey => out.extend_from_slice(ctx.app_key().unwrap_or("").as_bytes()),
                    Part::ClientIp => match client_ip {
                        Some(ip) => out.extend_from_slice(ip.as_bytes()),
                        None => {
                            let _ = write!(out, "{}", ctx.client_ip);
                        }
                    },
                    Part::Route => out.extend_from_slice(self.route.as_bytes()),
                    // Empty on plain HTTP (a header that comes out empty is not sent).
                    Part::TlsVersion => {
                        out.extend_from_slice(ctx.tls.as_ref().map_or("", |t| t.version).as_bytes())
                    }
                    Part::TlsCipher => {
                        out.extend_from_slice(ctx.tls.as_ref().map_or("", |t| t.cipher).as_bytes())
                    }
                    Part::TlsSni => out.extend_from_slice(
                        ctx.tls
                            .as_ref()
                            .and_then(|t| t.sni.as_deref())
                            .unwrap_or("")
                            .as_bytes(),
                    ),
                    Part::TlsClientSha256 => {
                        if let Some(id) = ctx.tls.as_ref().and_then(|t| t.client.as_ref()) {
                            out.extend_from_slice(id.sha256_hex.as_bytes());
                        }
                    }
                }
            }
            if out.len() == value_at {
                out.truncate(start);
            } else {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

impl Edits {
    fn drops(&self, name: &str) -> bool {
        self.drop.iter().any(|d| d.eq_ignore_ascii_case(name))
    }
}

impl Phases for Headers {
    fn drops_request_header(&self, name: &str, _req: &RequestView, _ctx: &RequestCtx) -> bool {
        self.request.drops(name)
    }

    fn on_upstream_request(&self, req: &RequestView, ctx: &RequestCtx, out: &mut Vec<u8>) {
        self.write(&self.request, ctx, Some(req.client_ip_text), out);
    }

    fn drops_response_header(&self, name: &str) -> bool {
        self.response.drops(name)
    }

    fn on_response(&self, ctx: &RequestCtx, out: &mut Vec<u8>) {
        self.write(&self.response, ctx, None, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_variables_and_literal_dollars() {
        let t = Template::parse("v=$route;$$x;$request_id").unwrap();
        assert_eq!(t.0.len(), 4);
        assert!(matches!(&t.0[0], Part::Text(s) if &**s == "v="));
        assert!(matches!(&t.0[1], Part::Route));
        assert!(matches!(&t.0[2], Part::Text(s) if &**s == ";$x;"));
        assert!(matches!(&t.0[3], Part::RequestId));
        let e = Template::parse("$nope").err().unwrap();
        assert!(e.starts_with("unknown variable $nope"), "{e}");
        assert!(Template::parse("a\r\nb").is_err());
    }
}
