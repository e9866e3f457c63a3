//! Active health checks: one control-side thread per upstream with `health`, per config
//! generation. Every `interval` it sends each target `GET <path>` on a fresh connection
//! (connect, TLS handshake for a `tls` upstream, send and status line all within
//! `timeout`); a 2xx or 3xx passes. Verdicts go
//! to the upstream's `UpstreamHealth`, which every worker reads without a lock (and which
//! a reload keeps while the upstream's config is unchanged, so verdicts outlive the
//! thread). The thread ends when its generation is gone (it holds only a weak reference).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::config::UpstreamTls;
use crate::resilience::health::{CheckStreak, HealthCheckConfig};
use crate::snapshot::Snapshot;

/// Longest sleep between looks at whether the generation is still alive.
const NAP: Duration = Duration::from_millis(100);

/// Starts the checkers of a new generation.
pub fn start(snapshot: &Arc<Snapshot>) {
    for (u, upstream) in snapshot.config.upstreams.iter().enumerate() {
        if upstream.health.is_none() {
            continue;
        }
        let weak = Arc::downgrade(snapshot);
        let spawned = std::thread::Builder::new()
            .name(format!("ringgate-health-{u}"))
            .spawn(move || run(&weak, u));
        if let Err(e) = spawned {
            log::error!(
                "upstream {:?}: cannot start health checks: {e}",
                upstream.name
            );
        }
    }
}

fn run(snapshot: &Weak<Snapshot>, u: usize) {
    let mut streaks: Vec<CheckStreak> = Vec::new();
    loop {
        let round_started = Instant::now();
        let interval = {
            let Some(snap) = snapshot.upgrade() else {
                return;
            };
            let upstream = &snap.config.upstreams[u];
            let Some(check) = &upstream.health else {
                return;
            };
            let health = &snap.health[u];
            streaks.resize_with(upstream.targets.len(), CheckStreak::default);
            for (t, target) in upstream.targets.iter().enumerate() {
                let result = probe(target.addr, &upstream.name, upstream.tls.as_ref(), check);
                let healthy = health.healthy(t);
                if let Some(verdict) = streaks[t].observe(result.is_ok(), healthy, check) {
                    health.set_healthy(t, verdict);
                    match (verdict, &result) {
                        (true, _) => log::info!(
                            "upstream {:?}: target {} healthy again",
                            upstream.name,
                            target.addr
                        ),
                        (false, Err(why)) => log::warn!(
                            "upstream {:?}: target {} unhealthy after {} failed checks ({why})",
                            upstream.name,
                            target.addr,
                            check.unhealthy
                        ),
                        (false, Ok(())) => {}
                    }
                }
            }
            check.interval
        };
        // Sleep out the interval in naps, so a dropped generation ends the thread soon.
        while round_started.elapsed() < interval {
            if snapshot.strong_count() == 0 {
                return;
            }
            std::thread::sleep(NAP.min(interval.saturating_sub(round_started.elapsed())));
        }
    }
}

/// One check: `Ok` for a 2xx or 3xx status line within the timeout (over TLS, verified
/// as requests are, when the upstream has `tls`).
fn probe(
    addr: SocketAddr,
    host: &str,
    tls: Option<&UpstreamTls>,
    check: &HealthCheckConfig,
) -> Result<(), String> {
    let deadline = Instant::now() + check.timeout;
    let left = move || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let stream =
        TcpStream::connect_timeout(&addr, check.timeout).map_err(|e| format!("connect: {e}"))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringgate-health-check\r\nConnection: close\r\n\r\n",
        check.path
    );
    let line = match tls {
        None => status_line(stream, &request, left, |s| s),
        Some(tls) => {
            let mut session =
                rustls::ClientConnection::new(tls.client.clone(), tls.server_name(addr))
                    .map_err(|e| format!("TLS: {e}"))?;
            let mut stream = stream;
            // Step by step, so a target that drips its handshake cannot hold the check
            // past its deadline.
            while session.is_handshaking() {
                if Instant::now() >= deadline {
                    return Err(format!("TLS handshake not done within {:?}", check.timeout));
                }
                let _ = stream.set_read_timeout(Some(left()));
                let _ = stream.set_write_timeout(Some(left()));
                if session.wants_write() {
                    session
                        .write_tls(&mut stream)
                        .map_err(|e| format!("TLS: {e}"))?;
                } else if session
                    .read_tls(&mut stream)
                    .map_err(|e| format!("TLS: {e}"))?
                    == 0
                {
                    return Err("closed during the TLS handshake".into());
                } else {
                    session
                        .process_new_packets()
                        .map_err(|e| format!("TLS: {e}"))?;
                }
            }
            status_line(
                rustls::StreamOwned::new(session, stream),
                &request,
                left,
                |s| &s.sock,
            )
        }
    }?;
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| "not an HTTP response".to_string())?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

/// Sends `request` and reads up to the end of the status line, each step within what is
/// `left` of the check's time.
fn status_line<S: Read + Write>(
    mut stream: S,
    request: &str,
    left: impl Fn() -> Duration,
    tcp: fn(&S) -> &TcpStream,
) -> Result<String, String> {
    let timeouts = |s: &S| {
        let _ = tcp(s).set_read_timeout(Some(left()));
        let _ = tcp(s).set_write_timeout(Some(left()));
    };
    timeouts(&stream);
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        if left() <= Duration::from_millis(1) {
            return Err("no status line in time".into());
        }
        timeouts(&stream);
        match stream.read(&mut buf) {
            Ok(0) => return Err("closed before a status line".into()),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("no status line in time: {e}")),
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}
