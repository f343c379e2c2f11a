//! Presence held in this process, sharded by channel.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use super::{Presence, PresenceError, PresenceStats};
use crate::history::BoxFuture;
use crate::hub::ClientId;
use crate::stream::ClientInfo;

const SHARDS: usize = 32;

type Channels = HashMap<String, HashMap<ClientId, ClientInfo>>;

/// In-memory presence for one node.
#[derive(Debug)]
pub struct MemoryPresence {
    shards: Box<[Mutex<Channels>]>,
}

impl Default for MemoryPresence {
    fn default() -> Self {
        MemoryPresence::new()
    }
}

impl MemoryPresence {
    pub fn new() -> Self {
        MemoryPresence {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, channel: &str) -> MutexGuard<'_, Channels> {
        let hash = channel
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        // Each critical section is one map operation: ignore poisoning.
        self.shards[hash as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

impl Presence for MemoryPresence {
    fn add<'a>(
        &'a self,
        channel: &'a str,
        client: ClientId,
        info: ClientInfo,
    ) -> BoxFuture<'a, Result<(), PresenceError>> {
        self.shard(channel)
            .entry(channel.to_string())
            .or_default()
            .insert(client, info);
        Box::pin(std::future::ready(Ok(())))
    }

    fn remove<'a>(
        &'a self,
        channel: &'a str,
        client: ClientId,
    ) -> BoxFuture<'a, Result<(), PresenceError>> {
        let mut shard = self.shard(channel);
        if let Some(clients) = shard.get_mut(channel) {
            clients.remove(&client);
            if clients.is_empty() {
                shard.remove(channel);
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn get<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ClientInfo>, PresenceError>> {
        let clients = self
            .shard(channel)
            .get(channel)
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        Box::pin(std::future::ready(Ok(clients)))
    }

    fn stats<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<PresenceStats, PresenceError>> {
        let shard = self.shard(channel);
        let stats = match shard.get(channel) {
            Some(clients) => PresenceStats {
                num_clients: clients.len(),
                num_users: clients
                    .values()
                    .map(|c| c.user.as_str())
                    .collect::<HashSet<_>>()
                    .len(),
            },
            None => PresenceStats {
                num_clients: 0,
                num_users: 0,
            },
        };
        Box::pin(std::future::ready(Ok(stats)))
    }
}
