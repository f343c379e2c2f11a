//! Streams: every channel is an ordered log of publications.
//!
//! A [`StreamPosition`] (`offset` + `epoch`) is the single resume mechanism of
//! Switchboard: every publication gets the next offset of its channel's
//! stream, and the epoch changes whenever a stream's history is lost (a
//! memory stream after a restart), so a client holding an old position knows
//! it must reload instead of trusting a gap-free recovery.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Where a client is in a channel's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    /// Offset of the last publication seen (0 = none yet).
    pub offset: u64,
    /// Identifies one unbroken life of the stream.
    pub epoch: String,
}

/// Who published something, or who joined/left a channel.
///
/// `data` is the `info` claim of the connection token, kept as raw JSON so it
/// is never re-parsed on the hot path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub user: String,
    pub client: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<RawJson>,
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

/// A JSON value kept as its original text (`data` of a publication).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(pub Arc<RawValue>);

impl RawJson {
    /// Parses and keeps `text` as raw JSON.
    pub fn from_string(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(|raw| RawJson(Arc::from(raw)))
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

/// One message in a channel's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    /// Position in the stream (1-based, gap-free).
    pub offset: u64,
    /// The application payload, exactly as published.
    pub data: RawJson,
    /// The publishing client; `None` when the server API published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<ClientInfo>,
    /// Milliseconds since the Unix epoch when the publication was accepted.
    pub time: u64,
}

/// Retention rules of one channel's stream, from its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// How many publications are kept (0 = none; the stream still counts offsets).
    pub size: usize,
    /// How long a publication is kept.
    pub ttl: Duration,
    /// How long an idempotency key is remembered.
    pub idempotency_window: Duration,
}

/// A publication to append to a channel's stream.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub channel: Arc<str>,
    pub data: RawJson,
    pub info: Option<ClientInfo>,
    pub idempotency_key: Option<String>,
    pub limits: HistoryLimits,
}

/// What appending did.
#[derive(Debug, Clone, PartialEq)]
pub enum AppendOutcome {
    /// The publication is in the stream with this offset; deliver it.
    Appended {
        publication: Publication,
        epoch: String,
    },
    /// The idempotency key was seen within the window: nothing was appended,
    /// and this is the position the first publish got.
    Duplicate(StreamPosition),
}

impl AppendOutcome {
    /// The position the publisher is told.
    pub fn position(&self) -> StreamPosition {
        match self {
            AppendOutcome::Appended { publication, epoch } => StreamPosition {
                offset: publication.offset,
                epoch: epoch.clone(),
            },
            AppendOutcome::Duplicate(position) => position.clone(),
        }
    }
}

/// A read of a channel's history.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Return publications after this position. With a different epoch than
    /// the stream's (or an offset past its top), the read is not a recovery
    /// (`recovered: false`) and returns the latest `limit` retained
    /// publications, oldest first.
    pub since: Option<StreamPosition>,
    /// At most this many publications (0 = only the position).
    pub limit: usize,
    /// Newest first instead of oldest first (only without `since`).
    pub reverse: bool,
}

/// The answer to a [`HistoryQuery`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    /// The stream's current top: offset of its newest publication.
    pub position: StreamPosition,
    /// The publications, in offset order (or reverse order if asked).
    pub publications: Vec<Publication>,
    /// With `since`: true when `publications` are exactly and all of what
    /// followed `since` (same epoch, nothing trimmed away, not cut by `limit`).
    pub recovered: bool,
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A fresh random epoch: 8 URL-safe characters.
pub fn new_epoch() -> String {
    crate::random::token(6)
}
