//! What a limit is, once validated: which requests share a counter (`KeyBy`), how much
//! they may spend (`Amount`) and, optionally, how that capacity is split between
//! priority groups. Parsing of the config's amount strings lives here too.
//!
//! Plain data of the config (it imports nothing of the crate), so `config` can validate
//! limits without depending on the `limits` capability; `limits::spec` re-exports it.

use std::fmt;

/// The most limits one route may have (validated here, sizes the per-request undo array in
/// `limits::worker`).
pub const MAX_LIMITS_PER_ROUTE: usize = 16;

/// Which requests share one bucket or one quota counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyBy {
    /// Every request of the route (or of the routes sharing the limit).
    Route,
    /// Per authenticated app.
    App,
    /// Per app and route.
    AppRoute,
    /// Per client address.
    Ip,
    /// Per value of a request header (lower-cased name). A missing header is one value
    /// (the empty one), so leaving the header out does not escape the limit.
    Header(String),
}

impl KeyBy {
    /// `route`, `app`, `app_route`, `ip` or `header:<name>`.
    pub fn parse(s: &str) -> Result<KeyBy, String> {
        Ok(match s {
            "route" => KeyBy::Route,
            "app" => KeyBy::App,
            "app_route" => KeyBy::AppRoute,
            "ip" => KeyBy::Ip,
            _ => match s.strip_prefix("header:") {
                Some(name) if is_token(name) => KeyBy::Header(name.to_ascii_lowercase()),
                Some(_) => return Err(format!("{s:?}: a header name must be a non-empty token")),
                None => {
                    return Err(format!(
                        "unknown key {s:?}; expected route, app, app_route, ip or header:<name>"
                    ))
                }
            },
        })
    }

    /// The app's own record may override the amount (`rate` / `quota` fields).
    pub fn is_per_app(&self) -> bool {
        matches!(self, KeyBy::App | KeyBy::AppRoute)
    }
}

impl fmt::Display for KeyBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyBy::Route => f.write_str("route"),
            KeyBy::App => f.write_str("app"),
            KeyBy::AppRoute => f.write_str("app_route"),
            KeyBy::Ip => f.write_str("ip"),
            KeyBy::Header(h) => write!(f, "header:{h}"),
        }
    }
}

/// A token bucket: `per_sec` tokens a second, holding at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_sec: f64,
    pub burst: f64,
    /// The window the rate was written with (1 s or 60 s), for the RateLimit-Policy header.
    pub window_secs: u32,
    /// The count written, e.g. 100 in "100/min".
    pub count: u64,
}

impl Rate {
    /// `"5000/s"`, `"100/min"` (also `/sec`, `/second`, `/m`, `/minute`). The burst is
    /// the count written: "100/min" admits 100 at once, then refills over the minute.
    pub fn parse(s: &str) -> Result<Rate, String> {
        let (count, unit) = split_amount(s)?;
        let window_secs = match unit {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            _ => {
                return Err(format!(
                "{s:?}: unknown rate unit {unit:?}; expected /s or /min (daily amounts are quotas)"
            ))
            }
        };
        Ok(Rate {
            per_sec: count as f64 / window_secs as f64,
            burst: count as f64,
            window_secs,
            count,
        })
    }
}

/// `"100000/day"` (also `/d`): units a day.
pub fn parse_quota(s: &str) -> Result<u64, String> {
    let (count, unit) = split_amount(s)?;
    match unit {
        "day" | "d" => Ok(count),
        _ => Err(format!("{s:?}: unknown quota unit {unit:?}; expected /day")),
    }
}

/// The largest count an amount may have: far beyond any real limit, and small enough that
/// sums of counts never overflow.
const MAX_COUNT: u64 = 1 << 40;

fn split_amount(s: &str) -> Result<(u64, &str), String> {
    let Some((count, unit)) = s.split_once('/') else {
        return Err(format!("{s:?}: expected <count>/<unit>, e.g. \"100/s\""));
    };
    let count: u64 = count
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: {count:?} is not a whole number"))?;
    if count == 0 || count > MAX_COUNT {
        return Err(format!(
            "{s:?}: the count must be between 1 and {MAX_COUNT}"
        ));
    }
    Ok((count, unit.trim()))
}

/// How much a limit allows.
#[derive(Debug, Clone, PartialEq)]
pub enum Amount {
    Rate(Rate),
    /// Units per day; the day starts at midnight at `utc_offset_secs` from UTC.
    Quota {
        per_day: u64,
        utc_offset_secs: i32,
    },
}

/// Where a request's priority group comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// The app record's `traffic_group`.
    App,
    /// A request header's value (lower-cased name).
    Header(String),
}

/// A rate limit's capacity split between named priority groups.
#[derive(Debug, Clone, PartialEq)]
pub struct Groups {
    /// Sorted by name; ratios sum to 1.
    pub names: Vec<String>,
    pub ratios: Vec<f64>,
    pub by: GroupBy,
    /// Index of the group for requests naming no known group.
    pub default: usize,
}

impl Groups {
    /// The group index for a request's group name.
    pub fn index(&self, name: Option<&[u8]>) -> usize {
        name.and_then(|n| self.names.iter().position(|g| g.as_bytes() == n))
            .unwrap_or(self.default)
    }
}

/// One validated limit.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitSpec {
    /// The policy name in the RateLimit headers; unique within a route.
    pub name: String,
    /// Requests of routes with the same scope share counters: the route's name, or the
    /// `shared` name several routes use.
    pub scope: String,
    pub key: KeyBy,
    pub amount: Amount,
    pub groups: Option<Groups>,
    /// Identity of the limit across reloads: a hash of scope and name.
    pub id: u64,
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `"+08:00"`, `"-05:30"`, `"Z"`/`"UTC"`/`"+00:00"`: seconds east of UTC.
pub fn parse_utc_offset(s: &str) -> Result<i32, String> {
    if s == "Z" || s.eq_ignore_ascii_case("utc") {
        return Ok(0);
    }
    let bad = || format!("{s:?}: expected an offset like \"+08:00\" or \"UTC\"");
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i32 = h.parse().map_err(|_| bad())?;
    let m: i32 = m.parse().map_err(|_| bad())?;
    if h > 14 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

/// The day number (days since 1970-01-01 at the offset) of a Unix time.
pub fn day_of(unix_secs: u64, utc_offset_secs: i32) -> u32 {
    let local = unix_secs as i64 + utc_offset_secs as i64;
    local.div_euclid(86_400).max(0) as u32
}

/// Seconds from `unix_secs` until the next day starts at the offset (1..=86400).
pub fn secs_to_day_end(unix_secs: u64, utc_offset_secs: i32) -> u64 {
    let local = unix_secs as i64 + utc_offset_secs as i64;
    (86_400 - local.rem_euclid(86_400)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        let r = Rate::parse("5000/s").unwrap();
        assert_eq!(
            (r.per_sec, r.burst, r.window_secs, r.count),
            (5000.0, 5000.0, 1, 5000)
        );
        let r = Rate::parse("120/min").unwrap();
        assert_eq!((r.per_sec, r.burst, r.window_secs), (2.0, 120.0, 60));
        assert_eq!(Rate::parse("3 / second").unwrap().per_sec, 3.0);
        for bad in ["100", "0/s", "-1/s", "1.5/s", "10/hour", "10/day", "x/s"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quotas() {
        assert_eq!(parse_quota("100000/day"), Ok(100000));
        assert_eq!(parse_quota("5/d"), Ok(5));
        assert!(parse_quota("5/s").unwrap_err().contains("/day"));
    }

    #[test]
    fn keys() {
        assert_eq!(KeyBy::parse("app_route"), Ok(KeyBy::AppRoute));
        assert_eq!(
            KeyBy::parse("header:X-Tenant"),
            Ok(KeyBy::Header("x-tenant".into()))
        );
        assert!(KeyBy::parse("header:").is_err());
        assert!(KeyBy::parse("header:a b").is_err());
        assert!(KeyBy::parse("user").unwrap_err().contains("expected route"));
        assert_eq!(KeyBy::Header("x-t".into()).to_string(), "header:x-t");
    }

    #[test]
    fn offsets_and_days() {
        assert_eq!(parse_utc_offset("+08:00"), Ok(28_800));
        assert_eq!(parse_utc_offset("-05:30"), Ok(-19_800));
        assert_eq!(parse_utc_offset("UTC"), Ok(0));
        for bad in ["8", "+8:00", "+15:00", "+08:60", "08:00"] {
            assert!(parse_utc_offset(bad).is_err(), "{bad}");
        }
        // 2026-11-21T00:00:00Z = 1763683200.
        let midnight = 1_763_683_200;
        assert_eq!(day_of(midnight, 0), day_of(midnight - 1, 0) + 1);
        assert_eq!(secs_to_day_end(midnight, 0), 86_400);
        assert_eq!(secs_to_day_end(midnight - 1, 0), 1);
        // At +08:00 it is 08:00 already: 16 hours to go.
        assert_eq!(secs_to_day_end(midnight, 28_800), 16 * 3600);
        assert_eq!(day_of(midnight - 8 * 3600, 28_800), day_of(midnight, 0));
    }

    #[test]
    fn group_index_falls_back_to_default() {
        let g = Groups {
            names: vec!["critical".into(), "normal".into()],
            ratios: vec![0.7, 0.3],
            by: GroupBy::App,
            default: 1,
        };
        assert_eq!(g.index(Some(b"critical")), 0);
        assert_eq!(g.index(Some(b"other")), 1);
        assert_eq!(g.index(None), 1);
    }
}
