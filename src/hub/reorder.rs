//! Puts publications from other nodes back in offset order.
//!
//! With a durable store shared by many nodes, each node assigns offsets in
//! the database and then publishes through the broker; two nodes publishing
//! to one channel can have their broker messages cross (offset 15 arrives
//! before 14). Subscribers must still see offsets strictly in order, once.
//! [`Reorder`] keeps, per channel with local subscribers, the next offset
//! expected; a publication past it is held until the gap fills. A gap that
//! does not fill within a short wait (the publishing node died between its
//! commit and its publish, or the broker dropped a message) is filled from
//! history by the node, or skipped when the channel keeps none.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::ClientId;

/// A publication ready to fan out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub offset: u64,
    pub frame: Bytes,
    pub exclude: Option<ClientId>,
}

/// What [`Reorder::accept`] decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Deliver these now, in this order.
    pub ready: Vec<Ready>,
    /// A gap opened: the caller should call [`Reorder::expire`] for this
    /// channel after the wait.
    pub gap_opened: bool,
}

#[derive(Debug)]
struct Channel {
    /// The next offset to deliver; unknown until a subscriber has read
    /// the channel's history (publications are held until then).
    next: Option<u64>,
    held: BTreeMap<u64, Ready>,
    /// When the current gap opened.
    gap_since: Option<Instant>,
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct Reorder {
    channels: Mutex<HashMap<Arc<str>, Channel>>,
}

impl Reorder {
    pub fn new() -> Self {
        Reorder::default()
    }

    /// A subscriber of `channel` is about to read its history: hold the
    /// channel's publications until [`Reorder::observe`] says where to start.
    pub fn begin(&self, channel: &Arc<str>) {
        self.lock().entry(channel.clone()).or_insert(Channel {
            next: None,
            held: BTreeMap::new(),
            gap_since: None,
        });
    }

    /// A subscriber of `channel` read its history up to `top`: ordering
    /// starts after it if it had not started; returns what is deliverable.
    pub fn observe(&self, channel: &str, top: u64) -> Vec<Ready> {
        let mut channels = self.lock();
        let Some(state) = channels.get_mut(channel) else {
            return Vec::new();
        };
        if state.next.is_some() {
            return Vec::new();
        }
        state.next = Some(top + 1);
        state.held = state.held.split_off(&(top + 1));
        let ready = release(state);
        state.gap_since = (!state.held.is_empty()).then(Instant::now);
        ready
    }

    /// The last local subscriber of `channel` left.
    pub fn forget(&self, channel: &str) {
        self.lock().remove(channel);
    }

    /// A publication arrived from the broker.
    pub fn accept(&self, channel: &str, publication: Ready) -> Accepted {
        accept(&mut self.lock(), channel, publication)
    }

    /// Holds the lock for a batch of publications read together from the
    /// broker: [`AcceptBatch::accept`] each, in the order they arrived.
    pub fn batch(&self) -> AcceptBatch<'_> {
        AcceptBatch {
            channels: self.lock(),
        }
    }

    /// The offsets missing before the held publications of `channel`, if
    /// its gap is at least `wait` old: `(next, first_held, epoch)`.
    pub fn gap(&self, channel: &str, wait: Duration) -> Option<(u64, u64, String)> {
        let channels = self.lock();
        let state = channels.get(channel)?;
        let since = state.gap_since?;
        if since.elapsed() < wait {
            return None;
        }
        let (&first, held) = state.held.iter().next()?;
        Some((state.next?, first, epoch_of(&held.frame)?))
    }

    /// Whether `channel` has publications waiting for a missing offset.
    pub fn has_gap(&self, channel: &str) -> bool {
        self.lock()
            .get(channel)
            .is_some_and(|s| s.gap_since.is_some())
    }

    /// Fills the gap of `channel` with `found` (publications read from
    /// history, in order) and skips what history no longer has; returns
    /// everything now deliverable, in order.
    pub fn fill(&self, channel: &str, found: Vec<Ready>) -> Vec<Ready> {
        let mut channels = self.lock();
        let Some(state) = channels.get_mut(channel) else {
            return Vec::new();
        };
        let Some(next) = state.next else {
            return Vec::new();
        };
        for publication in found {
            if publication.offset >= next {
                state.held.entry(publication.offset).or_insert(publication);
            }
        }
        let mut ready = release(state);
        if let Some(&first) = state.held.keys().next() {
            // History does not have the rest of the gap: skip it.
            state.next = Some(first);
            ready.extend(release(state));
        }
        state.gap_since = (!state.held.is_empty()).then(Instant::now);
        ready
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Channel>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A batch of publications accepted under one lock (see [`Reorder::batch`]).
pub struct AcceptBatch<'a> {
    channels: MutexGuard<'a, HashMap<Arc<str>, Channel>>,
}

impl AcceptBatch<'_> {
    /// [`Reorder::accept`], for the next publication of the batch.
    pub fn accept(&mut self, channel: &str, publication: Ready) -> Accepted {
        accept(&mut self.channels, channel, publication)
    }
}

fn accept(
    channels: &mut HashMap<Arc<str>, Channel>,
    channel: &str,
    publication: Ready,
) -> Accepted {
    let Some(state) = channels.get_mut(channel) else {
        // No subscriber here has read this channel's history: nothing
        // to order against (and nobody to deliver to).
        return Accepted {
            ready: vec![publication],
            gap_opened: false,
        };
    };
    let Some(next) = state.next else {
        state.held.insert(publication.offset, publication);
        return Accepted::default();
    };
    if publication.offset < next {
        // Already delivered (or in the history a subscriber read).
        return Accepted::default();
    }
    state.held.insert(publication.offset, publication);
    let ready = release(state);
    let gap_opened = if state.held.is_empty() {
        state.gap_since = None;
        false
    } else if state.gap_since.is_none() {
        state.gap_since = Some(Instant::now());
        true
    } else {
        false
    };
    Accepted { ready, gap_opened }
}

/// The `epoch` of a publication frame.
fn epoch_of(frame: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Epoch {
        epoch: String,
    }
    serde_json::from_slice::<Epoch>(frame).ok().map(|e| e.epoch)
}

/// Takes the run of held publications starting at `next`.
fn release(state: &mut Channel) -> Vec<Ready> {
    let mut ready = Vec::new();
    while let Some(next) = state.next {
        let Some(publication) = state.held.remove(&next) else {
            break;
        };
        state.next = Some(next + 1);
        ready.push(publication);
    }
    ready
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(offset: u64) -> Ready {
        Ready {
            offset,
            frame: Bytes::from(format!(
                r#"{{"type":"publication","offset":{offset},"epoch":"e"}}"#
            )),
            exclude: None,
        }
    }

    fn offsets(ready: &[Ready]) -> Vec<u64> {
        ready.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn crossed_publications_come_out_in_order() {
        let r = Reorder::new();
        let ch: Arc<str> = "chat:x".into();
        r.begin(&ch);
        r.observe(&ch, 13);
        let a = r.accept(&ch, p(15));
        assert!(a.ready.is_empty() && a.gap_opened);
        assert_eq!(offsets(&r.accept(&ch, p(14)).ready), [14, 15]);
        assert_eq!(offsets(&r.accept(&ch, p(16)).ready), [16]);
        // Old and repeated offsets are dropped.
        assert!(r.accept(&ch, p(15)).ready.is_empty());
    }

    #[test]
    fn a_gap_that_does_not_fill_is_filled_from_history_or_skipped() {
        let r = Reorder::new();
        let ch: Arc<str> = "chat:x".into();
        r.begin(&ch);
        r.observe(&ch, 0);
        r.accept(&ch, p(4));
        assert_eq!(r.gap(&ch, Duration::from_secs(60)), None);
        assert!(r.has_gap(&ch));
        assert_eq!(r.gap(&ch, Duration::ZERO), Some((1, 4, "e".into())));
        // History has 2 and 3 but no longer 1.
        assert_eq!(offsets(&r.fill(&ch, vec![p(2), p(3)])), [2, 3, 4]);
        assert_eq!(offsets(&r.accept(&ch, p(5)).ready), [5]);
    }

    #[test]
    fn publications_before_the_history_read_wait_for_it() {
        let r = Reorder::new();
        let ch: Arc<str> = "chat:x".into();
        r.begin(&ch);
        // 16 arrives while the subscriber reads history; 15 was in it.
        assert!(r.accept(&ch, p(16)).ready.is_empty());
        assert!(r.accept(&ch, p(15)).ready.is_empty());
        assert_eq!(offsets(&r.observe(&ch, 15)), [16]);
        assert!(r.observe(&ch, 20).is_empty(), "the first read decides");
    }

    #[test]
    fn a_batch_keeps_offset_order_and_opens_a_gap_once() {
        let r = Reorder::new();
        let (x, y): (Arc<str>, Arc<str>) = ("chat:x".into(), "chat:y".into());
        r.begin(&x);
        r.observe(&x, 10);
        r.begin(&y);
        r.observe(&y, 0);
        let mut out = Vec::new();
        let mut gaps = Vec::new();
        {
            let mut batch = r.batch();
            // x: 12 crosses 11; 11 again is a repeat; 14 leaves 13 missing.
            // y: in order, interleaved with x.
            for (channel, offset) in [
                (&x, 12),
                (&y, 1),
                (&x, 11),
                (&x, 11),
                (&y, 2),
                (&x, 14),
                (&x, 15),
            ] {
                let accepted = batch.accept(channel, p(offset));
                out.extend(
                    accepted
                        .ready
                        .into_iter()
                        .map(|r| (channel.clone(), r.offset)),
                );
                if accepted.gap_opened {
                    gaps.push((channel.clone(), offset));
                }
            }
        }
        let expect = |c: &Arc<str>, o: u64| (c.clone(), o);
        assert_eq!(
            out,
            [expect(&y, 1), expect(&x, 11), expect(&x, 12), expect(&y, 2)]
        );
        assert_eq!(gaps, [(x.clone(), 12), (x.clone(), 14)]);
        // The lock is released: 13 fills the gap and frees 14 and 15.
        assert!(r.has_gap(&x));
        assert_eq!(offsets(&r.accept(&x, p(13)).ready), [13, 14, 15]);
        assert!(!r.has_gap(&x));
    }

    #[test]
    fn channels_nobody_here_read_pass_through() {
        let r = Reorder::new();
        assert_eq!(offsets(&r.accept("chat:y", p(9)).ready), [9]);
    }
}
