//! `redis = "..."` or `redis = { ... }` as written in `[cluster]` and `[apps]` (serde);
//! validated into a `RedisTarget` by `redis_target`. No password in `Debug`.

use serde::Deserialize;

/// `redis = "..."` or `redis = { ... }`, as written.
#[derive(Clone)]
pub enum RedisFile {
    Url(String),
    Table(Box<RedisTableFile>),
}

/// The table form of `redis`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTableFile {
    pub url: Option<String>,
    pub sentinels: Option<Vec<String>>,
    pub nodes: Option<Vec<String>>,
    pub master_name: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: Option<i64>,
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

impl std::fmt::Debug for RedisFile {
    /// Without the URL, which may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisFile::Url(url) => write!(f, "RedisFile::Url({})", host_port(url)),
            RedisFile::Table(t) => t.fmt(f),
        }
    }
}

impl std::fmt::Debug for RedisTableFile {
    /// Without the password (config files are printed in test failures).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTableFile")
            .field("sentinels", &self.sentinels.as_ref().map(Vec::len))
            .field("master_name", &self.master_name)
            .finish_non_exhaustive()
    }
}

impl<'de> Deserialize<'de> for RedisFile {
    /// By hand rather than `#[serde(untagged)]`, so that a wrong key in the table is named
    /// ("unknown field `sentinel`, expected one of ...") instead of "did not match any
    /// variant".
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RedisFile;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a Redis URL or a table such as { sentinels = [...], master_name = \"...\" }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RedisFile, E> {
                Ok(RedisFile::Url(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RedisFile, A::Error> {
                RedisTableFile::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|t| RedisFile::Table(Box::new(t)))
            }
        }
        d.deserialize_any(V)
    }
}

impl RedisFile {
    /// Whether the config file holds a Redis password (in a URL or the table).
    pub fn has_password(&self) -> bool {
        let in_url = |url: &str| {
            redis::Client::open(url).is_ok_and(|c| c.get_connection_info().redis.password.is_some())
        };
        match self {
            RedisFile::Url(url) => in_url(url),
            RedisFile::Table(t) => {
                t.password.is_some()
                    || t.url.as_deref().is_some_and(in_url)
                    || t.sentinels
                        .iter()
                        .chain(&t.nodes)
                        .flatten()
                        .any(|s| in_url(s))
            }
        }
    }

    /// The files it names: the CA, the client certificate and its key.
    pub fn files(&self) -> [Option<&str>; 3] {
        match self {
            RedisFile::Url(_) => [None; 3],
            RedisFile::Table(t) => [t.ca.as_deref(), t.cert.as_deref(), t.key.as_deref()],
        }
    }
}

/// `host:port` of a Redis URL, or `?` for one that does not parse.
pub(super) fn host_port(url: &str) -> String {
    redis::Client::open(url).map_or_else(
        |_| "?".to_string(),
        |c| c.get_connection_info().addr.to_string(),
    )
}
