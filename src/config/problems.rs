//! How validation reports problems: `ConfigError` (one problem and the path of the value
//! at fault) and `Problems`, the collector every `validate*` file adds to, with the checks
//! they share (durations, sizes, ranges, addresses). A leaf of `config`, so the section
//! validators need not import each other.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::NumOrString;
use super::units::{parse_duration, parse_size};

/// One problem in a config, with the path of the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<ConfigError>);

impl Problems {
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// A duration from 1 ms to 7 days: zero would fail every request, and a huge one
    /// would overflow deadline arithmetic (`Instant + Duration`).
    pub(super) fn duration(
        &mut self,
        path: &str,
        v: &Option<String>,
        default: Duration,
    ) -> Duration {
        const MIN: Duration = Duration::from_millis(1);
        const MAX: Duration = Duration::from_secs(7 * 24 * 3600);
        match v.as_deref().map(parse_duration) {
            None => default,
            Some(Ok(d)) if (MIN..=MAX).contains(&d) => d,
            Some(Ok(_)) => {
                self.add(path, "must be between 1ms and 7 days");
                default
            }
            Some(Err(e)) => {
                self.add(path, e);
                default
            }
        }
    }

    pub(super) fn size(&mut self, path: &str, v: &Option<NumOrString>, default: u64) -> u64 {
        match v.as_ref().map(parse_size) {
            None => default,
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                self.add(path, e);
                default
            }
        }
    }

    /// An integer knob within `[min, max]`.
    pub(super) fn int(
        &mut self,
        path: &str,
        v: Option<i64>,
        default: i64,
        min: i64,
        max: i64,
    ) -> i64 {
        match v {
            None => default,
            Some(n) if (min..=max).contains(&n) => n,
            Some(n) => {
                self.add(
                    path,
                    format!("{n} is out of range: must be between {min} and {max}"),
                );
                default
            }
        }
    }

    pub(super) fn socket_addr(&mut self, path: &str, s: &str) -> Option<SocketAddr> {
        if let Ok(a) = s.parse() {
            return Some(a);
        }
        match s.to_socket_addrs().map(|mut it| it.next()) {
            Ok(Some(a)) => Some(a),
            _ => {
                self.add(
                    path,
                    format!("invalid address {s:?}: expected host:port, e.g. \"127.0.0.1:8080\""),
                );
                None
            }
        }
    }
}

/// A client certificate and its key (`cert`, `key`: both or neither), resolved.
pub(super) fn identity_files(
    p: &mut Problems,
    at: &dyn Fn(&str) -> String,
    cert: &Option<String>,
    key: &Option<String>,
    base_dir: Option<&Path>,
) -> Option<(PathBuf, PathBuf)> {
    match (cert, key) {
        (Some(c), Some(k)) => Some((resolve(base_dir, c), resolve(base_dir, k))),
        (None, None) => None,
        (Some(_), None) => {
            p.add(at("key"), "required with `cert`");
            None
        }
        (None, Some(_)) => {
            p.add(at("cert"), "required with `key`");
            None
        }
    }
}

/// A file named in the config, relative to the config file's directory.
pub(super) fn resolve(base_dir: Option<&Path>, file: &str) -> PathBuf {
    base_dir.map_or_else(|| PathBuf::from(file), |d| d.join(file))
}
