//! The single-node broker: events go straight to the local hub.

use std::sync::Arc;

use super::{Broker, ChannelEvent, EventSink, MemoryHistory};
use crate::history::History;

/// How long an empty memory stream is kept after its last publication.
const STREAM_IDLE: std::time::Duration = std::time::Duration::from_secs(3600);

/// In-process broker for one node.
pub struct MemoryBroker {
    sink: Arc<dyn EventSink>,
    history: MemoryHistory,
}

impl MemoryBroker {
    /// A broker delivering to `sink`.
    pub fn new(sink: Arc<dyn EventSink>) -> Self {
        MemoryBroker {
            sink,
            history: MemoryHistory::new(),
        }
    }
}

impl Broker for MemoryBroker {
    fn history(&self) -> &dyn History {
        &self.history
    }

    fn publish(&self, channel: &str, event: ChannelEvent) {
        self.sink.deliver(channel, event);
    }

    fn maintain(&self) {
        let removed = self.history.sweep(STREAM_IDLE);
        if removed > 0 {
            tracing::debug!("forgot {removed} idle memory streams");
        }
    }
}
