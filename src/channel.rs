//! Channel names: `namespace:name`, user-limited channels and claim patterns.
//!
//! A channel name is ASCII letters, digits and `_ - . : @ = , / # !`, at most
//! `max_channel_length` bytes. The part before the first `:` is the
//! namespace; a name without `:` belongs to the default namespace. A `#`
//! makes the channel user-limited: `dm:order_9#42,57` may be subscribed only
//! by users `42` and `57`.

use crate::codes::{CommandError, ErrorCode};

/// A validated channel name, split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelName<'a> {
    /// The whole name.
    pub full: &'a str,
    /// The namespace, or `None` for the default namespace.
    pub namespace: Option<&'a str>,
    /// For `…#42,57`: the comma-separated users allowed to subscribe.
    allowed_users: Option<&'a str>,
}

impl<'a> ChannelName<'a> {
    /// Validates `full` and splits it.
    pub fn parse(full: &'a str, max_length: usize) -> Result<Self, CommandError> {
        if full.is_empty() {
            return Err(CommandError::with(
                ErrorCode::BadChannelName,
                "channel name is empty",
            ));
        }
        if full.len() > max_length {
            return Err(CommandError::with(
                ErrorCode::BadChannelName,
                format!("channel name is longer than {max_length} bytes"),
            ));
        }
        if let Some(bad) = full.chars().find(|c| !allowed_char(*c)) {
            return Err(CommandError::with(
                ErrorCode::BadChannelName,
                format!("channel name contains forbidden character {bad:?}"),
            ));
        }
        let (namespace, rest) = match full.split_once(':') {
            Some((ns, rest)) if !ns.is_empty() && !rest.is_empty() => (Some(ns), rest),
            Some(_) => {
                return Err(CommandError::with(
                    ErrorCode::BadChannelName,
                    "namespace and name around `:` must not be empty",
                ))
            }
            None => (None, full),
        };
        let allowed_users = match rest.split_once('#') {
            None => None,
            Some((_, users)) if users.is_empty() || users.contains('#') => {
                return Err(CommandError::with(
                    ErrorCode::BadChannelName,
                    "a user-limited channel needs one `#` followed by user ids",
                ))
            }
            Some((_, users)) => Some(users),
        };
        Ok(ChannelName {
            full,
            namespace,
            allowed_users,
        })
    }

    /// Whether the channel is limited to the users after `#`.
    pub fn is_user_limited(&self) -> bool {
        self.allowed_users.is_some()
    }

    /// Whether `user` is one of the users after `#` (false if not limited).
    pub fn allows_user(&self, user: &str) -> bool {
        self.allowed_users
            .is_some_and(|users| users.split(',').any(|u| !u.is_empty() && u == user))
    }
}

fn allowed_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-.:@=,/#!".contains(c)
}

/// Whether `channel` matches a claim pattern where `*` matches any run of
/// characters (`orders:*`, `chat:team_*_room`, `*`).
pub fn pattern_matches(pattern: &str, channel: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == channel;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !channel.starts_with(first) || channel.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &channel[first.len()..channel.len() - last.len()];
    if !channel.ends_with(last) {
        return false;
    }
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_namespace_and_name() {
        let c = ChannelName::parse("chat:order_123", 255).unwrap();
        assert_eq!(c.namespace, Some("chat"));
        assert!(!c.is_user_limited());
        let c = ChannelName::parse("news", 255).unwrap();
        assert_eq!(c.namespace, None);
    }

    #[test]
    fn user_limited_channels_name_their_users() {
        let c = ChannelName::parse("dm:order_9#42,57", 255).unwrap();
        assert!(c.is_user_limited());
        assert!(c.allows_user("42") && c.allows_user("57"));
        assert!(!c.allows_user("4") && !c.allows_user("") && !c.allows_user("42,57"));
    }

    #[test]
    fn refuses_bad_names() {
        for bad in [
            "", "chat:", ":x", "a b", "é", "x\"y", "a*b", "dm:x#", "dm:x#1#2",
        ] {
            let err = ChannelName::parse(bad, 255).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadChannelName, "{bad}");
        }
        assert!(ChannelName::parse(&"a".repeat(256), 255).is_err());
        assert!(ChannelName::parse(&"a".repeat(255), 255).is_ok());
    }

    #[test]
    fn patterns_match_with_stars() {
        assert!(pattern_matches("orders:*", "orders:17"));
        assert!(!pattern_matches("orders:*", "order:17"));
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("chat:team_*_room", "chat:team_a_room"));
        assert!(!pattern_matches("chat:team_*_room", "chat:team_a_roomx"));
        assert!(pattern_matches("exact", "exact"));
        assert!(!pattern_matches("exact", "exactly"));
        assert!(pattern_matches("a*a", "aa"));
        assert!(!pattern_matches("ab*ba", "aba"));
    }
}
