//! The Redis broker and presence against a real Redis: the one at
//! `SWITCHBOARD_TEST_REDIS` (default `redis://127.0.0.1:6379`). These tests
//! fail, never skip, when it is unreachable. Each test uses its own key
//! prefix, so tests running at once never see each other's channels.
//!
//! Connection loss is played with a TCP proxy inside the test (never by
//! restarting Redis).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard::broker::{
    Broker, ChannelEvent, EventSink, FrameTemplate, RedisBroker, RedisOptions,
};
use switchboard::history::{AppendDone, HistoryError};
use switchboard::presence::{Presence, RedisPresence};
use switchboard::protocol::frames;
use switchboard::stream::{
    now_millis, AppendOutcome, AppendRequest, ClientInfo, HistoryLimits, HistoryQuery, Publication,
    RawJson,
};

fn url() -> String {
    std::env::var("SWITCHBOARD_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Options for a test: its own prefix, quick health checks and reconnects.
fn options(prefix: &str) -> RedisOptions {
    let mut options = RedisOptions::new(url()).with_prefix(prefix);
    options.ping_interval = Duration::from_millis(100);
    options.response_timeout = Duration::from_secs(1);
    options.reconnect_min = Duration::from_millis(20);
    options.reconnect_max = Duration::from_millis(200);
    options.stream_idle = Duration::from_secs(60);
    options
}

fn prefix() -> String {
    format!("sbtest:{}:", switchboard::random::token(9))
}

/// Collects what a broker delivers; `has_subscribers` is what the test says.
#[derive(Default)]
struct Sink {
    events: Mutex<Vec<(String, ChannelEvent)>>,
    controls: Mutex<Vec<Bytes>>,
    resubscribed: Mutex<Vec<Vec<String>>>,
    subscribed: Mutex<HashSet<String>>,
}

impl EventSink for Sink {
    fn deliver(&self, channel: &str, event: ChannelEvent) {
        self.events
            .lock()
            .unwrap()
            .push((channel.to_owned(), event));
    }

    fn has_subscribers(&self, channel: &str) -> bool {
        self.subscribed.lock().unwrap().contains(channel)
    }

    fn control(&self, message: Bytes) {
        self.controls.lock().unwrap().push(message);
    }

    fn resubscribed(&self, channels: &[String]) {
        self.resubscribed.lock().unwrap().push(channels.to_vec());
    }
}

impl Sink {
    /// Publication offsets delivered on `channel`, in order.
    fn offsets(&self, channel: &str) -> Vec<u64> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _)| c == channel)
            .filter_map(|(_, e)| match e {
                ChannelEvent::Publication { offset, .. } => Some(*offset),
                ChannelEvent::Presence { .. } => None,
            })
            .collect()
    }

    fn count(&self, channel: &str) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _)| c == channel)
            .count()
    }

    fn controls(&self) -> Vec<Bytes> {
        self.controls.lock().unwrap().clone()
    }
}

struct Node {
    broker: Arc<RedisBroker>,
    sink: Arc<Sink>,
}

async fn node(options: RedisOptions, id: &str) -> Node {
    let sink = Arc::new(Sink::default());
    let broker = RedisBroker::connect_with(options, id, sink.clone())
        .await
        .unwrap_or_else(|e| panic!("Redis at {} (SWITCHBOARD_TEST_REDIS): {e}", url()));
    Node { broker, sink }
}

impl Node {
    /// A local subscriber of `channel` arrives: the broker watches it.
    async fn subscribe(&self, channel: &str) {
        self.sink.subscribed.lock().unwrap().insert(channel.into());
        self.broker.watch(channel).await.expect("watch failed");
    }

    /// The last local subscriber of `channel` leaves.
    fn unsubscribe(&self, channel: &str) {
        self.sink.subscribed.lock().unwrap().remove(channel);
        self.broker.unwatch(channel);
    }
}

fn limits() -> HistoryLimits {
    HistoryLimits {
        size: 100,
        ttl: Duration::from_secs(60),
        idempotency_window: Duration::from_secs(60),
    }
}

fn request(channel: &str, data: &str, key: Option<&str>) -> AppendRequest {
    AppendRequest {
        channel: channel.into(),
        data: RawJson::from_string(data.into()).unwrap(),
        info: None,
        idempotency_key: key.map(Into::into),
        limits: limits(),
    }
}

fn template(request: &AppendRequest) -> FrameTemplate {
    template_at(request, now_millis())
}

fn template_at(request: &AppendRequest, time: u64) -> FrameTemplate {
    frames::publication_template(
        &request.channel,
        &Publication {
            offset: 0,
            data: request.data.clone(),
            info: request.info.clone(),
            time,
        },
    )
}

/// `append_and_publish`, waiting for the outcome.
async fn append(
    broker: &RedisBroker,
    request: AppendRequest,
    exclude: Option<u64>,
) -> Result<AppendOutcome, HistoryError> {
    append_at(broker, request, exclude, now_millis()).await
}

async fn append_at(
    broker: &RedisBroker,
    request: AppendRequest,
    exclude: Option<u64>,
    time: u64,
) -> Result<AppendOutcome, HistoryError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let frame = template_at(&request, time);
    let done: AppendDone = Box::new(move |outcome| {
        let _ = tx.send(outcome);
    });
    assert!(broker.publishes_on_append());
    if broker
        .append_and_publish(request, frame, exclude, done)
        .is_err()
    {
        panic!("the redis broker refused to append");
    }
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("append never answered")
        .expect("append callback dropped")
}

async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How many connections are subscribed to a pub/sub channel.
async fn numsub(channel: &str) -> i64 {
    let client = redis::Client::open(url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let reply: (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut conn)
        .await
        .unwrap();
    reply.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_reaches_the_nodes_that_watch_its_channel() {
    let prefix = prefix();
    let a = node(options(&prefix), "a").await;
    let b = node(options(&prefix), "b").await;
    let c = node(options(&prefix), "c").await;
    b.subscribe("chat:1").await;
    c.subscribe("chat:2").await;

    let request = request("chat:1", "{\"text\":\"hi\"}", None);
    let time = now_millis() - 5;
    let expected_template = template_at(&request, time);
    let outcome = append_at(&a.broker, request, Some(77), time).await.unwrap();
    let AppendOutcome::Appended { publication, epoch } = &outcome else {
        panic!("not appended: {outcome:?}");
    };
    assert_eq!(publication.offset, 1);
    assert_eq!(publication.time, time, "time from the template");

    eventually("b receives it", Duration::from_secs(5), || {
        b.sink.count("chat:1") == 1
    })
    .await;
    let (channel, event) = b.sink.events.lock().unwrap()[0].clone();
    assert_eq!(channel, "chat:1");
    match event {
        ChannelEvent::Publication {
            offset,
            frame,
            exclude,
        } => {
            assert_eq!(offset, 1);
            assert_eq!(exclude, Some(77));
            // Byte for byte what this node would have rendered.
            assert_eq!(frame, expected_template.render(1, epoch));
            let json: serde_json::Value = serde_json::from_slice(&frame).unwrap();
            assert_eq!(json["offset"], 1);
            assert_eq!(json["epoch"], epoch.as_str());
            assert_eq!(json["data"]["text"], "hi");
        }
        other => panic!("unexpected {other:?}"),
    }

    // A publication on a channel b does not watch stays away from b; a
    // node without subscribers (a) gets nothing.
    append(&a.broker, request_on("chat:2"), None).await.unwrap();
    eventually("c receives chat:2", Duration::from_secs(5), || {
        c.sink.count("chat:2") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(b.sink.count("chat:2"), 0);
    assert_eq!(c.sink.count("chat:1"), 0);
    assert!(a.sink.events.lock().unwrap().is_empty());

    // The history holds it, readable from every node.
    let page = b
        .broker
        .history()
        .read(
            "chat:1",
            HistoryQuery {
                since: None,
                limit: 10,
                reverse: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.position, outcome.position());
    assert_eq!(page.publications, vec![publication.clone()]);
}

fn request_on(channel: &str) -> AppendRequest {
    request(channel, "1", None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_is_kept_under_many_pipelined_publishes() {
    let prefix = prefix();
    let a = node(options(&prefix), "a").await;
    let b = node(options(&prefix), "b").await;
    a.subscribe("busy").await;
    b.subscribe("busy").await;
    b.subscribe("other").await;

    const N: u64 = 3000;
    let callbacks = Arc::new(Mutex::new(Vec::new()));
    let (all_done, finished) = tokio::sync::oneshot::channel();
    let all_done = Arc::new(Mutex::new(Some(all_done)));
    for i in 0..N {
        let channel = if i % 3 == 0 { "other" } else { "busy" };
        let request = request(channel, &format!("{{\"i\":{i}}}"), None);
        let frame = template(&request);
        let callbacks = callbacks.clone();
        let all_done = all_done.clone();
        let done: AppendDone = Box::new(move |outcome| {
            let offset = outcome.unwrap().position().offset;
            let mut callbacks = callbacks.lock().unwrap();
            callbacks.push((channel, offset));
            if callbacks.len() as u64 == N {
                let _ = all_done.lock().unwrap().take().unwrap().send(());
            }
        });
        assert!(a
            .broker
            .append_and_publish(request, frame, None, done)
            .is_ok());
        if i % 100 == 50 {
            // Join/leave pushes keep their place among publications.
            a.broker.publish(
                "busy",
                ChannelEvent::Presence {
                    frame: Bytes::from(format!("{{\"join\":{i}}}")),
                },
            );
        }
    }
    tokio::time::timeout(Duration::from_secs(30), finished)
        .await
        .unwrap()
        .unwrap();
    let callbacks = callbacks.lock().unwrap().clone();
    for channel in ["busy", "other"] {
        let offsets: Vec<u64> = callbacks
            .iter()
            .filter(|(c, _)| *c == channel)
            .map(|(_, o)| *o)
            .collect();
        let expected: Vec<u64> = (1..=offsets.len() as u64).collect();
        assert_eq!(offsets, expected, "callbacks of {channel} out of order");
    }
    let busy = callbacks.iter().filter(|(c, _)| *c == "busy").count() as u64;
    let other = N - busy;
    for sink in [&a.sink, &b.sink] {
        eventually("every publication arrives", Duration::from_secs(20), || {
            sink.offsets("busy").len() as u64 == busy
        })
        .await;
        assert_eq!(sink.offsets("busy"), (1..=busy).collect::<Vec<_>>());
    }
    eventually("b gets other", Duration::from_secs(20), || {
        b.sink.offsets("other").len() as u64 == other
    })
    .await;
    assert_eq!(b.sink.offsets("other"), (1..=other).collect::<Vec<_>>());
    assert!(a.sink.offsets("other").is_empty());

    // Each join push arrived right after the publication queued before it.
    let events = b.sink.events.lock().unwrap().clone();
    let mut last_offset = 0;
    let mut joins = 0;
    for (channel, event) in events.iter().filter(|(c, _)| c == "busy") {
        match event {
            ChannelEvent::Publication { offset, .. } => last_offset = *offset,
            ChannelEvent::Presence { frame } => {
                let json: serde_json::Value = serde_json::from_slice(frame).unwrap();
                let i = json["join"].as_u64().unwrap();
                // Publications 0..=i were queued before it; a third went to `other`.
                let before = (0..=i).filter(|k| k % 3 != 0).count() as u64;
                assert_eq!(last_offset, before, "join {i} on {channel} out of place");
                joins += 1;
            }
        }
    }
    assert_eq!(joins, N / 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_hold_across_nodes() {
    let prefix = prefix();
    let a = node(options(&prefix), "a").await;
    let b = node(options(&prefix), "b").await;
    let watcher = node(options(&prefix), "w").await;
    watcher.subscribe("pay").await;

    let first = append(&a.broker, request("pay", "\"once\"", Some("k1")), None)
        .await
        .unwrap();
    assert!(matches!(first, AppendOutcome::Appended { .. }));
    let again = append(&b.broker, request("pay", "\"twice\"", Some("k1")), None)
        .await
        .unwrap();
    assert_eq!(again, AppendOutcome::Duplicate(first.position()));
    let next = append(&b.broker, request("pay", "\"next\"", Some("k2")), None)
        .await
        .unwrap();
    assert_eq!(next.position().offset, 2);
    assert_eq!(next.position().epoch, first.position().epoch);

    // The duplicate was neither stored nor published.
    eventually("two publications", Duration::from_secs(5), || {
        watcher.sink.offsets("pay") == vec![1, 2]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(watcher.sink.count("pay"), 2);
    let page = a
        .broker
        .history()
        .read(
            "pay",
            HistoryQuery {
                since: None,
                limit: 10,
                reverse: false,
            },
        )
        .await
        .unwrap();
    let data: Vec<&str> = page.publications.iter().map(|p| p.data.get()).collect();
    assert_eq!(data, vec!["\"once\"", "\"next\""]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisted_publication_published_by_one_node_reaches_another() {
    // Namespaces with `persist` append elsewhere, then `publish`.
    let prefix = prefix();
    let a = node(options(&prefix), "a").await;
    let b = node(options(&prefix), "b").await;
    b.subscribe("kept").await;
    let frame = Bytes::from_static(b"{\"type\":\"publication\",\"offset\":9}");
    a.broker.publish(
        "kept",
        ChannelEvent::Publication {
            offset: 9,
            frame: frame.clone(),
            exclude: Some(u64::MAX),
        },
    );
    a.broker.publish(
        "kept",
        ChannelEvent::Presence {
            frame: Bytes::from_static(b"{\"type\":\"leave\"}"),
        },
    );
    eventually("both arrive", Duration::from_secs(5), || {
        b.sink.count("kept") == 2
    })
    .await;
    let events = b.sink.events.lock().unwrap().clone();
    match &events[0].1 {
        ChannelEvent::Publication {
            offset,
            frame: f,
            exclude,
        } => assert_eq!((*offset, f, *exclude), (9, &frame, Some(u64::MAX))),
        other => panic!("unexpected {other:?}"),
    }
    match &events[1].1 {
        ChannelEvent::Presence { frame } => assert_eq!(&frame[..], b"{\"type\":\"leave\"}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwatch_stops_delivery_unless_a_subscriber_came_back() {
    let prefix = prefix();
    let a = node(options(&prefix), "a").await;
    let b = node(options(&prefix), "b").await;
    let pubsub = format!("{prefix}ch:room");
    b.subscribe("room").await;
    assert_eq!(numsub(&pubsub).await, 1);
    append(&a.broker, request_on("room"), None).await.unwrap();
    eventually("b receives 1", Duration::from_secs(5), || {
        b.sink.offsets("room") == vec![1]
    })
    .await;

    // Unwatch while the hub still has a subscriber: nothing changes.
    b.broker.unwatch("room");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(numsub(&pubsub).await, 1);

    // Concurrent watches of one channel share one subscription.
    let channel = "shared";
    b.sink.subscribed.lock().unwrap().insert(channel.into());
    let watches = (0..20).map(|_| b.broker.watch(channel));
    for result in futures_util::future::join_all(watches).await {
        result.unwrap();
    }
    assert_eq!(numsub(&format!("{prefix}ch:{channel}")).await, 1);

    // The last subscriber leaves: b unsubscribes and gets nothing more.
    b.unsubscribe("room");
    let mut gone = false;
    for _ in 0..200 {
        if numsub(&pubsub).await == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gone, "b stayed subscribed");
    append(&a.broker, request_on("room"), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.sink.offsets("room"), vec![1]);

    // And subscribes again for a new subscriber.
    b.subscribe("room").await;
    assert_eq!(numsub(&pubsub).await, 1);
    append(&a.broker, request_on("room"), None).await.unwrap();
    eventually("b receives 3", Duration::from_secs(5), || {
        b.sink.offsets("room") == vec![1, 3]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_messages_reach_one_node_or_all() {
    let prefix = prefix();
    let a = node(options(&prefix), "a").await;
    let b = node(options(&prefix), "b").await;
    let c = node(options(&prefix), "c").await;
    a.broker.control(Some("b"), Bytes::from_static(b"to b"));
    eventually("b gets its message", Duration::from_secs(5), || {
        b.sink.controls() == vec![Bytes::from_static(b"to b")]
    })
    .await;
    b.broker.control(None, Bytes::from_static(b"\x00all"));
    for n in [&a, &b, &c] {
        eventually(
            "everyone gets the broadcast",
            Duration::from_secs(5),
            || n.sink.controls().last() == Some(&Bytes::from_static(b"\x00all")),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.sink.controls().len(), 1);
    assert_eq!(b.sink.controls().len(), 2);
    assert_eq!(c.sink.controls().len(), 1);
    // Control messages are not channel events.
    for n in [&a, &b, &c] {
        assert!(n.sink.events.lock().unwrap().is_empty());
    }
}

fn info(user: &str, client: &str) -> ClientInfo {
    ClientInfo {
        user: user.into(),
        client: client.into(),
        data: Some(RawJson::from_string(format!("{{\"name\":\"{user}\"}}")).unwrap()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_shared_and_expires_when_its_node_stops_refreshing() {
    let prefix = prefix();
    let ttl = Duration::from_millis(600);
    let a = RedisPresence::connect_with(&options(&prefix), ttl)
        .await
        .expect("redis presence");
    let b_node = node(options(&prefix), "b").await;
    let b = b_node.broker.presence(ttl);

    a.add("room", 1, info("ann", "1")).await.unwrap();
    a.add("room", 2, info("ann", "2")).await.unwrap();
    b.add("room", 3, info("bob", "3")).await.unwrap();
    a.add("elsewhere", 1, info("ann", "1")).await.unwrap();

    let mut seen = b.get("room").await.unwrap();
    seen.sort_by(|x, y| x.client.cmp(&y.client));
    assert_eq!(
        seen,
        vec![info("ann", "1"), info("ann", "2"), info("bob", "3")]
    );
    let stats = a.stats("room").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (3, 2));

    // Re-adding a client does not count it twice.
    a.add("room", 2, info("ann", "2")).await.unwrap();
    let stats = b.stats("room").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (3, 2));

    a.remove("room", 1).await.unwrap();
    let stats = b.stats("room").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (2, 2));

    // Both nodes refresh: entries outlive several ttls.
    tokio::time::sleep(ttl * 3).await;
    let stats = b.stats("room").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (2, 2));

    // Node a dies (stops refreshing): its clients vanish within the ttl.
    drop(a);
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    assert_eq!(b.get("room").await.unwrap(), vec![info("bob", "3")]);
    let stats = b.stats("room").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (1, 1));
    assert!(b.get("elsewhere").await.unwrap().is_empty());

    b.remove("room", 3).await.unwrap();
    assert!(b.get("room").await.unwrap().is_empty());
    let stats = b.stats("room").await.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_comes_back_after_redis_lost_it() {
    // An entry removed behind the node's back (as after a Redis restart)
    // is added again by the next refresh.
    let prefix = prefix();
    let ttl = Duration::from_millis(300);
    let a = RedisPresence::connect_with(&options(&prefix), ttl)
        .await
        .expect("redis presence");
    a.add("room", 1, info("ann", "1")).await.unwrap();
    let client = redis::Client::open(url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}{{room}}:p"))
        .arg(format!("{prefix}{{room}}:pe"))
        .arg(format!("{prefix}{{room}}:pu"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(a.get("room").await.unwrap().is_empty());
    let start = Instant::now();
    loop {
        if a.get("room").await.unwrap() == vec![info("ann", "1")] {
            break;
        }
        assert!(start.elapsed() < ttl * 3, "the entry never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.stats("room").await.unwrap().num_users, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nothing_fails_fast() {
    let start = Instant::now();
    let sink = Arc::new(Sink::default());
    let mut options = options(&prefix());
    options.url = "redis://127.0.0.1:1".into();
    assert!(RedisBroker::connect_with(options, "x", sink).await.is_err());
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// A TCP proxy to Redis that the test can cut and restore.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn start() -> Proxy {
        let target = redis_address();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let accept_up = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !accept_up.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let mut cuts = cuts.clone();
                cuts.borrow_and_update();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, up, cut }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Closes every connection and refuses new ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// `host:port` of the test Redis.
fn redis_address() -> String {
    let url = url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or(rest);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:6379")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_fails_fast_and_reconnecting_resubscribes() {
    let prefix = prefix();
    let proxy = Proxy::start().await;
    let mut proxied = options(&prefix);
    proxied.url = proxy.url();
    let a = node(proxied, "a").await;
    let b = node(options(&prefix), "b").await;
    a.subscribe("live").await;
    // Many more watched channels: resubscribed in several waves.
    let many: Vec<String> = (0..2500).map(|i| format!("many:{i}")).collect();
    a.sink
        .subscribed
        .lock()
        .unwrap()
        .extend(many.iter().cloned());
    let watches = many.iter().map(|channel| a.broker.watch(channel));
    for result in futures_util::future::join_all(watches).await {
        result.unwrap();
    }
    assert!(a.broker.healthy());
    append(&b.broker, request_on("live"), None).await.unwrap();
    eventually("a receives 1", Duration::from_secs(5), || {
        a.sink.offsets("live") == vec![1]
    })
    .await;

    proxy.cut();
    eventually("a turns unhealthy", Duration::from_secs(3), || {
        !a.broker.healthy()
    })
    .await;
    // Appends fail at once, watches too; publishes and control messages
    // are dropped without blocking.
    let start = Instant::now();
    let failed = append(&a.broker, request_on("live"), None).await;
    assert!(
        matches!(failed, Err(HistoryError::Unavailable(_))),
        "{failed:?}"
    );
    assert!(start.elapsed() < Duration::from_millis(500));
    assert!(a.broker.watch("elsewhere").await.is_err());
    a.broker.publish(
        "live",
        ChannelEvent::Presence {
            frame: Bytes::from_static(b"{}"),
        },
    );
    a.broker.control(None, Bytes::from_static(b"lost"));
    let read = a
        .broker
        .history()
        .read("live", HistoryQuery::default())
        .await;
    assert!(matches!(read, Err(HistoryError::Unavailable(_))));
    a.broker.history().flush().await.unwrap();

    // Published meanwhile: a never sees it live.
    append(&b.broker, request_on("live"), None).await.unwrap();

    proxy.restore();
    eventually("a is healthy again", Duration::from_secs(5), || {
        a.broker.healthy()
    })
    .await;
    let resubscribed = a.sink.resubscribed.lock().unwrap().clone();
    assert_eq!(resubscribed.len(), 1, "one resubscription");
    let mut expected = many.clone();
    expected.push("live".into());
    expected.sort();
    let mut got = resubscribed[0].clone();
    got.sort();
    assert_eq!(got, expected);
    assert_eq!(numsub(&format!("{prefix}ch:many:2499")).await, 1);
    append(&b.broker, request_on("live"), None).await.unwrap();
    eventually("a receives 3", Duration::from_secs(5), || {
        a.sink.offsets("live") == vec![1, 3]
    })
    .await;
    let own = append(&a.broker, request_on("live"), None).await.unwrap();
    assert_eq!(own.position().offset, 4);
    let page = a
        .broker
        .history()
        .read(
            "live",
            HistoryQuery {
                since: None,
                limit: 10,
                reverse: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.position.offset, 4);
    assert_eq!(page.publications.len(), 4);
    assert!(
        b.sink.controls().is_empty(),
        "a dropped its control message"
    );
}

/// Informal throughput of `append_and_publish` from one task:
/// `cargo test --release --test redis_broker -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn append_and_publish_throughput() {
    let prefix = prefix();
    let a = node(options(&prefix), "a").await;
    let b = node(options(&prefix), "b").await;
    for i in 0..10 {
        b.subscribe(&format!("t{i}")).await;
    }
    let n = 100_000u64;
    let (all_done, finished) = tokio::sync::oneshot::channel();
    let all_done = Arc::new(Mutex::new(Some(all_done)));
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    for i in 0..n {
        let request = request(&format!("t{}", i % 10), "{\"x\":1}", None);
        let frame = template(&request);
        let count = count.clone();
        let all_done = all_done.clone();
        let done: AppendDone = Box::new(move |outcome| {
            outcome.unwrap();
            if count.fetch_add(1, Ordering::Relaxed) + 1 == n {
                let _ = all_done.lock().unwrap().take().unwrap().send(());
            }
        });
        assert!(a
            .broker
            .append_and_publish(request, frame, None, done)
            .is_ok());
        if i % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    finished.await.unwrap();
    let elapsed = started.elapsed();
    println!(
        "{n} append_and_publish in {elapsed:?}: {:.0}/s",
        n as f64 / elapsed.as_secs_f64()
    );
    eventually("b received everything", Duration::from_secs(60), || {
        b.sink.events.lock().unwrap().len() as u64 == n
    })
    .await;
    println!("delivered to another node after {:?}", started.elapsed());
}

/// `SCRIPT FLUSH` behind the broker's back: appends load the script again
/// and keep their order. Ignored: it flushes the scripts of the whole Redis
/// (run alone: `cargo test --test redis_broker -- --ignored noscript`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn noscript_loads_the_script_again() {
    let prefix = prefix();
    let a = node(options(&prefix), "a").await;
    a.subscribe("n").await;
    append(&a.broker, request_on("n"), None).await.unwrap();
    let client = redis::Client::open(url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut waits = Vec::new();
    for _ in 0..200 {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let request = request_on("n");
        let frame = template(&request);
        let done: AppendDone = Box::new(move |outcome| {
            let _ = tx.send(outcome.unwrap().position().offset);
        });
        assert!(a
            .broker
            .append_and_publish(request, frame, None, done)
            .is_ok());
        waits.push(rx);
    }
    let mut offsets = Vec::new();
    for rx in waits {
        offsets.push(rx.await.unwrap());
    }
    assert_eq!(offsets, (2..=201).collect::<Vec<_>>());
    eventually("all delivered", Duration::from_secs(5), || {
        a.sink.offsets("n").len() == 201
    })
    .await;
    assert_eq!(a.sink.offsets("n"), (1..=201).collect::<Vec<_>>());
    // Reads and presence load their scripts again too.
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    let page = a
        .broker
        .history()
        .read("n", HistoryQuery::default())
        .await
        .unwrap();
    assert_eq!(page.position.offset, 201);
    let presence = a.broker.presence(Duration::from_secs(5));
    presence.add("n", 1, info("ann", "1")).await.unwrap();
    assert_eq!(presence.get("n").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_histories_keep_exactly_their_size() {
    // From a size of 100 on, streams are trimmed approximately; reads
    // still see exactly the newest `size` publications.
    let prefix = prefix();
    let a = node(options(&prefix), "a").await;
    let history = a.broker.history();
    let mut waits = Vec::new();
    for i in 1..=250 {
        let (tx, rx) = tokio::sync::oneshot::channel();
        history.append(
            request("big", &i.to_string(), None),
            Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
        );
        waits.push(rx);
    }
    let mut top = None;
    for rx in waits {
        top = Some(rx.await.unwrap().unwrap().position());
    }
    let top = top.unwrap();
    assert_eq!(top.offset, 250);
    let client = redis::Client::open(url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stored: usize = redis::cmd("XLEN")
        .arg(format!("{prefix}{{big}}:s"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((100..=250).contains(&stored), "{stored}");

    let read = |since: Option<u64>, limit: usize, reverse: bool| {
        let since = since.map(|offset| switchboard::stream::StreamPosition {
            offset,
            epoch: top.epoch.clone(),
        });
        history.read(
            "big",
            HistoryQuery {
                since,
                limit,
                reverse,
            },
        )
    };
    let offsets = |page: &switchboard::stream::HistoryPage| -> Vec<u64> {
        page.publications.iter().map(|p| p.offset).collect()
    };
    let latest = read(None, 1000, false).await.unwrap();
    assert_eq!(offsets(&latest), (151..=250).collect::<Vec<_>>());
    assert_eq!(latest.publications[0].data.get(), "151");
    let newest = read(None, 3, true).await.unwrap();
    assert_eq!(offsets(&newest), vec![250, 249, 248]);
    let lost = read(Some(140), 1000, false).await.unwrap();
    assert!(!lost.recovered);
    assert_eq!(offsets(&lost), (151..=250).collect::<Vec<_>>());
    let kept = read(Some(150), 1000, false).await.unwrap();
    assert!(kept.recovered);
    assert_eq!(offsets(&kept), (151..=250).collect::<Vec<_>>());
    let cut = read(Some(150), 10, false).await.unwrap();
    assert!(!cut.recovered);
    assert_eq!(offsets(&cut), (151..=160).collect::<Vec<_>>());
}
