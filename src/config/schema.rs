//! The known keys of each section and their value kinds: the single list the
//! environment mapping, the unknown-key check and the suggestions share.

/// How a value is written; drives the conversion of environment strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A string (addresses, paths, secrets, backend names).
    Str,
    /// A non-negative integer.
    Int,
    /// `true` / `false`.
    Bool,
    /// A duration string (`25s`) or an integer number of seconds.
    Duration,
    /// A size string (`64KiB`) or an integer number of bytes.
    Size,
    /// A list of strings; from the environment, comma-separated.
    StrList,
}

use Kind::{Bool, Duration, Int, Size, Str, StrList};

/// Plain keys at the top level of the file.
pub(super) const TOP: &[(&str, Kind)] = &[
    ("listen", Str),
    ("data_dir", Str),
    ("workers", Int),
    ("shutdown_timeout", Duration),
    ("broker", Str),
    ("store", Str),
    ("presence_ttl", Duration),
    ("redis_prefix", Str),
    ("allowed_origins", StrList),
];

/// Sections (tables) at the top level of the file.
pub(super) const SECTIONS: &[&str] = &["auth", "client", "namespace_default", "namespaces"];

/// Keys of `[auth]`.
pub(super) const AUTH: &[(&str, Kind)] = &[
    ("hmac_secret", Str),
    ("rsa_public_key", Str),
    ("ecdsa_public_key", Str),
    ("api_key", Str),
];

/// Keys of `[client]`.
pub(super) const CLIENT: &[(&str, Kind)] = &[
    ("ping_interval", Duration),
    ("pong_timeout", Duration),
    ("connect_timeout", Duration),
    ("max_subscriptions", Int),
    ("max_data_size", Size),
    ("queue_max_size", Size),
    ("max_channel_length", Int),
    ("session_grace", Duration),
    ("poll_hold", Duration),
];

/// Keys of `[namespace_default]` and of each `[namespaces.<name>]`.
pub(super) const NAMESPACE: &[(&str, Kind)] = &[
    ("history_size", Int),
    ("history_ttl", Duration),
    ("persist", Bool),
    ("presence", Bool),
    ("join_leave", Bool),
    ("client_publish", Bool),
    ("private", Bool),
    ("exclude_publisher", Bool),
    ("idempotency_window", Duration),
];

/// The sections whose keys map to `SWITCHBOARD_<SECTION>_<KEY>` directly
/// (`namespaces` is special: its entries are named by the user).
pub(super) const FIXED_SECTIONS: &[(&str, &[(&str, Kind)])] = &[
    ("auth", AUTH),
    ("client", CLIENT),
    ("namespace_default", NAMESPACE),
];

/// The key names of a key list.
pub(super) fn names(keys: &'static [(&'static str, Kind)]) -> impl Iterator<Item = &'static str> {
    keys.iter().map(|(name, _)| *name)
}

/// Whether `name` is a valid namespace name: `[a-zA-Z0-9_-]{1,64}`.
pub(super) fn is_valid_namespace_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
