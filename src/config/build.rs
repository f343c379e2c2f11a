//! The typed walk: generic TOML table (file + environment) → [`Config`].
//!
//! Every key is checked against the known keys of its section, and every
//! error names the full dotted key and where its value came from.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use super::error::{suggest, ConfigError, Origin};
use super::schema;
use super::units::{parse_duration, parse_size};
use super::{AuthConfig, ClientConfig, Config, NamespaceConfig};

/// What is expected of a duration, quoted in error messages.
const DURATION_HINT: &str = "expected a duration like 25s, 500ms, 1h";
/// What is expected of a size, quoted in error messages.
const SIZE_HINT: &str = "expected a size like 64KiB, 1MiB, 512";

/// Where the table's values came from: the file, unless the environment set
/// them.
pub(super) struct Walker<'a> {
    /// The config file, if any.
    pub(super) file: Option<&'a Path>,
    /// Dotted key → the environment variable that set it.
    pub(super) env: &'a HashMap<String, String>,
}

impl Walker<'_> {
    /// Builds the typed configuration (mode left at [`super::Mode::Dev`]).
    pub(super) fn build(&self, table: &Table) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        for (key, value) in table {
            match key.as_str() {
                "listen" => config.listen = self.socket_addr(key, value)?,
                "data_dir" => config.data_dir = self.path(key, value)?,
                "workers" => config.workers = self.usize(key, value)?,
                "shutdown_timeout" => config.shutdown_timeout = self.duration(key, value)?,
                "broker" => config.broker = self.backend(key, value, BROKERS)?,
                "store" => config.store = self.backend(key, value, STORES)?,
                "presence_ttl" => config.presence_ttl = self.positive_duration(key, value)?,
                "redis_prefix" => config.redis_prefix = self.string(key, value)?.to_owned(),
                "allowed_origins" => config.allowed_origins = self.origins(key, value)?,
                "auth" => config.auth = self.auth(self.table(key, value)?)?,
                "client" => config.client = self.client(self.table(key, value)?)?,
                "namespace_default" => {
                    config.namespace_default = self.namespace(key, self.table(key, value)?)?
                }
                "namespaces" => config.namespaces = self.namespaces(self.table(key, value)?)?,
                _ => {
                    let known = schema::names(schema::TOP).chain(schema::SECTIONS.iter().copied());
                    return Err(self.unknown("", key, known));
                }
            }
        }
        Ok(config)
    }

    fn auth(&self, table: &Table) -> Result<AuthConfig, ConfigError> {
        let mut auth = AuthConfig::default();
        for (name, value) in table {
            let key = format!("auth.{name}");
            match name.as_str() {
                "hmac_secret" => auth.hmac_secret = Some(self.non_empty_string(&key, value)?),
                "rsa_public_key" => auth.rsa_public_key = Some(self.path(&key, value)?),
                "ecdsa_public_key" => auth.ecdsa_public_key = Some(self.path(&key, value)?),
                "api_key" => auth.api_key = Some(self.non_empty_string(&key, value)?),
                _ => return Err(self.unknown("auth.", name, schema::names(schema::AUTH))),
            }
        }
        Ok(auth)
    }

    fn client(&self, table: &Table) -> Result<ClientConfig, ConfigError> {
        let mut client = ClientConfig::default();
        for (name, value) in table {
            let key = format!("client.{name}");
            let key = key.as_str();
            match name.as_str() {
                "ping_interval" => client.ping_interval = self.positive_duration(key, value)?,
                "pong_timeout" => client.pong_timeout = self.positive_duration(key, value)?,
                "connect_timeout" => client.connect_timeout = self.positive_duration(key, value)?,
                "max_subscriptions" => {
                    client.max_subscriptions = self.positive_usize(key, value)?
                }
                "max_data_size" => client.max_data_size = self.positive_size(key, value)?,
                "queue_max_size" => client.queue_max_size = self.positive_size(key, value)?,
                "max_channel_length" => {
                    client.max_channel_length = self.positive_usize(key, value)?
                }
                "session_grace" => client.session_grace = self.positive_duration(key, value)?,
                "poll_hold" => client.poll_hold = self.positive_duration(key, value)?,
                _ => return Err(self.unknown("client.", name, schema::names(schema::CLIENT))),
            }
        }
        Ok(client)
    }

    /// `[namespace_default]` or one `[namespaces.<name>]` (`section` is the
    /// dotted path); unset keys keep the built-in safe defaults.
    fn namespace(&self, section: &str, table: &Table) -> Result<NamespaceConfig, ConfigError> {
        let mut ns = NamespaceConfig::default();
        for (name, value) in table {
            let key = format!("{section}.{name}");
            let key = key.as_str();
            match name.as_str() {
                "history_size" => ns.history_size = self.usize(key, value)?,
                "history_ttl" => ns.history_ttl = self.duration(key, value)?,
                "persist" => ns.persist = self.bool(key, value)?,
                "presence" => ns.presence = self.bool(key, value)?,
                "join_leave" => ns.join_leave = self.bool(key, value)?,
                "client_publish" => ns.client_publish = self.bool(key, value)?,
                "private" => ns.private = self.bool(key, value)?,
                "exclude_publisher" => ns.exclude_publisher = self.bool(key, value)?,
                "idempotency_window" => ns.idempotency_window = self.duration(key, value)?,
                _ => {
                    let prefix = format!("{section}.");
                    return Err(self.unknown(&prefix, name, schema::names(schema::NAMESPACE)));
                }
            }
        }
        Ok(ns)
    }

    fn namespaces(&self, table: &Table) -> Result<BTreeMap<String, NamespaceConfig>, ConfigError> {
        let mut namespaces = BTreeMap::new();
        for (name, value) in table {
            let section = format!("namespaces.{name}");
            if !schema::is_valid_namespace_name(name) {
                return Err(ConfigError::BadNamespaceName {
                    name: name.clone(),
                    origin: self.origin(&section),
                });
            }
            let ns = self.namespace(&section, self.table(&section, value)?)?;
            namespaces.insert(name.clone(), ns);
        }
        Ok(namespaces)
    }

    // ---- errors ----

    /// Where the value at `key` came from.
    fn origin(&self, key: &str) -> Origin {
        match (self.env.get(key), self.file) {
            (Some(var), _) => Origin::Env(var.clone()),
            (None, Some(file)) => Origin::File(file.to_path_buf()),
            (None, None) => Origin::Default,
        }
    }

    fn bad(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::BadValue {
            key: key.to_owned(),
            origin: self.origin(key),
            reason: reason.into(),
        }
    }

    /// An unknown `name` in the section whose keys start with `prefix`.
    /// Unknown keys can only come from the file (variables are checked first).
    fn unknown<'k>(
        &self,
        prefix: &str,
        name: &str,
        known: impl IntoIterator<Item = &'k str>,
    ) -> ConfigError {
        ConfigError::UnknownKey {
            key: format!("{prefix}{name}"),
            file: self.file.map(Path::to_path_buf).unwrap_or_default(),
            suggestion: suggest(name, known).map(|s| format!("{prefix}{s}")),
        }
    }

    fn wrong_type(&self, key: &str, expected: &str, value: &Value) -> ConfigError {
        self.bad(key, format!("{expected}, found {}", value.type_str()))
    }

    // ---- typed values ----

    fn table<'v>(&self, key: &str, value: &'v Value) -> Result<&'v Table, ConfigError> {
        value
            .as_table()
            .ok_or_else(|| self.wrong_type(key, "expected a table (section)", value))
    }

    fn string<'v>(&self, key: &str, value: &'v Value) -> Result<&'v str, ConfigError> {
        value
            .as_str()
            .ok_or_else(|| self.wrong_type(key, "expected a string", value))
    }

    /// `["https://app.example", "http://localhost:3000"]` or `["*"]`: an
    /// origin is a scheme and a host with an optional port, nothing else.
    fn origins(&self, key: &str, value: &Value) -> Result<Vec<String>, ConfigError> {
        let items = value
            .as_array()
            .ok_or_else(|| self.wrong_type(key, "expected a list of origins", value))?;
        let mut origins = Vec::with_capacity(items.len());
        for item in items {
            let origin = self.string(key, item)?.trim_end_matches('/');
            let valid = origin == "*"
                || origin.split_once("://").is_some_and(|(scheme, host)| {
                    matches!(scheme, "http" | "https")
                        && !host.is_empty()
                        && !host.contains(['/', '?', '#', ' '])
                });
            if !valid {
                return Err(self.bad(
                    key,
                    format!("`{origin}` is not an origin like https://app.example or http://localhost:3000 (or \"*\")"),
                ));
            }
            origins.push(origin.to_ascii_lowercase());
        }
        Ok(origins)
    }

    fn non_empty_string(&self, key: &str, value: &Value) -> Result<String, ConfigError> {
        match self.string(key, value)? {
            "" => Err(self.bad(key, "must not be empty")),
            s => Ok(s.to_owned()),
        }
    }

    fn path(&self, key: &str, value: &Value) -> Result<PathBuf, ConfigError> {
        self.non_empty_string(key, value).map(PathBuf::from)
    }

    fn socket_addr(&self, key: &str, value: &Value) -> Result<SocketAddr, ConfigError> {
        let s = self.string(key, value)?;
        parse_listen(s).map_err(|reason| self.bad(key, reason))
    }

    /// A backend name where only `supported` exists so far.
    fn backend(&self, key: &str, value: &Value, kinds: &Backends) -> Result<String, ConfigError> {
        let s = self.string(key, value)?;
        check_backend(s, kinds).map_err(|reason| self.bad(key, reason))?;
        Ok(s.to_owned())
    }

    fn bool(&self, key: &str, value: &Value) -> Result<bool, ConfigError> {
        value
            .as_bool()
            .ok_or_else(|| self.wrong_type(key, "expected true or false", value))
    }

    fn usize(&self, key: &str, value: &Value) -> Result<usize, ConfigError> {
        const HINT: &str = "expected a non-negative integer";
        match value {
            Value::Integer(n) => {
                usize::try_from(*n).map_err(|_| self.bad(key, format!("{HINT} (got {n})")))
            }
            other => Err(self.wrong_type(key, HINT, other)),
        }
    }

    fn positive_usize(&self, key: &str, value: &Value) -> Result<usize, ConfigError> {
        match self.usize(key, value)? {
            0 => Err(self.bad(key, "must be at least 1")),
            n => Ok(n),
        }
    }

    /// A duration string, or an integer number of seconds.
    fn duration(&self, key: &str, value: &Value) -> Result<Duration, ConfigError> {
        match value {
            Value::String(s) => {
                parse_duration(s).map_err(|e| self.bad(key, format!("{DURATION_HINT}; {e}")))
            }
            Value::Integer(n) => u64::try_from(*n)
                .map(Duration::from_secs)
                .map_err(|_| self.bad(key, format!("{DURATION_HINT} (got {n})"))),
            other => Err(self.wrong_type(key, DURATION_HINT, other)),
        }
    }

    fn positive_duration(&self, key: &str, value: &Value) -> Result<Duration, ConfigError> {
        match self.duration(key, value)? {
            Duration::ZERO => Err(self.bad(key, "must be greater than zero")),
            d => Ok(d),
        }
    }

    /// A size string, or an integer number of bytes.
    fn size(&self, key: &str, value: &Value) -> Result<usize, ConfigError> {
        match value {
            Value::String(s) => {
                parse_size(s).map_err(|e| self.bad(key, format!("{SIZE_HINT}; {e}")))
            }
            Value::Integer(n) => {
                usize::try_from(*n).map_err(|_| self.bad(key, format!("{SIZE_HINT} (got {n})")))
            }
            other => Err(self.wrong_type(key, SIZE_HINT, other)),
        }
    }

    fn positive_size(&self, key: &str, value: &Value) -> Result<usize, ConfigError> {
        match self.size(key, value)? {
            0 => Err(self.bad(key, "must be at least 1 byte")),
            n => Ok(n),
        }
    }
}

/// Parses a listen address (`127.0.0.1:8000`, `[::1]:8000`); the error is the
/// reason, without the key.
pub(super) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("expected an address like 127.0.0.1:8000 (got `{s}`)"))
}

/// The accepted values of `broker` or `store`: the built-in one, or a URL
/// with one of the schemes.
pub(super) struct Backends {
    pub local: &'static str,
    pub schemes: &'static [&'static str],
    pub example: &'static str,
}

pub(super) const BROKERS: &Backends = &Backends {
    local: "memory",
    schemes: &["redis://"],
    example: "redis://127.0.0.1:6379",
};

pub(super) const STORES: &Backends = &Backends {
    local: "sqlite",
    schemes: &["postgres://", "postgresql://"],
    example: "postgres://user@127.0.0.1:5432/switchboard",
};

/// Checks a `broker` or `store` value. The value is never echoed: a URL may
/// carry a password.
pub(super) fn check_backend(value: &str, kinds: &Backends) -> Result<(), String> {
    if value == kinds.local || kinds.schemes.iter().any(|s| value.starts_with(s)) {
        return Ok(());
    }
    Err(format!(
        "expected \"{}\" or a URL like {}",
        kinds.local, kinds.example
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::Kind;

    fn sample(kind: Kind) -> Value {
        match kind {
            Kind::Str => Value::String("x".into()),
            Kind::Int => Value::Integer(3),
            Kind::Bool => Value::Boolean(true),
            Kind::Duration => Value::String("3s".into()),
            Kind::Size => Value::String("3KiB".into()),
            Kind::StrList => Value::Array(vec![Value::String("https://a.example".into())]),
        }
    }

    /// Every key of the schema is handled by the walker, so the environment
    /// mapping and the walk cannot drift apart.
    #[test]
    fn walker_knows_every_schema_key() {
        let env = HashMap::new();
        let walker = Walker {
            file: Some(Path::new("t.toml")),
            env: &env,
        };
        let section = |keys: &[(&str, Kind)]| -> Table {
            keys.iter()
                .map(|&(k, kind)| (k.to_owned(), sample(kind)))
                .collect()
        };
        assert!(walker.auth(&section(schema::AUTH)).is_ok());
        assert!(walker.client(&section(schema::CLIENT)).is_ok());
        assert!(walker
            .namespace("namespace_default", &section(schema::NAMESPACE))
            .is_ok());
        for &(key, _) in schema::TOP {
            let mut table = Table::new();
            let value = match key {
                "listen" => Value::String("127.0.0.1:1".into()),
                "broker" => Value::String("memory".into()),
                "store" => Value::String("sqlite".into()),
                _ => sample(
                    schema::TOP
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map_or(Kind::Str, |p| p.1),
                ),
            };
            table.insert(key.to_owned(), value);
            assert!(walker.build(&table).is_ok(), "{key}");
        }
    }

    #[test]
    fn listen_addresses() {
        assert!(parse_listen("0.0.0.0:8000").is_ok());
        assert!(parse_listen("[::1]:8000").is_ok());
        assert!(parse_listen("localhost:8000").is_err());
        assert!(parse_listen("127.0.0.1").is_err());
    }
}
