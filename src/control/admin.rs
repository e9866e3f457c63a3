//! The admin listener. Low traffic and off the request path, so it is a plain thread with
//! blocking sockets: `GET /healthz` answers 200 once every worker listens and 503 while
//! starting or draining.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::config_edit;
use crate::auth::cache::CacheStats;
use crate::error::ErrorKind;
use crate::http::error_response::write_error_response;
use crate::runtime::GatewayState;

pub struct AdminServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl AdminServer {
    pub fn start(listener: TcpListener, state: Arc<GatewayState>) -> io::Result<AdminServer> {
        // Polled so `stop` is noticed without another thread poking the socket.
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringgate-admin".into())
            .spawn(move || {
                let active = Arc::new(AtomicUsize::new(0));
                // Accept failures (out of descriptors) are said once a second at most.
                let mut last_failure_warning: Option<std::time::Instant> = None;
                while !stop2.load(Ordering::SeqCst) {
                    match listener.accept() {
                        // Each connection on its own short-lived thread, so one slow client
                        // cannot hold up health checks; the cap bounds the threads.
                        Ok((stream, _)) if active.load(Ordering::SeqCst) < MAX_CONNECTIONS => {
                            active.fetch_add(1, Ordering::SeqCst);
                            let (state, active) = (state.clone(), active.clone());
                            let spawned = std::thread::Builder::new()
                                .name("ringgate-admin-conn".into())
                                .spawn(move || {
                                    if let Err(e) = serve(stream, &state) {
                                        log::debug!("admin: {e}");
                                    }
                                    active.fetch_sub(1, Ordering::SeqCst);
                                });
                            if let Err(e) = spawned {
                                log::warn!("admin: cannot start a connection thread: {e}");
                            }
                        }
                        Ok(_) => {
                            log::warn!("admin: {MAX_CONNECTIONS} connections busy, refusing one")
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        Err(e) => {
                            if last_failure_warning
                                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
                            {
                                log::warn!("admin: accept failed (backing off 100 ms): {e}");
                                last_failure_warning = Some(std::time::Instant::now());
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })?;
        log::info!("admin listening on {addr}");
        Ok(AdminServer { addr, stop, thread })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
    }
}

/// Concurrent admin connections; more are closed at once.
const MAX_CONNECTIONS: usize = 16;
/// The whole request must arrive within this, however it is trickled.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

fn serve(mut stream: TcpStream, state: &GatewayState) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(REQUEST_DEADLINE))?;
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    let (method, path, bearer, head_len, content_length) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(head_len)) => {
                let content_length = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| {
                        std::str::from_utf8(h.value)
                            .ok()?
                            .trim()
                            .parse::<usize>()
                            .ok()
                    })
                    .unwrap_or(0);
                let bearer = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                    .and_then(|h| {
                        // The scheme name is case-insensitive (RFC 9110 11.1).
                        let (scheme, rest) = h.value.split_at_checked(7)?;
                        scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
                    })
                    .map(<[u8]>::to_vec);
                break (
                    req.method.unwrap_or("").to_string(),
                    req.path.unwrap_or("").to_string(),
                    bearer,
                    head_len,
                    content_length,
                );
            }
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            _ => {
                return respond_error(
                    &mut stream,
                    ErrorKind::BadRequest,
                    "malformed admin request",
                )
            }
        }
    };
    if content_length > MAX_BODY {
        return respond_error(
            &mut stream,
            ErrorKind::PayloadTooLarge,
            "admin bodies are at most 1 MiB",
        );
    }
    // The body (CRUD entries), read within the same deadline.
    let mut body = buf[head_len..len].to_vec();
    while body.len() < content_length {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(content_length);
    let path = path.split('?').next().unwrap_or("");
    let token = state
        .snapshot
        .read()
        .ok()
        .and_then(|s| s.config.admin.token.clone());
    if let Some(token) = token {
        if path != "/healthz" && !token_matches(bearer.as_deref(), &token.0) {
            let mut out = Vec::new();
            write_error_response(
                &mut out,
                ErrorKind::Unauthorized,
                "the admin API needs `Authorization: Bearer <admin token>`",
                "admin",
                true,
                false,
                b"www-authenticate: Bearer\r\n",
            );
            return stream.write_all(&out);
        }
    }
    if let Some((section, name)) = entry_path(path) {
        return match method.as_str() {
            "PUT" => edit_entry(&mut stream, state, section, name, Some(&body)),
            "DELETE" => edit_entry(&mut stream, state, section, name, None),
            _ => respond_error(
                &mut stream,
                ErrorKind::MethodNotAllowed,
                "entries take PUT (create or replace) and DELETE",
            ),
        };
    }
    match (method.as_str(), path) {
        ("GET", "/metrics") => respond(
            &mut stream,
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            &super::metrics_export::render(state),
            true,
        ),
        ("GET", "/openapi.json") => {
            let doc = match state.snapshot.read() {
                Ok(snap) => super::openapi::document(&snap),
                Err(_) => serde_json::Value::Null,
            };
            respond_json(&mut stream, &format!("{doc:#}\n"))
        }
        ("POST", "/reload") => {
            let path = state.config_path.lock().ok().and_then(|p| p.clone());
            let Some(path) = path else {
                return respond_error(
                    &mut stream,
                    ErrorKind::BadRequest,
                    "no config file to reload (the embedded demo config)",
                );
            };
            match state.reload_file(&path) {
                Ok(generation) => {
                    respond_json(&mut stream, &format!("{{\"generation\":{generation}}}\n"))
                }
                Err(why) => respond_error(
                    &mut stream,
                    ErrorKind::BadRequest,
                    &format!("reload refused, the running config stays: {why}"),
                ),
            }
        }
        ("GET", "/config") => {
            let body = match state.snapshot.read() {
                Ok(snap) => config_summary(&snap),
                Err(_) => String::new(),
            };
            respond_json(&mut stream, &body)
        }
        ("POST", "/drain") => {
            respond_json(&mut stream, "{\"status\":\"draining\"}\n")?;
            crate::sys::terminate_self();
            Ok(())
        }
        ("GET", "/stats") => respond_json(&mut stream, &stats_json(state)),
        ("GET" | "HEAD", "/healthz") => {
            let (status, body) = if state.healthy() {
                ("200 OK", "{\"status\":\"ok\"}\n")
            } else if state.draining.load(Ordering::SeqCst) {
                ("503 Service Unavailable", "{\"status\":\"draining\"}\n")
            } else {
                ("503 Service Unavailable", "{\"status\":\"starting\"}\n")
            };
            respond(
                &mut stream,
                status,
                "application/json",
                body,
                method == "GET",
            )
        }
        _ => respond_error(
            &mut stream,
            ErrorKind::RouteNotFound,
            &format!("no admin endpoint {method} {path}"),
        ),
    }
}

/// Counters of the app registry cache (summed over workers) and of its store.
fn stats_json(state: &GatewayState) -> String {
    let sum = |f: fn(&CacheStats) -> &AtomicU64| -> u64 {
        state
            .app_cache_stats
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum()
    };
    let hits = sum(|s| &s.hits);
    let stale = sum(|s| &s.stale_hits);
    let misses = sum(|s| &s.misses);
    let filtered = sum(|s| &s.filtered);
    let unavailable = sum(|s| &s.unavailable);
    let lookups = hits + stale + misses + filtered + unavailable;
    let hit_rate = if lookups == 0 {
        0.0
    } else {
        (hits + stale + filtered) as f64 / lookups as f64
    };
    let d = &state.directory_stats;
    let limits = match &state.cluster {
        Some(c) => format!(",\"limits\":{{\"cluster\":{}}}", c.json()),
        None => String::new(),
    };
    let protection = match state.snapshot.read() {
        Ok(snap) => format!(",{}", super::protection_stats::json(&snap)),
        Err(_) => String::new(),
    };
    format!(
        "{{\"apps\":{{\"cache\":{{\"lookups\":{lookups},\"hits\":{hits},\"stale_hits\":{stale},\"misses\":{misses},\"filtered_unknown\":{filtered},\"unavailable\":{unavailable},\"hit_rate\":{hit_rate:.4}}},\"store\":{{\"lookups\":{},\"errors\":{},\"keys_in_filter\":{},\"up\":{}}}}}{limits}{protection}}}\n",
        d.store_lookups.load(Ordering::Relaxed),
        d.store_errors.load(Ordering::Relaxed),
        d.keys_in_filter.load(Ordering::Relaxed),
        d.store_up.load(Ordering::Relaxed),
    )
}

/// Compares digests, so the time taken says nothing about how much of the token matched
/// (or about its length).
fn token_matches(presented: Option<&[u8]>, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    let Some(presented) = presented else {
        return false;
    };
    let (a, b) = (Sha256::digest(presented), Sha256::digest(token.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The largest admin request body (a CRUD entry).
const MAX_BODY: usize = 1 << 20;

/// `/routes/<name>`, `/upstreams/<name>`, `/apps/<key>`.
fn entry_path(path: &str) -> Option<(config_edit::Section, &str)> {
    let rest = path.strip_prefix('/')?;
    let (section, name) = rest.split_once('/')?;
    let section = config_edit::Section::parse(section)?;
    (!name.is_empty() && !name.contains('/')).then_some((section, name))
}

/// Edits one entry of the config (or apps) file, then reloads; answers with the new
/// generation, or 400 with why nothing changed.
fn edit_entry(
    stream: &mut TcpStream,
    state: &GatewayState,
    section: config_edit::Section,
    name: &str,
    body: Option<&[u8]>,
) -> io::Result<()> {
    let Some(path) = state.config_path.lock().ok().and_then(|p| p.clone()) else {
        return respond_error(
            stream,
            ErrorKind::BadRequest,
            "no config file to edit (the embedded demo config)",
        );
    };
    // One edit at a time, its reload included: edits of the same file never interleave.
    let _one_at_a_time = state.editing.lock();
    let edited = match config_edit::edit(&path, section, name, body) {
        Ok(edited) => edited,
        Err(why) => {
            return respond_error(
                stream,
                ErrorKind::BadRequest,
                &format!("nothing changed: {why}"),
            )
        }
    };
    let existed = edited.existed;
    let reloaded = state.reload_file(&path);
    if let Err(why) = &reloaded {
        // The running config stays: so does the file.
        let message = match config_edit::restore(&edited) {
            Ok(()) => format!("nothing changed: the reload was refused: {why}"),
            Err(e) => {
                format!("the reload was refused ({why}) and the file could not be put back: {e}")
            }
        };
        return respond_error(stream, ErrorKind::BadRequest, &message);
    }
    match reloaded {
        Ok(generation) => respond_json(
            stream,
            &format!(
                "{{\"generation\":{generation},\"{}\":{}}}\n",
                if body.is_none() {
                    "deleted"
                } else if existed {
                    "replaced"
                } else {
                    "created"
                },
                serde_json::Value::String(name.to_string())
            ),
        ),
        // Refused reloads were answered above.
        Err(_) => Ok(()),
    }
}

fn respond_json(stream: &mut TcpStream, body: &str) -> io::Result<()> {
    respond(stream, "200 OK", "application/json", body, true)
}

/// A complete response on a connection that closes after it (`with_body` false: HEAD).
fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
    with_body: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if with_body {
        stream.write_all(body.as_bytes())?;
    }
    Ok(())
}

/// The running generation: its number, routes and upstreams.
fn config_summary(snap: &crate::snapshot::Snapshot) -> String {
    use serde_json::json;
    let routes: Vec<_> = snap
        .config
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "host": r.host,
                "path": r.path,
                "methods": r.methods,
                "upstream": snap.upstream(r.upstream).name,
                "auth": r.auth.name(),
                "limits": r.limits.len(),
            })
        })
        .collect();
    let upstreams: Vec<_> = snap
        .config
        .upstreams
        .iter()
        .map(|u| {
            json!({
                "name": u.name,
                "targets": u.targets.iter().map(|t| t.addr.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    format!(
        "{:#}\n",
        json!({ "generation": snap.generation, "routes": routes, "upstreams": upstreams })
    )
}

fn respond_error(stream: &mut TcpStream, kind: ErrorKind, message: &str) -> io::Result<()> {
    let mut out = Vec::new();
    write_error_response(&mut out, kind, message, "admin", true, false, b"");
    stream.write_all(&out)
}
