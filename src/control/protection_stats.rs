//! The `/stats` view of upstream protection in the newest config generation: each
//! route's breaker, each isolation group's load, each checked upstream's targets.

use std::fmt::Write;
use std::time::Instant;

use crate::http::error_response::push_json_escaped;
use crate::resilience::breaker::State;
use crate::snapshot::Snapshot;

/// `"routes":[...],"isolation":[...],"upstreams":[...]` (without braces around them).
pub fn json(snap: &Snapshot) -> String {
    let mut out = String::from("\"routes\":[");
    let mut first = true;
    for (route, guard) in snap.config.routes.iter().zip(&snap.guards) {
        let Some(guard) = guard else {
            continue;
        };
        sep(&mut out, &mut first);
        out.push_str("{\"name\":");
        quoted(&mut out, &route.name);
        match guard.breaker_state() {
            Some((state, trips)) => {
                let _ = write!(
                    out,
                    ",\"breaker\":\"{}\",\"trips\":{trips}}}",
                    state_name(state)
                );
            }
            None => out.push_str(",\"breaker\":\"adaptive\"}"),
        }
    }
    out.push_str("],\"isolation\":[");
    first = true;
    for group in &snap.bulkheads {
        sep(&mut out, &mut first);
        out.push_str("{\"name\":");
        quoted(&mut out, &group.config.name);
        let _ = write!(
            out,
            ",\"in_flight\":{},\"max_in_flight\":{},\"refused\":{}}}",
            group.in_flight(),
            group.config.max_in_flight,
            group.refused()
        );
    }
    out.push_str("],\"upstreams\":[");
    first = true;
    let now = Instant::now();
    for (upstream, health) in snap.config.upstreams.iter().zip(&snap.health) {
        if upstream.health.is_none() && upstream.outlier.is_none() && upstream.breaker.is_none() {
            continue;
        }
        sep(&mut out, &mut first);
        out.push_str("{\"name\":");
        quoted(&mut out, &upstream.name);
        out.push_str(",\"targets\":[");
        for (t, target) in upstream.targets.iter().enumerate() {
            if t > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"addr\":\"{}\",\"healthy\":{},\"available\":{}",
                target.addr,
                health.healthy(t),
                health.available(t, now)
            );
            if let Some((state, trips)) = health.breaker(t) {
                let _ = write!(
                    out,
                    ",\"breaker\":\"{}\",\"trips\":{trips}",
                    state_name(state)
                );
            }
            out.push('}');
        }
        out.push_str("]}");
    }
    out.push(']');
    out
}

fn state_name(state: State) -> &'static str {
    match state {
        State::Closed => "closed",
        State::Open => "open",
        State::HalfOpen => "half_open",
    }
}

fn sep(out: &mut String, first: &mut bool) {
    if !std::mem::take(first) {
        out.push(',');
    }
}

fn quoted(out: &mut String, s: &str) {
    out.push('"');
    push_json_escaped(out, s);
    out.push('"');
}
