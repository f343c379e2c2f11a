//! What both stores' writer threads share: answering a flush and stopping
//! the thread when the store is dropped.

use std::thread::{self, JoinHandle};

use tokio::sync::oneshot;

use super::StoreError;
use crate::history::{BoxFuture, HistoryError};

/// A flush's answer, once the writer has reached the `Flush` job queued
/// (`queued` says whether it could be queued at all).
pub(super) fn flushed(
    queued: bool,
    answer: oneshot::Receiver<Result<(), HistoryError>>,
) -> BoxFuture<'static, Result<(), HistoryError>> {
    Box::pin(async move {
        if !queued {
            return Err(StoreError::WriterGone.into());
        }
        answer
            .await
            .map_err(|_| HistoryError::from(StoreError::WriterGone))?
    })
}

/// Waits for the writer thread to finish (its `Shutdown` job is queued
/// behind everything else), unless this is the writer itself: a callback
/// on the writer dropping the last handle must not join its own thread.
pub(super) fn join(handle: Option<JoinHandle<()>>, store: &str) {
    let Some(handle) = handle else { return };
    if handle.thread().id() == thread::current().id() {
        return;
    }
    if handle.join().is_err() {
        tracing::error!("{store} writer thread panicked");
    }
}
