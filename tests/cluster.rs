//! Three nodes sharing the real Redis (broker, presence) and PostgreSQL
//! (durable history), as behind a round-robin load balancer with no sticky
//! sessions. Redis and PostgreSQL are those of the machine
//! (`SWITCHBOARD_TEST_REDIS`, `SWITCHBOARD_TEST_POSTGRES` override them);
//! the Redis-restart test runs its own `redis-server` on a free port.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::sse::Sse;
use common::{free_port, token, Process, TestServer, Ws, API_KEY, WAIT};
use serde_json::{json, Value};

fn redis_url() -> String {
    std::env::var("SWITCHBOARD_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn postgres_url() -> String {
    std::env::var("SWITCHBOARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A node of the cluster (in this process).
async fn node(redis: &str) -> TestServer {
    let redis = redis.to_owned();
    TestServer::start_with(move |c| {
        c.broker = redis;
        // One cluster: the same keys (tests differ by channel names).
        c.redis_prefix = "sb:".into();
        c.store = postgres_url();
        c.presence_ttl = Duration::from_secs(2);
    })
    .await
}

async fn three() -> Vec<TestServer> {
    let redis = redis_url();
    vec![node(&redis).await, node(&redis).await, node(&redis).await]
}

/// A channel no other test (or earlier run) used, in the persisted `chat`
/// namespace.
fn unique(prefix: &str) -> String {
    format!(
        "chat:{prefix}_{}",
        switchboard::random::token(6).replace('-', "x")
    )
}

/// Waits until `check` holds, polling.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn presence_users(node: &TestServer, channel: &str) -> Vec<String> {
    let (_, body) = node.api("presence", json!({"channel": channel})).await;
    let mut users: Vec<String> = body["result"]["clients"]
        .as_object()
        .map(|m| {
            m.values()
                .map(|c| c["user"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    users.sort();
    users
}

// ------------------------------------------------------------ pub/sub, presence

#[tokio::test]
async fn clients_on_different_nodes_see_each_others_publications_presence_and_join_leave() {
    let nodes = three().await;
    let channel = unique("room");
    let mut alice = nodes[0].client("alice").await;
    alice.subscribe(&channel).await;
    let mut bob = nodes[1].client("bob").await;
    bob.subscribe(&channel).await;
    loop {
        let join = alice.push("join").await;
        if join["info"]["user"] == "bob" {
            break;
        }
    }

    bob.publish(&channel, json!({"from": "bob"})).await;
    assert_eq!(
        alice.push("publication").await["data"],
        json!({"from": "bob"})
    );
    nodes[2].publish(&channel, json!({"from": "api"})).await;
    assert_eq!(
        alice.push("publication").await["data"],
        json!({"from": "api"})
    );
    // Bob's own publication, then the API's.
    assert_eq!(
        bob.push("publication").await["data"],
        json!({"from": "bob"})
    );
    assert_eq!(
        bob.push("publication").await["data"],
        json!({"from": "api"})
    );

    // Presence through any node is the cluster's.
    assert_eq!(presence_users(&nodes[2], &channel).await, ["alice", "bob"]);
    let stats = alice
        .call(json!({"type": "presence_stats", "channel": channel}))
        .await;
    assert_eq!(
        (stats["num_clients"].clone(), stats["num_users"].clone()),
        (json!(2), json!(2))
    );

    bob.stream.close(None).await.unwrap();
    let leave = alice.push("leave").await;
    assert_eq!(leave["info"]["user"], "bob");
    assert_eq!(presence_users(&nodes[1], &channel).await, ["alice"]);
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test]
async fn the_server_api_acts_on_the_whole_cluster() {
    let nodes = three().await;
    let channel = unique("api");
    let mut a = nodes[0].client("carol").await;
    a.subscribe(&channel).await;
    let mut b = nodes[1].client("dave").await;
    b.subscribe(&channel).await;

    // Channels across nodes, with their subscriber counts summed.
    let (_, body) = nodes[2]
        .api("channels", json!({"pattern": channel.clone()}))
        .await;
    assert_eq!(
        body["result"]["channels"][&channel]["num_clients"], 2,
        "{body}"
    );

    // A user's connections on every node, counted through a third.
    let _carol_on_b = nodes[1].client("carol").await;
    let (_, body) = nodes[2]
        .api("user_connections", json!({"user": "carol"}))
        .await;
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for n in &nodes {
            let (_, info) = n.api("info", json!({})).await;
            ids.push(info["result"]["node"].as_str().unwrap().to_owned());
        }
        ids
    };
    assert_eq!(
        body["result"],
        json!({"user": "carol", "connections": 2, "nodes": {ids[0].clone(): 1, ids[1].clone(): 1}}),
        "{body}"
    );
    // Every node's figures, from any node.
    let (_, body) = nodes[2].api("info", json!({})).await;
    let listed: Vec<&str> = body["result"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(listed, expected, "{body}");

    // Disconnecting a user through node 2 reaches node 0.
    let (status, body) = nodes[2]
        .api("disconnect", json!({"user": "carol", "reason": "bye"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (disconnect, code) = a.closed().await;
    assert_eq!(disconnect.unwrap()["reason"], "bye");
    assert_eq!(code, Some(3503));
    common::assert_alive(&mut b).await;
    for n in nodes {
        n.stop().await;
    }
}

// ------------------------------------------------------------ no sticky sessions

/// `POST /connection/poll` on `node`: the session id.
async fn poll_connect(http: &reqwest::Client, node: &TestServer, user: &str) -> String {
    let connected: Value = http
        .post(node.http("/connection/poll"))
        .json(&json!({"token": token(user)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    connected["session"].as_str().unwrap().to_owned()
}

async fn send(http: &reqwest::Client, node: &TestServer, session: &str, user: &str, body: Value) {
    let resp = http
        .post(node.http(&format!("/connection/send?session={session}")))
        .bearer_auth(token(user))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_eq!(status, 202, "{}", resp.text().await.unwrap());
}

#[tokio::test]
async fn a_long_poll_client_whose_requests_rotate_across_nodes_loses_nothing() {
    let nodes = three().await;
    let http = reqwest::Client::new();
    let channel = unique("poll");
    let session = poll_connect(&http, &nodes[0], "erin").await;
    send(
        &http,
        &nodes[1],
        &session,
        "erin",
        json!({"id": 1, "type": "subscribe", "channel": channel}),
    )
    .await;

    // Publications through every node while the polls rotate too.
    let publishers: Vec<_> = (0..3)
        .map(|k| {
            let addr = nodes[k].addr;
            let channel = channel.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    let (status, body) = common::api_call(
                        addr,
                        "publish",
                        json!({"channel": channel, "data": {"k": k, "i": i}}),
                        Some(API_KEY),
                    )
                    .await;
                    assert_eq!(status, 200, "{body}");
                }
            })
        })
        .collect();

    let mut cursor = 1;
    let mut offsets = Vec::new();
    let mut per_publisher = vec![Vec::new(); 3];
    let mut turn = 0;
    let deadline = tokio::time::Instant::now() + WAIT * 4;
    while offsets.len() < 30 {
        assert!(tokio::time::Instant::now() < deadline, "got {offsets:?}");
        let node = &nodes[turn % 3];
        turn += 1;
        let resp: Value = http
            .get(node.http(&format!(
                "/connection/poll?session={session}&cursor={cursor}"
            )))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        cursor = resp["cursor"].as_u64().unwrap_or_else(|| panic!("{resp}"));
        for m in resp["messages"].as_array().unwrap() {
            if m["type"] == "publication" {
                offsets.push(m["offset"].as_u64().unwrap());
                let k = m["data"]["k"].as_u64().unwrap() as usize;
                per_publisher[k].push(m["data"]["i"].as_u64().unwrap());
            }
        }
    }
    for p in publishers {
        p.await.unwrap();
    }
    // Every offset once, in order; each publisher's messages in its order.
    assert_eq!(offsets, (1..=30).collect::<Vec<_>>());
    for got in per_publisher {
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test]
async fn an_sse_client_whose_sends_land_on_other_nodes_gets_every_reply_on_its_stream() {
    let nodes = three().await;
    let http = reqwest::Client::new();
    let channel = unique("sse");
    let mut stream = Sse::open(
        http.get(nodes[0].http("/connection/sse"))
            .bearer_auth(token("frank")),
    )
    .await
    .expect("stream opens");
    let connected = stream.event().await.frame;
    let session = connected["session"].as_str().unwrap().to_owned();

    send(
        &http,
        &nodes[1],
        &session,
        "frank",
        json!({"id": 1, "type": "subscribe", "channel": channel}),
    )
    .await;
    for i in 0..5 {
        send(
            &http,
            &nodes[2 - (i % 2)],
            &session,
            "frank",
            json!({"id": 10 + i, "type": "publish", "channel": channel, "data": {"i": i}}),
        )
        .await;
    }
    let mut replies = Vec::new();
    let mut published = Vec::new();
    while replies.len() < 6 || published.len() < 5 {
        let frame = stream.event().await.frame;
        match frame["type"].as_str().unwrap() {
            "subscribed" | "published" => replies.push(frame["id"].as_u64().unwrap()),
            "publication" => published.push(frame["data"]["i"].as_u64().unwrap()),
            _ => {}
        }
    }
    assert_eq!(replies, [1, 10, 11, 12, 13, 14]);
    assert_eq!(published, [0, 1, 2, 3, 4]);

    // Another user's token cannot drive the session through another node.
    let resp = http
        .post(nodes[2].http(&format!("/connection/send?session={session}")))
        .bearer_auth(token("mallory"))
        .json(&json!({"id": 99, "type": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    for n in nodes {
        n.stop().await;
    }
}

// ------------------------------------------------------------ failures

#[tokio::test]
async fn kill_9_of_a_node_its_clients_recover_elsewhere_and_its_presence_expires() {
    let redis = redis_url();
    let env = [
        ("SWITCHBOARD_BROKER", redis.as_str()),
        ("SWITCHBOARD_STORE", &postgres_url()),
        ("SWITCHBOARD_PRESENCE_TTL", "2s"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let doomed = Process::start(dir.path(), &env);
    let survivor = node(&redis).await;
    let channel = unique("kill");

    let mut ws = Ws::open(&doomed.ws_url()).await;
    ws.connect(&token("gina")).await;
    ws.subscribe(&channel).await;
    let mut position = Value::Null;
    for i in 0..5 {
        position = survivor.publish(&channel, json!({"i": i})).await;
        let p = ws.push("publication").await;
        assert_eq!(p["data"]["i"], i);
    }
    assert_eq!(presence_users(&survivor, &channel).await, ["gina"]);

    doomed.signal("KILL");
    let mut doomed = doomed;
    doomed.wait(WAIT);
    for i in 5..10 {
        survivor.publish(&channel, json!({"i": i})).await;
    }

    // The client reconnects to the survivor and recovers from PostgreSQL.
    let mut ws = Ws::open(&survivor.ws_url()).await;
    ws.connect(&token("gina")).await;
    let reply = ws
        .call(json!({"type": "subscribe", "channel": channel, "since": position}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    let got: Vec<u64> = reply["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [5, 6, 7, 8, 9]);

    // The dead node's presence entry expires (TTL 2 s); the new one stays.
    eventually("the dead node's presence expires", || async {
        presence_users(&survivor, &channel).await == ["gina"]
            && presence_stats_clients(&survivor, &channel).await == 1
    })
    .await;
    survivor.stop().await;
}

async fn presence_stats_clients(node: &TestServer, channel: &str) -> u64 {
    let (_, body) = node
        .api("presence_stats", json!({"channel": channel}))
        .await;
    body["result"]["num_clients"].as_u64().unwrap_or(u64::MAX)
}

/// A `redis-server` of our own, on a free port, keeping nothing on disk.
struct OwnRedis {
    port: u16,
    child: Child,
}

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (Debian package redis-server)");
        // Owned at once, so it is killed and reaped whatever happens next.
        let redis = OwnRedis { port, child };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not come up on {port}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn healthy(node: &TestServer) -> bool {
    let (_, body) = node.api("info", json!({})).await;
    body["result"]["broker_healthy"] == true
}

#[tokio::test]
async fn redis_restarted_mid_traffic_nodes_come_back_and_clients_recover() {
    let port = free_port();
    let redis = OwnRedis::start(port);
    let nodes = [node(&redis.url()).await, node(&redis.url()).await];
    // A persisted channel: its history is in PostgreSQL and survives.
    let channel = unique("restart");
    let mut ws = nodes[0].client("hana").await;
    ws.subscribe(&channel).await;
    let mut acknowledged = Vec::new();
    for i in 0..3 {
        nodes[1].publish(&channel, json!({"i": i})).await;
        acknowledged.push(i);
        assert_eq!(ws.push("publication").await["data"]["i"], i);
    }

    drop(redis);
    eventually("the nodes notice", || async { !healthy(&nodes[0]).await }).await;
    let (_, body) = nodes[0].api("info", json!({})).await;
    assert_eq!(body["result"]["broker_healthy"], false, "{body}");
    let health: Value = reqwest::get(nodes[0].http("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    // Publishing to a persisted channel still works (PostgreSQL is up);
    // delivery to other nodes waits for Redis.
    for i in 3..6 {
        let (status, _) = nodes[1]
            .api("publish", json!({"channel": channel, "data": {"i": i}}))
            .await;
        if status == 200 {
            acknowledged.push(i);
        }
    }

    let _redis = OwnRedis::start(port);
    eventually("the nodes reconnect by themselves", || async {
        healthy(&nodes[0]).await && healthy(&nodes[1]).await
    })
    .await;
    for i in 6..8 {
        nodes[1].publish(&channel, json!({"i": i})).await;
        acknowledged.push(i);
    }

    // The client was told to recover (3010), reconnects and gets every
    // acknowledged publication once, in order.
    let mut got: Vec<u64> = vec![0, 1, 2];
    let (disconnect, _) = ws.closed().await;
    assert_eq!(disconnect.map(|d| d["code"].clone()), Some(json!(3010)));
    let mut ws = nodes[0].client("hana").await;
    let reply = ws
        .call(json!({"type": "subscribe", "channel": channel, "since": {"offset": 3, "epoch": ws_epoch(&nodes[0], &channel).await}}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    got.extend(
        reply["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["data"]["i"].as_u64().unwrap()),
    );
    assert_eq!(
        got,
        acknowledged.iter().map(|&i| i as u64).collect::<Vec<_>>()
    );
    for n in nodes {
        n.stop().await;
    }
}

async fn ws_epoch(node: &TestServer, channel: &str) -> String {
    let (_, body) = node
        .api("history", json!({"channel": channel, "limit": 0}))
        .await;
    body["result"]["position"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned()
}
