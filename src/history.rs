//! The [`History`] trait: an ordered, offset-numbered log per channel.
//!
//! Two kinds implement it: an ephemeral one owned by the broker (memory on
//! one node, Redis for many) for namespaces without `persist`, and a durable
//! one owned by the store (SQLite on one node, PostgreSQL for many) for
//! namespaces with `persist = true`.
//!
//! Appends report through a callback rather than a future because order is
//! the contract: an implementation calls `done` for appends to one channel
//! in offset order, so the caller can fan the publication out inside the
//! callback and subscribers see offsets strictly increasing.

use std::future::Future;
use std::pin::Pin;

use crate::stream::{AppendOutcome, AppendRequest, HistoryPage, HistoryQuery};

/// A boxed, sendable future (the traits here are used as `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Called once per append, in offset order per channel.
pub type AppendDone = Box<dyn FnOnce(Result<AppendOutcome, HistoryError>) + Send>;

/// Why a history operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history backend unavailable: {0}")]
    Unavailable(String),
    #[error("history backend failed: {0}")]
    Backend(String),
}

/// An ordered log of publications per channel.
pub trait History: Send + Sync + 'static {
    /// Appends a publication (assigning the next offset) unless its
    /// idempotency key was seen within the window, then calls `done`.
    fn append(&self, request: AppendRequest, done: AppendDone);

    /// Reads a channel's history. An unknown channel has offset 0 and a
    /// stable epoch (a read creates the stream's epoch if needed).
    fn read<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, HistoryError>>;

    /// Waits until every acknowledged append is durable (no-op for memory).
    fn flush(&self) -> BoxFuture<'_, Result<(), HistoryError>>;
}
