//! One connection's subscription to one channel, as the hub holds it.
//!
//! While a subscription is being set up with recovery, live frames must not
//! overtake the `subscribed` reply and the recovered publications, and must
//! not repeat them. The subscriber is registered *gated*: fan-out buffers
//! its frames, and [`Subscriber::open`] queues the reply, the recovered
//! publications, then the buffered frames that come after them, atomically
//! with respect to fan-out.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::outbound::{Outbound, PushError};
use super::ClientId;

/// A subscription in the hub.
#[derive(Debug)]
pub struct Subscriber {
    /// Which connection (for `exclude_publisher` and unsubscribe).
    pub client: ClientId,
    /// The connection's queue, shared with the connection's writer.
    pub outbound: Arc<Outbound>,
    /// Fast-path flag: false once open (no lock taken on fan-out).
    gated: AtomicBool,
    /// Frames (with their offset, 0 for join/leave) that arrived while gated.
    buffered: Mutex<Option<Vec<(u64, Bytes)>>>,
    /// The highest publication offset this subscriber has been given: a
    /// publication that arrives late (from another node, after the history
    /// read that already returned it) is not given twice.
    high: AtomicU64,
}

impl Subscriber {
    /// A subscriber that receives live frames at once.
    pub fn open_now(client: ClientId, outbound: Arc<Outbound>) -> Arc<Self> {
        Arc::new(Subscriber {
            client,
            outbound,
            gated: AtomicBool::new(false),
            buffered: Mutex::new(None),
            high: AtomicU64::new(0),
        })
    }

    /// A subscriber whose live frames are held until [`Subscriber::open`].
    pub fn gated(client: ClientId, outbound: Arc<Outbound>) -> Arc<Self> {
        Arc::new(Subscriber {
            client,
            outbound,
            gated: AtomicBool::new(true),
            buffered: Mutex::new(Some(Vec::new())),
            high: AtomicU64::new(0),
        })
    }

    /// Delivers a live frame (buffers it while gated).
    pub fn deliver(&self, offset: u64, frame: &Bytes) -> Result<(), PushError> {
        if self.deliver_quiet(offset, frame)? {
            self.outbound.wake();
        }
        Ok(())
    }

    /// [`Subscriber::deliver`] without waking the connection's writer:
    /// `Ok(true)` when the caller must wake it (see [`Outbound::push_quiet`]).
    pub fn deliver_quiet(&self, offset: u64, frame: &Bytes) -> Result<bool, PushError> {
        if self.gated.load(Ordering::Acquire) {
            let mut buffered = self.lock();
            if let Some(frames) = buffered.as_mut() {
                frames.push((offset, frame.clone()));
                return Ok(false);
            }
        }
        // Offsets reach a subscriber in order; 0 is a join/leave push.
        if offset != 0 && self.high.fetch_max(offset, Ordering::AcqRel) >= offset {
            return Ok(false);
        }
        self.outbound.push_quiet(frame.clone())
    }

    /// Queues `first` (the reply and recovered publications), then every
    /// buffered frame whose offset is above `delivered_up_to` (join/leave
    /// frames, offset 0, always pass), and switches to live delivery.
    pub fn open(&self, first: impl IntoIterator<Item = Bytes>, delivered_up_to: u64) {
        let mut buffered = self.lock();
        for frame in first {
            if self.outbound.push(frame).is_err() {
                break;
            }
        }
        self.high.fetch_max(delivered_up_to, Ordering::AcqRel);
        for (offset, frame) in buffered.take().unwrap_or_default() {
            if offset != 0 && self.high.fetch_max(offset, Ordering::AcqRel) >= offset {
                continue;
            }
            if self.outbound.push(frame).is_err() {
                break;
            }
        }
        self.gated.store(false, Ordering::Release);
    }

    fn lock(&self) -> MutexGuard<'_, Option<Vec<(u64, Bytes)>>> {
        // Poisoning cannot leave the buffer inconsistent: ignore it.
        self.buffered.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::outbound::Drained;

    fn frames(q: &Outbound) -> Vec<Bytes> {
        match q.drain() {
            Drained::Frames(f) => f.into_iter().collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gated_subscriber_gets_reply_first_then_only_newer_frames() {
        let q = Arc::new(Outbound::new(1 << 20));
        let s = Subscriber::gated(1, q.clone());
        s.deliver(5, &Bytes::from_static(b"p5")).unwrap();
        s.deliver(0, &Bytes::from_static(b"join")).unwrap();
        s.deliver(6, &Bytes::from_static(b"p6")).unwrap();
        assert!(frames(&q).is_empty());
        s.open([Bytes::from_static(b"reply"), Bytes::from_static(b"p5")], 5);
        // 5 came late (it was in the history read): not given twice.
        s.deliver(5, &Bytes::from_static(b"p5")).unwrap();
        s.deliver(7, &Bytes::from_static(b"p7")).unwrap();
        let expected: Vec<Bytes> = [&b"reply"[..], b"p5", b"join", b"p6", b"p7"]
            .into_iter()
            .map(Bytes::from_static)
            .collect();
        assert_eq!(frames(&q), expected);
    }
}
