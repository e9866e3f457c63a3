//! What the limiter reads from a request: the facts a route's limits key on, the amount
//! in force (the app record may override it) and the priority group.

use std::net::IpAddr;

use super::spec::{day_of, secs_to_day_end, Amount, GroupBy, KeyBy, LimitSpec};
use super::Params;
use crate::config::apps::App;

/// What the limiter needs to know about a request.
pub struct RequestFacts<'a> {
    /// The matched route's name (for `app_route` keys).
    pub route: &'a str,
    pub app: Option<&'a App>,
    pub client_ip: IpAddr,
    pub headers: &'a [httparse::Header<'a>],
    pub unix_secs: u64,
}

impl RequestFacts<'_> {
    /// The route part of a key: only `app_route` keys are per route.
    pub(super) fn route_if(&self, key: &KeyBy) -> &str {
        match key {
            KeyBy::AppRoute => self.route,
            _ => "",
        }
    }
}

pub(super) fn effective_params(limit: &LimitSpec, facts: &RequestFacts) -> Params {
    let app = facts.app.filter(|_| limit.key.is_per_app());
    match &limit.amount {
        Amount::Rate(rate) => {
            let r = app.and_then(|a| a.limits.rate).unwrap_or(*rate);
            Params::Rate {
                per_sec: r.per_sec,
                burst: r.burst,
            }
        }
        Amount::Quota {
            per_day,
            utc_offset_secs,
        } => Params::Quota {
            per_day: app.and_then(|a| a.limits.quota).unwrap_or(*per_day),
            day: day_of(facts.unix_secs, *utc_offset_secs),
            secs_left: secs_to_day_end(facts.unix_secs, *utc_offset_secs),
        },
    }
}

/// A key's value: borrowed from the request, or an address's octets.
pub(super) enum KeyValue<'a> {
    Bytes(&'a [u8]),
    V4([u8; 4]),
    V6([u8; 16]),
}

impl KeyValue<'_> {
    pub(super) fn as_bytes(&self) -> &[u8] {
        match self {
            KeyValue::Bytes(b) => b,
            KeyValue::V4(o) => o,
            KeyValue::V6(o) => o,
        }
    }
}

pub(super) fn key_value<'a>(key: &KeyBy, facts: &'a RequestFacts) -> KeyValue<'a> {
    match key {
        KeyBy::Route => KeyValue::Bytes(b""),
        KeyBy::App | KeyBy::AppRoute => {
            KeyValue::Bytes(facts.app.map_or(&b""[..], |a| a.key.as_bytes()))
        }
        KeyBy::Ip => match facts.client_ip {
            IpAddr::V4(v4) => KeyValue::V4(v4.octets()),
            IpAddr::V6(v6) => KeyValue::V6(v6.octets()),
        },
        KeyBy::Header(name) => KeyValue::Bytes(header(facts.headers, name).unwrap_or(b"")),
    }
}

fn header<'a>(headers: &'a [httparse::Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

pub(super) fn group_of(limit: &LimitSpec, facts: &RequestFacts) -> usize {
    let Some(groups) = &limit.groups else {
        return 0;
    };
    let name = match &groups.by {
        GroupBy::App => facts
            .app
            .and_then(|a| a.limits.traffic_group.as_deref())
            .map(str::as_bytes),
        GroupBy::Header(h) => header(facts.headers, h),
    };
    groups.index(name)
}
