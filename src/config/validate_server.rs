//! The `[server]` table: listeners, workers and drivers, timeouts, HTTP limits, load
//! shedding, trusted proxies.

use std::time::Duration;

use super::cidr::Cidr;
use super::file::{FileConfig, ListenFile, NumOrString};
use super::model::*;
use super::problems::Problems;
use super::units::{parse_duration, parse_size};

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

pub(super) fn validate_server(p: &mut Problems, file: &FileConfig) -> ServerConfig {
    let s = &file.server;
    let listen_entries = s
        .listen
        .clone()
        .unwrap_or_else(|| vec![ListenFile::Addr(DEFAULT_LISTEN.to_string())]);
    if listen_entries.is_empty() {
        p.add("server.listen", "at least one address is required");
    }
    let listen: Vec<ListenConfig> = listen_entries
        .iter()
        .enumerate()
        .filter_map(|(i, entry)| {
            let (addr, proxy_protocol) = match entry {
                ListenFile::Addr(a) => (a, false),
                ListenFile::Table(t) => (&t.addr, t.proxy_protocol.unwrap_or(false)),
            };
            let addr = p.socket_addr(&format!("server.listen[{i}]"), addr)?;
            Some(ListenConfig {
                addr,
                proxy_protocol,
                tls: false,
            })
        })
        .collect();
    for (i, l) in listen.iter().enumerate() {
        if l.addr.port() != 0 && listen[..i].iter().any(|e| e.addr == l.addr) {
            p.add(
                format!("server.listen[{i}]"),
                format!("{} is listed twice", l.addr),
            );
        }
    }
    if s.trust_forwarded.is_some() {
        p.add(
            "server.trust_forwarded",
            "replaced by server.trusted_proxies = [\"10.0.0.0/8\", ...]: the addresses of the balancers whose X-Forwarded-For is believed",
        );
    }
    let trusted_proxies = s
        .trusted_proxies
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, c)| match Cidr::parse(c) {
            Ok(c) => Some(c),
            Err(e) => {
                p.add(format!("server.trusted_proxies[{i}]"), e);
                None
            }
        })
        .collect();
    let workers = match &s.workers {
        None => WorkerCount::Auto,
        Some(NumOrString::Str(s)) if s == "auto" => WorkerCount::Auto,
        Some(NumOrString::Num(n)) if (1..=1024).contains(n) => WorkerCount::Fixed(*n as usize),
        Some(other) => {
            p.add(
                "server.workers",
                format!("invalid value {other}: expected \"auto\" or a number from 1 to 1024"),
            );
            WorkerCount::Auto
        }
    };
    let driver = match s.driver.as_deref().unwrap_or("auto") {
        "auto" => DriverChoice::Auto,
        "io_uring" => DriverChoice::IoUring,
        "epoll" => DriverChoice::Epoll,
        other => {
            p.add(
                "server.driver",
                format!("unknown driver {other:?}: expected \"auto\", \"io_uring\" or \"epoll\""),
            );
            DriverChoice::Auto
        }
    };
    let cpus = s.cpus.as_ref().map(|cpus| {
        if cpus.is_empty() {
            p.add("server.cpus", "must list at least one CPU when set");
        }
        cpus.iter()
            .enumerate()
            .filter_map(|(i, &c)| match usize::try_from(c) {
                Ok(c) if c < 4096 => Some(c),
                _ => {
                    p.add(
                        format!("server.cpus[{i}]"),
                        format!("invalid CPU number {c}"),
                    );
                    None
                }
            })
            .collect()
    });
    let sqpoll_idle = s
        .sqpoll_idle
        .as_ref()
        .map(|v| p.duration("server.sqpoll_idle", &Some(v.clone()), Duration::ZERO));
    let max_header_bytes = p.size("server.max_header_bytes", &s.max_header_bytes, 16 * 1024);
    if !(1024..=1 << 20).contains(&max_header_bytes) {
        p.add("server.max_header_bytes", "must be between 1KiB and 1MiB");
    }
    let max_uri_bytes = p.size("server.max_uri_bytes", &s.max_uri_bytes, 8 * 1024);
    if max_uri_bytes == 0 || max_uri_bytes > max_header_bytes {
        p.add(
            "server.max_uri_bytes",
            "must be at least 1 and at most server.max_header_bytes",
        );
    }
    let limits = HttpLimits {
        max_header_bytes: max_header_bytes as usize,
        max_headers: p.int("server.max_headers", s.max_headers, 100, 1, 1024) as usize,
        max_uri_bytes: max_uri_bytes as usize,
        max_body_bytes: p.size("server.max_body_bytes", &s.max_body_bytes, 8 << 20),
    };
    ServerConfig {
        listen,
        workers,
        driver,
        cpus,
        uring_entries: p.int("server.uring_entries", s.uring_entries, 1024, 256, 32768) as u32,
        sqpoll_idle,
        max_connections_per_worker: p.int(
            "server.max_connections_per_worker",
            s.max_connections_per_worker,
            16384,
            1,
            1 << 22,
        ) as usize,
        backlog: p.int("server.backlog", s.backlog, 4096, 1, 1 << 20) as i32,
        drain_timeout: p.duration(
            "server.drain_timeout",
            &s.drain_timeout,
            Duration::from_secs(30),
        ),
        head_timeout: p.duration(
            "server.head_timeout",
            &s.head_timeout,
            Duration::from_secs(10),
        ),
        keepalive_timeout: p.duration(
            "server.keepalive_timeout",
            &s.keepalive_timeout,
            Duration::from_secs(60),
        ),
        body_timeout: p.duration(
            "server.body_timeout",
            &s.body_timeout,
            Duration::from_secs(30),
        ),
        max_loop_delay: max_loop_delay(p, &s.max_loop_delay),
        min_body_rate: min_body_rate(p, &s.min_body_rate),
        limits,
        trusted_proxies,
    }
}

/// `server.min_body_rate`: bytes a second as a size with `/s` (`"1KiB/s"`, `"500B/s"`),
/// at least 1 byte a second, or `"off"`.
fn min_body_rate(p: &mut Problems, v: &Option<NumOrString>) -> Option<u64> {
    const DEFAULT: u64 = 1024;
    const PATH: &str = "server.min_body_rate";
    let text = match v {
        None => return Some(DEFAULT),
        Some(NumOrString::Str(s)) if s.trim() == "off" => return None,
        Some(NumOrString::Str(s)) => s.trim(),
        Some(NumOrString::Num(_)) => {
            p.add(PATH, "must be a rate such as \"1KiB/s\", or \"off\"");
            return Some(DEFAULT);
        }
    };
    let Some(size) = text.strip_suffix("/s") else {
        p.add(
            PATH,
            format!(
                "invalid rate {text:?}: expected a size a second, such as \"1KiB/s\", or \"off\""
            ),
        );
        return Some(DEFAULT);
    };
    match parse_size(&NumOrString::Str(size.to_string())) {
        Ok(0) => {
            p.add(PATH, "must be at least 1B/s, or \"off\"");
            Some(DEFAULT)
        }
        Ok(n) => Some(n),
        Err(e) => {
            p.add(
                PATH,
                format!("{e}; a rate is a size a second, such as \"1KiB/s\""),
            );
            Some(DEFAULT)
        }
    }
}

/// `server.max_loop_delay`: a duration from 5ms to 10s, or `"off"`. Under 5 ms the
/// worker's tick (10 ms, with a timer of 1 ms grain) would read its own jitter as load.
fn max_loop_delay(p: &mut Problems, v: &Option<String>) -> Option<Duration> {
    const DEFAULT: Duration = Duration::from_millis(50);
    const PATH: &str = "server.max_loop_delay";
    let range = Duration::from_millis(5)..=Duration::from_secs(10);
    match v.as_deref().map(|v| (v, parse_duration(v))) {
        None => Some(DEFAULT),
        Some(("off", _)) => None,
        Some((_, Ok(d))) if range.contains(&d) => Some(d),
        Some((_, Ok(_))) => {
            p.add(PATH, "must be between 5ms and 10s, or \"off\"");
            Some(DEFAULT)
        }
        Some((_, Err(e))) => {
            p.add(PATH, format!("{e}; or \"off\""));
            Some(DEFAULT)
        }
    }
}
