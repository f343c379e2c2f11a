//! Ephemeral channel history in this process's memory.
//!
//! Each stream gets a fresh epoch when it is created, so after a restart a
//! client holding an old position learns its history is gone. `append`
//! calls its callback while still holding the stream's shard lock: appends
//! to one channel are numbered and reported strictly in order, which lets
//! the caller fan out inside the callback.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::history::{AppendDone, BoxFuture, History, HistoryError};
use crate::stream::{
    new_epoch, now_millis, AppendOutcome, AppendRequest, HistoryPage, HistoryQuery, Publication,
    StreamPosition,
};

const SHARDS: usize = 32;

type Streams = HashMap<Arc<str>, Stream>;

#[derive(Debug)]
struct Stream {
    epoch: String,
    top: u64,
    /// Retained publications, oldest first.
    publications: VecDeque<Publication>,
    /// idempotency key → (offset given, expiry in ms).
    keys: HashMap<String, (u64, u64)>,
    /// TTL of the last append, applied on reads.
    ttl: Duration,
    /// When the stream last changed (ms), for sweeping idle streams.
    touched: u64,
}

impl Stream {
    fn new(now: u64) -> Self {
        Stream {
            epoch: new_epoch(),
            top: 0,
            publications: VecDeque::new(),
            keys: HashMap::new(),
            ttl: Duration::MAX,
            touched: now,
        }
    }

    fn drop_expired(&mut self, now: u64) {
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        while self
            .publications
            .front()
            .is_some_and(|p| p.time.saturating_add(ttl) <= now)
        {
            self.publications.pop_front();
        }
    }
}

/// Channel streams held in memory, sharded by channel.
#[derive(Debug)]
pub struct MemoryHistory {
    shards: Box<[Mutex<Streams>]>,
}

impl Default for MemoryHistory {
    fn default() -> Self {
        MemoryHistory::new()
    }
}

impl MemoryHistory {
    pub fn new() -> Self {
        MemoryHistory {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Forgets streams untouched for `idle` and with no retained
    /// publication; returns how many were removed.
    pub fn sweep(&self, idle: Duration) -> usize {
        let now = now_millis();
        let idle = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let before = shard.len();
            shard.retain(|_, s| {
                s.drop_expired(now);
                s.keys.retain(|_, (_, expires)| *expires > now);
                !(s.publications.is_empty()
                    && s.keys.is_empty()
                    && s.touched.saturating_add(idle) <= now)
            });
            removed += before - shard.len();
        }
        removed
    }

    fn shard(&self, channel: &str) -> MutexGuard<'_, Streams> {
        let hash = channel
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        lock(&self.shards[hash as usize % SHARDS])
    }
}

impl History for MemoryHistory {
    fn append(&self, request: AppendRequest, done: AppendDone) {
        let now = now_millis();
        let mut shard = self.shard(&request.channel);
        let stream = shard
            .entry(request.channel.clone())
            .or_insert_with(|| Stream::new(now));
        if let Some(key) = &request.idempotency_key {
            if let Some((offset, expires)) = stream.keys.get(key) {
                if *expires > now {
                    let position = StreamPosition {
                        offset: *offset,
                        epoch: stream.epoch.clone(),
                    };
                    done(Ok(AppendOutcome::Duplicate(position)));
                    return;
                }
            }
        }
        stream.top += 1;
        stream.touched = now;
        stream.ttl = request.limits.ttl;
        let publication = Publication {
            offset: stream.top,
            data: request.data,
            info: request.info,
            time: now,
        };
        if let Some(key) = request.idempotency_key {
            let window =
                u64::try_from(request.limits.idempotency_window.as_millis()).unwrap_or(u64::MAX);
            stream
                .keys
                .insert(key, (stream.top, now.saturating_add(window)));
            if stream.keys.len() > 64 && stream.top % 64 == 0 {
                stream.keys.retain(|_, (_, expires)| *expires > now);
            }
        }
        if request.limits.size > 0 {
            stream.publications.push_back(publication.clone());
            while stream.publications.len() > request.limits.size {
                stream.publications.pop_front();
            }
        } else {
            stream.publications.clear();
        }
        stream.drop_expired(now);
        let epoch = stream.epoch.clone();
        // Called under the shard lock on purpose: see the module doc.
        done(Ok(AppendOutcome::Appended { publication, epoch }));
    }

    fn read<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, HistoryError>> {
        let now = now_millis();
        let mut shard = self.shard(channel);
        let stream = shard
            .entry(Arc::from(channel))
            .or_insert_with(|| Stream::new(now));
        stream.drop_expired(now);
        let page = page(&stream.epoch, stream.top, &stream.publications, &query);
        Box::pin(std::future::ready(Ok(page)))
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), HistoryError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Answers `query` from a stream's retained publications (oldest first).
fn page(
    epoch: &str,
    top: u64,
    retained: &VecDeque<Publication>,
    query: &HistoryQuery,
) -> HistoryPage {
    let position = StreamPosition {
        offset: top,
        epoch: epoch.to_string(),
    };
    let latest = |limit: usize| -> Vec<Publication> {
        let skip = retained.len().saturating_sub(limit);
        retained.iter().skip(skip).cloned().collect()
    };
    match &query.since {
        Some(since) if since.epoch == epoch && since.offset <= top => {
            let after: Vec<&Publication> = retained
                .iter()
                .filter(|p| p.offset > since.offset)
                .collect();
            let complete =
                since.offset == top || after.first().is_some_and(|p| p.offset == since.offset + 1);
            let cut = after.len() > query.limit;
            HistoryPage {
                position,
                publications: after.into_iter().take(query.limit).cloned().collect(),
                recovered: complete && !cut,
            }
        }
        Some(_) => HistoryPage {
            position,
            publications: latest(query.limit),
            recovered: false,
        },
        None if query.reverse => HistoryPage {
            position,
            publications: retained.iter().rev().take(query.limit).cloned().collect(),
            recovered: false,
        },
        None => HistoryPage {
            position,
            publications: latest(query.limit),
            recovered: false,
        },
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the map valid: ignore poisoning.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
