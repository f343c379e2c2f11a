//! The broker moves channel events between nodes and keeps ephemeral history.
//!
//! On one node the [`MemoryBroker`] hands events straight to the local
//! [`EventSink`]; with many nodes a Redis broker carries them to every node
//! (issue 4). Events carry frames already encoded once, so a node never
//! re-encodes what it fans out.

pub mod memory;
pub mod memory_history;
pub mod redis;
pub mod redis_history;

use bytes::Bytes;

use crate::history::{AppendDone, BoxFuture, History};
use crate::hub::ClientId;
use crate::stream::AppendRequest;

pub use self::redis::{RedisBroker, RedisOptions};
pub use self::redis_history::RedisHistory;
pub use memory::MemoryBroker;
pub use memory_history::MemoryHistory;

/// Something that happened on a channel, ready to fan out.
#[derive(Debug, Clone)]
pub enum ChannelEvent {
    /// A publication push frame with its stream offset.
    Publication {
        offset: u64,
        frame: Bytes,
        /// The publisher's connection when its namespace excludes publishers.
        exclude: Option<ClientId>,
    },
    /// A `join` or `leave` push frame.
    Presence { frame: Bytes },
}

/// Where a broker delivers events on this node (the hub, with metrics).
pub trait EventSink: Send + Sync + 'static {
    fn deliver(&self, channel: &str, event: ChannelEvent);

    /// Delivers events that arrived together, in their order (so in order
    /// per channel). A sink may queue them all before waking any
    /// connection, so that a connection gets what the batch holds for it
    /// in one write rather than one write per event.
    fn deliver_batch(&self, events: Vec<(&str, ChannelEvent)>) {
        for (channel, event) in events {
            self.deliver(channel, event);
        }
    }

    /// Whether this node has subscribers of `channel` (a broker that
    /// subscribes per channel checks before it lets one go).
    fn has_subscribers(&self, _channel: &str) -> bool {
        true
    }

    /// A control message from another node (or this one) arrived: see
    /// [`Broker::control`]. Called on the broker's receiving task, in the
    /// order the messages were published, like `deliver`: keep it quick.
    fn control(&self, _message: Bytes) {}

    /// The broker lost its event feed and got it back: events of
    /// `channels` published meanwhile may never arrive, so their
    /// subscribers should recover from history. Called once the feed of
    /// every channel is back, before any of their new events; from the
    /// broker's own task, so hand longer work to another task.
    fn resubscribed(&self, _channels: &[String]) {}
}

/// Why the broker could not do something.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Renders a publication frame once its offset and epoch are known:
/// `head` + offset + `,"epoch":"` + epoch + `tail` (see
/// `protocol::frames::publication_template`). A broker whose history lives
/// elsewhere (Redis) can build the frame where the offset is assigned.
#[derive(Debug, Clone)]
pub struct FrameTemplate {
    pub head: Bytes,
    pub tail: Bytes,
}

impl FrameTemplate {
    pub fn render(&self, offset: u64, epoch: &str) -> Bytes {
        let offset = offset.to_string();
        let mut out =
            Vec::with_capacity(self.head.len() + offset.len() + 11 + epoch.len() + self.tail.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(offset.as_bytes());
        out.extend_from_slice(b",\"epoch\":\"");
        out.extend_from_slice(epoch.as_bytes());
        out.extend_from_slice(&self.tail);
        Bytes::from(out)
    }
}

/// Moves channel events to every node and holds non-persisted history.
pub trait Broker: Send + Sync + 'static {
    /// History of namespaces without `persist`.
    fn history(&self) -> &dyn History;

    /// Delivers an event to every node's subscribers of `channel`, in the
    /// order of calls for one channel. Never blocks.
    fn publish(&self, channel: &str, event: ChannelEvent);

    /// Whether [`Broker::append_and_publish`] does the work (otherwise the
    /// caller appends, then publishes).
    fn publishes_on_append(&self) -> bool {
        false
    }

    /// Appends to this broker's own history and publishes the publication
    /// (rendered from `frame`) to every node, then calls `done` — in one
    /// step where the backend can (Redis: one script, one round trip).
    // The `Err` hands the request back to append in two steps (no error).
    #[allow(clippy::result_large_err)]
    fn append_and_publish(
        &self,
        request: AppendRequest,
        frame: FrameTemplate,
        exclude: Option<ClientId>,
        done: AppendDone,
    ) -> Result<(), (AppendRequest, AppendDone)> {
        // Default: the caller appends and publishes in two steps.
        let _ = (frame, exclude);
        Err((request, done))
    }

    /// A subscriber of `channel` is joining this node's hub: resolves once
    /// events of `channel` from every node reach this node's sink (a
    /// subscription must not miss what is published after its history
    /// read). Called for every subscription; cheap when already watched.
    fn watch<'a>(&'a self, _channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async { Ok(()) })
    }

    /// This node's last subscriber of `channel` left (the broker may stop
    /// receiving its events; check `EventSink::has_subscribers` first).
    fn unwatch(&self, _channel: &str) {}

    /// Whether the broker is connected (a node with a broken broker still
    /// serves its own clients and reports itself degraded).
    fn healthy(&self) -> bool {
        true
    }

    /// Sends an opaque control message to the node `to`, or to every node
    /// (this one included) when `to` is `None`; each receiving node hands
    /// it to [`EventSink::control`]. Never blocks; best effort (dropped
    /// while the broker is disconnected). A single-node broker has no
    /// other node to reach and ignores it.
    fn control(&self, _to: Option<&str>, _message: Bytes) {}

    /// Periodic housekeeping (called every minute): forget idle streams.
    fn maintain(&self) {}
}
