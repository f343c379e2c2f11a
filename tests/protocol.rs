//! The native protocol's happy paths over a real WebSocket: the reply and
//! push shapes of docs/protocol.md, ordering, presence, history, recovery.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{assert_alive, keys, namespace, token, token_with, unix_now, TestServer, Ws, SECRET};
use futures_util::StreamExt;
use serde_json::{json, Value};
use switchboard::auth::{mint_hs256, SubscriptionClaims};
use tokio_tungstenite::tungstenite::Message;

const SILENCE: Duration = Duration::from_millis(200);

/// A server with the built-in `chat` namespace plus `feed` (history and
/// client publishing, no presence, no join/leave) and whatever `tweak` adds.
async fn start(tweak: impl FnOnce(&mut switchboard::config::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.namespaces.insert("feed".into(), namespace(|_| {}));
        tweak(c);
    })
    .await
}

/// The next push of `kind` whose `info.user` is `user` (others of that kind
/// are skipped).
async fn push_from(ws: &mut Ws, kind: &str, user: &str) -> Value {
    loop {
        let v = ws.push(kind).await;
        if v["info"]["user"] == user {
            return v;
        }
    }
}

// ---------------------------------------------------------------- connect

#[tokio::test]
async fn connect_replies_with_client_user_session_and_ping() {
    let server = start(|_| {}).await;
    let mut ws = Ws::open(&server.ws_url()).await;
    let id = ws
        .send(json!({"type": "connect", "token": token("42")}))
        .await;
    let reply = ws.reply(id).await;
    assert_eq!(
        keys(&reply),
        ["client", "id", "ping", "session", "type", "user"],
        "{reply}"
    );
    assert_eq!(reply["id"], id);
    assert_eq!(reply["type"], "connected");
    assert_eq!(reply["user"], "42");
    assert_eq!(reply["ping"], 25);
    assert!(!reply["client"].as_str().unwrap().is_empty(), "{reply}");
    assert!(!reply["session"].as_str().unwrap().is_empty(), "{reply}");
}

#[tokio::test]
async fn each_connection_gets_its_own_client_id_and_session() {
    let server = start(|_| {}).await;
    let mut a = Ws::open(&server.ws_url()).await;
    let mut b = Ws::open(&server.ws_url()).await;
    let ra = a.connect(&token("42")).await;
    let rb = b.connect(&token("42")).await;
    assert_ne!(ra["client"], rb["client"]);
    assert_ne!(ra["session"], rb["session"]);
}

#[tokio::test]
async fn connect_reply_announces_the_configured_ping_interval() {
    let server = start(|c| c.client.ping_interval = Duration::from_secs(7)).await;
    let mut ws = Ws::open(&server.ws_url()).await;
    let reply = ws.connect(&token("42")).await;
    assert_eq!(reply["ping"], 7);
}

// ---------------------------------------------------------------- subscribe

#[tokio::test]
async fn subscribe_replies_with_channel_position_recovered_and_publications() {
    let server = start(|_| {}).await;
    let mut ws = server.client("alice").await;
    let id = ws
        .send(json!({"type": "subscribe", "channel": "chat:room"}))
        .await;
    let reply = ws.reply(id).await;
    let epoch = reply["position"]["epoch"]
        .as_str()
        .expect("epoch is a string");
    assert!(!epoch.is_empty());
    assert_eq!(
        reply,
        json!({
            "id": id,
            "type": "subscribed",
            "channel": "chat:room",
            "position": {"offset": 0, "epoch": epoch},
            "recovered": false,
            "publications": [],
        })
    );
}

#[tokio::test]
async fn subscribe_without_since_reports_the_current_position_and_no_history() {
    let server = start(|_| {}).await;
    server.publish("feed:x", json!(1)).await;
    let position = server.publish("feed:x", json!(2)).await;
    let mut ws = server.client("alice").await;
    let reply = ws.subscribe("feed:x").await;
    assert_eq!(reply["position"], position);
    assert_eq!(reply["position"]["offset"], 2);
    assert_eq!(reply["recovered"], false);
    assert_eq!(reply["publications"], json!([]));
}

// ---------------------------------------------------------------- publish

#[tokio::test]
async fn publish_replies_with_position_and_pushes_the_publication() {
    let server = start(|_| {}).await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let epoch = alice.subscribe("chat:room").await["position"]["epoch"].clone();
    bob.subscribe("chat:room").await;

    let id = alice
        .send(json!({"type": "publish", "channel": "chat:room", "data": {"text": "hi"}}))
        .await;
    assert_eq!(
        alice.reply(id).await,
        json!({"id": id, "type": "published", "position": {"offset": 1, "epoch": epoch}})
    );

    let alice_id = alice.client_id.clone();
    let before = unix_now() * 1000;
    for ws in [&mut bob, &mut alice] {
        let push = ws.push("publication").await;
        let time = push["time"].as_u64().expect("time in ms");
        assert!(time + 60_000 > before && time < before + 60_000, "{push}");
        assert_eq!(
            push,
            json!({
                "type": "publication",
                "channel": "chat:room",
                "offset": 1,
                "epoch": epoch,
                "data": {"text": "hi"},
                "info": {"user": "alice", "client": alice_id},
                "time": time,
            })
        );
    }
}

#[tokio::test]
async fn publication_data_is_delivered_byte_for_byte() {
    // Key order, whitespace, number spelling, escapes and integers beyond
    // f64 survive because `data` is never re-encoded.
    let data = r#"{"z": 1, "a":[1.50,2e3],"big":123456789012345678901234567890,"s":"\u00e9\n"}"#;
    let server = start(|_| {}).await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.subscribe("feed:raw").await;
    bob.subscribe("feed:raw").await;
    alice
        .send_text(&format!(
            r#"{{"id":99,"type":"publish","channel":"feed:raw","data":{data}}}"#
        ))
        .await;
    let raw = loop {
        let msg = tokio::time::timeout(common::WAIT, bob.stream.next())
            .await
            .expect("a frame within the wait")
            .expect("connection open")
            .expect("frame");
        if let Message::Text(t) = msg {
            if t.contains(r#""type":"publication""#) {
                break t.to_string();
            }
        }
    };
    assert!(
        raw.contains(&format!(r#""data":{data}"#)),
        "data was re-encoded: {raw}"
    );
    assert_eq!(alice.reply(99).await["type"], "published");
}

#[tokio::test]
async fn offsets_increase_by_one_per_publication() {
    let server = start(|_| {}).await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.subscribe("feed:count").await;
    bob.subscribe("feed:count").await;
    for n in 1..=5u64 {
        let reply = alice.publish("feed:count", json!({"n": n})).await;
        assert_eq!(reply["position"]["offset"], n, "{reply}");
    }
    for n in 1..=5u64 {
        let push = bob.push("publication").await;
        assert_eq!(push["offset"], n, "{push}");
        assert_eq!(push["data"], json!({"n": n}));
    }
}

/// Publishes sent without waiting are handled side by side on a
/// WebSocket (docs/protocol.md, "Replies"): each still gets its reply in
/// the order the commands were sent, errors and other commands included,
/// and offsets follow the sending order per channel. Both a stream the
/// broker keeps and a persisted one (the store answers later).
#[tokio::test]
async fn pipelined_publishes_are_answered_in_command_order() {
    let server = start(|c| {
        c.namespaces
            .insert("kept".into(), namespace(|ns| ns.persist = true));
        c.namespaces
            .insert("quiet".into(), namespace(|ns| ns.client_publish = false));
    })
    .await;
    let mut alice = server.client("alice").await;
    // More than one connection's publishes in flight (32), with a refused
    // publish, a ping and a presence query (refused: no presence in `feed`)
    // among them.
    let mut sent = Vec::new();
    for n in 0..80u64 {
        let command = match n {
            10 => json!({"type": "publish", "channel": "quiet:x", "data": {"n": n}}),
            20 => json!({"type": "ping"}),
            45 => json!({"type": "presence", "channel": "feed:a"}),
            _ if n % 2 == 0 => json!({"type": "publish", "channel": "feed:a", "data": {"n": n}}),
            _ => json!({"type": "publish", "channel": "kept:b", "data": {"n": n}}),
        };
        sent.push((alice.send(command.clone()).await, command));
    }
    let mut offsets: BTreeMap<String, u64> = BTreeMap::new();
    for (id, command) in sent {
        let reply = alice.recv().await.expect("connection open");
        assert_eq!(
            reply["id"], id,
            "replies out of order: {reply} for {command}"
        );
        match command["channel"].as_str() {
            Some("quiet:x") => assert_eq!(reply["code"], 103, "{reply}"),
            Some("feed:a") if command["type"] == "presence" => {
                assert_eq!(reply["code"], 108, "{reply}")
            }
            Some(channel) => {
                assert_eq!(reply["type"], "published", "{reply}");
                let last = offsets.entry(channel.to_owned()).or_default();
                *last += 1;
                assert_eq!(reply["position"]["offset"], *last, "{reply} for {command}");
            }
            None => assert_eq!(reply["type"], "pong", "{reply}"),
        }
    }
    assert_eq!(offsets["feed:a"] + offsets["kept:b"], 77);
    // The history holds them in sending order.
    for channel in ["feed:a", "kept:b"] {
        let reply = alice
            .call(json!({"type": "history", "channel": channel, "limit": 100}))
            .await;
        let ns: Vec<u64> = reply["publications"]
            .as_array()
            .unwrap_or_else(|| panic!("{reply}"))
            .iter()
            .map(|p| p["data"]["n"].as_u64().unwrap())
            .collect();
        let mut sorted = ns.clone();
        sorted.sort_unstable();
        assert_eq!(ns, sorted, "{channel}");
        assert_eq!(ns.len() as u64, offsets[channel], "{channel}");
    }
    alice.expect_silence(SILENCE).await;
}

/// A close frame right behind pipelined publishes: their replies are
/// written before the connection closes (the close waits for them).
#[tokio::test]
async fn a_close_frame_behind_pipelined_publishes_waits_for_their_replies() {
    use futures_util::SinkExt;
    let server = start(|c| {
        c.namespaces
            .insert("kept".into(), namespace(|ns| ns.persist = true));
    })
    .await;
    let mut alice = server.client("alice").await;
    let mut ids = Vec::new();
    for n in 0..6u64 {
        let id = 100 + n;
        ids.push(id);
        let channel = if n % 2 == 0 { "feed:a" } else { "kept:b" };
        let frame = json!({"id": id, "type": "publish", "channel": channel, "data": {"n": n}});
        alice
            .stream
            .feed(Message::text(frame.to_string()))
            .await
            .expect("feed");
    }
    alice.stream.feed(Message::Close(None)).await.expect("feed");
    alice.stream.flush().await.expect("flush");
    let mut got = Vec::new();
    while let Ok(Some(v)) = alice.recv_wire(Duration::from_secs(3)).await {
        got.push(v);
    }
    let replied: Vec<u64> = got
        .iter()
        .filter(|v| v["type"] == "published")
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        replied, ids,
        "every reply before the close, in order: {got:?}"
    );
}

// ---------------------------------------------------------------- join / leave

#[tokio::test]
async fn join_push_carries_the_token_info_claim() {
    let server = start(|_| {}).await;
    let mut bob = server.client("bob").await;
    bob.subscribe("chat:room").await;
    let mut alice = Ws::open(&server.ws_url()).await;
    alice
        .connect(&token_with(
            "alice",
            None,
            Some(json!({"name": "Alice"})),
            None,
        ))
        .await;
    alice.subscribe("chat:room").await;
    assert_eq!(
        push_from(&mut bob, "join", "alice").await,
        json!({
            "type": "join",
            "channel": "chat:room",
            "info": {"user": "alice", "client": alice.client_id, "data": {"name": "Alice"}},
        })
    );
}

#[tokio::test]
async fn leave_push_is_sent_on_unsubscribe() {
    let server = start(|_| {}).await;
    let mut bob = server.client("bob").await;
    bob.subscribe("chat:room").await;
    let mut alice = Ws::open(&server.ws_url()).await;
    alice
        .connect(&token_with(
            "alice",
            None,
            Some(json!({"name": "Alice"})),
            None,
        ))
        .await;
    alice.subscribe("chat:room").await;
    push_from(&mut bob, "join", "alice").await;

    let id = alice
        .send(json!({"type": "unsubscribe", "channel": "chat:room"}))
        .await;
    assert_eq!(
        alice.reply(id).await,
        json!({"id": id, "type": "unsubscribed", "channel": "chat:room"})
    );
    assert_eq!(
        push_from(&mut bob, "leave", "alice").await,
        json!({
            "type": "leave",
            "channel": "chat:room",
            "info": {"user": "alice", "client": alice.client_id, "data": {"name": "Alice"}},
        })
    );
}

#[tokio::test]
async fn leave_push_is_sent_when_the_client_closes_its_socket() {
    let server = start(|_| {}).await;
    let mut bob = server.client("bob").await;
    bob.subscribe("chat:room").await;
    let mut alice = Ws::open(&server.ws_url()).await;
    alice
        .connect(&token_with(
            "alice",
            None,
            Some(json!({"name": "Alice"})),
            None,
        ))
        .await;
    alice.subscribe("chat:room").await;
    push_from(&mut bob, "join", "alice").await;
    let alice_id = alice.client_id.clone();
    // A close frame ends the session at once (a dropped socket would
    // keep it for the grace period; see lifecycle.rs).
    alice.stream.close(None).await.expect("close frame sent");
    assert_eq!(
        push_from(&mut bob, "leave", "alice").await,
        json!({
            "type": "leave",
            "channel": "chat:room",
            "info": {"user": "alice", "client": alice_id, "data": {"name": "Alice"}},
        })
    );
}

// ---------------------------------------------------------------- presence

#[tokio::test]
async fn presence_lists_every_subscribed_client_with_its_info() {
    let server = start(|_| {}).await;
    let mut alice = Ws::open(&server.ws_url()).await;
    alice
        .connect(&token_with(
            "alice",
            None,
            Some(json!({"name": "Alice"})),
            None,
        ))
        .await;
    let mut bob = server.client("bob").await;
    alice.subscribe("chat:room").await;
    bob.subscribe("chat:room").await;
    let id = alice
        .send(json!({"type": "presence", "channel": "chat:room"}))
        .await;
    let mut clients = serde_json::Map::new();
    clients.insert(
        alice.client_id.clone(),
        json!({"user": "alice", "client": alice.client_id, "data": {"name": "Alice"}}),
    );
    clients.insert(
        bob.client_id.clone(),
        json!({"user": "bob", "client": bob.client_id}),
    );
    assert_eq!(
        alice.reply(id).await,
        json!({"id": id, "type": "presence", "clients": clients})
    );
}

#[tokio::test]
async fn presence_forgets_a_client_that_disconnected() {
    let server = start(|_| {}).await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.subscribe("chat:room").await;
    bob.subscribe("chat:room").await;
    bob.stream.close(None).await.expect("close frame sent");
    push_from(&mut alice, "leave", "bob").await;
    let reply = alice
        .call(json!({"type": "presence", "channel": "chat:room"}))
        .await;
    let listed: Vec<&String> = reply["clients"].as_object().unwrap().keys().collect();
    assert_eq!(listed, [&alice.client_id], "{reply}");
}

#[tokio::test]
async fn presence_stats_counts_clients_and_distinct_users() {
    let server = start(|_| {}).await;
    let mut alice1 = server.client("alice").await;
    let mut alice2 = server.client("alice").await;
    let mut bob = server.client("bob").await;
    for ws in [&mut alice1, &mut alice2, &mut bob] {
        ws.subscribe("chat:room").await;
    }
    let id = bob
        .send(json!({"type": "presence_stats", "channel": "chat:room"}))
        .await;
    assert_eq!(
        bob.reply(id).await,
        json!({"id": id, "type": "presence_stats", "num_clients": 3, "num_users": 2})
    );
}

// ---------------------------------------------------------------- history

/// Publishes `{"n":1}`…`{"n":count}` through the API; returns the epoch.
async fn fill(server: &TestServer, channel: &str, count: u64) -> String {
    let mut epoch = String::new();
    for n in 1..=count {
        let position = server.publish(channel, json!({"n": n})).await;
        epoch = position["epoch"].as_str().unwrap().to_string();
    }
    epoch
}

fn offsets(publications: &Value) -> Vec<u64> {
    publications
        .as_array()
        .expect("publications array")
        .iter()
        .map(|p| {
            assert_eq!(p["data"]["n"], p["offset"], "{p}");
            p["offset"].as_u64().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn history_returns_position_and_the_latest_publications_up_to_limit() {
    let server = start(|_| {}).await;
    let epoch = fill(&server, "chat:h", 5).await;
    let mut ws = server.client("alice").await;
    let id = ws
        .send(json!({"type": "history", "channel": "chat:h", "limit": 2}))
        .await;
    let reply = ws.reply(id).await;
    assert_eq!(keys(&reply), ["id", "position", "publications", "type"]);
    assert_eq!(reply["type"], "history");
    assert_eq!(reply["position"], json!({"offset": 5, "epoch": epoch}));
    assert_eq!(offsets(&reply["publications"]), [4, 5]);
    // Published by the API: no `info`.
    assert_eq!(
        keys(&reply["publications"][0]),
        ["data", "offset", "time"],
        "{reply}"
    );
}

#[tokio::test]
async fn history_without_limit_returns_everything_retained() {
    let server = start(|_| {}).await;
    fill(&server, "chat:h", 5).await;
    let mut ws = server.client("alice").await;
    let reply = ws
        .call(json!({"type": "history", "channel": "chat:h"}))
        .await;
    assert_eq!(offsets(&reply["publications"]), [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn history_reverse_returns_newest_first() {
    let server = start(|_| {}).await;
    fill(&server, "chat:h", 5).await;
    let mut ws = server.client("alice").await;
    let reply = ws
        .call(json!({"type": "history", "channel": "chat:h", "limit": 2, "reverse": true}))
        .await;
    assert_eq!(reply["type"], "history", "{reply}");
    assert_eq!(offsets(&reply["publications"]), [5, 4]);
}

#[tokio::test]
async fn history_since_returns_what_followed_the_position() {
    let server = start(|_| {}).await;
    let epoch = fill(&server, "chat:h", 5).await;
    let mut ws = server.client("alice").await;
    let reply = ws
        .call(json!({
            "type": "history",
            "channel": "chat:h",
            "since": {"offset": 2, "epoch": epoch},
        }))
        .await;
    assert_eq!(reply["position"], json!({"offset": 5, "epoch": epoch}));
    assert_eq!(offsets(&reply["publications"]), [3, 4, 5]);
    assert_eq!(reply["recovered"], true, "{reply}");
}

#[tokio::test]
async fn history_says_recovered_only_when_asked_with_since() {
    let server = start(|_| {}).await;
    fill(&server, "chat:h", 3).await;
    let mut ws = server.client("alice").await;
    let plain = ws
        .call(json!({"type": "history", "channel": "chat:h"}))
        .await;
    assert!(plain.get("recovered").is_none(), "{plain}");
    let stale = ws
        .call(json!({
            "type": "history",
            "channel": "chat:h",
            "since": {"offset": 1, "epoch": "another-epoch"},
        }))
        .await;
    assert_eq!(stale["recovered"], false, "{stale}");
}

// ---------------------------------------------------------------- unsubscribe

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let server = start(|_| {}).await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.subscribe("feed:x").await;
    bob.subscribe("feed:x").await;
    let reply = alice
        .call(json!({"type": "unsubscribe", "channel": "feed:x"}))
        .await;
    assert_eq!(reply["type"], "unsubscribed", "{reply}");
    server.publish("feed:x", json!("after")).await;
    assert_eq!(bob.push("publication").await["data"], "after");
    alice.expect_silence(SILENCE).await;
}

// ---------------------------------------------------------------- ping / refresh

#[tokio::test]
async fn client_ping_gets_pong_with_the_same_id() {
    let server = start(|_| {}).await;
    let mut ws = server.client("alice").await;
    ws.send_text(r#"{"id":4242,"type":"ping"}"#).await;
    assert_eq!(ws.recv().await, Some(json!({"id": 4242, "type": "pong"})));
}

#[tokio::test]
async fn refresh_with_a_new_token_for_the_same_user_is_refreshed() {
    let server = start(|_| {}).await;
    let mut ws = Ws::open(&server.ws_url()).await;
    ws.connect(&token_with("alice", Some(unix_now() + 3600), None, None))
        .await;
    let exp = unix_now() + 7200;
    let id = ws
        .send(json!({"type": "refresh", "token": token_with("alice", Some(exp), None, None)}))
        .await;
    assert_eq!(
        ws.reply(id).await,
        json!({"id": id, "type": "refreshed", "expires": exp})
    );
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn refresh_moves_the_expiry_so_the_connection_outlives_its_first_token() {
    let server = start(|_| {}).await;
    let mut ws = Ws::open(&server.ws_url()).await;
    // Expires within a second unless refreshed.
    ws.connect(&token_with("alice", Some(unix_now() + 1), None, None))
        .await;
    let reply = ws
        .call(json!({
            "type": "refresh",
            "token": token_with("alice", Some(unix_now() + 3600), None, None),
        }))
        .await;
    assert_eq!(reply["type"], "refreshed", "{reply}");
    ws.expect_silence(Duration::from_millis(1500)).await;
    assert_alive(&mut ws).await;
}

// ---------------------------------------------------------------- namespace options

#[tokio::test]
async fn exclude_publisher_does_not_echo_to_the_publisher_but_reaches_others() {
    let server = start(|c| {
        c.namespaces
            .insert("quiet".into(), namespace(|ns| ns.exclude_publisher = true));
    })
    .await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.subscribe("quiet:room").await;
    bob.subscribe("quiet:room").await;
    alice.publish("quiet:room", json!("from alice")).await;
    let push = bob.push("publication").await;
    assert_eq!(push["data"], "from alice");
    assert_eq!(push["info"]["client"], json!(alice.client_id));
    alice.expect_silence(SILENCE).await;
    // The server API has no publishing client: everyone gets its publications.
    server
        .publish("quiet:room", json!("from the backend"))
        .await;
    assert_eq!(alice.push("publication").await["data"], "from the backend");
    assert_eq!(bob.push("publication").await["data"], "from the backend");
}

#[tokio::test]
async fn private_namespace_accepts_a_matching_channels_claim() {
    let server = start(|c| {
        c.namespaces
            .insert("secret".into(), namespace(|ns| ns.private = true));
    })
    .await;
    let mut alice = Ws::open(&server.ws_url()).await;
    alice
        .connect(&token_with(
            "alice",
            None,
            None,
            Some(vec!["secret:team_*"]),
        ))
        .await;
    let reply = alice.subscribe("secret:team_1").await;
    assert_eq!(reply["channel"], "secret:team_1");
    let published = alice.publish("secret:team_1", json!("inside")).await;
    assert_eq!(published["position"]["offset"], 1);
    assert_eq!(alice.push("publication").await["data"], "inside");
}

#[tokio::test]
async fn private_namespace_accepts_a_subscription_token() {
    let server = start(|c| {
        c.namespaces
            .insert("secret".into(), namespace(|ns| ns.private = true));
    })
    .await;
    let mut bob = server.client("bob").await;
    let sub_token = mint_hs256(
        SECRET,
        &SubscriptionClaims {
            sub: "bob".into(),
            channel: "secret:x".into(),
            exp: Some(unix_now() + 3600),
        },
    )
    .unwrap();
    let id = bob
        .send(json!({"type": "subscribe", "channel": "secret:x", "token": sub_token}))
        .await;
    let reply = bob.reply(id).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["channel"], "secret:x");
    server.publish("secret:x", json!("granted")).await;
    assert_eq!(bob.push("publication").await["data"], "granted");
}

#[tokio::test]
async fn user_limited_channel_lets_its_users_in() {
    let server = start(|c| {
        c.namespaces.insert("dm".into(), namespace(|_| {}));
    })
    .await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.subscribe("dm:x#alice,bob").await;
    bob.subscribe("dm:x#alice,bob").await;
    alice.publish("dm:x#alice,bob", json!("psst")).await;
    let push = bob.push("publication").await;
    assert_eq!(push["channel"], "dm:x#alice,bob");
    assert_eq!(push["data"], "psst");
}

// ---------------------------------------------------------------- idempotency

#[tokio::test]
async fn idempotent_publish_returns_the_first_position_and_delivers_once() {
    let server = start(|_| {}).await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.subscribe("feed:once").await;
    bob.subscribe("feed:once").await;
    let publish = |n: u64| json!({"type": "publish", "channel": "feed:once", "data": {"n": n}, "idempotency_key": "k1"});
    let first = alice.call(publish(1)).await;
    let second = alice.call(publish(2)).await;
    assert_eq!(first["type"], "published", "{first}");
    assert_eq!(second["type"], "published", "{second}");
    assert_eq!(first["position"], second["position"]);
    assert_eq!(first["position"]["offset"], 1);

    let push = bob.push("publication").await;
    assert_eq!(
        (push["offset"].clone(), push["data"].clone()),
        (json!(1), json!({"n": 1}))
    );
    bob.expect_silence(SILENCE).await;
    // The duplicate did not use up an offset.
    let next = alice.publish("feed:once", json!({"n": 3})).await;
    assert_eq!(next["position"]["offset"], 2);
}

// ---------------------------------------------------------------- ordering under load

#[tokio::test]
async fn concurrent_publishers_reach_every_subscriber_in_offset_order_without_gaps() {
    const PUBLISHERS: u64 = 3;
    const EACH: u64 = 200;
    const TOTAL: u64 = PUBLISHERS * EACH;
    let server = start(|c| {
        c.namespaces
            .insert("bulk".into(), namespace(|ns| ns.history_size = 0));
    })
    .await;

    let mut subscribers = Vec::new();
    for i in 0..4 {
        let mut ws = server.client(&format!("sub{i}")).await;
        ws.subscribe("bulk:stream").await;
        subscribers.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(TOTAL as usize);
            for _ in 0..TOTAL {
                let push = ws.push("publication").await;
                seen.push((
                    push["offset"].as_u64().unwrap(),
                    push["data"]["p"].as_u64().unwrap(),
                    push["data"]["n"].as_u64().unwrap(),
                ));
            }
            ws.expect_silence(SILENCE).await;
            seen
        }));
    }
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let mut ws = server.client(&format!("pub{p}")).await;
        publishers.push(tokio::spawn(async move {
            for n in 0..EACH {
                ws.publish("bulk:stream", json!({"p": p, "n": n})).await;
            }
        }));
    }
    for p in publishers {
        p.await.unwrap();
    }
    for (i, s) in subscribers.into_iter().enumerate() {
        let seen = s.await.unwrap();
        let offsets: Vec<u64> = seen.iter().map(|s| s.0).collect();
        assert_eq!(offsets, (1..=TOTAL).collect::<Vec<_>>(), "subscriber {i}");
        // Each publisher's messages keep the order it sent them in.
        let mut per_publisher: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (_, p, n) in &seen {
            per_publisher.entry(*p).or_default().push(*n);
        }
        for p in 0..PUBLISHERS {
            assert_eq!(
                per_publisher[&p],
                (0..EACH).collect::<Vec<_>>(),
                "subscriber {i}, publisher {p}"
            );
        }
    }
}

// ---------------------------------------------------------------- recovery

/// Subscribes, reads two publications, drops the socket, lets three more be
/// published, then resubscribes with `since`: exactly the three missed,
/// then live ones with no duplicate.
async fn recovers_after_reconnect(server: &TestServer, channel: &str) {
    let mut ws = server.client("alice").await;
    ws.subscribe(channel).await;
    server.publish(channel, json!({"n": 1})).await;
    server.publish(channel, json!({"n": 2})).await;
    ws.push("publication").await;
    let last = ws.push("publication").await;
    let since = json!({"offset": last["offset"], "epoch": last["epoch"]});
    assert_eq!(since["offset"], 2);
    drop(ws);

    for n in 3..=5 {
        server.publish(channel, json!({"n": n})).await;
    }

    let mut ws = server.client("alice").await;
    let reply = ws
        .call(json!({"type": "subscribe", "channel": channel, "since": since}))
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(
        reply["position"],
        json!({"offset": 5, "epoch": since["epoch"]})
    );
    assert_eq!(offsets(&reply["publications"]), [3, 4, 5]);

    server.publish(channel, json!({"n": 6})).await;
    let live = ws.push("publication").await;
    assert_eq!(live["offset"], 6, "{live}");
    assert_eq!(live["data"], json!({"n": 6}));
    ws.expect_silence(SILENCE).await;
}

#[tokio::test]
async fn recovery_after_reconnect_returns_exactly_the_missed_publications() {
    let server = start(|_| {}).await;
    recovers_after_reconnect(&server, "feed:rec").await;
}

#[tokio::test]
async fn recovery_after_reconnect_works_in_a_persisted_namespace() {
    let server = start(|c| {
        c.namespaces
            .insert("stored".into(), namespace(|ns| ns.persist = true));
    })
    .await;
    recovers_after_reconnect(&server, "stored:rec").await;
}

#[tokio::test]
async fn recovery_while_publishing_continues_has_no_gap_and_no_duplicate() {
    const TOTAL: u64 = 150;
    let server = start(|c| {
        c.namespaces
            .insert("rec".into(), namespace(|ns| ns.history_size = 1000));
    })
    .await;
    let mut ws = server.client("alice").await;
    ws.subscribe("rec:live").await;
    let addr = server.addr;
    let publisher = tokio::spawn(async move {
        for n in 1..=TOTAL {
            let (status, body) = common::api_call(
                addr,
                "publish",
                json!({"channel": "rec:live", "data": {"n": n}}),
                Some(common::API_KEY),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
    });
    let mut last = ws.push("publication").await;
    while last["offset"].as_u64().unwrap() < 10 {
        last = ws.push("publication").await;
    }
    drop(ws);

    let mut ws = server.client("alice").await;
    let reply = ws
        .call(json!({
            "type": "subscribe",
            "channel": "rec:live",
            "since": {"offset": last["offset"], "epoch": last["epoch"]},
        }))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    let mut seen = offsets(&reply["publications"]);
    let mut next = last["offset"].as_u64().unwrap() + 1 + seen.len() as u64;
    while next <= TOTAL {
        let push = ws.push("publication").await;
        assert_eq!(push["data"]["n"], push["offset"]);
        seen.push(push["offset"].as_u64().unwrap());
        next += 1;
    }
    publisher.await.unwrap();
    let first = last["offset"].as_u64().unwrap() + 1;
    assert_eq!(seen, (first..=TOTAL).collect::<Vec<_>>());
    ws.expect_silence(SILENCE).await;
}

#[tokio::test]
async fn recovery_with_a_wrong_epoch_is_not_recovered() {
    let server = start(|_| {}).await;
    let epoch = fill(&server, "feed:e", 3).await;
    let mut ws = server.client("alice").await;
    let reply = ws
        .call(json!({
            "type": "subscribe",
            "channel": "feed:e",
            "since": {"offset": 1, "epoch": "not-the-epoch"},
        }))
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_eq!(reply["position"], json!({"offset": 3, "epoch": epoch}));
}

#[tokio::test]
async fn recovery_when_the_window_is_gone_is_not_recovered() {
    let server = start(|c| {
        c.namespaces
            .insert("short".into(), namespace(|ns| ns.history_size = 3));
    })
    .await;
    let mut ws = server.client("alice").await;
    ws.subscribe("short:x").await;
    server.publish("short:x", json!({"n": 1})).await;
    let seen = ws.push("publication").await;
    drop(ws);
    for n in 2..=11 {
        server.publish("short:x", json!({"n": n})).await;
    }
    let mut ws = server.client("alice").await;
    let reply = ws
        .call(json!({
            "type": "subscribe",
            "channel": "short:x",
            "since": {"offset": seen["offset"], "epoch": seen["epoch"]},
        }))
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_eq!(
        reply["position"],
        json!({"offset": 11, "epoch": seen["epoch"]})
    );
}
