//! The hub: this node's channels → subscribers, and its connections.
//!
//! Channels live in shards (a std `RwLock<HashMap>` each, never held across
//! an await) so subscribes on different channels rarely contend and fan-out
//! takes only a read lock. Fan-out shares one encoded frame (`Bytes`) with
//! every subscriber's bounded [`Outbound`] queue: no per-subscriber encoding
//! or copying. The hub knows nothing of HTTP, transports or backends.
//!
//! A batch of frames (the pub/sub messages read together from the Redis
//! broker) is queued with [`Hub::publish_quiet`] and its writers woken
//! once, a few per scheduler turn ([`Hub::wake_paced`], see [`pacer`]).

pub mod outbound;
pub mod pacer;
pub mod reorder;
pub mod subscriber;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

pub use outbound::{Drained, Outbound, PushError};
pub use subscriber::Subscriber;

/// A connection's id, unique across nodes (random node prefix + counter).
pub type ClientId = u64;

const SHARDS: usize = 64;

/// What one fan-out did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FanOut {
    /// Frames queued to subscribers.
    pub delivered: usize,
    /// Subscribers whose queue overflowed (they are being disconnected).
    pub overflowed: usize,
}

impl std::ops::AddAssign for FanOut {
    fn add_assign(&mut self, other: FanOut) {
        self.delivered += other.delivered;
        self.overflowed += other.overflowed;
    }
}

/// Writers to wake once a batch of frames is queued (see
/// [`Hub::publish_quiet`]): each queue appears once per batch, since only
/// the push that finds it empty asks for a wake. Dropping it wakes them.
#[derive(Debug, Default)]
pub struct Wakes {
    queues: Vec<Arc<Outbound>>,
    /// The most subscribers one event of the batch reached.
    widest: usize,
}

impl Wakes {
    /// Wakes every writer collected so far.
    pub fn wake_all(&mut self) {
        for queue in self.queues.drain(..) {
            queue.wake();
        }
    }

    /// Writers waiting to be woken.
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        self.wake_all();
    }
}

type ChannelMap = HashMap<Arc<str>, Vec<Arc<Subscriber>>>;

/// A live connection as the hub knows it (for API disconnects and shutdown).
#[derive(Debug, Clone)]
pub struct Connection {
    pub client: ClientId,
    pub user: Arc<str>,
    pub outbound: Arc<Outbound>,
}

/// Channels and connections of this node.
#[derive(Debug)]
pub struct Hub {
    /// channel → subscribers, sharded by channel-name hash.
    channels: Box<[RwLock<ChannelMap>]>,
    /// client → connection, sharded by client id.
    connections: Box<[Mutex<HashMap<ClientId, Connection>>]>,
    /// Wakes the writers of large fan-outs a few at a time.
    pacer: pacer::Pacer,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        Hub {
            channels: (0..SHARDS).map(|_| RwLock::default()).collect(),
            connections: (0..SHARDS).map(|_| Mutex::default()).collect(),
            pacer: pacer::Pacer::default(),
        }
    }

    /// Adds a subscriber; true if it is the channel's first on this node.
    pub fn subscribe(&self, channel: &Arc<str>, subscriber: Arc<Subscriber>) -> bool {
        let mut shard = write(&self.channels[shard_of(channel)]);
        let subs = shard.entry(channel.clone()).or_default();
        subs.push(subscriber);
        subs.len() == 1
    }

    /// The queues of `channel`'s subscribers on this node.
    pub fn subscriber_queues(&self, channel: &str) -> Vec<Arc<Outbound>> {
        read(&self.channels[shard_of(channel)])
            .get(channel)
            .map(|subs| subs.iter().map(|s| s.outbound.clone()).collect())
            .unwrap_or_default()
    }

    /// Whether `channel` has subscribers on this node.
    pub fn has_subscribers(&self, channel: &str) -> bool {
        read(&self.channels[shard_of(channel)]).contains_key(channel)
    }

    /// Removes a client's subscription; true if the channel has no
    /// subscriber left on this node.
    pub fn unsubscribe(&self, channel: &str, client: ClientId) -> bool {
        let mut shard = write(&self.channels[shard_of(channel)]);
        let Some(subs) = shard.get_mut(channel) else {
            return false;
        };
        if let Some(at) = subs.iter().position(|s| s.client == client) {
            subs.swap_remove(at);
        }
        if subs.is_empty() {
            shard.remove(channel);
            return true;
        }
        false
    }

    /// Queues a publication frame to every subscriber of `channel` but `exclude`.
    pub fn publish(
        &self,
        channel: &str,
        offset: u64,
        frame: &Bytes,
        exclude: Option<ClientId>,
    ) -> FanOut {
        self.fan_out(channel, offset, frame, exclude, |queue| queue.wake())
    }

    /// [`Hub::publish`] that leaves waking the subscribers' writers to
    /// `wakes`: a batch of frames queued this way reaches each writer with
    /// one wake-up, so it goes out in one write.
    pub fn publish_quiet(
        &self,
        channel: &str,
        offset: u64,
        frame: &Bytes,
        exclude: Option<ClientId>,
        wakes: &mut Wakes,
    ) -> FanOut {
        let result = self.fan_out(channel, offset, frame, exclude, |queue| {
            wakes.queues.push(queue.clone())
        });
        wakes.widest = wakes.widest.max(result.delivered);
        result
    }

    /// Wakes the writers of a batch queued with [`Hub::publish_quiet`], a
    /// few per scheduler turn when one of its events reached many (see
    /// [`pacer`]).
    pub fn wake_paced(&self, mut wakes: Wakes) {
        self.pacer
            .wake(std::mem::take(&mut wakes.queues), wakes.widest);
    }

    fn fan_out(
        &self,
        channel: &str,
        offset: u64,
        frame: &Bytes,
        exclude: Option<ClientId>,
        mut wake: impl FnMut(&Arc<Outbound>),
    ) -> FanOut {
        let shard = read(&self.channels[shard_of(channel)]);
        let mut result = FanOut::default();
        let Some(subs) = shard.get(channel) else {
            return result;
        };
        for sub in subs {
            if Some(sub.client) == exclude {
                continue;
            }
            match sub.deliver_quiet(offset, frame) {
                Ok(needs_wake) => {
                    result.delivered += 1;
                    if needs_wake {
                        wake(&sub.outbound);
                    }
                }
                Err(PushError::Overflow) => result.overflowed += 1,
                Err(PushError::Closed) => {}
            }
        }
        result
    }

    /// Every channel with subscribers on this node, with their count.
    pub fn channels(&self) -> Vec<(Arc<str>, usize)> {
        let mut all = Vec::new();
        for shard in self.channels.iter() {
            all.extend(read(shard).iter().map(|(c, s)| (c.clone(), s.len())));
        }
        all
    }

    /// Registers a connection once it has authenticated.
    pub fn add_connection(&self, connection: Connection) {
        lock(&self.connections[connection.client as usize % SHARDS])
            .insert(connection.client, connection);
    }

    /// Forgets a connection.
    pub fn remove_connection(&self, client: ClientId) {
        lock(&self.connections[client as usize % SHARDS]).remove(&client);
    }

    /// Every connection (optionally only those of `user`).
    pub fn connections(&self, user: Option<&str>) -> Vec<Connection> {
        let mut all = Vec::new();
        for shard in self.connections.iter() {
            all.extend(
                lock(shard)
                    .values()
                    .filter(|c| user.is_none_or(|u| &*c.user == u))
                    .cloned(),
            );
        }
        all
    }

    /// Number of authenticated connections and of distinct users.
    pub fn connection_stats(&self) -> (usize, usize) {
        let mut clients = 0;
        let mut users = std::collections::HashSet::new();
        for shard in self.connections.iter() {
            let shard = lock(shard);
            clients += shard.len();
            users.extend(shard.values().map(|c| c.user.clone()));
        }
        (clients, users.len())
    }
}

fn shard_of(channel: &str) -> usize {
    let mut hasher = Fnv(0xcbf29ce484222325);
    channel.hash(&mut hasher);
    (hasher.finish() as usize) % SHARDS
}

/// FNV-1a: a fast, fixed hash for picking shards (no DoS concern: a shard
/// is only a lock, the maps inside use std's randomized hasher).
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100000001b3);
        }
    }
}

// Poisoning is ignored throughout: every critical section is a single map
// operation that leaves the map valid even if it unwound.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}
fn lock<T>(lock: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(hub: &Hub, channel: &Arc<str>, client: ClientId) -> Arc<Outbound> {
        let q = Arc::new(Outbound::new(1 << 20));
        hub.subscribe(channel, Subscriber::open_now(client, q.clone()));
        q
    }

    #[test]
    fn publish_reaches_every_subscriber_but_the_excluded_one() {
        let hub = Hub::new();
        let ch: Arc<str> = "chat:1".into();
        let a = sub(&hub, &ch, 1);
        let b = sub(&hub, &ch, 2);
        let frame = Bytes::from_static(b"x");
        assert_eq!(hub.publish(&ch, 1, &frame, Some(2)).delivered, 1);
        assert_eq!(a.queued_bytes(), 1);
        assert_eq!(b.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn a_quiet_batch_queues_everything_in_order_and_wakes_each_writer_once() {
        let hub = Hub::new();
        let (x, y): (Arc<str>, Arc<str>) = ("chat:x".into(), "chat:y".into());
        let a = sub(&hub, &x, 1);
        let b = sub(&hub, &x, 2);
        // One connection subscribed to both channels.
        hub.subscribe(&y, Subscriber::open_now(1, a.clone()));
        let mut wakes = Wakes::default();
        let mut total = FanOut::default();
        for (channel, offset, frame, exclude) in [
            (&x, 1, "x1", None),
            (&y, 1, "y1", None),
            (&x, 2, "x2", Some(2)),
            (&x, 3, "x3", None),
        ] {
            let frame = Bytes::from_static(frame.as_bytes());
            total += hub.publish_quiet(channel, offset, &frame, exclude, &mut wakes);
        }
        assert_eq!(total.delivered, 6);
        assert_eq!(wakes.len(), 2, "one wake per writer");
        let wait = std::time::Duration::from_millis(20);
        assert!(tokio::time::timeout(wait, a.ready()).await.is_err());
        wakes.wake_all();
        tokio::time::timeout(wait, a.ready()).await.unwrap();
        tokio::time::timeout(wait, b.ready()).await.unwrap();
        let frames = |q: &Outbound| match q.drain() {
            Drained::Frames(f) => f.into_iter().collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            frames(&a),
            [&b"x1"[..], b"y1", b"x2", b"x3"].map(Bytes::from_static)
        );
        assert_eq!(frames(&b), [&b"x1"[..], b"x3"].map(Bytes::from_static));
    }

    #[tokio::test]
    async fn dropped_wakes_still_wake_the_writers() {
        let hub = Hub::new();
        let ch: Arc<str> = "c".into();
        let q = sub(&hub, &ch, 1);
        {
            let mut wakes = Wakes::default();
            hub.publish_quiet(&ch, 1, &Bytes::from_static(b"x"), None, &mut wakes);
        }
        tokio::time::timeout(std::time::Duration::from_secs(1), q.ready())
            .await
            .unwrap();
    }

    #[test]
    fn first_and_last_subscriber_are_reported() {
        let hub = Hub::new();
        let ch: Arc<str> = "c".into();
        let q = Arc::new(Outbound::new(64));
        assert!(hub.subscribe(&ch, Subscriber::open_now(1, q.clone())));
        assert!(!hub.subscribe(&ch, Subscriber::open_now(2, q)));
        assert!(!hub.unsubscribe(&ch, 1));
        assert!(hub.unsubscribe(&ch, 2));
        assert!(hub.channels().is_empty());
    }

    #[test]
    fn overflowing_subscriber_is_counted_and_others_still_get_the_frame() {
        let hub = Hub::new();
        let ch: Arc<str> = "c".into();
        let small = Arc::new(Outbound::new(1));
        hub.subscribe(&ch, Subscriber::open_now(1, small.clone()));
        let big = sub(&hub, &ch, 2);
        let frame = Bytes::from_static(b"xx");
        hub.publish(&ch, 1, &frame, None);
        let second = hub.publish(&ch, 2, &frame, None);
        assert_eq!(
            second,
            FanOut {
                delivered: 1,
                overflowed: 1
            }
        );
        assert!(small.is_closed());
        assert_eq!(big.queued_bytes(), 4);
    }
}
