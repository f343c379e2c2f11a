//! The many-node broker: channel events travel through Redis (issue 4).
//!
//! # Connections
//!
//! A [`RedisBroker`] holds two connections to one Redis server:
//!
//! * a multiplexed **command** connection ([`Link`]) shared by the ordered
//!   command queue of [`RedisHistory`] (appends, `PUBLISH`es, control
//!   messages: one queue, so Redis sees them in call order) and by history
//!   reads and presence;
//! * a **pub/sub** connection ([`Feed`]) subscribed to this node's control
//!   channels and to the channel of every Switchboard channel this node
//!   has subscribers of — a hot channel loads only the nodes that care.
//!   Its reader hands the sink every message already read off the
//!   connection (up to `FEED_BATCH`) as one batch
//!   ([`EventSink::deliver_batch`]), so a subscriber is woken once per
//!   batch, not once per message.
//!
//! # Redis names (prefix `P`, `sb:` by default)
//!
//! | name | what |
//! | --- | --- |
//! | `P{<channel>}:m`, `:s`, `:i:<key>` | a channel's stream: see [`RedisHistory`] |
//! | `P{<channel>}:p`, `:pe`, `:pu` | a channel's presence: see [`crate::presence::RedisPresence`] |
//! | `Pch:<channel>` (pub/sub) | the events of one channel, as envelopes |
//! | `Pnode:<node id>` (pub/sub) | control messages for one node |
//! | `Pnodes` (pub/sub) | control messages for every node |
//!
//! # Envelopes
//!
//! A pub/sub message carries one [`ChannelEvent`], its frame already
//! encoded (receiving nodes never touch the JSON):
//!
//! * `p:<offset>:<excluded client id or nothing>:<frame>` — a publication
//!   (written by `lua/append.lua` or by [`RedisBroker::publish`]);
//! * `j:<frame>` — a join or leave push.
//!
//! # Failure
//!
//! While the command connection is down [`Broker::healthy`] is false and
//! appends fail at once with [`HistoryError::Unavailable`]; publishes and
//! control messages are dropped. While the pub/sub connection is down,
//! [`Broker::watch`] fails at once. Both reconnect in the background with
//! capped exponential backoff; after the pub/sub connection is back, every
//! watched channel is subscribed again and [`EventSink::resubscribed`]
//! names them, since their events published meanwhile are lost.
//!
//! # Redis Cluster
//!
//! Not supported: this talks to one Redis. Keys of one channel already
//! share the hash tag `{<channel>}`, so each script touches one slot; a
//! cluster version would also need a cluster client, `SPUBLISH` /
//! `SSUBSCRIBE` (sharded pub/sub, one connection per shard) instead of
//! `PUBLISH` / `SUBSCRIBE`, and the scripts loaded on every primary.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::Duration;

use ::redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use ::redis::{AsyncConnectionConfig, Client, RedisError, Script, Value};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::{Broker, BrokerError, ChannelEvent, EventSink, FrameTemplate};
use crate::history::{AppendDone, BoxFuture, History, HistoryError};
use crate::hub::ClientId;
use crate::stream::AppendRequest;

pub use super::redis_history::RedisHistory;

/// `lua/append.lua`: numbers, stores and publishes a publication.
pub(crate) const APPEND_SOURCE: &str = include_str!("lua/append.lua");
pub(crate) static APPEND: LazyLock<Script> = LazyLock::new(|| Script::new(APPEND_SOURCE));
/// `lua/read.lua`: reads a stream.
const READ_SOURCE: &str = include_str!("lua/read.lua");
pub(crate) static READ: LazyLock<Script> = LazyLock::new(|| Script::new(READ_SOURCE));
/// `lua/presence_add.lua`: adds or refreshes a presence entry.
pub(crate) const PRESENCE_ADD_SOURCE: &str = include_str!("lua/presence_add.lua");
pub(crate) static PRESENCE_ADD: LazyLock<Script> =
    LazyLock::new(|| Script::new(PRESENCE_ADD_SOURCE));
/// `lua/presence_remove.lua`.
const PRESENCE_REMOVE_SOURCE: &str = include_str!("lua/presence_remove.lua");
pub(crate) static PRESENCE_REMOVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(PRESENCE_REMOVE_SOURCE));
/// `lua/presence_read.lua`: cleans expired entries, then reads.
const PRESENCE_READ_SOURCE: &str = include_str!("lua/presence_read.lua");
pub(crate) static PRESENCE_READ: LazyLock<Script> =
    LazyLock::new(|| Script::new(PRESENCE_READ_SOURCE));

/// At most this many pub/sub messages already read off the connection are
/// handed to the sink as one batch.
const FEED_BATCH: usize = 256;

/// Every script, loaded on each (re)connect so `EVALSHA` rarely misses.
const SOURCES: [&str; 5] = [
    APPEND_SOURCE,
    READ_SOURCE,
    PRESENCE_ADD_SOURCE,
    PRESENCE_REMOVE_SOURCE,
    PRESENCE_READ_SOURCE,
];

/// How to reach Redis and name things there.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Prepended to every key and pub/sub channel (isolates deployments
    /// sharing one Redis, and tests).
    pub prefix: String,
    /// Limit for opening a connection.
    pub connect_timeout: Duration,
    /// Limit for an answer; past it the connection counts as broken.
    pub response_timeout: Duration,
    /// How often an idle connection is checked with `PING`.
    pub ping_interval: Duration,
    /// First delay before reconnecting; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// How long a stream's epoch and top offset outlive its last append
    /// at least (like `MemoryBroker`'s idle streams).
    pub stream_idle: Duration,
    /// Appends fail at once while this many commands wait to be sent.
    pub max_queued: usize,
}

impl RedisOptions {
    /// Defaults for `url`: prefix `sb:`, 2 s to connect, 3 s to answer,
    /// a ping every second, reconnects between 50 ms and 5 s apart, idle
    /// streams kept an hour, at most 100 000 queued commands.
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            prefix: "sb:".into(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(3),
            ping_interval: Duration::from_secs(1),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(5),
            stream_idle: Duration::from_secs(3600),
            max_queued: 100_000,
        }
    }

    /// The same with another key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The pub/sub channel of a Switchboard channel.
    pub(crate) fn channel(&self, channel: &str) -> String {
        format!("{}ch:{channel}", self.prefix)
    }

    fn node_channel(&self, node_id: &str) -> String {
        format!("{}node:{node_id}", self.prefix)
    }

    fn all_nodes_channel(&self) -> String {
        format!("{}nodes", self.prefix)
    }
}

/// Milliseconds of a duration, capped at ten years (Redis rejects expiry
/// times that overflow, and Lua numbers must stay exact).
pub(crate) fn millis(d: Duration) -> u64 {
    const CAP: u64 = 10 * 365 * 24 * 3600 * 1000;
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).min(CAP)
}

/// Whether an error means the connection is gone (rather than a command
/// failing on a working connection).
pub(crate) fn connection_problem(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

/// Whether a reply is Redis saying it lacks a script.
pub(crate) fn is_noscript(value: &Value) -> bool {
    matches!(value, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data valid: ignore poisoning.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------
// The command connection

/// A multiplexed command connection that reconnects by itself.
///
/// Users take the current connection with [`Link::get`] (or learn at once
/// that there is none) and report a broken one with [`Link::failed`],
/// which starts reconnecting with capped exponential backoff. A ping every
/// `ping_interval` notices a connection that broke while idle.
pub(crate) struct Link {
    client: Client,
    options: RedisOptions,
    runtime: tokio::runtime::Handle,
    state: Mutex<LinkState>,
    healthy: AtomicBool,
}

struct LinkState {
    conn: Option<MultiplexedConnection>,
    /// Counts connections, so a stale failure report is ignored.
    generation: u64,
    reconnecting: bool,
}

impl Link {
    /// Connects (failing if Redis cannot be reached now) and starts the
    /// health checks.
    pub(crate) async fn open(options: &RedisOptions) -> Result<Arc<Link>, RedisError> {
        let client = Client::open(options.url.as_str())?;
        let conn = connect_commands(&client, options).await?;
        let link = Arc::new(Link {
            client,
            options: options.clone(),
            runtime: tokio::runtime::Handle::current(),
            state: Mutex::new(LinkState {
                conn: Some(conn),
                generation: 0,
                reconnecting: false,
            }),
            healthy: AtomicBool::new(true),
        });
        link.runtime.spawn(ping_loop(
            Arc::downgrade(&link),
            options.ping_interval,
            options.response_timeout,
        ));
        Ok(link)
    }

    /// The current connection and its generation, or why there is none.
    pub(crate) fn get(&self) -> Result<(u64, MultiplexedConnection), HistoryError> {
        let state = lock(&self.state);
        match &state.conn {
            Some(conn) => Ok((state.generation, conn.clone())),
            None => Err(HistoryError::Unavailable(
                "redis command connection is down".into(),
            )),
        }
    }

    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub(crate) fn options(&self) -> &RedisOptions {
        &self.options
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Reports that connection `generation` failed with `why`: drops it if
    /// it is still the current one and reconnects in the background.
    pub(crate) fn failed(self: &Arc<Self>, generation: u64, why: &RedisError) {
        let mut state = lock(&self.state);
        if state.generation != generation || state.conn.is_none() {
            return;
        }
        state.conn = None;
        self.healthy.store(false, Ordering::Relaxed);
        tracing::warn!("redis command connection lost: {why}");
        if !state.reconnecting {
            state.reconnecting = true;
            self.runtime.spawn(reconnect_loop(Arc::downgrade(self)));
        }
    }

    /// Maps an error of connection `generation`, reporting it when the
    /// connection itself is the problem.
    pub(crate) fn error(self: &Arc<Self>, generation: u64, e: RedisError) -> HistoryError {
        if connection_problem(&e) {
            self.failed(generation, &e);
            HistoryError::Unavailable(format!("redis: {e}"))
        } else {
            HistoryError::Backend(format!("redis: {e}"))
        }
    }
}

async fn connect_commands(
    client: &Client,
    options: &RedisOptions,
) -> Result<MultiplexedConnection, RedisError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(options.connect_timeout)
        .set_response_timeout(options.response_timeout);
    let connect = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let mut load = ::redis::pipe();
        for source in SOURCES {
            load.cmd("SCRIPT").arg("LOAD").arg(source).ignore();
        }
        load.query_async::<()>(&mut conn).await?;
        Ok(conn)
    };
    match tokio::time::timeout(options.connect_timeout * 2, connect).await {
        Ok(result) => result,
        Err(_) => Err(timeout_error("connecting to redis timed out")),
    }
}

fn timeout_error(what: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, what))
}

async fn ping_loop(link: Weak<Link>, every: Duration, limit: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(link) = link.upgrade() else { return };
        if let Ok((generation, mut conn)) = link.get() {
            let cmd = ::redis::cmd("PING");
            let ping = cmd.query_async::<Value>(&mut conn);
            let result = match tokio::time::timeout(limit, ping).await {
                Ok(result) => result.map(drop),
                Err(_) => Err(timeout_error("redis did not answer PING")),
            };
            if let Err(e) = result {
                if connection_problem(&e) {
                    link.failed(generation, &e);
                }
            }
        }
    }
}

async fn reconnect_loop(link: Weak<Link>) {
    let (mut delay, max) = match link.upgrade() {
        Some(link) => (link.options.reconnect_min, link.options.reconnect_max),
        None => return,
    };
    loop {
        tokio::time::sleep(delay).await;
        let Some(link) = link.upgrade() else { return };
        match connect_commands(&link.client, &link.options).await {
            Ok(conn) => {
                let mut state = lock(&link.state);
                state.conn = Some(conn);
                state.generation += 1;
                state.reconnecting = false;
                link.healthy.store(true, Ordering::Relaxed);
                tracing::info!("redis command connection is back");
                return;
            }
            Err(e) => {
                tracing::debug!("reconnecting to redis: {e}");
                delay = (delay * 2).min(max);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Envelopes

/// Encodes an event for `PUBLISH` (see the module doc).
pub(crate) fn encode_event(event: &ChannelEvent) -> Vec<u8> {
    match event {
        ChannelEvent::Publication {
            offset,
            frame,
            exclude,
        } => {
            let exclude = exclude.map(|c| c.to_string()).unwrap_or_default();
            let mut out = Vec::with_capacity(frame.len() + 32);
            out.extend_from_slice(format!("p:{offset}:{exclude}:").as_bytes());
            out.extend_from_slice(frame);
            out
        }
        ChannelEvent::Presence { frame } => {
            let mut out = Vec::with_capacity(frame.len() + 2);
            out.extend_from_slice(b"j:");
            out.extend_from_slice(frame);
            out
        }
    }
}

/// Decodes a pub/sub message into an event, or `None` if it is not one.
pub(crate) fn decode_event(payload: &[u8]) -> Option<ChannelEvent> {
    match payload {
        [b'j', b':', frame @ ..] => Some(ChannelEvent::Presence {
            frame: Bytes::copy_from_slice(frame),
        }),
        [b'p', b':', rest @ ..] => {
            let (offset, rest) = split_number(rest)?;
            let (exclude, frame) = split_number(rest)?;
            Some(ChannelEvent::Publication {
                offset: offset?,
                frame: Bytes::copy_from_slice(frame),
                exclude,
            })
        }
        _ => None,
    }
}

/// `<digits or nothing>:<rest>` → (the number, rest).
fn split_number(bytes: &[u8]) -> Option<(Option<u64>, &[u8])> {
    let colon = bytes.iter().position(|&b| b == b':')?;
    let digits = &bytes[..colon];
    let number = if digits.is_empty() {
        None
    } else {
        Some(std::str::from_utf8(digits).ok()?.parse().ok()?)
    };
    Some((number, &bytes[colon + 1..]))
}

/// The publication time in a frame template's tail (`…"time":123}`), so
/// the stored publication carries the time its live frame shows.
pub(crate) fn template_time(template: &FrameTemplate) -> Option<u64> {
    let tail = template.tail.strip_suffix(b"}")?;
    let start = tail.iter().rposition(|b| !b.is_ascii_digit())? + 1;
    if !tail[..start].ends_with(b"\"time\":") {
        return None;
    }
    std::str::from_utf8(&tail[start..]).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------
// The pub/sub side

/// This node's pub/sub subscriptions.
struct Feed {
    options: RedisOptions,
    /// `Pch:`: pub/sub channels of Switchboard channels start with it.
    channel_prefix: String,
    node_channel: String,
    all_channel: String,
    sink: Arc<dyn EventSink>,
    watches: Mutex<Watches>,
    commands: mpsc::UnboundedSender<FeedCommand>,
}

struct Watches {
    /// Whether the pub/sub connection is up (and every watch subscribed).
    connected: bool,
    channels: HashMap<String, Watch>,
}

enum Watch {
    /// `SUBSCRIBE` sent or about to be; these wait for its confirmation.
    Pending(Vec<oneshot::Sender<Result<(), BrokerError>>>),
    /// Subscribed.
    Active,
}

enum FeedCommand {
    Subscribe(String),
    Unsubscribe(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Subscribe,
    Unsubscribe,
}

impl Feed {
    fn connected(&self) -> bool {
        lock(&self.watches).connected
    }

    async fn watch(&self, channel: &str) -> Result<(), BrokerError> {
        let rx = {
            let mut watches = lock(&self.watches);
            if !watches.connected {
                return Err(BrokerError::Unavailable(
                    "redis pub/sub connection is down".into(),
                ));
            }
            let (tx, rx) = oneshot::channel();
            match watches.channels.get_mut(channel) {
                Some(Watch::Active) => return Ok(()),
                Some(Watch::Pending(waiters)) => waiters.push(tx),
                None => {
                    watches
                        .channels
                        .insert(channel.to_string(), Watch::Pending(vec![tx]));
                    if self
                        .commands
                        .send(FeedCommand::Subscribe(channel.to_string()))
                        .is_err()
                    {
                        watches.channels.remove(channel);
                        return Err(BrokerError::Unavailable("broker stopped".into()));
                    }
                }
            }
            rx
        };
        rx.await
            .unwrap_or_else(|_| Err(BrokerError::Unavailable("broker stopped".into())))
    }

    /// Decides what a command needs on the wire (and updates the state).
    fn decide(&self, command: &FeedCommand) -> Option<(String, Op)> {
        let mut watches = lock(&self.watches);
        match command {
            FeedCommand::Subscribe(channel) => match watches.channels.get(channel) {
                Some(Watch::Pending(_)) => Some((channel.clone(), Op::Subscribe)),
                _ => None,
            },
            FeedCommand::Unsubscribe(channel) => {
                // Checked under the lock `watch` takes: a subscriber joining
                // the hub after this check finds no watch and subscribes anew.
                if !matches!(watches.channels.get(channel), Some(Watch::Active))
                    || self.sink.has_subscribers(channel)
                {
                    return None;
                }
                watches.channels.remove(channel);
                watches
                    .connected
                    .then(|| (channel.clone(), Op::Unsubscribe))
            }
        }
    }

    /// Marks a confirmed subscription active and wakes its waiters.
    fn subscribed(&self, channel: &str) {
        let mut watches = lock(&self.watches);
        if let Some(watch) = watches.channels.get_mut(channel) {
            if let Watch::Pending(waiters) = std::mem::replace(watch, Watch::Active) {
                for waiter in waiters {
                    let _ = waiter.send(Ok(()));
                }
            }
        }
    }

    /// The pub/sub connection broke: fails pending watches and returns
    /// the channels that were subscribed (to subscribe again).
    fn disconnected(&self) -> Vec<String> {
        let mut watches = lock(&self.watches);
        watches.connected = false;
        let mut active = Vec::new();
        watches.channels.retain(|channel, watch| match watch {
            Watch::Active => {
                active.push(channel.clone());
                true
            }
            Watch::Pending(waiters) => {
                for waiter in waiters.drain(..) {
                    let _ = waiter.send(Err(BrokerError::Unavailable(
                        "redis pub/sub connection lost".into(),
                    )));
                }
                false
            }
        });
        active
    }

    /// Every watched channel (to subscribe after connecting).
    fn watched(&self) -> Vec<String> {
        lock(&self.watches).channels.keys().cloned().collect()
    }

    /// Hands pub/sub messages read together (`(channel name, payload)`,
    /// in arrival order) to the sink: channel events as one batch, cut
    /// where a control message comes between them so that everything
    /// keeps its order.
    fn receive<'m>(&self, messages: impl IntoIterator<Item = (&'m str, &'m [u8])>) {
        let mut events = Vec::new();
        for (name, payload) in messages {
            if let Some(channel) = name.strip_prefix(self.channel_prefix.as_str()) {
                match decode_event(payload) {
                    Some(event) => events.push((channel, event)),
                    None => tracing::warn!("undecodable redis message on {name}"),
                }
            } else if name == self.node_channel || name == self.all_channel {
                if !events.is_empty() {
                    self.sink.deliver_batch(std::mem::take(&mut events));
                }
                self.sink.control(Bytes::copy_from_slice(payload));
            }
        }
        if !events.is_empty() {
            self.sink.deliver_batch(events);
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Opens a pub/sub connection subscribed to this node's control channels.
async fn open_feed(client: &Client, feed: &Feed) -> Result<(PubSubSink, PubSubStream), RedisError> {
    let options = &feed.options;
    let open = async {
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        sink.subscribe(feed.node_channel.as_str()).await?;
        sink.subscribe(feed.all_channel.as_str()).await?;
        Ok((sink, stream))
    };
    match tokio::time::timeout(options.connect_timeout * 2, open).await {
        Ok(result) => result,
        Err(_) => Err(timeout_error("connecting to redis timed out")),
    }
}

/// Sends one wave of (un)subscriptions concurrently (each channel at most
/// once, so their order does not matter) and waits for every answer, a
/// thousand at a time.
async fn send_wave(
    feed: &Feed,
    sink: &PubSubSink,
    wave: &mut Vec<(String, Op)>,
) -> Result<(), RedisError> {
    const CHUNK: usize = 1000;
    let operations = std::mem::take(wave);
    for chunk in operations.chunks(CHUNK) {
        let sends = chunk.iter().map(|(channel, op)| {
            let mut sink = sink.clone();
            let name = feed.options.channel(channel);
            let op = *op;
            async move {
                match op {
                    Op::Subscribe => sink.subscribe(name).await,
                    Op::Unsubscribe => sink.unsubscribe(name).await,
                }
            }
        });
        let all = futures_util::future::join_all(sends);
        let results = tokio::time::timeout(feed.options.response_timeout, all)
            .await
            .map_err(|_| timeout_error("redis did not confirm a subscription"))?;
        for ((channel, op), result) in chunk.iter().zip(results) {
            result?;
            if *op == Op::Subscribe {
                feed.subscribed(channel);
            }
        }
    }
    Ok(())
}

/// Applies a batch of commands on a live connection.
async fn apply(
    feed: &Feed,
    sink: &PubSubSink,
    commands: Vec<FeedCommand>,
) -> Result<(), RedisError> {
    let mut wave = Vec::new();
    let mut in_wave = HashSet::new();
    for command in &commands {
        let Some((channel, op)) = feed.decide(command) else {
            continue;
        };
        if !in_wave.insert(channel.clone()) {
            // The same channel again: its earlier operation goes first.
            send_wave(feed, sink, &mut wave).await?;
            in_wave.clear();
            in_wave.insert(channel.clone());
        }
        wave.push((channel, op));
    }
    send_wave(feed, sink, &mut wave).await
}

/// Owns the pub/sub connection: applies watch changes, reads messages,
/// pings, and reconnects (subscribing everything again) when it breaks.
async fn run_feed(
    feed: Arc<Feed>,
    client: Client,
    mut commands: mpsc::UnboundedReceiver<FeedCommand>,
    first: (PubSubSink, PubSubStream),
) {
    let mut connection = Some(first);
    let mut lost: Vec<String> = Vec::new();
    let mut delay = feed.options.reconnect_min;
    loop {
        let (sink, stream) = match connection.take() {
            Some(c) => c,
            None => {
                // Wait, applying unsubscriptions locally, then try again.
                let deadline = tokio::time::Instant::now() + delay;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => break,
                        command = commands.recv() => match command {
                            Some(command) => {
                                feed.decide(&command);
                            }
                            None => return,
                        },
                    }
                }
                delay = (delay * 2).min(feed.options.reconnect_max);
                match open_feed(&client, &feed).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!("reconnecting redis pub/sub: {e}");
                        continue;
                    }
                }
            }
        };
        // Subscribe every watched channel, then open up.
        let mut wave: Vec<(String, Op)> = feed
            .watched()
            .into_iter()
            .map(|channel| (channel, Op::Subscribe))
            .collect();
        if let Err(e) = send_wave(&feed, &sink, &mut wave).await {
            tracing::debug!("resubscribing redis pub/sub: {e}");
            continue;
        }
        lock(&feed.watches).connected = true;
        delay = feed.options.reconnect_min;
        if !lost.is_empty() {
            tracing::info!(
                "redis pub/sub connection is back; {} channels resubscribed",
                lost.len()
            );
            let watched = feed.watched().into_iter().collect::<HashSet<_>>();
            lost.retain(|channel| watched.contains(channel));
            feed.sink.resubscribed(&lost);
            lost.clear();
        }

        let reader_feed = feed.clone();
        let mut reader = tokio::spawn(async move {
            let mut stream = stream;
            let mut batch = Vec::with_capacity(FEED_BATCH);
            while let Some(first) = stream.next().await {
                // Everything already read off the connection goes out as
                // one batch: one wake-up per subscriber, not one per message.
                batch.push(first);
                let mut ended = false;
                while batch.len() < FEED_BATCH {
                    match stream.next().now_or_never() {
                        Some(Some(message)) => batch.push(message),
                        Some(None) => {
                            ended = true;
                            break;
                        }
                        None => break,
                    }
                }
                reader_feed.receive(
                    batch
                        .iter()
                        .map(|m| (m.get_channel_name(), m.get_payload_bytes())),
                );
                batch.clear();
                if ended {
                    break;
                }
            }
        });
        // The reader (and with it the connection) ends with this task.
        let _reader_guard = AbortOnDrop(reader.abort_handle());
        let mut ping = tokio::time::interval(feed.options.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let why: String = loop {
            tokio::select! {
                command = commands.recv() => {
                    let Some(command) = command else {
                        reader.abort();
                        return;
                    };
                    let mut batch = vec![command];
                    while let Ok(more) = commands.try_recv() {
                        batch.push(more);
                    }
                    if let Err(e) = apply(&feed, &sink, batch).await {
                        break e.to_string();
                    }
                }
                _ = &mut reader => break "connection closed".into(),
                _ = ping.tick() => {
                    let mut pinger = sink.clone();
                    let pong = tokio::time::timeout(
                        feed.options.response_timeout,
                        pinger.ping::<Value>(),
                    )
                    .await;
                    match pong {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => break e.to_string(),
                        Err(_) => break "no answer to PING".into(),
                    }
                }
            }
        };
        reader.abort();
        drop(sink);
        tracing::warn!("redis pub/sub connection lost: {why}");
        lost = feed.disconnected();
    }
}

// ---------------------------------------------------------------------------
// The broker

/// Moves channel events between nodes through Redis and keeps non-persisted
/// history there (see the module doc).
pub struct RedisBroker {
    node_id: String,
    options: RedisOptions,
    link: Arc<Link>,
    history: RedisHistory,
    feed: Arc<Feed>,
    feed_task: tokio::task::AbortHandle,
}

impl RedisBroker {
    /// Connects to the Redis at `url` (key prefix `sb:`) as node `node_id`,
    /// delivering events of watched channels to `sink`.
    pub async fn connect(
        url: &str,
        node_id: &str,
        sink: Arc<dyn EventSink>,
    ) -> Result<Arc<RedisBroker>, BrokerError> {
        RedisBroker::connect_with(RedisOptions::new(url), node_id, sink).await
    }

    /// [`RedisBroker::connect`] with every option.
    pub async fn connect_with(
        options: RedisOptions,
        node_id: &str,
        sink: Arc<dyn EventSink>,
    ) -> Result<Arc<RedisBroker>, BrokerError> {
        let unavailable = |e: RedisError| BrokerError::Unavailable(format!("redis: {e}"));
        let link = Link::open(&options).await.map_err(unavailable)?;
        let history = RedisHistory::with_link(link.clone());
        let client = Client::open(options.url.as_str()).map_err(unavailable)?;
        let (commands, receiver) = mpsc::unbounded_channel();
        let feed = Arc::new(Feed {
            channel_prefix: options.channel(""),
            node_channel: options.node_channel(node_id),
            all_channel: options.all_nodes_channel(),
            options: options.clone(),
            sink,
            watches: Mutex::new(Watches {
                connected: false,
                channels: HashMap::new(),
            }),
            commands,
        });
        let first = open_feed(&client, &feed).await.map_err(unavailable)?;
        lock(&feed.watches).connected = true;
        let feed_task =
            tokio::spawn(run_feed(feed.clone(), client, receiver, first)).abort_handle();
        Ok(Arc::new(RedisBroker {
            node_id: node_id.to_string(),
            options,
            link,
            history,
            feed,
            feed_task,
        }))
    }

    /// This node's id (its control channel is `<prefix>node:<id>`).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The Redis history this broker appends to (also [`Broker::history`]).
    pub fn redis_history(&self) -> &RedisHistory {
        &self.history
    }

    /// Presence in the same Redis over this broker's command connection;
    /// entries of this node expire `ttl` after it stops refreshing them.
    pub fn presence(&self, ttl: Duration) -> crate::presence::RedisPresence {
        crate::presence::RedisPresence::with_link(self.link.clone(), ttl)
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.feed_task.abort();
    }
}

impl Broker for RedisBroker {
    fn history(&self) -> &dyn History {
        &self.history
    }

    fn publish(&self, channel: &str, event: ChannelEvent) {
        self.history
            .publish(self.options.channel(channel), encode_event(&event));
    }

    fn publishes_on_append(&self) -> bool {
        true
    }

    fn append_and_publish(
        &self,
        request: AppendRequest,
        frame: FrameTemplate,
        exclude: Option<ClientId>,
        done: AppendDone,
    ) -> Result<(), (AppendRequest, AppendDone)> {
        let channel = self.options.channel(&request.channel);
        self.history
            .append_publishing(request, Some((channel, frame, exclude)), done);
        Ok(())
    }

    fn watch<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.feed.watch(channel))
    }

    fn unwatch(&self, channel: &str) {
        let _ = self
            .feed
            .commands
            .send(FeedCommand::Unsubscribe(channel.to_string()));
    }

    fn healthy(&self) -> bool {
        self.link.healthy() && self.feed.connected()
    }

    fn control(&self, to: Option<&str>, message: Bytes) {
        let channel = match to {
            Some(node) => self.options.node_channel(node),
            None => self.options.all_nodes_channel(),
        };
        self.history.publish(channel, message.to_vec());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let frame = Bytes::from_static(br#"{"type":"publication","x":":"}"#);
        for exclude in [None, Some(0), Some(u64::MAX)] {
            let event = ChannelEvent::Publication {
                offset: 42,
                frame: frame.clone(),
                exclude,
            };
            match decode_event(&encode_event(&event)) {
                Some(ChannelEvent::Publication {
                    offset,
                    frame: f,
                    exclude: e,
                }) => {
                    assert_eq!((offset, &f, e), (42, &frame, exclude));
                }
                other => panic!("decoded {other:?}"),
            }
        }
        let presence = ChannelEvent::Presence {
            frame: frame.clone(),
        };
        match decode_event(&encode_event(&presence)) {
            Some(ChannelEvent::Presence { frame: f }) => assert_eq!(f, frame),
            other => panic!("decoded {other:?}"),
        }
        assert_eq!(encode_event(&presence)[..2], *b"j:");
        for bad in [&b""[..], b"x:1::{}", b"p:", b"p:1", b"p:x::{}", b"p::1:{}"] {
            assert!(decode_event(bad).is_none(), "{bad:?}");
        }
    }

    /// Records what a feed hands over: batches of (channel, offset or 0)
    /// and control messages, in order.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl EventSink for Recorder {
        fn deliver(&self, _: &str, _: ChannelEvent) {
            panic!("the feed delivers in batches");
        }
        fn deliver_batch(&self, events: Vec<(&str, ChannelEvent)>) {
            let items: Vec<String> = events
                .iter()
                .map(|(channel, event)| match event {
                    ChannelEvent::Publication { offset, .. } => format!("{channel}@{offset}"),
                    ChannelEvent::Presence { .. } => format!("{channel}@join"),
                })
                .collect();
            lock(&self.0).push(format!("batch[{}]", items.join(" ")));
        }
        fn control(&self, message: Bytes) {
            lock(&self.0).push(format!("control {}", String::from_utf8_lossy(&message)));
        }
    }

    #[test]
    fn a_feed_batch_keeps_its_order_around_control_messages() {
        let options = RedisOptions::new("redis://unused").with_prefix("t:");
        let recorder = Arc::new(Recorder::default());
        let feed = Feed {
            channel_prefix: options.channel(""),
            node_channel: options.node_channel("n1"),
            all_channel: options.all_nodes_channel(),
            options,
            sink: recorder.clone(),
            watches: Mutex::new(Watches {
                connected: true,
                channels: HashMap::new(),
            }),
            commands: mpsc::unbounded_channel().0,
        };
        let publication = |offset: u64| {
            encode_event(&ChannelEvent::Publication {
                offset,
                frame: Bytes::from_static(b"{}"),
                exclude: None,
            })
        };
        let join = encode_event(&ChannelEvent::Presence {
            frame: Bytes::from_static(b"{}"),
        });
        let messages: Vec<(&str, Vec<u8>)> = vec![
            ("t:ch:a", publication(1)),
            ("t:ch:b", publication(7)),
            ("t:ch:a", join),
            ("t:node:n1", b"hello".to_vec()),
            ("t:ch:a", b"garbage".to_vec()),
            ("t:ch:a", publication(2)),
            ("t:nodes", b"all".to_vec()),
            ("t:node:other", b"not ours".to_vec()),
            ("t:ch:b", publication(8)),
        ];
        feed.receive(messages.iter().map(|(n, p)| (*n, p.as_slice())));
        assert_eq!(
            *lock(&recorder.0),
            [
                "batch[a@1 b@7 a@join]",
                "control hello",
                "batch[a@2]",
                "control all",
                "batch[b@8]",
            ]
        );
    }

    #[test]
    fn the_lua_frame_matches_frame_template_render() {
        // append.lua renders `head .. offset .. ',"epoch":"' .. epoch .. tail`.
        let template = FrameTemplate {
            head: Bytes::from_static(b"{\"offset\":"),
            tail: Bytes::from_static(b"\",\"time\":17}"),
        };
        let lua = [
            &template.head[..],
            b"7",
            b",\"epoch\":\"",
            b"ab",
            &template.tail[..],
        ]
        .concat();
        assert_eq!(template.render(7, "ab"), lua);
        assert_eq!(template_time(&template), Some(17));
    }

    #[test]
    fn template_time_reads_the_real_template() {
        let publication = crate::stream::Publication {
            offset: 0,
            data: crate::stream::RawJson::from_string("{\"time\":5}".into()).unwrap(),
            info: None,
            time: 1_700_000_000_123,
        };
        let template = crate::protocol::frames::publication_template("c", &publication);
        assert_eq!(template_time(&template), Some(1_700_000_000_123));
        let broken = FrameTemplate {
            head: Bytes::new(),
            tail: Bytes::from_static(b"\"x\":5}"),
        };
        assert_eq!(template_time(&broken), None);
    }
}
