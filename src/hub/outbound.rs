//! A connection's outbound queue: bounded, shared, and empty-handed when idle.
//!
//! The hub pushes already-encoded frames (`Bytes` shared by every
//! subscriber); the connection's writer drains everything queued in one go
//! and writes it with one syscall. The queue is bounded in bytes: a push
//! that would pass the bound closes the queue with the slow-consumer
//! disconnect instead of growing memory. An idle queue holds no allocation
//! (the writer takes the whole `VecDeque`, leaving an empty one).

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::codes::{Disconnect, DisconnectCode};

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The queue is closed (the connection is going away).
    #[error("outbound queue closed")]
    Closed,
    /// This push overflowed the queue; it is now closed as a slow consumer.
    #[error("outbound queue overflowed")]
    Overflow,
}

/// What the writer should do after a drain.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Write these frames (possibly none) and keep going.
    Frames(VecDeque<Bytes>),
    /// Write these frames (the last ones the client will get), then close.
    Closing(VecDeque<Bytes>, Disconnect),
}

/// One connection's queue of frames to write.
#[derive(Debug)]
pub struct Outbound {
    /// std Mutex: held only to push or swap, never across an await.
    state: Mutex<State>,
    /// Wakes the writer; `notify_one` keeps a permit if it is not waiting.
    notify: Notify,
    /// Bytes that may be queued before the connection is a slow consumer.
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Bytes>,
    bytes: usize,
    closed: Option<Disconnect>,
}

impl Outbound {
    /// An empty queue bounded to `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Outbound {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            max_bytes,
        }
    }

    /// Queues a frame for the writer.
    pub fn push(&self, frame: Bytes) -> Result<(), PushError> {
        if self.push_quiet(frame)? {
            self.notify.notify_one();
        }
        Ok(())
    }

    /// Queues a frame without waking the writer: `Ok(true)` when the queue
    /// was empty, and the caller must then call [`Outbound::wake`] (once
    /// it has queued the rest of a batch, so the writer takes it all in
    /// one go). An overflow still closes the queue and wakes the writer.
    pub fn push_quiet(&self, frame: Bytes) -> Result<bool, PushError> {
        let mut state = self.lock();
        if state.closed.is_some() {
            return Err(PushError::Closed);
        }
        if state.bytes + frame.len() > self.max_bytes && !state.frames.is_empty() {
            state.frames = VecDeque::new();
            state.bytes = 0;
            state.closed = Some(DisconnectCode::SlowConsumer.into());
            drop(state);
            self.notify.notify_one();
            return Err(PushError::Overflow);
        }
        let was_empty = state.frames.is_empty();
        state.bytes += frame.len();
        state.frames.push_back(frame);
        Ok(was_empty)
    }

    /// Closes the queue: frames already queued (and `last`, typically the
    /// encoded `disconnect` push) are still written, then the connection ends.
    /// Closing twice keeps the first reason.
    pub fn close(&self, disconnect: Disconnect, last: Option<Bytes>) {
        let mut state = self.lock();
        if state.closed.is_some() {
            return;
        }
        if let Some(frame) = last {
            state.bytes += frame.len();
            state.frames.push_back(frame);
        }
        state.closed = Some(disconnect);
        drop(state);
        self.notify.notify_one();
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    /// The disconnect the queue was closed with, if it was.
    pub fn closed_with(&self) -> Option<Disconnect> {
        self.lock().closed.clone()
    }

    /// Takes everything queued.
    pub fn drain(&self) -> Drained {
        let mut state = self.lock();
        let frames = std::mem::take(&mut state.frames);
        state.bytes = 0;
        match &state.closed {
            Some(disconnect) => Drained::Closing(frames, disconnect.clone()),
            None => Drained::Frames(frames),
        }
    }

    /// Waits until something was pushed or the queue was closed since the
    /// last drain (returns at once if that already happened).
    pub async fn ready(&self) {
        self.notify.notified().await
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Frames queued now.
    pub fn queued_frames(&self) -> usize {
        self.lock().frames.len()
    }

    /// Wakes the writer as if something had been pushed.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave State inconsistent
        // (every update is a plain field write), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_in_order_and_drains_everything() {
        let q = Outbound::new(1024);
        q.push(Bytes::from_static(b"a")).unwrap();
        q.push(Bytes::from_static(b"b")).unwrap();
        assert_eq!(
            q.drain(),
            Drained::Frames(VecDeque::from(vec![
                Bytes::from_static(b"a"),
                Bytes::from_static(b"b")
            ]))
        );
        assert_eq!(q.queued_bytes(), 0);
    }

    #[test]
    fn overflow_closes_as_slow_consumer_and_frees_the_queue() {
        let q = Outbound::new(10);
        q.push(Bytes::from(vec![0; 8])).unwrap();
        assert_eq!(q.push(Bytes::from(vec![0; 8])), Err(PushError::Overflow));
        assert_eq!(q.push(Bytes::from(vec![0; 1])), Err(PushError::Closed));
        match q.drain() {
            Drained::Closing(frames, d) => {
                assert!(frames.is_empty());
                assert_eq!(d.code, DisconnectCode::SlowConsumer.code());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_frame_larger_than_the_bound_still_goes_through_an_empty_queue() {
        let q = Outbound::new(4);
        q.push(Bytes::from(vec![0; 8])).unwrap();
    }

    #[test]
    fn close_keeps_queued_frames_and_the_last_one() {
        let q = Outbound::new(1024);
        q.push(Bytes::from_static(b"a")).unwrap();
        q.close(
            DisconnectCode::Shutdown.into(),
            Some(Bytes::from_static(b"bye")),
        );
        q.close(DisconnectCode::NoPong.into(), None);
        match q.drain() {
            Drained::Closing(frames, d) => {
                assert_eq!(frames.len(), 2);
                assert_eq!(d.code, 3001);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_quiet_push_wakes_nobody_until_the_caller_does() {
        let q = Outbound::new(1024);
        assert_eq!(q.push_quiet(Bytes::from_static(b"a")), Ok(true));
        assert_eq!(q.push_quiet(Bytes::from_static(b"b")), Ok(false));
        let wait = std::time::Duration::from_millis(20);
        assert!(tokio::time::timeout(wait, q.ready()).await.is_err());
        q.wake();
        tokio::time::timeout(wait, q.ready()).await.unwrap();
        assert_eq!(q.queued_frames(), 2);
        // Drained: the next quiet push asks for a wake again.
        q.drain();
        assert_eq!(q.push_quiet(Bytes::from_static(b"c")), Ok(true));
    }

    #[tokio::test]
    async fn a_quiet_push_that_overflows_still_wakes_the_writer() {
        let q = Outbound::new(10);
        assert_eq!(q.push_quiet(Bytes::from(vec![0; 8])), Ok(true));
        assert_eq!(
            q.push_quiet(Bytes::from(vec![0; 8])),
            Err(PushError::Overflow)
        );
        tokio::time::timeout(std::time::Duration::from_secs(1), q.ready())
            .await
            .unwrap();
        assert!(q.is_closed());
    }

    #[tokio::test]
    async fn ready_returns_after_a_push_made_before_waiting() {
        let q = Outbound::new(1024);
        q.push(Bytes::from_static(b"a")).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), q.ready())
            .await
            .unwrap();
    }
}
