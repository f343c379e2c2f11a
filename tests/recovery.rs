//! History and recovery across restarts and reconnects: persisted streams
//! keep offsets, epoch, history and idempotency keys across a graceful stop
//! and a `kill -9`; memory streams get a new epoch; a client that resubscribes
//! with `since` gets exactly what it missed, then the live publications.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{api_call, Process, TestServer, API_KEY, WAIT};
use serde_json::{json, Value};
use switchboard::config::{Config, NamespaceConfig};

/// The `result` of an API call that must succeed.
async fn api_ok(addr: SocketAddr, method: &str, body: Value) -> Value {
    let (status, reply) = api_call(addr, method, body.clone(), Some(API_KEY)).await;
    assert_eq!(status, 200, "/api/{method} {body} answered {reply}");
    reply["result"].clone()
}

/// Publishes through the API; returns the position.
async fn publish(addr: SocketAddr, channel: &str, data: Value) -> Value {
    api_ok(addr, "publish", json!({"channel": channel, "data": data})).await["position"].clone()
}

/// Offsets of a list of publications.
fn offsets(publications: &Value) -> Vec<u64> {
    publications
        .as_array()
        .expect("publications is an array")
        .iter()
        .map(|p| p["offset"].as_u64().expect("offset is a number"))
        .collect()
}

/// Adds a memory-only namespace `mem` (100 publications of history).
fn with_memory_namespace(c: &mut Config) {
    c.namespaces.insert(
        "mem".into(),
        NamespaceConfig {
            history_size: 100,
            history_ttl: Duration::from_secs(3600),
            persist: false,
            ..NamespaceConfig::default()
        },
    );
}

#[tokio::test]
async fn persisted_history_survives_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let channel = "chat:restart";

    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let before =
        api_ok(server.addr, "history", json!({"channel": channel})).await["position"].clone();
    assert_eq!(
        before["offset"], 0,
        "a fresh channel starts at offset 0: {before}"
    );
    let epoch = before["epoch"]
        .as_str()
        .expect("epoch is a string")
        .to_string();
    for n in 1..=5 {
        let position = publish(server.addr, channel, json!({"n": n})).await;
        assert_eq!(position, json!({"offset": n, "epoch": epoch}));
    }
    server.stop().await;

    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let mut ws = server.client("reader").await;
    let reply = ws
        .call(json!({"type": "subscribe", "channel": channel, "since": {"offset": 0, "epoch": epoch}}))
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(reply["position"], json!({"offset": 5, "epoch": epoch}));
    assert_eq!(offsets(&reply["publications"]), vec![1, 2, 3, 4, 5]);
    let data: Vec<&Value> = reply["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["data"])
        .collect();
    assert_eq!(
        data,
        [
            &json!({"n": 1}),
            &json!({"n": 2}),
            &json!({"n": 3}),
            &json!({"n": 4}),
            &json!({"n": 5})
        ]
    );

    let next = publish(server.addr, channel, json!({"n": 6})).await;
    assert_eq!(next, json!({"offset": 6, "epoch": epoch}));
    server.stop().await;
}

/// Publishes through the API without panicking when the server is gone;
/// `Some(offset)` only for a 200 answer.
async fn try_publish(
    http: &reqwest::Client,
    addr: SocketAddr,
    channel: &str,
    data: Value,
) -> Option<u64> {
    let response = http
        .post(format!("http://{addr}/api/publish"))
        .header("Authorization", format!("apikey {API_KEY}"))
        .json(&json!({"channel": channel, "data": data}))
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    body["result"]["position"]["offset"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_publication_survives_kill_9() {
    const PUBLISHERS: u64 = 4;
    const KILL_AFTER: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("SWITCHBOARD_NAMESPACES_DURABLE_PERSIST", "true"),
        ("SWITCHBOARD_NAMESPACES_DURABLE_HISTORY_SIZE", "10000"),
        ("SWITCHBOARD_NAMESPACES_DURABLE_HISTORY_TTL", "1h"),
    ];
    let channel = "durable:orders";
    let mut process = Process::start(dir.path(), &env);
    let addr = process.addr;

    // Publishers run until the server stops answering; each remembers
    // what was acknowledged (its own sequence number → offset).
    let acked = Arc::new(AtomicUsize::new(0));
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let acked = acked.clone();
        publishers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut mine: Vec<(u64, u64)> = Vec::new();
            for i in 0..5_000u64 {
                match try_publish(&http, addr, channel, json!({"p": p, "i": i})).await {
                    Some(offset) => {
                        mine.push((i, offset));
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    None => break,
                }
            }
            mine
        }));
    }
    while acked.load(Ordering::SeqCst) < KILL_AFTER {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    process.signal("KILL");
    process.wait(WAIT);
    let mut acknowledged: HashMap<(u64, u64), u64> = HashMap::new();
    for (p, publisher) in publishers.into_iter().enumerate() {
        for (i, offset) in publisher.await.unwrap() {
            acknowledged.insert((p as u64, i), offset);
        }
    }
    assert!(acknowledged.len() >= KILL_AFTER);
    let last_acked = *acknowledged.values().max().unwrap();

    let restarted = Process::start(dir.path(), &env);
    let page = api_ok(
        restarted.addr,
        "history",
        json!({"channel": channel, "limit": 10000}),
    )
    .await;
    let top = page["position"]["offset"].as_u64().unwrap();
    assert!(
        top >= last_acked,
        "top {top} is below the last acknowledged offset {last_acked}"
    );
    let history = page["publications"].as_array().unwrap();
    // Gap-free and in order: offsets 1..=top, each once.
    assert_eq!(
        offsets(&page["publications"]),
        (1..=top).collect::<Vec<_>>()
    );
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut by_offset: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut last_i: HashMap<u64, u64> = HashMap::new();
    for publication in history {
        let offset = publication["offset"].as_u64().unwrap();
        let key = (
            publication["data"]["p"].as_u64().unwrap(),
            publication["data"]["i"].as_u64().unwrap(),
        );
        assert!(seen.insert(key), "{key:?} is in history twice");
        by_offset.insert(offset, key);
        // Each publisher published in sequence: its items appear in that order.
        if let Some(previous) = last_i.insert(key.0, key.1) {
            assert!(
                previous < key.1,
                "publisher {} out of order: {previous} then {}",
                key.0,
                key.1
            );
        }
    }
    for (key, offset) in &acknowledged {
        assert_eq!(
            by_offset.get(offset),
            Some(key),
            "acknowledged {key:?} at offset {offset} is not in history"
        );
    }

    let http = reqwest::Client::new();
    let next = try_publish(&http, restarted.addr, channel, json!({"after": "restart"})).await;
    assert_eq!(next, Some(top + 1));
}

#[tokio::test]
async fn memory_history_gets_a_new_epoch_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let channel = "mem:ticker";

    let server = TestServer::start_in(dir.path(), with_memory_namespace).await;
    let mut position = Value::Null;
    for n in 1..=3 {
        position = publish(server.addr, channel, json!({"n": n})).await;
    }
    assert_eq!(position["offset"], 3);
    let old_epoch = position["epoch"].as_str().unwrap().to_string();
    server.stop().await;

    let server = TestServer::start_in(dir.path(), with_memory_namespace).await;
    let mut ws = server.client("reader").await;
    let reply = ws
        .call(json!({"type": "subscribe", "channel": channel, "since": {"offset": 3, "epoch": old_epoch}}))
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["recovered"], false, "{reply}");
    let new_epoch = reply["position"]["epoch"]
        .as_str()
        .expect("epoch is a string");
    assert_ne!(
        new_epoch, old_epoch,
        "memory history was lost, so the epoch must change"
    );
    server.stop().await;
}

#[tokio::test]
async fn idempotency_key_survives_a_restart_in_a_persisted_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let channel = "chat:idempotent";

    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let first = api_ok(
        server.addr,
        "publish",
        json!({"channel": channel, "data": {"n": 1}, "idempotency_key": "order-1"}),
    )
    .await["position"]
        .clone();
    assert_eq!(first["offset"], 1);
    let second = publish(server.addr, channel, json!({"n": 2})).await;
    assert_eq!(second["offset"], 2);
    server.stop().await;

    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let retried = api_ok(
        server.addr,
        "publish",
        json!({"channel": channel, "data": {"n": "retry"}, "idempotency_key": "order-1"}),
    )
    .await["position"]
        .clone();
    assert_eq!(
        retried, first,
        "the same key within the window returns the first position"
    );
    let page = api_ok(server.addr, "history", json!({"channel": channel})).await;
    assert_eq!(offsets(&page["publications"]), vec![1, 2]);
    assert_eq!(page["publications"][0]["data"], json!({"n": 1}));
    let next = publish(server.addr, channel, json!({"n": 3})).await;
    assert_eq!(next["offset"], 3, "the retry appended nothing");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_since_during_live_traffic_misses_and_repeats_nothing() {
    const RECONNECTS: usize = 5;
    let server = TestServer::start().await;
    let channel = "chat:live";
    let addr = server.addr;

    let mut ws = server.client("reader").await;
    let subscribed = ws.subscribe(channel).await;
    assert_eq!(subscribed["position"]["offset"], 0);
    let epoch = subscribed["position"]["epoch"]
        .as_str()
        .unwrap()
        .to_string();

    // A steady publisher: {"seq": n} lands at offset n on this fresh channel.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            let mut seq = 0u64;
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                seq += 1;
                let position = publish(addr, channel, json!({"seq": seq})).await;
                assert_eq!(position["offset"], seq);
            }
            seq
        })
    };

    let mut received: Vec<u64> = Vec::new();
    let mut recovered_total = 0;
    let check = |p: &Value, received: &mut Vec<u64>| {
        let offset = p["offset"].as_u64().expect("offset");
        assert_eq!(p["data"]["seq"], offset, "{p}");
        received.push(offset);
    };

    for _ in 0..RECONNECTS {
        for _ in 0..10 {
            let push = ws.push("publication").await;
            assert_eq!(push["epoch"], epoch.as_str());
            check(&push, &mut received);
        }
        drop(ws);
        tokio::time::sleep(Duration::from_millis(60)).await;
        ws = server.client("reader").await;
        let last = *received.last().unwrap();
        let reply = ws
            .call(json!({"type": "subscribe", "channel": channel, "since": {"offset": last, "epoch": epoch}}))
            .await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        assert_eq!(reply["recovered"], true, "{reply}");
        assert_eq!(reply["position"]["epoch"], epoch.as_str());
        for p in reply["publications"].as_array().unwrap() {
            check(p, &mut received);
            recovered_total += 1;
        }
    }
    for _ in 0..10 {
        let push = ws.push("publication").await;
        check(&push, &mut received);
    }
    stop.store(true, Ordering::SeqCst);
    let last_published = publisher.await.unwrap();
    while *received.last().unwrap() < last_published {
        let push = ws.push("publication").await;
        check(&push, &mut received);
    }
    assert!(
        recovered_total > 0,
        "the publisher kept going while the reader was away"
    );
    assert_eq!(received, (1..=last_published).collect::<Vec<_>>());
    server.stop().await;
}
