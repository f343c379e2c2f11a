//! `SWITCHBOARD_*` environment variables: recognising them and writing their
//! values into the generic TOML table by key path, before the typed walk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::error::{suggest, ConfigError, Origin};
use super::schema::{self, Kind};

/// The prefix of every Switchboard environment variable.
pub(super) const PREFIX: &str = "SWITCHBOARD_";
/// Log filtering (read by the binary); not a config key, not production.
pub(super) const LOG_VAR: &str = "SWITCHBOARD_LOG";
/// Equivalent to `--config` (the flag wins).
pub(super) const CONFIG_VAR: &str = "SWITCHBOARD_CONFIG";

/// Where an environment variable's key lives.
#[derive(Debug)]
enum Target {
    /// A top-level key.
    Top,
    /// A key of a fixed section (`auth`, `client`, `namespace_default`).
    Section(&'static str),
    /// A key of `namespaces.<NAME>`; the name as spelt in the variable.
    Namespace(String),
}

/// One recognised `SWITCHBOARD_<…>` configuration variable.
#[derive(Debug)]
pub(super) struct Override {
    var: String,
    target: Target,
    key: &'static str,
    kind: Kind,
    value: String,
}

/// What the environment says.
#[derive(Debug, Default)]
pub(super) struct EnvSettings {
    /// `SWITCHBOARD_CONFIG`, if set.
    pub(super) config: Option<PathBuf>,
    /// Whether any `SWITCHBOARD_*` variable other than `SWITCHBOARD_LOG` is set.
    pub(super) present: bool,
    /// The configuration overrides, sorted by variable name.
    pub(super) overrides: Vec<Override>,
}

/// Picks the `SWITCHBOARD_*` variables out of `env`, refusing unknown ones.
///
/// Variables are examined in name order so that the reported error does not
/// depend on the order of the process environment.
pub(super) fn scan(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<EnvSettings, ConfigError> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(PREFIX) && name != LOG_VAR)
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));

    let mut settings = EnvSettings {
        present: !vars.is_empty(),
        ..EnvSettings::default()
    };
    for (var, value) in vars {
        if var == CONFIG_VAR {
            settings.config = Some(PathBuf::from(value));
            continue;
        }
        let rest = &var[PREFIX.len()..];
        let Some((target, key, kind)) = resolve(rest) else {
            let known = known_vars();
            let suggestion = suggest(rest, known.iter().map(|v| &v[PREFIX.len()..]))
                .map(|s| format!("{PREFIX}{s}"));
            return Err(ConfigError::UnknownEnvVar { var, suggestion });
        };
        settings.overrides.push(Override {
            var,
            target,
            key,
            kind,
            value,
        });
    }
    Ok(settings)
}

/// Maps the part after `SWITCHBOARD_` to a key, or `None` if it is not one.
fn resolve(rest: &str) -> Option<(Target, &'static str, Kind)> {
    let find = |keys: &'static [(&'static str, Kind)], wanted: &str| {
        keys.iter()
            .find(|(key, _)| key.to_ascii_uppercase() == wanted)
            .map(|&(key, kind)| (key, kind))
    };
    if let Some((key, kind)) = find(schema::TOP, rest) {
        return Some((Target::Top, key, kind));
    }
    for &(section, keys) in schema::FIXED_SECTIONS {
        let prefix = format!("{}_", section.to_ascii_uppercase());
        if let Some((key, kind)) = rest.strip_prefix(&prefix).and_then(|r| find(keys, r)) {
            return Some((Target::Section(section), key, kind));
        }
    }
    // SWITCHBOARD_NAMESPACES_<NAME>_<KEY>: names may contain `_`, so take the
    // longest key that is a suffix and leaves a non-empty name.
    let tail = rest.strip_prefix("NAMESPACES_")?;
    schema::NAMESPACE
        .iter()
        .filter_map(|&(key, kind)| {
            let suffix = format!("_{}", key.to_ascii_uppercase());
            let name = tail.strip_suffix(&suffix)?;
            (!name.is_empty()).then_some((name, key, kind))
        })
        .max_by_key(|(_, key, _)| key.len())
        .map(|(name, key, kind)| (Target::Namespace(name.to_owned()), key, kind))
}

/// Every fixed variable name, for suggestions.
fn known_vars() -> Vec<String> {
    let mut vars = vec![CONFIG_VAR.to_owned(), LOG_VAR.to_owned()];
    vars.extend(
        schema::names(schema::TOP).map(|key| format!("{PREFIX}{}", key.to_ascii_uppercase())),
    );
    for &(section, keys) in schema::FIXED_SECTIONS {
        vars.extend(
            schema::names(keys)
                .map(|key| format!("{PREFIX}{}_{}", section, key).to_ascii_uppercase()),
        );
    }
    vars
}

/// Writes the overrides into `table`, returning which dotted keys (including
/// tables created on the way) came from which variable.
pub(super) fn apply(
    table: &mut Table,
    overrides: Vec<Override>,
    file: Option<&Path>,
) -> Result<HashMap<String, String>, ConfigError> {
    let mut origins = HashMap::new();
    for o in overrides {
        let path: Vec<String> = match &o.target {
            Target::Top => vec![o.key.to_owned()],
            Target::Section(section) => vec![(*section).to_owned(), o.key.to_owned()],
            Target::Namespace(name) => {
                let name = namespace_name(table, name, &o.var)?;
                vec!["namespaces".to_owned(), name, o.key.to_owned()]
            }
        };
        let dotted = path.join(".");
        let value = convert(o.kind, &o.value).map_err(|reason| ConfigError::BadValue {
            key: dotted.clone(),
            origin: Origin::Env(o.var.clone()),
            reason,
        })?;
        insert(table, &path, value, file, &o.var, &mut origins)?;
        origins.insert(dotted, o.var);
    }
    Ok(origins)
}

/// The namespace a `SWITCHBOARD_NAMESPACES_<NAME>_…` variable refers to: the
/// configured namespace whose name matches case-insensitively, else `NAME`
/// lower-cased (a new namespace).
fn namespace_name(table: &Table, name: &str, var: &str) -> Result<String, ConfigError> {
    let Some(Value::Table(namespaces)) = table.get("namespaces") else {
        return Ok(name.to_ascii_lowercase());
    };
    let matches: Vec<&String> = namespaces
        .keys()
        .filter(|existing| existing.eq_ignore_ascii_case(name))
        .collect();
    match matches.as_slice() {
        [] => Ok(name.to_ascii_lowercase()),
        [one] => Ok((*one).clone()),
        several => Err(ConfigError::BadValue {
            key: format!("namespaces.{}", name.to_ascii_lowercase()),
            origin: Origin::Env(var.to_owned()),
            reason: format!(
                "the name matches several configured namespaces ({}); rename them so they \
                 differ by more than letter case",
                several
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Converts an environment string to the TOML value its key expects.
/// Durations, sizes and strings stay strings (the walker parses them).
fn convert(kind: Kind, raw: &str) -> Result<Value, String> {
    match kind {
        Kind::Int => raw
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("expected a non-negative integer (got `{raw}`)")),
        Kind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Boolean(false)),
            _ => Err(format!("expected true or false (got `{raw}`)")),
        },
        Kind::Str | Kind::Duration | Kind::Size => Ok(Value::String(raw.to_owned())),
        Kind::StrList => Ok(Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| Value::String(item.to_owned()))
                .collect(),
        )),
    }
}

/// Sets `path` in `table` to `value`, creating missing tables (recorded as
/// coming from `var`) and refusing to descend into a non-table value.
fn insert(
    table: &mut Table,
    path: &[String],
    value: Value,
    file: Option<&Path>,
    var: &str,
    origins: &mut HashMap<String, String>,
) -> Result<(), ConfigError> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut current = table;
    for (depth, segment) in parents.iter().enumerate() {
        let dotted = path[..=depth].join(".");
        if !current.contains_key(segment) {
            origins
                .entry(dotted.clone())
                .or_insert_with(|| var.to_owned());
        }
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        current = match entry {
            Value::Table(inner) => inner,
            other => {
                let origin = match (origins.get(&dotted), file) {
                    (Some(v), _) => Origin::Env(v.clone()),
                    (None, Some(f)) => Origin::File(f.to_path_buf()),
                    (None, None) => Origin::Default,
                };
                return Err(ConfigError::BadValue {
                    key: dotted,
                    origin,
                    reason: format!("expected a table, found {}", other.type_str()),
                });
            }
        };
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target_of(rest: &str) -> Option<(String, &'static str)> {
        resolve(rest).map(|(target, key, _)| {
            let where_ = match target {
                Target::Top => String::new(),
                Target::Section(s) => s.to_owned(),
                Target::Namespace(n) => format!("ns:{n}"),
            };
            (where_, key)
        })
    }

    #[test]
    fn resolves_fixed_keys() {
        assert_eq!(target_of("LISTEN"), Some((String::new(), "listen")));
        assert_eq!(target_of("DATA_DIR"), Some((String::new(), "data_dir")));
        assert_eq!(
            target_of("AUTH_HMAC_SECRET"),
            Some(("auth".into(), "hmac_secret"))
        );
        assert_eq!(
            target_of("NAMESPACE_DEFAULT_HISTORY_SIZE"),
            Some(("namespace_default".into(), "history_size"))
        );
        assert_eq!(target_of("FOO"), None);
        assert_eq!(target_of("listen"), None);
        assert_eq!(target_of("AUTH_"), None);
    }

    #[test]
    fn resolves_namespace_names_with_underscores() {
        assert_eq!(
            target_of("NAMESPACES_MY_CHAT_HISTORY_TTL"),
            Some(("ns:MY_CHAT".into(), "history_ttl"))
        );
        assert_eq!(
            target_of("NAMESPACES_A_JOIN_LEAVE"),
            Some(("ns:A".into(), "join_leave"))
        );
        assert_eq!(target_of("NAMESPACES_PERSIST"), None);
        assert_eq!(target_of("NAMESPACES__PERSIST"), None);
        assert_eq!(
            target_of("NAMESPACES___PERSIST"),
            Some(("ns:_".into(), "persist"))
        );
    }

    #[test]
    fn converts_env_strings() {
        assert_eq!(convert(Kind::Int, " 42 "), Ok(Value::Integer(42)));
        assert!(convert(Kind::Int, "4x").is_err());
        assert_eq!(convert(Kind::Bool, "TRUE"), Ok(Value::Boolean(true)));
        assert_eq!(convert(Kind::Bool, "0"), Ok(Value::Boolean(false)));
        assert!(convert(Kind::Bool, "maybe").is_err());
        assert_eq!(
            convert(Kind::Duration, "5s"),
            Ok(Value::String("5s".into()))
        );
    }
}
