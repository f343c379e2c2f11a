//! Presence in Redis, shared by every node (issue 4).
//!
//! # Keys (prefix `P`, `sb:` by default)
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P{<channel>}:p` | hash | client id → `<user length>:<user><ClientInfo JSON>` |
//! | `P{<channel>}:pe` | sorted set | client id → expiry (ms, Redis clock) |
//! | `P{<channel>}:pu` | hash | user → how many of its clients are present |
//!
//! Every entry expires `ttl` after it was last added or refreshed. The node
//! that holds a client's connection keeps the entry in a local set and
//! refreshes it every `ttl / 3`; so when a node dies, its clients vanish
//! from presence within `ttl`. Reads (`get`, `stats`) first remove expired
//! entries (`lua/presence_read.lua`); the keys themselves expire `2 × ttl`
//! after the last add or refresh.
//!
//! An add that fails (Redis unreachable) stays in the local set, so the
//! refresh adds it once Redis is back; so does an entry that expired in
//! Redis while this node still holds its client (a refresh only extends
//! entries still there, then adds back the missing ones it still holds,
//! which keeps a removal racing a refresh from leaving a ghost).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ::redis::Value;

use super::{Presence, PresenceError, PresenceStats};
use crate::broker::redis::{
    is_noscript, lock, millis, Link, RedisOptions, PRESENCE_ADD, PRESENCE_ADD_SOURCE,
    PRESENCE_READ, PRESENCE_REMOVE,
};
use crate::history::{BoxFuture, HistoryError};
use crate::hub::ClientId;
use crate::stream::ClientInfo;

/// Refreshes go out in pipelines of at most this many entries.
const REFRESH_BATCH: usize = 512;

/// Channel presence in Redis (see the module doc).
pub struct RedisPresence {
    inner: Arc<Inner>,
    refresher: tokio::task::AbortHandle,
}

struct Inner {
    link: Arc<Link>,
    ttl: Duration,
    /// This node's entries: (channel, client) → (user, stored entry).
    local: Mutex<HashMap<(String, ClientId), (String, String)>>,
}

impl RedisPresence {
    /// How long an entry outlives its last refresh by default.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

    /// Connects to the Redis at `url`, naming keys with `prefix`.
    pub async fn connect(url: &str, prefix: &str, ttl: Duration) -> Result<Self, PresenceError> {
        RedisPresence::connect_with(&RedisOptions::new(url).with_prefix(prefix), ttl).await
    }

    /// [`RedisPresence::connect`] with every option.
    pub async fn connect_with(
        options: &RedisOptions,
        ttl: Duration,
    ) -> Result<Self, PresenceError> {
        let link = Link::open(options)
            .await
            .map_err(|e| PresenceError::Unavailable(format!("redis: {e}")))?;
        Ok(RedisPresence::with_link(link, ttl))
    }

    /// Presence over an existing connection (a broker's).
    pub(crate) fn with_link(link: Arc<Link>, ttl: Duration) -> Self {
        let ttl = ttl.max(Duration::from_millis(30));
        let inner = Arc::new(Inner {
            link,
            ttl,
            local: Mutex::new(HashMap::new()),
        });
        let refresher = inner
            .link
            .runtime()
            .spawn(refresh_loop(Arc::downgrade(&inner), ttl / 3))
            .abort_handle();
        RedisPresence { inner, refresher }
    }

    /// Whether the connection to Redis is up.
    pub fn healthy(&self) -> bool {
        self.inner.link.healthy()
    }
}

impl Drop for RedisPresence {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

fn unavailable(e: HistoryError) -> PresenceError {
    match e {
        HistoryError::Unavailable(m) | HistoryError::Backend(m) => PresenceError::Unavailable(m),
    }
}

/// `<user length>:<user><info JSON>`: the scripts read the user from it.
fn entry(info: &ClientInfo) -> Result<String, PresenceError> {
    let json = serde_json::to_string(info)
        .map_err(|e| PresenceError::Unavailable(format!("encoding info: {e}")))?;
    Ok(format!("{}:{}{json}", info.user.len(), info.user))
}

fn parse_entry(value: &Value) -> Option<ClientInfo> {
    let Value::BulkString(bytes) = value else {
        return None;
    };
    let text = std::str::from_utf8(bytes).ok()?;
    let (length, rest) = text.split_once(':')?;
    let json = rest.get(length.parse::<usize>().ok()?..)?;
    serde_json::from_str(json).ok()
}

impl Inner {
    fn options(&self) -> &RedisOptions {
        self.link.options()
    }

    fn keys(&self, channel: &str) -> [String; 3] {
        let prefix = &self.options().prefix;
        [
            format!("{prefix}{{{channel}}}:p"),
            format!("{prefix}{{{channel}}}:pe"),
            format!("{prefix}{{{channel}}}:pu"),
        ]
    }

    /// The add (`refresh = false`) or refresh command of one entry.
    fn add_command(
        &self,
        channel: &str,
        client: ClientId,
        user: &str,
        entry: &str,
        refresh: bool,
    ) -> ::redis::Cmd {
        let mut cmd = ::redis::cmd("EVALSHA");
        cmd.arg(PRESENCE_ADD.get_hash()).arg(3);
        for key in self.keys(channel) {
            cmd.arg(key);
        }
        cmd.arg(client)
            .arg(entry)
            .arg(user)
            .arg(millis(self.ttl).max(1))
            .arg(if refresh { "r" } else { "a" });
        cmd
    }

    /// Runs one script invocation.
    async fn invoke(
        &self,
        script: &::redis::Script,
        channel: &str,
        args: &[String],
    ) -> Result<Value, PresenceError> {
        let (generation, mut conn) = self.link.get().map_err(unavailable)?;
        let mut invocation = script.prepare_invoke();
        for key in self.keys(channel) {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg.as_str());
        }
        invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable(self.link.error(generation, e)))
    }

    async fn add(
        &self,
        channel: &str,
        client: ClientId,
        info: &ClientInfo,
    ) -> Result<(), PresenceError> {
        let stored = entry(info)?;
        lock(&self.local).insert(
            (channel.to_string(), client),
            (info.user.clone(), stored.clone()),
        );
        self.invoke(
            &PRESENCE_ADD,
            channel,
            &[
                client.to_string(),
                stored,
                info.user.clone(),
                millis(self.ttl).max(1).to_string(),
                "a".into(),
            ],
        )
        .await
        .map(drop)
    }

    /// Refreshes every local entry; adds back those Redis lost.
    async fn refresh(&self) {
        let entries: Vec<((String, ClientId), (String, String))> = lock(&self.local)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for chunk in entries.chunks(REFRESH_BATCH) {
            let Ok((generation, mut conn)) = self.link.get() else {
                return;
            };
            let mut pipe = ::redis::pipe();
            pipe.cmd("SCRIPT").arg("LOAD").arg(PRESENCE_ADD_SOURCE);
            for ((channel, client), (user, stored)) in chunk {
                pipe.add_command(self.add_command(channel, *client, user, stored, true));
            }
            let replies = match conn.send_packed_commands(&pipe, 1, chunk.len()).await {
                Ok(replies) => replies,
                Err(e) => {
                    self.link.error(generation, e);
                    return;
                }
            };
            let mut lost = Vec::new();
            for (((channel, client), _), reply) in chunk.iter().zip(replies) {
                match reply {
                    Value::Int(0) => lost.push((channel, *client)),
                    ref v if is_noscript(v) => lost.push((channel, *client)),
                    Value::ServerError(e) => tracing::warn!("presence refresh: {e:?}"),
                    _ => {}
                }
            }
            if lost.is_empty() {
                continue;
            }
            // Add back what this node still holds (checked now, so an
            // entry removed meanwhile stays removed).
            let mut pipe = ::redis::pipe();
            let mut count = 0;
            {
                let local = lock(&self.local);
                for (channel, client) in lost {
                    if let Some((user, stored)) = local.get(&(channel.clone(), client)) {
                        pipe.add_command(self.add_command(channel, client, user, stored, false));
                        count += 1;
                    }
                }
            }
            if count > 0 {
                if let Err(e) = conn.send_packed_commands(&pipe, 0, count).await {
                    self.link.error(generation, e);
                    return;
                }
            }
        }
    }
}

async fn refresh_loop(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        inner.refresh().await;
    }
}

impl Presence for RedisPresence {
    fn add<'a>(
        &'a self,
        channel: &'a str,
        client: ClientId,
        info: ClientInfo,
    ) -> BoxFuture<'a, Result<(), PresenceError>> {
        Box::pin(async move { self.inner.add(channel, client, &info).await })
    }

    fn remove<'a>(
        &'a self,
        channel: &'a str,
        client: ClientId,
    ) -> BoxFuture<'a, Result<(), PresenceError>> {
        Box::pin(async move {
            lock(&self.inner.local).remove(&(channel.to_string(), client));
            self.inner
                .invoke(&PRESENCE_REMOVE, channel, &[client.to_string()])
                .await
                .map(drop)
        })
    }

    fn get<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ClientInfo>, PresenceError>> {
        Box::pin(async move {
            match self
                .inner
                .invoke(&PRESENCE_READ, channel, &["g".into()])
                .await?
            {
                Value::Array(entries) => Ok(entries.iter().filter_map(parse_entry).collect()),
                other => Err(PresenceError::Unavailable(format!(
                    "unexpected redis reply {other:?}"
                ))),
            }
        })
    }

    fn stats<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<PresenceStats, PresenceError>> {
        Box::pin(async move {
            match self
                .inner
                .invoke(&PRESENCE_READ, channel, &["s".into()])
                .await?
            {
                Value::Array(counts) => match counts.as_slice() {
                    [Value::Int(clients), Value::Int(users)] => Ok(PresenceStats {
                        num_clients: usize::try_from(*clients).unwrap_or(0),
                        num_users: usize::try_from(*users).unwrap_or(0),
                    }),
                    _ => Err(PresenceError::Unavailable("unexpected redis reply".into())),
                },
                other => Err(PresenceError::Unavailable(format!(
                    "unexpected redis reply {other:?}"
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let info = ClientInfo {
            user: "ü:1".into(),
            client: "c".into(),
            data: None,
        };
        let stored = entry(&info).unwrap();
        assert!(stored.starts_with("4:ü:1{"));
        assert_eq!(
            parse_entry(&Value::BulkString(stored.into_bytes())),
            Some(info)
        );
        assert_eq!(parse_entry(&Value::BulkString(b"9:x{}".to_vec())), None);
    }
}
