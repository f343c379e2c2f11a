//! A session's retransmit log: numbered frames kept until the client has
//! them, so a resume on any transport replays exactly what it missed.
//!
//! Frames drained from the session's outbound queue get the next sequence
//! number (the `connected` reply is 1) and wait here. [`Log::take`] hands
//! the transport everything after what it was last given; the frames stay
//! until a cursor acknowledges them ([`Log::resume`]), or, once written,
//! until the retention time has passed or the byte bound needs the room.
//! The `connected` reply is dropped as soon as it is handed out: a resume
//! is answered with a fresh one, so it is never replayed.
//! Frames from before `connect` (errors) are not numbered and are handed out
//! once.

use std::collections::VecDeque;

use bytes::Bytes;

/// A frame for the transport, with its number when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbered {
    /// `None` for frames outside the sequence (pre-connect errors, the
    /// `connected` reply to a resume).
    pub seq: Option<u64>,
    pub frame: Bytes,
}

/// Why a cursor cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("seq {cursor} is beyond the last frame sent ({last})")]
    Future { cursor: u64, last: u64 },
    #[error("frames after seq {cursor} were already dropped (the oldest kept is {oldest})")]
    Gone { cursor: u64, oldest: u64 },
}

#[derive(Debug)]
struct Entry {
    frame: Bytes,
    /// When a transport was given it (ms since the Unix epoch); 0 = not yet.
    sent_at: u64,
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct Log {
    /// How many of the next drained frames come from before `connect`.
    unnumbered_ahead: usize,
    /// Numbering has begun (the session is connected).
    numbering: bool,
    /// Seq of `entries[0]` (or of the next frame when empty).
    first: u64,
    entries: VecDeque<Entry>,
    bytes: usize,
    /// The last seq handed to the current transport.
    sent: u64,
    /// Frames outside the sequence, handed out first.
    unnumbered: VecDeque<Bytes>,
}

impl Log {
    /// An empty log; nothing is numbered until [`Log::begin`].
    pub fn new() -> Self {
        Log {
            first: 1,
            ..Log::default()
        }
    }

    /// Numbering begins: of the frames now queued (`queued`, the last being
    /// the `connected` reply), all but the last are handed out unnumbered.
    pub fn begin(&mut self, queued: usize) {
        self.numbering = true;
        self.unnumbered_ahead = queued.saturating_sub(1);
    }

    /// The seq of the last numbered frame (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.first + self.entries.len() as u64 - 1
    }

    /// Adds frames drained from the outbound queue, in order.
    pub fn extend(&mut self, frames: impl IntoIterator<Item = Bytes>) {
        for frame in frames {
            if !self.numbering || self.unnumbered_ahead > 0 {
                self.unnumbered_ahead = self.unnumbered_ahead.saturating_sub(1);
                self.unnumbered.push_back(frame);
                continue;
            }
            self.bytes += frame.len();
            self.entries.push_back(Entry { frame, sent_at: 0 });
        }
    }

    /// Queues a frame outside the sequence ahead of everything else (the
    /// `connected` reply to a resume).
    pub fn greet(&mut self, frame: Bytes) {
        self.unnumbered.clear();
        self.unnumbered.push_back(frame);
    }

    /// Everything not yet handed to the current transport: unnumbered frames
    /// first, then numbered ones after the last handed out.
    pub fn take(&mut self, now_ms: u64) -> Vec<Numbered> {
        let mut out: Vec<Numbered> = self
            .unnumbered
            .drain(..)
            .map(|frame| Numbered { seq: None, frame })
            .collect();
        let skip = (self.sent + 1).saturating_sub(self.first) as usize;
        for (i, entry) in self.entries.iter_mut().enumerate().skip(skip) {
            entry.sent_at = now_ms;
            out.push(Numbered {
                seq: Some(self.first + i as u64),
                frame: entry.frame.clone(),
            });
        }
        self.sent = self.sent.max(self.last_seq());
        if self.first == 1 && self.sent >= 1 {
            // The `connected` reply, once handed out, is never replayed: a
            // resume answers with a fresh one (`greet`). Keeping it would
            // cost every idle session its bytes for the retention time.
            self.pop_front();
        }
        if out.is_empty() {
            // Nothing handed out: keep an idle session free of buffers.
            self.unnumbered = VecDeque::new();
        }
        out
    }

    /// A transport (re)starts after `cursor`: the client has every frame up
    /// to it (they are dropped) and gets everything after it next.
    pub fn resume(&mut self, cursor: u64) -> Result<(), CursorError> {
        let last = self.last_seq();
        if cursor > last {
            return Err(CursorError::Future { cursor, last });
        }
        if cursor + 1 < self.first {
            return Err(CursorError::Gone {
                cursor,
                oldest: self.first,
            });
        }
        while self.first <= cursor {
            self.pop_front();
        }
        self.sent = cursor;
        Ok(())
    }

    /// Drops written frames older than `retain_ms`, and the oldest written
    /// frames while the log holds more than `max_bytes`.
    pub fn trim(&mut self, now_ms: u64, retain_ms: u64, max_bytes: usize) {
        while let Some(entry) = self.entries.front() {
            let written = self.first <= self.sent && entry.sent_at != 0;
            let stale = entry.sent_at + retain_ms < now_ms;
            if written && (stale || self.bytes > max_bytes) {
                self.pop_front();
            } else {
                break;
            }
        }
        if self.entries.is_empty() && self.entries.capacity() > 0 {
            self.entries = VecDeque::new();
        }
    }

    /// Bytes of numbered frames kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn pop_front(&mut self) {
        if let Some(entry) = self.entries.pop_front() {
            self.bytes -= entry.frame.len();
            self.first += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(names: &[&'static str]) -> Vec<Bytes> {
        names
            .iter()
            .map(|n| Bytes::from_static(n.as_bytes()))
            .collect()
    }

    fn seqs(out: &[Numbered]) -> Vec<Option<u64>> {
        out.iter().map(|n| n.seq).collect()
    }

    #[test]
    fn frames_before_connect_are_not_numbered_and_connected_is_one() {
        let mut log = Log::new();
        log.extend(frames(&["err1"]));
        // The second error and the connected reply are still queued.
        log.begin(2);
        log.extend(frames(&["err2", "connected", "push"]));
        let out = log.take(1);
        assert_eq!(seqs(&out), vec![None, None, Some(1), Some(2)]);
        assert_eq!(out[2].frame, Bytes::from_static(b"connected"));
        assert_eq!(log.last_seq(), 2);
    }

    #[test]
    fn take_hands_out_each_frame_once_and_resume_replays_after_the_cursor() {
        let mut log = Log::new();
        log.begin(1);
        log.extend(frames(&["a", "b", "c"]));
        assert_eq!(log.take(1).len(), 3);
        assert!(log.take(1).is_empty());
        log.resume(1).unwrap();
        let out = log.take(2);
        assert_eq!(seqs(&out), vec![Some(2), Some(3)]);
        // The acknowledged frame is gone: resuming before it fails.
        assert_eq!(
            log.resume(0),
            Err(CursorError::Gone {
                cursor: 0,
                oldest: 2
            })
        );
        assert_eq!(
            log.resume(4),
            Err(CursorError::Future { cursor: 4, last: 3 })
        );
        log.resume(3).unwrap();
        assert!(log.take(3).is_empty());
        assert_eq!(log.bytes(), 0);
    }

    #[test]
    fn trim_drops_only_written_frames_past_retention_or_over_the_bound() {
        let mut log = Log::new();
        log.begin(1);
        log.extend(frames(&["connected", "aaaa", "bbbb"]));
        log.take(1_000);
        log.extend(frames(&["cccc"]));
        log.trim(1_500, 1_000, 1 << 20);
        assert_eq!(log.last_seq(), 4);
        log.resume(1).unwrap();
        // Past retention: the written frames go, the unsent one stays.
        log.take(1_000);
        log.extend(frames(&["dddd"]));
        log.trim(2_001, 1_000, 1 << 20);
        assert_eq!(log.bytes(), 4);
        assert_eq!(seqs(&log.take(2_001)), vec![Some(5)]);
        // Over the byte bound: written frames go at once.
        log.trim(2_002, 1_000, 0);
        assert_eq!(log.bytes(), 0);
        assert!(matches!(log.resume(4), Err(CursorError::Gone { .. })));
    }

    #[test]
    fn the_connected_reply_is_not_kept_once_handed_out() {
        let mut log = Log::new();
        log.begin(1);
        log.extend(frames(&["connected", "subscribed"]));
        assert_eq!(seqs(&log.take(1)), vec![Some(1), Some(2)]);
        assert_eq!(log.bytes(), "subscribed".len());
        assert_eq!(log.last_seq(), 2);
        // A resume after it replays the rest; one before it cannot be served.
        log.resume(1).unwrap();
        assert_eq!(seqs(&log.take(2)), vec![Some(2)]);
        assert_eq!(
            log.resume(0),
            Err(CursorError::Gone {
                cursor: 0,
                oldest: 2
            })
        );
    }

    #[test]
    fn a_greeting_goes_first_and_unnumbered() {
        let mut log = Log::new();
        log.begin(1);
        log.extend(frames(&["connected", "x"]));
        log.take(1);
        log.resume(1).unwrap();
        log.greet(Bytes::from_static(b"resumed"));
        assert_eq!(seqs(&log.take(2)), vec![None, Some(2)]);
    }
}
