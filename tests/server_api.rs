//! The server API (`/api/*` with an API key), `/health` and `/metrics`,
//! over real HTTP against a real node.

mod common;

use std::time::Duration;

use common::{api_call, assert_alive, keys, namespace, TestServer, Ws, API_KEY};
use serde_json::{json, Value};
use switchboard::config::Config;

const SILENCE: Duration = Duration::from_millis(200);

/// A server with the built-in `chat` namespace plus `feed` (history, no
/// presence, no join/leave) and whatever `tweak` changes.
async fn start(tweak: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.namespaces.insert("feed".into(), namespace(|_| {}));
        tweak(c);
    })
    .await
}

/// POSTs a raw body to `/api/<method>` with the right key.
async fn api_raw(server: &TestServer, method: &str, body: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(server.http(&format!("/api/{method}")))
        .header("Authorization", format!("apikey {API_KEY}"))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("API request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Asserts an API error: HTTP status and `{"error":{"code":…,"message":…}}`.
fn assert_api_error(answer: &(u16, Value), status: u16, code: u16) {
    let (got_status, body) = answer;
    assert_eq!(*got_status, status, "{body}");
    assert_eq!(keys(body), ["error"], "{body}");
    assert_eq!(keys(&body["error"]), ["code", "message"], "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        !body["error"]["message"].as_str().unwrap().is_empty(),
        "{body}"
    );
}

// ---------------------------------------------------------------- publish

#[tokio::test]
async fn publish_returns_the_position() {
    let server = start(|_| {}).await;
    let (status, body) = server
        .api("publish", json!({"channel": "feed:a", "data": {"x": 1}}))
        .await;
    assert_eq!(status, 200, "{body}");
    let epoch = body["result"]["position"]["epoch"].as_str().unwrap();
    assert!(!epoch.is_empty());
    assert_eq!(
        body,
        json!({"result": {"position": {"offset": 1, "epoch": epoch}}})
    );
    let (_, body) = server
        .api("publish", json!({"channel": "feed:a", "data": {"x": 2}}))
        .await;
    assert_eq!(
        body["result"]["position"],
        json!({"offset": 2, "epoch": epoch})
    );
}

#[tokio::test]
async fn publish_is_delivered_to_a_websocket_subscriber_without_info() {
    let server = start(|_| {}).await;
    let mut ws = server.client("alice").await;
    ws.subscribe("feed:a").await;
    let (_, body) = server
        .api("publish", json!({"channel": "feed:a", "data": {"x": 1}}))
        .await;
    let push = ws.push("publication").await;
    assert_eq!(push["type"], "publication");
    assert_eq!(push["channel"], "feed:a");
    assert_eq!(push["offset"], body["result"]["position"]["offset"]);
    assert_eq!(push["epoch"], body["result"]["position"]["epoch"]);
    assert_eq!(push["data"], json!({"x": 1}));
    assert!(
        push.get("info").is_none(),
        "server publications have no info: {push}"
    );
}

#[tokio::test]
async fn publish_may_target_a_namespace_closed_to_client_publishing() {
    // `news` is in the default namespace: client_publish is off there.
    let server = start(|_| {}).await;
    let mut ws = server.client("alice").await;
    ws.subscribe("news").await;
    let (status, body) = server
        .api("publish", json!({"channel": "news", "data": "headline"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ws.push("publication").await["data"], "headline");
}

#[tokio::test]
async fn publish_with_an_idempotency_key_returns_the_first_position_and_delivers_once() {
    let server = start(|_| {}).await;
    let mut ws = server.client("alice").await;
    ws.subscribe("feed:a").await;
    let call =
        |n: u64| json!({"channel": "feed:a", "data": {"n": n}, "idempotency_key": "order-7"});
    let (s1, first) = server.api("publish", call(1)).await;
    let (s2, second) = server.api("publish", call(2)).await;
    assert_eq!((s1, s2), (200, 200), "{first} {second}");
    assert_eq!(first, second);
    assert_eq!(first["result"]["position"]["offset"], 1);
    assert_eq!(ws.push("publication").await["data"], json!({"n": 1}));
    ws.expect_silence(SILENCE).await;
}

// ---------------------------------------------------------------- broadcast

#[tokio::test]
async fn broadcast_publishes_to_each_channel_and_reports_per_channel_results() {
    let server = start(|_| {}).await;
    let mut a = server.client("alice").await;
    let mut b = server.client("bob").await;
    a.subscribe("feed:a").await;
    b.subscribe("feed:b").await;
    let (status, body) = server
        .api(
            "broadcast",
            json!({"channels": ["feed:a", "feed:b", "nope:x", "feed:bad name"], "data": {"all": true}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let responses = body["result"]["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), 4, "{body}");
    for r in &responses[..2] {
        assert_eq!(keys(r), ["position"], "{body}");
        assert_eq!(r["position"]["offset"], 1, "{body}");
    }
    assert_eq!(responses[2]["error"]["code"], 102, "{body}");
    assert_eq!(responses[3]["error"]["code"], 110, "{body}");
    for r in &responses[2..] {
        assert_eq!(keys(&r["error"]), ["code", "message"], "{body}");
    }

    let pa = a.push("publication").await;
    let pb = b.push("publication").await;
    assert_eq!(
        (pa["channel"].clone(), pa["data"].clone()),
        (json!("feed:a"), json!({"all": true}))
    );
    assert_eq!(
        (pb["channel"].clone(), pb["data"].clone()),
        (json!("feed:b"), json!({"all": true}))
    );
    assert_eq!(pa["epoch"], responses[0]["position"]["epoch"]);
    assert_eq!(pb["epoch"], responses[1]["position"]["epoch"]);
}

#[tokio::test]
async fn broadcast_with_no_channels_is_a_bad_request() {
    let server = start(|_| {}).await;
    let answer = server
        .api("broadcast", json!({"channels": [], "data": 1}))
        .await;
    assert_api_error(&answer, 400, 107);
}

// ---------------------------------------------------------------- presence

#[tokio::test]
async fn presence_lists_the_clients_of_a_channel() {
    let server = start(|_| {}).await;
    let mut alice = Ws::open(&server.ws_url()).await;
    alice
        .connect(&common::token_with(
            "alice",
            None,
            Some(json!({"name": "Alice"})),
            None,
        ))
        .await;
    let mut bob = server.client("bob").await;
    alice.subscribe("chat:room").await;
    bob.subscribe("chat:room").await;
    let (status, body) = server
        .api("presence", json!({"channel": "chat:room"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let mut clients = serde_json::Map::new();
    clients.insert(
        alice.client_id.clone(),
        json!({"user": "alice", "client": alice.client_id, "data": {"name": "Alice"}}),
    );
    clients.insert(
        bob.client_id.clone(),
        json!({"user": "bob", "client": bob.client_id}),
    );
    assert_eq!(body, json!({"result": {"clients": clients}}));
}

#[tokio::test]
async fn presence_stats_counts_clients_and_users() {
    let server = start(|_| {}).await;
    let mut a1 = server.client("alice").await;
    let mut a2 = server.client("alice").await;
    let mut b = server.client("bob").await;
    for ws in [&mut a1, &mut a2, &mut b] {
        ws.subscribe("chat:room").await;
    }
    let (status, body) = server
        .api("presence_stats", json!({"channel": "chat:room"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"result": {"num_clients": 3, "num_users": 2}}));
}

#[tokio::test]
async fn presence_on_a_namespace_without_presence_is_not_available() {
    let server = start(|_| {}).await;
    let answer = server.api("presence", json!({"channel": "feed:a"})).await;
    assert_api_error(&answer, 409, 108);
    let answer = server
        .api("presence_stats", json!({"channel": "feed:a"}))
        .await;
    assert_api_error(&answer, 409, 108);
}

// ---------------------------------------------------------------- history

async fn fill(server: &TestServer, channel: &str, count: u64) -> String {
    let mut epoch = String::new();
    for n in 1..=count {
        let (status, body) = server
            .api("publish", json!({"channel": channel, "data": {"n": n}}))
            .await;
        assert_eq!(status, 200, "{body}");
        epoch = body["result"]["position"]["epoch"].as_str().unwrap().into();
    }
    epoch
}

fn offsets(publications: &Value) -> Vec<u64> {
    publications
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn history_returns_position_and_publications() {
    let server = start(|_| {}).await;
    let epoch = fill(&server, "feed:h", 4).await;
    let (status, body) = server
        .api("history", json!({"channel": "feed:h", "limit": 3}))
        .await;
    assert_eq!(status, 200, "{body}");
    let result = &body["result"];
    assert_eq!(keys(result), ["position", "publications"], "{body}");
    assert_eq!(result["position"], json!({"offset": 4, "epoch": epoch}));
    assert_eq!(offsets(&result["publications"]), [2, 3, 4]);
    assert_eq!(result["publications"][0]["data"], json!({"n": 2}));

    let (_, body) = server
        .api(
            "history",
            json!({"channel": "feed:h", "limit": 2, "reverse": true}),
        )
        .await;
    assert_eq!(offsets(&body["result"]["publications"]), [4, 3]);
}

#[tokio::test]
async fn history_with_since_reports_recovered() {
    let server = start(|_| {}).await;
    let epoch = fill(&server, "feed:h", 4).await;
    let (status, body) = server
        .api(
            "history",
            json!({"channel": "feed:h", "since": {"offset": 1, "epoch": epoch}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["recovered"], true, "{body}");
    assert_eq!(offsets(&body["result"]["publications"]), [2, 3, 4]);

    let (_, body) = server
        .api(
            "history",
            json!({"channel": "feed:h", "since": {"offset": 1, "epoch": "other"}}),
        )
        .await;
    assert_eq!(body["result"]["recovered"], false, "{body}");
}

#[tokio::test]
async fn history_on_a_namespace_without_history_is_not_available() {
    let server = start(|c| {
        c.namespaces
            .insert("live".into(), namespace(|ns| ns.history_size = 0));
    })
    .await;
    let answer = server.api("history", json!({"channel": "live:a"})).await;
    assert_api_error(&answer, 409, 108);
}

// ---------------------------------------------------------------- channels

#[tokio::test]
async fn channels_lists_active_channels_with_subscriber_counts() {
    let server = start(|_| {}).await;
    let mut a = server.client("alice").await;
    let mut b = server.client("bob").await;
    a.subscribe("feed:one").await;
    b.subscribe("feed:one").await;
    a.subscribe("feed:two").await;
    b.subscribe("chat:three").await;
    let (status, body) = server.api("channels", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"result": {"channels": {
            "feed:one": {"num_clients": 2},
            "feed:two": {"num_clients": 1},
            "chat:three": {"num_clients": 1},
        }}})
    );
}

#[tokio::test]
async fn channels_with_a_pattern_lists_only_matching_channels() {
    let server = start(|_| {}).await;
    let mut a = server.client("alice").await;
    a.subscribe("feed:one").await;
    a.subscribe("feed:two").await;
    a.subscribe("chat:three").await;
    let (status, body) = server.api("channels", json!({"pattern": "feed:*"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"result": {"channels": {
            "feed:one": {"num_clients": 1},
            "feed:two": {"num_clients": 1},
        }}})
    );
}

#[tokio::test]
async fn channels_forgets_a_channel_whose_last_subscriber_left() {
    let server = start(|_| {}).await;
    let mut a = server.client("alice").await;
    a.subscribe("feed:one").await;
    let reply = a
        .call(json!({"type": "unsubscribe", "channel": "feed:one"}))
        .await;
    assert_eq!(reply["type"], "unsubscribed");
    let (_, body) = server.api("channels", json!({})).await;
    assert_eq!(body, json!({"result": {"channels": {}}}));
}

// ---------------------------------------------------------------- disconnect

#[tokio::test]
async fn disconnect_closes_every_connection_of_the_user_with_3503() {
    let server = start(|_| {}).await;
    let mut a1 = server.client("alice").await;
    let mut a2 = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let (status, body) = server.api("disconnect", json!({"user": "alice"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"result": {"disconnected": 2}}));
    for ws in [&mut a1, &mut a2] {
        let (disconnect, close) = ws.closed().await;
        assert_eq!(
            disconnect,
            Some(json!({
                "type": "disconnect",
                "code": 3503,
                "reason": "disconnected by server",
                "reconnect": false,
            }))
        );
        assert_eq!(close, Some(3503));
    }
    assert_alive(&mut bob).await;
}

#[tokio::test]
async fn disconnect_with_a_code_below_3500_tells_the_client_to_reconnect() {
    let server = start(|_| {}).await;
    let mut alice = server.client("alice").await;
    let (status, body) = server
        .api("disconnect", json!({"user": "alice", "code": 3000}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (disconnect, close) = alice.closed().await;
    let disconnect = disconnect.expect("a disconnect push");
    assert_eq!(disconnect["code"], 3000, "{disconnect}");
    assert_eq!(disconnect["reconnect"], true, "{disconnect}");
    assert_eq!(close, Some(3000));
}

#[tokio::test]
async fn disconnect_passes_a_custom_code_and_reason_through() {
    let server = start(|_| {}).await;
    let mut alice = server.client("alice").await;
    let (status, body) = server
        .api(
            "disconnect",
            json!({"user": "alice", "code": 4001, "reason": "account suspended"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (disconnect, close) = alice.closed().await;
    assert_eq!(
        disconnect,
        Some(json!({
            "type": "disconnect",
            "code": 4001,
            "reason": "account suspended",
            "reconnect": false,
        }))
    );
    assert_eq!(close, Some(4001));
}

#[tokio::test]
async fn disconnect_with_a_code_outside_3000_to_4999_is_a_bad_request() {
    let server = start(|_| {}).await;
    let mut alice = server.client("alice").await;
    for code in [1000, 2999, 5000] {
        let answer = server
            .api("disconnect", json!({"user": "alice", "code": code}))
            .await;
        assert_api_error(&answer, 400, 107);
    }
    assert_alive(&mut alice).await;
}

#[tokio::test]
async fn disconnect_of_a_user_with_no_connection_disconnects_nobody() {
    let server = start(|_| {}).await;
    let mut alice = server.client("alice").await;
    let (status, body) = server.api("disconnect", json!({"user": "nobody"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"result": {"disconnected": 0}}));
    assert_alive(&mut alice).await;
}

// ---------------------------------------------------------------- info

#[tokio::test]
async fn info_reports_node_stats() {
    let server = start(|_| {}).await;
    let mut a1 = server.client("alice").await;
    let _a2 = server.client("alice").await;
    let mut bob = server.client("bob").await;
    a1.subscribe("feed:a").await;
    a1.subscribe("feed:b").await;
    bob.subscribe("feed:a").await;
    fill(&server, "feed:a", 2).await;
    let (status, body) = server.api("info", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let info = &body["result"];
    assert_eq!(
        keys(info),
        [
            "broker",
            "broker_healthy",
            "deliveries",
            "node",
            "nodes",
            "num_channels",
            "num_clients",
            "num_subscriptions",
            "num_users",
            "publications",
            "queue_overflows",
            "store",
            "uptime_seconds",
            "version",
        ],
        "{body}"
    );
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert!(info["uptime_seconds"].is_u64(), "{body}");
    assert_eq!(info["num_clients"], 3, "{body}");
    assert_eq!(info["num_users"], 2, "{body}");
    assert_eq!(info["num_channels"], 2, "{body}");
    assert_eq!(info["num_subscriptions"], 3, "{body}");
    assert_eq!(info["publications"], 2, "{body}");
    // Two publications to two subscribers each.
    assert_eq!(info["deliveries"], 4, "{body}");
    assert_eq!(info["queue_overflows"], 0, "{body}");
    let broker = match std::env::var("SWITCHBOARD_TEST_BROKER") {
        Ok(_) => "redis",
        Err(_) => "memory",
    };
    assert_eq!(info["broker"], broker);
    assert_eq!(info["broker_healthy"], true);
    assert!(
        info["node"].as_str().is_some_and(|n| !n.is_empty()),
        "{body}"
    );
    assert_eq!(info["store"], "sqlite");
    // Every node's figures: here, this node alone.
    let nodes = info["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{body}");
    assert_eq!(nodes[0]["node"], info["node"], "{body}");
    assert_eq!(nodes[0]["num_clients"], 3, "{body}");
    assert_eq!(nodes[0]["num_users"], 2, "{body}");
}

// ---------------------------------------------------------------- user_connections

#[tokio::test]
async fn user_connections_counts_a_users_connections() {
    let server = start(|_| {}).await;
    let mut a1 = server.client("alice").await;
    let _a2 = server.client("alice").await;
    let _bob = server.client("bob").await;
    let (_, info) = server.api("info", json!({})).await;
    let node = info["result"]["node"].as_str().unwrap().to_owned();

    let (status, body) = server
        .api("user_connections", json!({"user": "alice"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"],
        json!({"user": "alice", "connections": 2, "nodes": {node.clone(): 2}})
    );
    let (_, body) = server
        .api("user_connections", json!({"user": "nobody"}))
        .await;
    assert_eq!(
        body["result"],
        json!({"user": "nobody", "connections": 0, "nodes": {}})
    );

    // A connection closed on purpose no longer counts (a dropped one
    // counts while its session waits for a resume).
    a1.stream.close(None).await.expect("close");
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let (_, body) = server
            .api("user_connections", json!({"user": "alice"}))
            .await;
        if body["result"]["connections"] == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn user_connections_without_a_user_is_a_bad_request() {
    let server = start(|_| {}).await;
    for body in [
        json!({}),
        json!({"user": ""}),
        json!({"user": 7}),
        json!({"user": "alice", "extra": 1}),
    ] {
        let answer = server.api("user_connections", body).await;
        assert_api_error(&answer, 400, 107);
    }
}

// ---------------------------------------------------------------- routing, health, metrics

#[tokio::test]
async fn unknown_method_is_104_with_http_404() {
    let server = start(|_| {}).await;
    let answer = server.api("dance", json!({})).await;
    assert_api_error(&answer, 404, 104);
}

#[tokio::test]
async fn health_answers_200_ok() {
    let server = start(|_| {}).await;
    let resp = reqwest::get(server.http("/health")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"status": "ok"}));
}

#[tokio::test]
async fn metrics_expose_connections_publications_and_command_latency() {
    let server = start(|_| {}).await;
    let mut ws = server.client("alice").await;
    ws.subscribe("feed:m").await;
    ws.publish("feed:m", json!(1)).await;
    ws.publish("feed:m", json!(2)).await;
    let resp = reqwest::get(server.http("/metrics")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.unwrap();
    let has = |line: &str| text.lines().any(|l| l == line);
    assert!(has("switchboard_connections 1"), "{text}");
    assert!(has("switchboard_sessions 1"), "{text}");
    assert!(has("switchboard_sessions_detached 0"), "{text}");
    assert!(has("switchboard_publications_total 2"), "{text}");
    assert!(
        has(r#"switchboard_command_duration_seconds_count{command="publish"} 2"#),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with(
            r#"switchboard_command_duration_seconds_bucket{command="subscribe",le="+Inf"} 1"#
        )),
        "{text}"
    );
}

// ---------------------------------------------------------------- request errors

#[tokio::test]
async fn a_call_without_authorization_is_401_with_code_101() {
    let server = start(|_| {}).await;
    let answer = api_call(server.addr, "info", json!({}), None).await;
    assert_api_error(&answer, 401, 101);
}

#[tokio::test]
async fn a_call_with_a_wrong_key_is_401_with_code_101() {
    let server = start(|_| {}).await;
    let answer = api_call(server.addr, "info", json!({}), Some("not-the-key")).await;
    assert_api_error(&answer, 401, 101);
    // Another scheme with the right key is refused too.
    let resp = reqwest::Client::new()
        .post(server.http("/api/info"))
        .header("Authorization", format!("Bearer {API_KEY}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    let answer = (resp.status().as_u16(), resp.json().await.unwrap());
    assert_api_error(&answer, 401, 101);
}

#[tokio::test]
async fn a_refused_call_publishes_nothing() {
    let server = start(|_| {}).await;
    let mut ws = server.client("alice").await;
    ws.subscribe("feed:a").await;
    let answer = api_call(
        server.addr,
        "publish",
        json!({"channel": "feed:a", "data": 1}),
        Some("wrong"),
    )
    .await;
    assert_api_error(&answer, 401, 101);
    ws.expect_silence(SILENCE).await;
}

#[tokio::test]
async fn a_malformed_json_body_is_400_with_code_107() {
    let server = start(|_| {}).await;
    let answer = api_raw(&server, "publish", r#"{"channel": "feed:a", "data": "#).await;
    assert_api_error(&answer, 400, 107);
}

#[tokio::test]
async fn an_unknown_field_in_the_body_is_400_with_code_107() {
    let server = start(|_| {}).await;
    let answer = server
        .api(
            "publish",
            json!({"channel": "feed:a", "data": 1, "chanel": "typo"}),
        )
        .await;
    assert_api_error(&answer, 400, 107);
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("chanel"),
        "{}",
        answer.1
    );
}

#[tokio::test]
async fn a_missing_field_is_400_with_code_107_naming_the_field() {
    let server = start(|_| {}).await;
    let answer = server.api("publish", json!({"channel": "feed:a"})).await;
    assert_api_error(&answer, 400, 107);
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("data"),
        "{}",
        answer.1
    );
}

#[tokio::test]
async fn a_wrong_typed_field_is_400_with_code_107() {
    let server = start(|_| {}).await;
    let answer = server
        .api("publish", json!({"channel": 5, "data": 1}))
        .await;
    assert_api_error(&answer, 400, 107);
}

#[tokio::test]
async fn an_unknown_namespace_is_102() {
    let server = start(|_| {}).await;
    let answer = server
        .api("publish", json!({"channel": "nope:a", "data": 1}))
        .await;
    assert_api_error(&answer, 400, 102);
}

#[tokio::test]
async fn a_bad_channel_name_is_110() {
    let server = start(|_| {}).await;
    for channel in ["feed:a b", "feed:", "feed:é"] {
        let answer = server
            .api("publish", json!({"channel": channel, "data": 1}))
            .await;
        assert_api_error(&answer, 400, 110);
    }
}

#[tokio::test]
async fn data_over_the_limit_is_413_with_code_111() {
    let server = start(|c| c.client.max_data_size = 1024).await;
    let mut ws = server.client("alice").await;
    ws.subscribe("feed:a").await;
    let answer = server
        .api(
            "publish",
            json!({"channel": "feed:a", "data": "x".repeat(2000)}),
        )
        .await;
    assert_api_error(&answer, 413, 111);
    ws.expect_silence(SILENCE).await;
    // Just under the limit passes.
    let (status, body) = server
        .api(
            "publish",
            json!({"channel": "feed:a", "data": "x".repeat(1000)}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_javascript_sdk_is_served_at_client_js() {
    let server = start(|_| {}).await;
    let resp = reqwest::get(server.http("/client.js")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/javascript"),
        "{content_type}"
    );
    let body = resp.text().await.unwrap();
    assert!(body.contains("export class Switchboard"));
}
