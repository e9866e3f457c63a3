//! Configuration as a generation: `FileConfig` (serde, exactly the TOML) -> validated
//! `Config` (every problem reported with its path), plain data. The compiled, immutable
//! `Snapshot` that workers share is built from it one layer up (`crate::snapshot`), so
//! the config imports none of the capabilities (auth, limits, resilience, proxy, ...):
//! their config types live here (`model_limits`, `model_resilience`, `apps`) and they
//! import them.

pub mod apps;
pub mod cidr;
mod file;
mod file_filters;
pub mod file_redis;
mod files;
mod model;
pub mod model_limits;
pub mod model_resilience;
mod problems;
pub mod redis_target;
mod routing;
mod units;
mod validate;
mod validate_limits;
mod validate_resilience;
mod validate_server;
mod validate_tls;
mod validate_upstream;

use std::path::Path;

pub use file::FileConfig;
pub use file_filters::{CorsFile, HeaderEditsFile, HeadersFile};
pub use model::*;
pub use problems::ConfigError;
pub use routing::build_router;
pub use units::{parse_duration, parse_size};

/// Parses and validates TOML text. Every problem is returned, each with its path.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    parse_in(text, None)
}

/// Like `parse`, with relative file names (the apps file) resolved against `base_dir`.
pub fn parse_in(text: &str, base_dir: Option<&Path>) -> Result<Config, Vec<ConfigError>> {
    let file: FileConfig = toml::from_str(text).map_err(|e| {
        vec![ConfigError {
            path: String::new(),
            message: e.to_string().trim_end().to_string(),
        }]
    })?;
    validate::validate(&file, base_dir)
}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            path: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
        }]
    })?;
    parse_in(&text, path.parent())
}

/// The files the config file at `path` names (certificates, keys, CA files, the apps
/// file, fallback bodies), whether or not the config is valid: the watcher watches them
/// for a config that was refused, too (its missing certificate may appear later). Empty
/// when the file does not read or parse.
pub fn named_files(path: &Path) -> Vec<std::path::PathBuf> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    match toml::from_str::<FileConfig>(&text) {
        Ok(file) => files::read_files(&file, path.parent()),
        Err(_) => Vec::new(),
    }
}

/// Warnings (not errors) for the config file at `path`: files holding secrets that other
/// users can read (group or others have read permission), each with its path, mode and
/// what it holds. Empty when the file does not read or parse (`load` reports that).
pub fn secret_file_warnings(path: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let Ok(file) = toml::from_str::<FileConfig>(&text) else {
        return Vec::new();
    };
    let mut warnings = Vec::new();
    for (secret, holds) in files::secret_files(&file, path, path.parent()) {
        let Ok(meta) = std::fs::metadata(&secret) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o044 != 0 {
            warnings.push(format!(
                "{}: holds {holds} and is readable by other users (mode {mode:04o}); \
                 chmod 600 it and let only the gateway's user own it",
                secret.display()
            ));
        }
    }
    warnings
}
