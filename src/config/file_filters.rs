//! The config sections of the `headers` and `cors` filters, as written. They stay plain
//! data through validation: each filter checks and compiles its own section when the
//! route's chain is built, and reports its problems with their paths there.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A route's `[routes.headers]`: edits of the request (to the upstream) and of the
/// response (to the client).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeadersFile {
    #[serde(default)]
    pub request: HeaderEditsFile,
    #[serde(default)]
    pub response: HeaderEditsFile,
}

/// `set` replaces any header of that name, `add` appends one more, `remove` drops every
/// header of that name. Values may use `$request_id`, `$app_key`, `$client_ip`, `$route`,
/// `$tls_version`, `$tls_cipher`, `$tls_sni`, `$tls_client_sha256` (`$$` for a literal `$`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderEditsFile {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// A route's `[routes.cors]`: which browser origins may call it, and how.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorsFile {
    /// `"https://app.example.com"`, `"https://*.example.com"`, or `"*"` (any origin).
    #[serde(default)]
    pub allow_origins: Vec<String>,
    /// Default: the route's `methods`, else GET, HEAD, POST, PUT, PATCH, DELETE.
    pub allow_methods: Option<Vec<String>>,
    /// Default: whatever the preflight asks for.
    pub allow_headers: Option<Vec<String>>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight, e.g. `"10m"` (default: not sent).
    pub max_age: Option<String>,
}
