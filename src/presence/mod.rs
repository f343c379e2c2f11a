//! Who is subscribed to a channel right now.
//!
//! [`MemoryPresence`] serves one node; a Redis implementation with a TTL
//! refreshed by the owning node serves many (issue 4).

pub mod memory;
pub mod redis;

use crate::history::BoxFuture;
use crate::hub::ClientId;
use crate::stream::ClientInfo;

pub use self::redis::RedisPresence;
pub use memory::MemoryPresence;

/// Why a presence operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("presence backend unavailable: {0}")]
    Unavailable(String),
}

/// Counts of a channel's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PresenceStats {
    pub num_clients: usize,
    pub num_users: usize,
}

/// Channel presence: client → info.
pub trait Presence: Send + Sync + 'static {
    /// Records `info` as present in `channel`.
    fn add<'a>(
        &'a self,
        channel: &'a str,
        client: ClientId,
        info: ClientInfo,
    ) -> BoxFuture<'a, Result<(), PresenceError>>;

    /// Removes a client from `channel`.
    fn remove<'a>(
        &'a self,
        channel: &'a str,
        client: ClientId,
    ) -> BoxFuture<'a, Result<(), PresenceError>>;

    /// Everyone present in `channel`.
    fn get<'a>(&'a self, channel: &'a str)
        -> BoxFuture<'a, Result<Vec<ClientInfo>, PresenceError>>;

    /// How many clients and distinct users are present in `channel`.
    fn stats<'a>(&'a self, channel: &'a str)
        -> BoxFuture<'a, Result<PresenceStats, PresenceError>>;
}
