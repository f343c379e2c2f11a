//! [`ConfigError`]: why a configuration was refused, always naming the key,
//! the environment variable, the flag or the file at fault.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Where a configuration value came from; named in [`ConfigError::BadValue`]
/// and [`ConfigError::BadNamespaceName`] so the operator knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file at this path.
    File(PathBuf),
    /// This environment variable (`SWITCHBOARD_…`).
    Env(String),
    /// This command-line flag (`--listen`).
    Flag(&'static str),
    /// The embedded defaults.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::Default => f.write_str("built-in defaults"),
        }
    }
}

/// How an origin reads after a key in a message: ` in switchboard.toml`,
/// ` (SWITCHBOARD_LISTEN)`, ` (--listen)`.
fn after_key(origin: &Origin) -> String {
    match origin {
        Origin::File(path) => format!(" in {}", path.display()),
        Origin::Env(var) => format!(" ({var})"),
        Origin::Flag(flag) => format!(" ({flag})"),
        Origin::Default => String::new(),
    }
}

/// `; did you mean `x`?` when there is a close match, else nothing.
fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

/// Why the configuration was refused. Every message names the culprit: the
/// dotted key (`client.ping_interval`) and where it came from, the environment
/// variable, the flag or the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read (missing, unreadable).
    #[error("cannot read config file `{}`: {source}", .path.display())]
    ReadFile {
        /// The path as given (`--config` or `SWITCHBOARD_CONFIG`).
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The configuration file is not valid TOML.
    #[error("config file `{}` is not valid TOML: {message}", .path.display())]
    ParseFile {
        /// The path as given.
        path: PathBuf,
        /// The TOML parser's message (with line and column).
        message: String,
    },
    /// The configuration file has a key this version does not know.
    #[error("unknown key `{key}` in {}{}", .file.display(), did_you_mean(.suggestion))]
    UnknownKey {
        /// The full dotted key, e.g. `client.pingg`.
        key: String,
        /// The file it is in.
        file: PathBuf,
        /// A known key with a similar spelling, if any.
        suggestion: Option<String>,
    },
    /// A `SWITCHBOARD_*` environment variable that is not a configuration key
    /// (nor `SWITCHBOARD_CONFIG` / `SWITCHBOARD_LOG`).
    #[error(
        "unknown environment variable `{var}`: not a Switchboard setting{}",
        did_you_mean(.suggestion)
    )]
    UnknownEnvVar {
        /// The variable's name.
        var: String,
        /// A known variable with a similar spelling, if any.
        suggestion: Option<String>,
    },
    /// A value of the wrong type or out of range.
    #[error("bad value for `{key}`{}: {reason}", after_key(.origin))]
    BadValue {
        /// The full dotted key, e.g. `client.ping_interval`.
        key: String,
        /// Where the value came from.
        origin: Origin,
        /// What was expected (never echoes secrets).
        reason: String,
    },
    /// A namespace name outside `[a-zA-Z0-9_-]{1,64}`.
    #[error(
        "bad namespace name `{name}`{}: names are 1 to 64 characters among a-z, A-Z, 0-9, `_` and `-`",
        after_key(.origin)
    )]
    BadNamespaceName {
        /// The offending name.
        name: String,
        /// Where the namespace was declared.
        origin: Origin,
    },
    /// Production mode is missing a required secret (see
    /// [`Config::validate_production`](super::Config::validate_production)).
    #[error(
        "production mode (a config file or SWITCHBOARD_* variable is present) requires `{key}`{alternatives}: \
         set it in the config file or with {var}"
    )]
    MissingInProduction {
        /// The missing key, e.g. `auth.hmac_secret`.
        key: &'static str,
        /// Its environment variable, e.g. `SWITCHBOARD_AUTH_HMAC_SECRET`.
        var: &'static str,
        /// Keys that would do instead (may be empty), e.g.
        /// ` (or `auth.rsa_public_key` / `auth.ecdsa_public_key`)`.
        alternatives: &'static str,
    },
}

/// The known word closest to `word` if it is close enough to be a likely typo.
pub(super) fn suggest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let word = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    known
        .into_iter()
        .map(|k| (levenshtein(&word, &k.to_ascii_lowercase()), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_owned())
}

/// Edit distance between two strings (insertions, deletions, substitutions).
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levenshtein_distances() {
        assert_eq!(levenshtein("", ""), 0);
        assert_eq!(levenshtein("abc", ""), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("histroy_size", "history_size"), 2);
    }

    #[test]
    fn suggestions_only_for_close_words() {
        let known = ["ping_interval", "pong_timeout", "max_data_size"];
        assert_eq!(
            suggest("ping_intervall", known).as_deref(),
            Some("ping_interval")
        );
        assert_eq!(suggest("zzz", known), None);
    }

    #[test]
    fn bad_value_message_names_key_and_origin() {
        let err = ConfigError::BadValue {
            key: "client.ping_interval".into(),
            origin: Origin::Env("SWITCHBOARD_CLIENT_PING_INTERVAL".into()),
            reason: "expected a duration like 25s, 500ms, 1h".into(),
        };
        assert_eq!(
            err.to_string(),
            "bad value for `client.ping_interval` (SWITCHBOARD_CLIENT_PING_INTERVAL): \
             expected a duration like 25s, 500ms, 1h"
        );
        let err = ConfigError::UnknownKey {
            key: "client.pingg".into(),
            file: "switchboard.toml".into(),
            suggestion: None,
        };
        assert_eq!(
            err.to_string(),
            "unknown key `client.pingg` in switchboard.toml"
        );
    }
}
