//! The broker moves channel events between nodes and keeps ephemeral history.
//!
//! On one node the [`MemoryBroker`] hands events straight to the local
//! [`EventSink`]; with many nodes a Redis broker carries them to every node
//! (issue 4). Events carry frames already encoded once, so a node never
//! re-encodes what it fans out.

pub mod memory;
pub mod memory_history;

use bytes::Bytes;

use crate::history::History;
use crate::hub::ClientId;

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
}

/// Moves channel events to every node and holds non-persisted history.
pub trait Broker: Send + Sync + 'static {
    /// History of namespaces without `persist`.
    fn history(&self) -> &dyn History;

    /// Delivers an event to every node's subscribers of `channel`, in the
    /// order of calls for one channel. Never blocks.
    fn publish(&self, channel: &str, event: ChannelEvent);

    /// Periodic housekeeping (called every minute): forget idle streams.
    fn maintain(&self) {}
}
