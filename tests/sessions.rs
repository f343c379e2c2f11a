//! Sessions over WebSocket: a dropped socket leaves its session waiting for
//! the grace period, and `connect` with `session` + `seq` resumes it with
//! exactly the frames the client had not processed (see docs/protocol.md,
//! "Sessions and transports"). SSE and long-polling: tests/http_transports.rs.

mod common;

use std::time::Duration;

use common::{keys, namespace, token, TestServer, Ws, WAIT};
use serde_json::{json, Value};

const FEED: &str = "feed:news";

async fn server(tweak: impl FnOnce(&mut switchboard::config::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.namespaces.insert("feed".into(), namespace(|_| {}));
        tweak(c);
    })
    .await
}

/// A connected client that counts the numbered frames it has processed
/// (every frame but pings; `connected` is 1).
struct Counted {
    ws: Ws,
    session: String,
    seq: u64,
}

impl Counted {
    async fn connect(server: &TestServer, user: &str) -> Counted {
        let mut ws = Ws::open(&server.ws_url()).await;
        let reply = ws.connect(&token(user)).await;
        Counted {
            ws,
            session: reply["session"].as_str().unwrap().to_string(),
            seq: 1,
        }
    }

    /// The next frame, counted.
    async fn next(&mut self) -> Value {
        let v = self.ws.recv().await.expect("connection open");
        self.seq += 1;
        v
    }

    async fn subscribe(&mut self, channel: &str) {
        self.ws
            .send(json!({"type": "subscribe", "channel": channel}))
            .await;
        assert_eq!(self.next().await["type"], "subscribed");
    }

    /// The data of the next publication.
    async fn publication(&mut self) -> Value {
        let v = self.next().await;
        assert_eq!(v["type"], "publication", "{v}");
        v["data"].clone()
    }
}

/// Waits until `n` sessions have no transport (the server noticed the
/// dropped socket).
async fn detached(server: &TestServer, n: u64) {
    let line = format!("switchboard_sessions_detached {n}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = reqwest::get(server.http("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {line}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn publish(server: &TestServer, n: u64) {
    let (status, body) = server
        .api("publish", json!({"channel": FEED, "data": {"n": n}}))
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Sends `connect` with `session` and `seq` on a new socket.
async fn resume(server: &TestServer, user: &str, session: &str, seq: u64) -> (Ws, Value) {
    let mut ws = Ws::open(&server.ws_url()).await;
    let reply = ws
        .call(json!({"type": "connect", "token": token(user), "session": session, "seq": seq}))
        .await;
    (ws, reply)
}

#[tokio::test]
async fn a_resume_replays_exactly_what_the_client_missed_and_keeps_subscriptions() {
    let server = server(|_| {}).await;
    let mut client = Counted::connect(&server, "42").await;
    client.subscribe(FEED).await;
    for n in 1..=3 {
        publish(&server, n).await;
    }
    // The client processed the first publication only, then lost the socket.
    assert_eq!(client.publication().await, json!({"n": 1}));
    let (session, seq) = (client.session.clone(), client.seq);
    drop(client);
    for n in 4..=5 {
        publish(&server, n).await;
    }

    let (mut ws, reply) = resume(&server, "42", &session, seq).await;
    assert_eq!(reply["type"], "connected", "{reply}");
    assert_eq!(reply["resumed"], true);
    assert_eq!(reply["session"], session.as_str());
    // Frames 2 and 3 were written to the dead socket, 4 and 5 queued: all
    // four arrive once, in order; the subscription is still live.
    let mut got = Vec::new();
    for _ in 0..4 {
        let v = ws.recv().await.unwrap();
        assert_eq!(v["type"], "publication", "{v}");
        got.push(v["data"]["n"].as_u64().unwrap());
    }
    assert_eq!(got, [2, 3, 4, 5]);
    publish(&server, 6).await;
    assert_eq!(ws.push("publication").await["data"], json!({"n": 6}));
    ws.expect_silence(Duration::from_millis(200)).await;
    server.stop().await;
}

#[tokio::test]
async fn resuming_an_unknown_session_is_114_and_the_socket_stays_usable() {
    let server = server(|_| {}).await;
    let (mut ws, reply) = resume(&server, "42", "no-such-session", 3).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], 114);
    ws.connect(&token("42")).await;
    ws.subscribe(FEED).await;
    server.stop().await;
}

#[tokio::test]
async fn another_users_token_cannot_resume_a_session() {
    let server = server(|_| {}).await;
    let client = Counted::connect(&server, "42").await;
    let (session, seq) = (client.session.clone(), client.seq);
    drop(client);
    let (_ws, reply) = resume(&server, "intruder", &session, seq).await;
    assert_eq!(reply["code"], 103, "{reply}");
    // The owner still can.
    let (_ws, reply) = resume(&server, "42", &session, seq).await;
    assert_eq!(reply["resumed"], true, "{reply}");
    server.stop().await;
}

#[tokio::test]
async fn a_seq_from_the_future_is_115_and_ends_the_session() {
    let server = server(|_| {}).await;
    let client = Counted::connect(&server, "42").await;
    let session = client.session.clone();
    drop(client);
    let (_ws, reply) = resume(&server, "42", &session, 99).await;
    assert_eq!(reply["code"], 115, "{reply}");
    let (_ws, reply) = resume(&server, "42", &session, 1).await;
    assert_eq!(reply["code"], 114, "{reply}");
    server.stop().await;
}

#[tokio::test]
async fn a_session_without_seq_is_a_bad_request() {
    let server = server(|_| {}).await;
    let mut ws = Ws::open(&server.ws_url()).await;
    let reply = ws
        .call(json!({"type": "connect", "token": token("42"), "session": "x"}))
        .await;
    assert_eq!(reply["code"], 107, "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("seq"));
    server.stop().await;
}

#[tokio::test]
async fn a_resume_takes_the_session_over_from_a_socket_that_is_still_open() {
    let server = server(|_| {}).await;
    let mut old = Counted::connect(&server, "42").await;
    old.subscribe(FEED).await;
    let (session, seq) = (old.session.clone(), old.seq);
    let (mut new, reply) = resume(&server, "42", &session, seq).await;
    assert_eq!(reply["resumed"], true, "{reply}");
    publish(&server, 1).await;
    assert_eq!(new.push("publication").await["data"], json!({"n": 1}));
    // The old socket is closed with 3000 and gets nothing more.
    let (disconnect, code) = old.ws.closed().await;
    assert_eq!(code, Some(3000));
    assert!(disconnect.is_none(), "{disconnect:?}");
    server.stop().await;
}

#[tokio::test]
async fn past_the_grace_period_the_session_is_gone() {
    let server = server(|c| c.client.session_grace = Duration::from_millis(300)).await;
    let mut client = Counted::connect(&server, "42").await;
    client.subscribe(FEED).await;
    let (_, channels) = server.api("channels", json!({})).await;
    assert!(
        channels["result"]["channels"].get(FEED).is_some(),
        "{channels}"
    );
    let (session, seq) = (client.session.clone(), client.seq);
    drop(client);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (ws, reply) = resume(&server, "42", &session, seq).await;
        if reply["code"] == 114 {
            break;
        }
        assert_eq!(reply["resumed"], true, "{reply}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "session never expired"
        );
        // Resuming re-attached it; drop again and let the grace run out.
        drop(ws);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Its subscription went with it (the session ends just after it leaves
    // the registry).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, channels) = server.api("channels", json!({})).await;
        if channels["result"]["channels"].get(FEED).is_none() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{channels}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_resumed_session_can_be_resumed_again_from_the_new_seq() {
    let server = server(|_| {}).await;
    let mut client = Counted::connect(&server, "42").await;
    client.subscribe(FEED).await;
    publish(&server, 1).await;
    client.publication().await;
    let (session, mut seq) = (client.session.clone(), client.seq);
    drop(client);
    for round in 2..=4 {
        publish(&server, round).await;
        let (mut ws, reply) = resume(&server, "42", &session, seq).await;
        assert_eq!(reply["resumed"], true, "{reply}");
        let v = ws.recv().await.unwrap();
        assert_eq!(v["data"], json!({"n": round}), "{v}");
        seq += 1;
    }
    server.stop().await;
}

/// A socket lost while publishes are in flight: each publish that
/// happened has its `published` reply waiting in the session, in command
/// order, for the resume (none is lost with the socket).
#[tokio::test]
async fn replies_to_publishes_in_flight_when_the_socket_drops_wait_for_the_resume() {
    let server = server(|c| {
        c.namespaces
            .insert("kept".into(), namespace(|ns| ns.persist = true));
    })
    .await;
    let mut client = Counted::connect(&server, "42").await;
    let (session, seq) = (client.session.clone(), client.seq);
    let mut ids = Vec::new();
    for n in 0..40u64 {
        ids.push(
            client
                .ws
                .send(json!({"type": "publish", "channel": "kept:log", "data": {"n": n}}))
                .await,
        );
    }
    drop(client);
    detached(&server, 1).await;

    let (mut ws, reply) = resume(&server, "42", &session, seq).await;
    assert_eq!(reply["resumed"], true, "{reply}");
    // An id the replayed replies do not use.
    ws.send_text(r#"{"id":1000,"type":"history","channel":"kept:log","limit":100}"#)
        .await;
    let history = ws.reply(1000).await;
    let kept = history["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("{history}"))
        .len();
    assert!(kept > 0, "no publish reached the server: {history}");
    // Everything before the history reply is a publish's reply, oldest first.
    let replies: Vec<Value> = ws.backlog.drain(..).collect();
    assert_eq!(
        replies.len(),
        kept,
        "one reply per publication: {replies:?}"
    );
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply["type"], "published", "{reply}");
        assert_eq!(reply["id"], ids[i], "{reply}");
        assert_eq!(reply["position"]["offset"], i as u64 + 1, "{reply}");
    }
    server.stop().await;
}

/// A resume does not let the new socket's commands overtake publishes the
/// lost socket still had in flight: their replies come first (after the
/// resume's `connected`), as the commands were sent. The store's writer is
/// held up by a write lock on its SQLite file so the publishes stay pending.
#[tokio::test]
async fn a_resume_answers_the_lost_sockets_publishes_before_its_own_commands() {
    let server = server(|c| {
        c.namespaces
            .insert("kept".into(), namespace(|ns| ns.persist = true));
    })
    .await;
    let mut client = Counted::connect(&server, "42").await;
    client
        .ws
        .send(json!({"type": "publish", "channel": "kept:log", "data": {"n": 0}}))
        .await;
    assert_eq!(client.next().await["type"], "published");
    let (session, seq) = (client.session.clone(), client.seq);

    let lock = rusqlite::Connection::open(server.data_dir.join("switchboard.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut old = Vec::new();
    for n in 1..=3u64 {
        old.push(
            client
                .ws
                .send(json!({"type": "publish", "channel": "kept:log", "data": {"n": n}}))
                .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(client);

    let mut ws = Ws::open(&server.ws_url()).await;
    let resume =
        json!({"id": 500, "type": "connect", "token": token("42"), "session": session, "seq": seq});
    ws.send_text(&resume.to_string()).await;
    ws.send_text(r#"{"id":1000,"type":"ping"}"#).await;
    ws.send_text(r#"{"id":1001,"type":"publish","channel":"feed:news","data":1}"#)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.execute_batch("ROLLBACK").unwrap();

    let mut ids = Vec::new();
    while ids.len() < 6 {
        let v = ws.recv().await.expect("connection open");
        ids.push(v["id"].as_u64().unwrap_or_else(|| panic!("a reply: {v}")));
    }
    let mut expected = vec![500];
    expected.extend(&old);
    expected.extend([1000, 1001]);
    assert_eq!(ids, expected, "arrival order");
    server.stop().await;
}

// ------------------------------------------------------------ ending on purpose

#[tokio::test]
async fn api_disconnect_releases_a_detached_session_at_once() {
    let server = server(|_| {}).await;
    let mut client = Counted::connect(&server, "42").await;
    client.subscribe("chat:room").await;
    let (session, seq) = (client.session.clone(), client.seq);
    drop(client);
    detached(&server, 1).await;
    let (status, body) = server
        .api("disconnect", json!({"user": "42", "code": 3000}))
        .await;
    assert_eq!(status, 200, "{body}");
    // Nobody was there to read the disconnect, but the user is gone from
    // presence already (the grace period is a minute).
    let (_, presence) = server
        .api("presence", json!({"channel": "chat:room"}))
        .await;
    assert_eq!(presence["result"]["clients"], json!({}), "{presence}");
    // A resume still learns why, then the session is over.
    let (mut ws, reply) = resume(&server, "42", &session, seq).await;
    assert_eq!(reply["resumed"], true, "{reply}");
    let (disconnect, code) = ws.closed().await;
    assert_eq!(disconnect.unwrap()["code"], 3000);
    assert_eq!(code, Some(3000));
    let (_ws, reply) = resume(&server, "42", &session, seq).await;
    assert_eq!(reply["code"], 114, "{reply}");
    server.stop().await;
}

#[tokio::test]
async fn a_disconnect_command_ends_the_session_over_a_websocket() {
    let server = server(|_| {}).await;
    let mut client = Counted::connect(&server, "42").await;
    client.subscribe("chat:room").await;
    let session = client.session.clone();
    client.ws.send(json!({"type": "disconnect"})).await;
    let (disconnect, code) = client.ws.closed().await;
    assert_eq!(disconnect.unwrap()["code"], 3000);
    assert_eq!(code, Some(3000));
    let (_ws, reply) = resume(&server, "42", &session, client.seq + 1).await;
    assert_eq!(reply["code"], 114, "{reply}");
    server.stop().await;
}

#[tokio::test]
async fn a_disconnect_command_through_send_ends_a_polling_session_at_once() {
    let server = server(|_| {}).await;
    let http = reqwest::Client::new();
    let connected: Value = http
        .post(server.http("/connection/poll"))
        .json(&json!({"token": token("42")}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = connected["session"].as_str().unwrap().to_string();
    let send = |body: Value| {
        http.post(server.http(&format!("/connection/send?session={session}")))
            .bearer_auth(token("42"))
            .json(&body)
            .send()
    };
    let resp = send(json!({"id": 1, "type": "subscribe", "channel": "chat:room"}))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let (_, presence) = server
        .api("presence", json!({"channel": "chat:room"}))
        .await;
    assert_eq!(keys(&presence["result"]["clients"]).len(), 1, "{presence}");

    // Between polls (detached), the command ends the session right away.
    let resp = send(json!([{"id": 2, "type": "disconnect"}]))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let (_, presence) = server
        .api("presence", json!({"channel": "chat:room"}))
        .await;
    assert_eq!(presence["result"]["clients"], json!({}), "{presence}");
    let poll = http
        .get(server.http(&format!("/connection/poll?session={session}&cursor=1")))
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status().as_u16(), 404);
    server.stop().await;
}
