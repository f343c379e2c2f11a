//! The node: one running Switchboard, tying the hub, broker, store,
//! presence, token verifier and metrics together.
//!
//! Transports and HTTP handlers hold an `Arc<Node>`; nothing in here knows
//! about HTTP. Publishing goes: namespace rules → history append (which
//! numbers the publication) → encode the push once → broker → every node's
//! hub → subscriber queues.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::auth::Verifier;
use crate::broker::{Broker, ChannelEvent, EventSink, MemoryBroker, RedisBroker, RedisOptions};
use crate::channel::ChannelName;
use crate::cluster::{Cluster, Control};
use crate::codes::{CommandError, Disconnect, ErrorCode};
use crate::config::{Config, NamespaceConfig};
use crate::history::{History, HistoryError};
use crate::hub::reorder::{Ready, Reorder};
use crate::hub::{ClientId, FanOut, Hub, Wakes};
use crate::metrics::Metrics;
use crate::presence::{MemoryPresence, Presence};
use crate::protocol::frames;
use crate::session::SessionRegistry;
use crate::store::{PostgresStore, SqliteStore};
use crate::stream::{
    AppendOutcome, AppendRequest, ClientInfo, HistoryLimits, HistoryPage, HistoryQuery, RawJson,
    StreamPosition,
};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Key(#[from] crate::auth::KeyError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Backend(String),
}

/// Delivers broker events into the local hub, counting them.
struct LocalDelivery {
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    /// Publications come from other nodes: put them in offset order.
    ordered: bool,
    reorder: Arc<Reorder>,
    /// The node, for control messages (set once it exists).
    node: OnceLock<Weak<Node>>,
}

impl EventSink for LocalDelivery {
    fn has_subscribers(&self, channel: &str) -> bool {
        self.hub.has_subscribers(channel)
    }

    fn control(&self, message: bytes::Bytes) {
        if let Some(node) = self.node.get().and_then(Weak::upgrade) {
            tokio::spawn(crate::cluster::handle(node, message));
        }
    }

    fn resubscribed(&self, channels: &[String]) {
        // Publications of these channels may have been missed while the
        // broker was away: their subscribers reconnect and recover from
        // history with `since` (their sessions end, so nothing is resumed
        // with a gap).
        let d: Disconnect = crate::codes::DisconnectCode::InsufficientState.into();
        let frame = frames::disconnect(&d);
        for channel in channels {
            for outbound in self.hub.subscriber_queues(channel) {
                outbound.close(d.clone(), Some(frame.clone()));
            }
        }
    }

    fn deliver(&self, channel: &str, event: ChannelEvent) {
        match event {
            // From other nodes: through `Reorder`, as a batch of one.
            event @ ChannelEvent::Publication { .. } if self.ordered => {
                self.deliver_batch(vec![(channel, event)])
            }
            ChannelEvent::Publication {
                offset,
                frame,
                exclude,
            } => fan_out(
                &self.hub,
                &self.metrics,
                channel,
                [Ready {
                    offset,
                    frame,
                    exclude,
                }],
            ),
            ChannelEvent::Presence { frame } => {
                let result = self.hub.publish(channel, 0, &frame, None);
                count(&self.metrics, result);
            }
        }
    }

    fn deliver_batch(&self, events: Vec<(&str, ChannelEvent)>) {
        let (ready, gaps) = self.order(events);
        // Every frame of the batch is queued before any writer wakes up,
        // and the writers wake a few at a time, so the broker's replies and
        // the next messages are not queued behind all of them.
        let mut wakes = Wakes::default();
        let mut total = FanOut::default();
        for (channel, r) in &ready {
            total += self
                .hub
                .publish_quiet(channel, r.offset, &r.frame, r.exclude, &mut wakes);
        }
        self.hub.wake_paced(wakes);
        count(&self.metrics, total);
        if gaps.is_empty() {
            return;
        }
        if let Some(node) = self.node.get().and_then(Weak::upgrade) {
            for channel in gaps {
                tokio::spawn(fill_gap(node.clone(), channel.to_owned()));
            }
        }
    }
}

impl LocalDelivery {
    /// The frames a batch of broker events releases, in order: each
    /// publication through [`Reorder`] (one lock for the batch), join and
    /// leave pushes as they come; and the channels where a gap opened.
    fn order<'c>(
        &self,
        events: Vec<(&'c str, ChannelEvent)>,
    ) -> (Vec<(&'c str, Ready)>, Vec<&'c str>) {
        let mut out = Vec::with_capacity(events.len());
        let mut gaps = Vec::new();
        let mut reorder = self.ordered.then(|| self.reorder.batch());
        for (channel, event) in events {
            match event {
                ChannelEvent::Publication {
                    offset,
                    frame,
                    exclude,
                } => {
                    let publication = Ready {
                        offset,
                        frame,
                        exclude,
                    };
                    match reorder.as_mut() {
                        Some(reorder) => {
                            let accepted = reorder.accept(channel, publication);
                            out.extend(accepted.ready.into_iter().map(|r| (channel, r)));
                            if accepted.gap_opened {
                                gaps.push(channel);
                            }
                        }
                        None => out.push((channel, publication)),
                    }
                }
                // Offset 0: a join or leave push, never held or deduplicated.
                ChannelEvent::Presence { frame } => out.push((
                    channel,
                    Ready {
                        offset: 0,
                        frame,
                        exclude: None,
                    },
                )),
            }
        }
        (out, gaps)
    }
}

/// Queues publications to the local subscribers of `channel`, in order.
fn fan_out(hub: &Hub, metrics: &Metrics, channel: &str, ready: impl IntoIterator<Item = Ready>) {
    for r in ready {
        count(metrics, hub.publish(channel, r.offset, &r.frame, r.exclude));
    }
}

fn count(metrics: &Metrics, fan_out: crate::hub::FanOut) {
    metrics
        .deliveries
        .fetch_add(fan_out.delivered as u64, Relaxed);
    if fan_out.overflowed > 0 {
        metrics
            .queue_overflows
            .fetch_add(fan_out.overflowed as u64, Relaxed);
    }
}

/// How long a node waits for a missing offset before reading history.
const GAP_WAIT: Duration = Duration::from_millis(200);

/// Fills a gap in `channel`'s publications from history once it has lasted
/// [`GAP_WAIT`] (see [`Reorder`]).
async fn fill_gap(node: Arc<Node>, channel: String) {
    for _ in 0..50 {
        tokio::time::sleep(GAP_WAIT).await;
        let Some((next, first, epoch)) = node.reorder.gap(&channel, GAP_WAIT) else {
            if node.reorder.has_gap(&channel) {
                continue;
            }
            return;
        };
        let found = match node.resolve(&channel) {
            Ok((_, ns)) if ns.history_size > 0 => {
                let query = HistoryQuery {
                    since: Some(StreamPosition {
                        offset: next - 1,
                        epoch: epoch.clone(),
                    }),
                    limit: (first - next) as usize,
                    reverse: false,
                };
                match node.history(&channel, &ns.clone(), query).await {
                    Ok(page) => page
                        .publications
                        .iter()
                        .filter(|p| p.offset < first)
                        .map(|p| Ready {
                            offset: p.offset,
                            frame: frames::publication(&channel, &epoch, p),
                            exclude: None,
                        })
                        .collect(),
                    Err(e) => {
                        tracing::warn!("filling a gap in {channel}: {}", e.message);
                        continue;
                    }
                }
            }
            _ => Vec::new(),
        };
        let ready = node.reorder.fill(&channel, found);
        fan_out(&node.hub, &node.metrics, &channel, ready);
    }
}

/// A submitted publication's position, once its history has it (see
/// [`Node::publish`]).
pub struct Published {
    rx: oneshot::Receiver<Result<AppendOutcome, HistoryError>>,
    metrics: Arc<Metrics>,
}

impl Future for Published {
    type Output = Result<StreamPosition, CommandError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = ready!(Pin::new(&mut self.rx).poll(cx))
            .map_err(|_| internal("history dropped the append"))
            .and_then(|r| r.map_err(history_error));
        if let Ok(AppendOutcome::Appended { .. }) = outcome {
            self.metrics.publications.fetch_add(1, Relaxed);
        }
        Poll::Ready(outcome.map(|o| o.position()))
    }
}

/// A running node.
pub struct Node {
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    /// Durable history for namespaces with `persist = true`.
    pub store: Arc<dyn History>,
    pub presence: Arc<dyn Presence>,
    pub verifier: Verifier,
    pub metrics: Arc<Metrics>,
    /// When the node started (for `/api/info`).
    pub started: std::time::Instant,
    /// High bits of every client id minted here (random per start).
    client_prefix: u64,
    next_client: AtomicU64,
    /// Flips to true when the node starts shutting down.
    shutdown: watch::Sender<bool>,
    /// Connected sessions, by resume token.
    pub sessions: SessionRegistry,
    /// This node's id: the prefix of its session ids, its control address.
    pub id: Arc<str>,
    /// Requests to other nodes in flight.
    pub cluster: Cluster,
    /// Offset order for publications from other nodes.
    pub reorder: Arc<Reorder>,
}

impl Node {
    /// Builds a node from a resolved configuration (secrets present),
    /// connecting to its broker and store.
    pub async fn start(config: Config) -> Result<Arc<Node>, StartError> {
        let verifier = Verifier::new(
            config.auth.hmac_secret.as_deref(),
            config.auth.rsa_public_key.as_deref(),
            config.auth.ecdsa_public_key.as_deref(),
        )?;
        let id: Arc<str> = crate::random::token(6).into();
        let hub = Arc::new(Hub::new());
        let metrics = Arc::new(Metrics::default());
        let reorder = Arc::new(Reorder::new());
        let sink = Arc::new(LocalDelivery {
            hub: hub.clone(),
            metrics: metrics.clone(),
            ordered: config.broker != "memory",
            reorder: reorder.clone(),
            node: OnceLock::new(),
        });
        let (broker, presence): (Arc<dyn Broker>, Arc<dyn Presence>) = if config.broker == "memory"
        {
            (
                Arc::new(MemoryBroker::new(sink.clone())),
                Arc::new(MemoryPresence::new()),
            )
        } else {
            let options = RedisOptions::new(&config.broker).with_prefix(&config.redis_prefix);
            let broker = RedisBroker::connect_with(options, &id, sink.clone())
                .await
                .map_err(|e| StartError::Backend(format!("broker: {e}")))?;
            let presence = Arc::new(broker.presence(config.presence_ttl));
            (broker, presence)
        };
        let store: Arc<dyn History> = if config.store == "sqlite" {
            Arc::new(SqliteStore::open(&config.data_dir.join("switchboard.db"))?)
        } else {
            Arc::new(PostgresStore::connect(&config.store).await?)
        };
        let node = Arc::new(Node {
            config: Arc::new(config),
            hub,
            broker,
            store,
            presence,
            verifier,
            metrics,
            started: std::time::Instant::now(),
            client_prefix: (crate::random::u64() & 0xFFFFF) << 40,
            next_client: AtomicU64::new(1),
            shutdown: watch::channel(false).0,
            sessions: SessionRegistry::new(),
            id,
            cluster: Cluster::new(),
            reorder,
        });
        let _ = sink.node.set(Arc::downgrade(&node));
        Ok(node)
    }

    /// A new client id, unique across nodes with high probability.
    pub fn new_client_id(&self) -> ClientId {
        self.client_prefix | (self.next_client.fetch_add(1, Relaxed) & 0xFF_FFFF_FFFF)
    }

    /// The namespace of a channel, or 102 if it is not configured.
    pub fn namespace(&self, channel: &ChannelName) -> Result<&NamespaceConfig, CommandError> {
        self.config.namespace(channel.namespace).ok_or_else(|| {
            CommandError::with(
                ErrorCode::UnknownChannel,
                format!(
                    "namespace `{}` is not configured",
                    channel.namespace.unwrap_or("")
                ),
            )
        })
    }

    /// Validates a channel name and finds its namespace.
    pub fn resolve<'c>(
        &self,
        channel: &'c str,
    ) -> Result<(ChannelName<'c>, &NamespaceConfig), CommandError> {
        let name = ChannelName::parse(channel, self.config.client.max_channel_length)?;
        let ns = self.namespace(&name)?;
        Ok((name, ns))
    }

    /// The history that holds a namespace's streams.
    pub fn history_of(&self, ns: &NamespaceConfig) -> &dyn History {
        if ns.persist {
            &*self.store
        } else {
            self.broker.history()
        }
    }

    /// Appends a publication to `channel`'s stream and fans it out: hands
    /// it to its history (and broker) at once and returns what waits for
    /// its position. Publications submitted one after the other get offsets
    /// in that order, whenever they are awaited: a connection may have
    /// several in flight.
    pub fn publish(
        &self,
        channel: &str,
        ns: &NamespaceConfig,
        data: RawJson,
        info: Option<ClientInfo>,
        idempotency_key: Option<String>,
        publisher: Option<ClientId>,
    ) -> Result<Published, CommandError> {
        if data.get().len() > self.config.client.max_data_size {
            return Err(CommandError::with(
                ErrorCode::MessageTooLarge,
                format!("data is over {} bytes", self.config.client.max_data_size),
            ));
        }
        let channel: Arc<str> = Arc::from(channel);
        let request = AppendRequest {
            channel: channel.clone(),
            data,
            info,
            idempotency_key,
            limits: limits(ns),
        };
        let exclude = if ns.exclude_publisher {
            publisher
        } else {
            None
        };
        let (tx, rx) = oneshot::channel();
        let mut request = request;
        let mut done: crate::history::AppendDone = Box::new(move |result| {
            let _ = tx.send(result);
        });
        if !ns.persist && self.broker.publishes_on_append() {
            // The broker's own history: append and publish in one step
            // where it can (Redis).
            let template = frames::publication_template(
                &channel,
                &crate::stream::Publication {
                    offset: 0,
                    data: request.data.clone(),
                    info: request.info.clone(),
                    time: crate::stream::now_millis(),
                },
            );
            match self
                .broker
                .append_and_publish(request, template, exclude, done)
            {
                Ok(()) => return Ok(self.published(rx)),
                Err((r, d)) => {
                    request = r;
                    done = d;
                }
            }
        }
        let broker = self.broker.clone();
        self.history_of(ns).append(
            request,
            Box::new(move |result| {
                if let Ok(AppendOutcome::Appended { publication, epoch }) = &result {
                    let frame = frames::publication(&channel, epoch, publication);
                    broker.publish(
                        &channel,
                        ChannelEvent::Publication {
                            offset: publication.offset,
                            frame,
                            exclude,
                        },
                    );
                }
                done(result);
            }),
        );
        Ok(self.published(rx))
    }

    /// What waits for an append's outcome and counts it.
    fn published(&self, rx: oneshot::Receiver<Result<AppendOutcome, HistoryError>>) -> Published {
        Published {
            rx,
            metrics: self.metrics.clone(),
        }
    }

    /// Reads a channel's history.
    pub async fn history(
        &self,
        channel: &str,
        ns: &NamespaceConfig,
        query: HistoryQuery,
    ) -> Result<HistoryPage, CommandError> {
        self.history_of(ns)
            .read(channel, query)
            .await
            .map_err(history_error)
    }

    /// Sends a join or leave push to the channel's subscribers.
    pub fn presence_event(&self, channel: &str, frame: bytes::Bytes) {
        self.broker
            .publish(channel, ChannelEvent::Presence { frame });
    }

    /// Disconnects every connection of `user` on every node; returns how
    /// many were on this one.
    pub async fn disconnect_user(&self, user: &str, disconnect: Disconnect) -> usize {
        let message = Control::Disconnect {
            user: user.to_owned(),
            code: disconnect.code,
            reason: disconnect.reason.clone(),
        };
        self.broker.control(
            None,
            bytes::Bytes::from(serde_json::to_vec(&message).unwrap_or_default()),
        );
        self.disconnect_local(user, disconnect).await
    }

    /// Disconnects every connection of `user` on this node; returns how
    /// many. Sessions without a transport leave presence and channels at
    /// once (see [`SessionRegistry::sweep`]).
    pub async fn disconnect_local(&self, user: &str, disconnect: Disconnect) -> usize {
        let connections = self.hub.connections(Some(user));
        for c in &connections {
            c.outbound
                .close(disconnect.clone(), Some(frames::disconnect(&disconnect)));
        }
        self.sessions.sweep(self.config.client.session_grace).await;
        connections.len()
    }

    /// A subscriber read `channel`'s history up to `top`: publications held
    /// until then go out (see [`Reorder`]).
    pub fn ordering_from(&self, channel: &str, top: u64) {
        let ready = self.reorder.observe(channel, top);
        fan_out(&self.hub, &self.metrics, channel, ready);
    }

    /// This node's figures, as `/api/info` reports them.
    pub fn stats(&self) -> serde_json::Value {
        let (clients, users) = self.hub.connection_stats();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "num_clients": clients,
            "num_users": users,
            "num_channels": self.hub.channels().len(),
            "num_subscriptions": self.metrics.subscriptions.load(Relaxed),
            "publications": self.metrics.publications.load(Relaxed),
            "deliveries": self.metrics.deliveries.load(Relaxed),
            "queue_overflows": self.metrics.queue_overflows.load(Relaxed),
            "node": &*self.id,
            "broker": backend_kind(&self.config.broker),
            "store": backend_kind(&self.config.store),
            "broker_healthy": self.broker.healthy(),
        })
    }

    /// Whether other nodes share this node's broker.
    pub fn is_clustered(&self) -> bool {
        self.config.broker != "memory"
    }

    /// A receiver that turns true when the node starts shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Tells every client to reconnect elsewhere, waits (bounded) for the
    /// connections to close, and makes the store durable.
    pub async fn shutdown(&self, timeout: Duration) {
        self.shutdown.send_replace(true);
        let disconnect: Disconnect = crate::codes::DisconnectCode::Shutdown.into();
        let frame = frames::disconnect(&disconnect);
        for c in self.hub.connections(None) {
            c.outbound.close(disconnect.clone(), Some(frame.clone()));
        }
        // Sessions without a transport have nobody to write their last frame.
        self.sessions.end_detached().await;
        let deadline = tokio::time::Instant::now() + timeout;
        while self.hub.connection_stats().0 > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Err(e) = self.store.flush().await {
            tracing::error!("flushing the store at shutdown failed: {e}");
        }
    }
}

/// A namespace's retention rules.
pub fn limits(ns: &NamespaceConfig) -> HistoryLimits {
    HistoryLimits {
        size: ns.history_size,
        ttl: ns.history_ttl,
        idempotency_window: ns.idempotency_window,
    }
}

/// `memory`, `redis`, `sqlite` or `postgres`: never the URL (it may carry a
/// password).
fn backend_kind(backend: &str) -> &str {
    backend
        .split_once("://")
        .map_or(backend, |(scheme, _)| match scheme {
            "postgresql" => "postgres",
            other => other,
        })
}

fn history_error(e: HistoryError) -> CommandError {
    tracing::error!("history: {e}");
    internal("history backend failed")
}

fn internal(message: &str) -> CommandError {
    CommandError::with(ErrorCode::Internal, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Drained, Outbound, Subscriber};

    fn delivery(ordered: bool) -> LocalDelivery {
        LocalDelivery {
            hub: Arc::new(Hub::new()),
            metrics: Arc::new(Metrics::default()),
            ordered,
            reorder: Arc::new(Reorder::new()),
            node: OnceLock::new(),
        }
    }

    fn subscribe(d: &LocalDelivery, channel: &Arc<str>, client: ClientId) -> Arc<Outbound> {
        let q = Arc::new(Outbound::new(1 << 20));
        d.hub
            .subscribe(channel, Subscriber::open_now(client, q.clone()));
        q
    }

    fn publication(offset: u64) -> ChannelEvent {
        ChannelEvent::Publication {
            offset,
            frame: bytes::Bytes::from(format!("p{offset}")),
            exclude: None,
        }
    }

    fn join() -> ChannelEvent {
        ChannelEvent::Presence {
            frame: bytes::Bytes::from_static(b"join"),
        }
    }

    fn frames(q: &Outbound) -> Vec<String> {
        match q.drain() {
            Drained::Frames(f) => f
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_batch_from_other_nodes_goes_out_in_offset_order() {
        let d = delivery(true);
        let (x, y): (Arc<str>, Arc<str>) = ("chat:x".into(), "chat:y".into());
        let qx = subscribe(&d, &x, 1);
        let qy = subscribe(&d, &y, 2);
        d.reorder.begin(&x);
        d.reorder.observe(&x, 0);
        // x: 2 crossed 1 on the way; a join in between; 1 again is a repeat.
        // y: nobody here read its history, so it passes as it comes.
        d.deliver_batch(vec![
            (&*x, publication(2)),
            (&*y, publication(5)),
            (&*x, publication(1)),
            (&*x, join()),
            (&*x, publication(1)),
            (&*x, publication(3)),
        ]);
        let wait = Duration::from_secs(1);
        tokio::time::timeout(wait, qx.ready()).await.unwrap();
        tokio::time::timeout(wait, qy.ready()).await.unwrap();
        assert_eq!(frames(&qx), ["p1", "p2", "join", "p3"]);
        assert_eq!(frames(&qy), ["p5"]);
        assert_eq!(d.metrics.deliveries.load(Relaxed), 5);
        assert!(!d.reorder.has_gap(&x));
    }

    #[tokio::test]
    async fn a_gap_in_a_batch_holds_what_follows_it() {
        let d = delivery(true);
        let x: Arc<str> = "chat:x".into();
        let q = subscribe(&d, &x, 1);
        d.reorder.begin(&x);
        d.reorder.observe(&x, 0);
        d.deliver_batch(vec![
            (&*x, publication(1)),
            (&*x, publication(3)),
            (&*x, publication(4)),
        ]);
        assert_eq!(frames(&q), ["p1"]);
        assert!(d.reorder.has_gap(&x));
        // The missing offset arrives in the next batch and frees the rest.
        d.deliver_batch(vec![(&*x, publication(2)), (&*x, publication(5))]);
        assert_eq!(frames(&q), ["p2", "p3", "p4", "p5"]);
        assert!(!d.reorder.has_gap(&x));
    }

    #[test]
    fn a_memory_broker_batch_is_not_reordered() {
        let d = delivery(false);
        let x: Arc<str> = "chat:x".into();
        let q = subscribe(&d, &x, 1);
        d.deliver_batch(vec![(&*x, publication(2)), (&*x, publication(1))]);
        // The subscriber keeps the highest offset it was given: 1 is late.
        assert_eq!(frames(&q), ["p2"]);
    }
}
