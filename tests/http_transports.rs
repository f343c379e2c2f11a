//! The HTTP transports over real sockets (docs/protocol.md, "Sessions and
//! transports"): Server-Sent Events at `GET /connection/sse`, commands at
//! `POST /connection/send`, long-polling at `/connection/poll`, a session
//! moving between WebSocket, long-polling and SSE, and CORS for browsers
//! on other origins.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use common::sse::Sse;
use common::{assert_alive, namespace, token, token_with, unix_now, TestServer, Ws, WAIT};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use switchboard::auth::{mint_hs256, ConnectionClaims};
use switchboard::config::Config;

/// How long to listen for frames that must not come (never asserted on as
/// a duration: only "nothing arrived meanwhile").
const SILENCE: Duration = Duration::from_millis(300);

/// The channel a bystander WebSocket client listens on during bad-input
/// tests.
const AROUND: &str = "feed:bystander";

// ---------------------------------------------------------------- helpers

/// A node with `feed` (history, client publishing) and `room` (the same
/// plus presence and join/leave) namespaces.
async fn server(tweak: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.namespaces.insert("feed".into(), namespace(|_| {}));
        c.namespaces.insert(
            "room".into(),
            namespace(|ns| {
                ns.presence = true;
                ns.join_leave = true;
            }),
        );
        tweak(c);
    })
    .await
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// Status and JSON body (`null` when the body is not JSON).
async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// Asserts an HTTP error with the API's body `{"error":{"code","message"}}`.
fn assert_error(got: &(u16, Value), status: u16, code: u64, case: &str) {
    assert_eq!(got.0, status, "{case}: status of {got:?}");
    assert_eq!(got.1["error"]["code"], code, "{case}: code of {got:?}");
    assert!(
        got.1["error"]["message"].is_string(),
        "{case}: message of {got:?}"
    );
}

/// A token that expired an hour ago.
fn expired(user: &str) -> String {
    token_with(user, Some(unix_now() - 3600), None, None)
}

/// A well-formed HS256 token signed with a secret the node does not know.
fn forged(user: &str) -> String {
    let claims = ConnectionClaims {
        sub: user.into(),
        exp: None,
        info: None,
        channels: None,
        channel: None,
    };
    mint_hs256("not-the-node-secret-but-long-enough-0000", &claims).unwrap()
}

/// A value of a response header, if present and text.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether a comma-separated header lists `item` (case-insensitive).
fn lists(headers: &HeaderMap, name: &str, item: &str) -> bool {
    header(headers, name).is_some_and(|v| v.split(',').any(|i| i.trim().eq_ignore_ascii_case(item)))
}

// ------------------------------------------------------ bystander client

/// A WebSocket subscriber that must be unaffected by other clients' bad
/// requests.
async fn bystander(server: &TestServer) -> Ws {
    let mut ws = server.client("bystander").await;
    ws.subscribe(AROUND).await;
    ws
}

/// The bystander still answers and still receives publications.
async fn bystander_still_hears(server: &TestServer, ws: &mut Ws) {
    assert_alive(ws).await;
    server.publish(AROUND, json!({"still": "here"})).await;
    let publication = ws.push("publication").await;
    assert_eq!(
        publication["data"],
        json!({"still": "here"}),
        "{publication}"
    );
}

/// The next `join`/`leave` push about `user` (others, such as the
/// watcher's own join, are skipped).
async fn push_about(ws: &mut Ws, kind: &str, user: &str) -> Value {
    loop {
        let push = ws.push(kind).await;
        if push["info"]["user"] == user {
            return push;
        }
    }
}

// ------------------------------------------------------------ SSE helpers

/// `GET /connection/sse?<query>` with extra headers.
async fn sse(
    server: &TestServer,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<Sse, (u16, Value)> {
    let mut request = http().get(server.http(&format!("/connection/sse?{query}")));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Sse::open(request).await
}

/// The HTTP error answering an SSE request that must be refused.
async fn sse_refused(server: &TestServer, query: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    match sse(server, query, headers).await {
        Ok(_) => panic!("GET /connection/sse?{query} {headers:?} was accepted"),
        Err(refusal) => refusal,
    }
}

/// A new session over SSE for `user`: the stream (its `connected` event,
/// seq 1, already read) and the session id.
async fn sse_connect(server: &TestServer, user: &str) -> (Sse, String) {
    let mut stream = sse(server, &format!("token={}", token(user)), &[])
        .await
        .unwrap_or_else(|e| panic!("SSE connect refused: {e:?}"));
    let connected = stream.event().await;
    assert_eq!(connected.frame["type"], "connected", "{connected:?}");
    let session = connected.frame["session"]
        .as_str()
        .expect("connected carries the session")
        .to_string();
    assert_eq!(connected.seq(&session), Some(1), "{connected:?}");
    (stream, session)
}

/// Reads the next event, asserting its seq; returns its frame.
async fn next_numbered(stream: &mut Sse, session: &str, seq: u64) -> Value {
    let event = stream.event().await;
    assert_eq!(
        event.seq(session),
        Some(seq),
        "expected seq {seq}: {event:?}"
    );
    event.frame
}

/// Reads the unnumbered `connected` reply that starts a resumed stream.
async fn resumed_greeting(stream: &mut Sse, session: &str) {
    let hello = stream.event().await;
    assert_eq!(
        hello.id, None,
        "a resume's connected reply has no id: {hello:?}"
    );
    assert_eq!(hello.frame["type"], "connected", "{hello:?}");
    assert_eq!(hello.frame["resumed"], true, "{hello:?}");
    assert_eq!(hello.frame["session"], session, "{hello:?}");
}

/// Reads publications with consecutive seqs `from..`, checking `data.n`.
async fn publications(stream: &mut Sse, session: &str, from: u64, ns: &[u64]) {
    for (i, n) in ns.iter().enumerate() {
        let frame = next_numbered(stream, session, from + i as u64).await;
        assert_eq!(frame["type"], "publication", "{frame}");
        assert_eq!(frame["data"], json!({"n": n}), "{frame}");
    }
}

// ----------------------------------------------------------- send helper

/// `POST /connection/send?session=<session>` with a bearer token.
async fn send(server: &TestServer, session: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = http()
        .post(server.http(&format!("/connection/send?session={session}")))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    json_of(request.send().await.expect("send request")).await
}

/// Sends commands that must be accepted.
async fn send_ok(server: &TestServer, session: &str, user: &str, body: Value) {
    let n = body.as_array().map_or(1, Vec::len);
    let got = send(server, session, Some(&token(user)), &body.to_string()).await;
    assert_eq!(got, (202, json!({"accepted": n})), "send {body}");
}

// ------------------------------------------------------ long-poll helpers

/// `POST /connection/poll {"token"}`: the `connected` reply.
async fn poll_connect(server: &TestServer, user: &str) -> Value {
    let got = json_of(
        http()
            .post(server.http("/connection/poll"))
            .json(&json!({"token": token(user)}))
            .send()
            .await
            .expect("poll connect"),
    )
    .await;
    assert_eq!(got.0, 200, "{got:?}");
    assert_eq!(got.1["type"], "connected", "{got:?}");
    got.1
}

/// `GET /connection/poll?<query>`.
async fn poll_query(server: &TestServer, query: &str) -> (u16, Value) {
    let response = http()
        .get(server.http(&format!("/connection/poll?{query}")))
        .send()
        .await
        .expect("poll request");
    json_of(response).await
}

/// `GET /connection/poll?session=…&cursor=…`.
async fn poll(server: &TestServer, session: &str, cursor: u64) -> (u16, Value) {
    poll_query(server, &format!("session={session}&cursor={cursor}")).await
}

/// A poll that must answer 200 within [`WAIT`].
async fn poll_ok(server: &TestServer, session: &str, cursor: u64) -> Value {
    let got = tokio::time::timeout(WAIT, poll(server, session, cursor))
        .await
        .expect("the poll answers within the wait");
    assert_eq!(got.0, 200, "poll cursor={cursor}: {got:?}");
    got.1
}

fn session_of(connected: &Value) -> String {
    connected["session"]
        .as_str()
        .unwrap_or_else(|| panic!("connected carries the session: {connected}"))
        .to_string()
}

// =================================================================== SSE

#[tokio::test]
async fn sse_answers_an_event_stream_with_padding_retry_then_connected_as_seq_1() {
    let server = server(|_| {}).await;
    let mut stream = sse(&server, &format!("token={}", token("alice")), &[])
        .await
        .unwrap_or_else(|e| panic!("refused: {e:?}"));

    let h = stream.headers();
    assert!(
        header(h, "content-type").is_some_and(|v| v.starts_with("text/event-stream")),
        "{h:?}"
    );
    assert!(lists(h, "cache-control", "no-cache"), "{h:?}");
    assert_eq!(header(h, "x-accel-buffering"), Some("no"), "{h:?}");

    // First the padding comment: `:` and spaces, 2 KiB.
    let padding = stream.block().await.expect("a first block");
    assert!(!padding.is_event(), "the padding comes first: {padding:?}");
    assert!(
        padding
            .comments
            .first()
            .is_some_and(|c| c.len() + 1 >= 2048 && c.bytes().all(|b| b == b' ')),
        "a 2 KiB comment of spaces first, got {:?}",
        padding.comments.iter().map(String::len).collect::<Vec<_>>()
    );
    // `retry: 2000` before the first event.
    let mut retry = padding.retry.clone();
    let connected = loop {
        let block = stream.block().await.expect("the stream stays open");
        retry = block.retry.clone().or(retry);
        if block.is_event() {
            break block;
        }
    };
    assert_eq!(retry.as_deref(), Some("2000"));

    let frame: Value = serde_json::from_str(&connected.data.join("\n")).unwrap();
    assert_eq!(frame["type"], "connected", "{frame}");
    assert_eq!(frame["user"], "alice", "{frame}");
    assert_ne!(
        frame["resumed"], true,
        "a new session is not resumed: {frame}"
    );
    let session = session_of(&frame);
    assert_eq!(connected.id, Some(format!("{session}.1")), "{connected:?}");
}

#[tokio::test]
async fn sse_commands_sent_alone_and_in_batches_come_back_as_numbered_events() {
    let server = server(|_| {}).await;
    let (mut stream, s) = sse_connect(&server, "alice").await;

    send_ok(
        &server,
        &s,
        "alice",
        json!({"id": 1, "type": "subscribe", "channel": "feed:a"}),
    )
    .await;
    let subscribed = next_numbered(&mut stream, &s, 2).await;
    assert_eq!(subscribed["id"], 1, "{subscribed}");
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");

    send_ok(
        &server,
        &s,
        "alice",
        json!([
            {"id": 2, "type": "publish", "channel": "feed:a", "data": {"n": 1}},
            {"id": 3, "type": "ping"},
            {"id": 4, "type": "history", "channel": "feed:a"},
        ]),
    )
    .await;
    let mut frames = Vec::new();
    for seq in 3..=6 {
        frames.push(next_numbered(&mut stream, &s, seq).await);
    }
    let replies: Vec<(Value, Value)> = frames
        .iter()
        .filter(|f| f.get("id").is_some())
        .map(|f| (f["id"].clone(), f["type"].clone()))
        .collect();
    assert_eq!(
        replies,
        [
            (json!(2), json!("published")),
            (json!(3), json!("pong")),
            (json!(4), json!("history")),
        ],
        "replies in command order: {frames:?}"
    );
    let own = frames
        .iter()
        .find(|f| f["type"] == "publication")
        .unwrap_or_else(|| panic!("the publisher's own publication: {frames:?}"));
    assert_eq!(own["channel"], "feed:a");
    assert_eq!(own["data"], json!({"n": 1}));

    // A push from the server API continues the numbering.
    server.publish("feed:a", json!({"n": 2})).await;
    publications(&mut stream, &s, 7, &[2]).await;
    stream.expect_silence(SILENCE).await;
}

/// A batch of publishes is handled side by side (docs/protocol.md,
/// "Replies"): the replies still come in command order, with a refused
/// publish and a ping among them, and offsets follow the order sent.
#[tokio::test]
async fn sse_a_batch_of_publishes_is_answered_in_command_order() {
    let server = server(|c| {
        c.namespaces
            .insert("kept".into(), namespace(|ns| ns.persist = true));
        c.namespaces
            .insert("quiet".into(), namespace(|ns| ns.client_publish = false));
    })
    .await;
    let (mut stream, s) = sse_connect(&server, "alice").await;
    // More than a session's publishes in flight (32): the rest wait.
    let commands: Vec<Value> = (1..=80u64)
        .map(|id| match id {
            10 => json!({"id": id, "type": "publish", "channel": "quiet:x", "data": {"n": id}}),
            20 => json!({"id": id, "type": "ping"}),
            _ if id % 2 == 0 => {
                json!({"id": id, "type": "publish", "channel": "feed:a", "data": {"n": id}})
            }
            _ => json!({"id": id, "type": "publish", "channel": "kept:b", "data": {"n": id}}),
        })
        .collect();
    send_ok(&server, &s, "alice", Value::Array(commands.clone())).await;
    let mut offsets: BTreeMap<String, u64> = BTreeMap::new();
    for (i, command) in commands.iter().enumerate() {
        let reply = next_numbered(&mut stream, &s, 2 + i as u64).await;
        assert_eq!(
            reply["id"], command["id"],
            "out of order: {reply} for {command}"
        );
        match command["channel"].as_str() {
            Some("quiet:x") => assert_eq!(reply["code"], 103, "{reply}"),
            Some(channel) => {
                let last = offsets.entry(channel.to_owned()).or_default();
                *last += 1;
                assert_eq!(reply["position"]["offset"], *last, "{reply} for {command}");
            }
            None => assert_eq!(reply["type"], "pong", "{reply}"),
        }
    }
    stream.expect_silence(SILENCE).await;
}

#[tokio::test]
async fn sse_a_publication_with_raw_newlines_in_its_json_arrives_intact() {
    let server = server(|_| {}).await;
    let mut watcher = server.client("watcher").await;
    watcher.subscribe("feed:nl").await;
    let (mut stream, s) = sse_connect(&server, "alice").await;
    send_ok(
        &server,
        &s,
        "alice",
        json!({"id": 1, "type": "subscribe", "channel": "feed:nl"}),
    )
    .await;
    next_numbered(&mut stream, &s, 2).await;

    // Client-written whitespace: LF, CRLF and a lone CR inside the JSON.
    let body = "{\"id\":2,\"type\":\"publish\",\"channel\":\"feed:nl\",\"data\":{\n  \"text\": \"two\\nlines\",\r\n  \"list\": [1,\r2]\n}}";
    let got = send(&server, &s, Some(&token("alice")), body).await;
    assert_eq!(got, (202, json!({"accepted": 1})));

    let expected = json!({"text": "two\nlines", "list": [1, 2]});
    let mut saw_publication = false;
    let mut saw_reply = false;
    for seq in 3..=4 {
        let event = stream.event().await;
        assert_eq!(event.seq(&s), Some(seq), "{event:?}");
        match event.frame["type"].as_str() {
            Some("publication") => {
                assert_eq!(event.frame["data"], expected, "{event:?}");
                assert!(
                    event.data_lines > 1,
                    "raw newlines become several data lines: {event:?}"
                );
                saw_publication = true;
            }
            Some("published") => saw_reply = true,
            _ => panic!("unexpected {event:?}"),
        }
    }
    assert!(saw_publication && saw_reply);
    let over_ws = watcher.push("publication").await;
    assert_eq!(over_ws["data"], expected, "{over_ws}");
}

#[tokio::test]
async fn sse_resume_with_last_event_id_replays_exactly_the_missed_frames() {
    let server = server(|_| {}).await;
    let (mut stream, s) = sse_connect(&server, "alice").await;
    send_ok(
        &server,
        &s,
        "alice",
        json!({"id": 1, "type": "subscribe", "channel": "feed:r"}),
    )
    .await;
    next_numbered(&mut stream, &s, 2).await;
    for n in 1..=3 {
        server.publish("feed:r", json!({"n": n})).await;
    }
    // Processed through seq 4 (n = 2); n = 3 was written but not processed.
    publications(&mut stream, &s, 3, &[1, 2]).await;
    drop(stream);
    for n in 4..=5 {
        server.publish("feed:r", json!({"n": n})).await;
    }

    let last_event_id = format!("{s}.4");
    let mut stream = sse(
        &server,
        &format!("token={}", token("alice")),
        &[("last-event-id", &last_event_id)],
    )
    .await
    .unwrap_or_else(|e| panic!("resume refused: {e:?}"));
    resumed_greeting(&mut stream, &s).await;
    publications(&mut stream, &s, 5, &[3, 4, 5]).await;
    // Still subscribed: live publications follow, numbered on.
    server.publish("feed:r", json!({"n": 6})).await;
    publications(&mut stream, &s, 8, &[6]).await;
    stream.expect_silence(SILENCE).await;
}

#[tokio::test]
async fn sse_resume_with_session_and_seq_in_the_query() {
    let server = server(|_| {}).await;
    let (mut stream, s) = sse_connect(&server, "alice").await;
    send_ok(
        &server,
        &s,
        "alice",
        json!({"id": 1, "type": "subscribe", "channel": "feed:q"}),
    )
    .await;
    next_numbered(&mut stream, &s, 2).await;
    server.publish("feed:q", json!({"n": 1})).await;
    publications(&mut stream, &s, 3, &[1]).await;
    drop(stream);
    server.publish("feed:q", json!({"n": 2})).await;
    server.publish("feed:q", json!({"n": 3})).await;

    let query = format!("token={}&session={s}&seq=3", token("alice"));
    let mut stream = sse(&server, &query, &[])
        .await
        .unwrap_or_else(|e| panic!("resume refused: {e:?}"));
    resumed_greeting(&mut stream, &s).await;
    publications(&mut stream, &s, 4, &[2, 3]).await;
    server.publish("feed:q", json!({"n": 4})).await;
    publications(&mut stream, &s, 6, &[4]).await;
    stream.expect_silence(SILENCE).await;
}

#[tokio::test]
async fn sse_an_expiring_token_gets_disconnect_3501_and_the_stream_ends() {
    let server = server(|_| {}).await;
    let exp = unix_now() + 2;
    let query = format!("token={}", token_with("alice", Some(exp), None, None));
    let mut stream = sse(&server, &query, &[])
        .await
        .unwrap_or_else(|e| panic!("refused: {e:?}"));
    let connected = stream.event().await;
    let s = session_of(&connected.frame);
    assert_eq!(connected.frame["expires"], exp, "{connected:?}");

    let disconnect = next_numbered(&mut stream, &s, 2).await;
    assert_eq!(disconnect["type"], "disconnect", "{disconnect}");
    assert_eq!(disconnect["code"], 3501, "{disconnect}");
    assert_eq!(disconnect["reconnect"], false, "{disconnect}");
    stream.ends().await;

    // A disconnect ends the session: it cannot be resumed.
    let query = format!("token={}&session={s}&seq=2", token("alice"));
    assert_error(
        &sse_refused(&server, &query, &[]).await,
        404,
        114,
        "resume after 3501",
    );
}

#[tokio::test]
async fn sse_sends_keepalive_comments_and_needs_no_pongs() {
    // Pings every second and a one-second pong timeout: a stream that were
    // held to WebSocket heartbeats would be closed with 3012 after ~2 s.
    let server = server(|c| {
        c.client.ping_interval = Duration::from_secs(1);
        c.client.pong_timeout = Duration::from_secs(1);
    })
    .await;
    let (mut stream, s) = sse_connect(&server, "alice").await;
    for _ in 0..3 {
        let block = stream.block().await.expect("the stream stays open");
        assert!(!block.is_event(), "only keep-alives: {block:?}");
        assert_eq!(block.comments, [""], "a bare `:` comment: {block:?}");
    }
    send_ok(&server, &s, "alice", json!({"id": 1, "type": "ping"})).await;
    assert_eq!(
        next_numbered(&mut stream, &s, 2).await,
        json!({"id": 1, "type": "pong"})
    );
}

#[tokio::test]
async fn a_resume_takes_the_session_over_and_the_old_transport_ends_quietly() {
    let server = server(|_| {}).await;
    let (mut first, s) = sse_connect(&server, "alice").await;

    // SSE over SSE: the old stream ends without a `disconnect`.
    let query = format!("token={}&session={s}&seq=1", token("alice"));
    let mut second = sse(&server, &query, &[])
        .await
        .unwrap_or_else(|e| panic!("resume refused: {e:?}"));
    resumed_greeting(&mut second, &s).await;
    first.ends().await;
    send_ok(&server, &s, "alice", json!({"id": 1, "type": "ping"})).await;
    assert_eq!(
        next_numbered(&mut second, &s, 2).await,
        json!({"id": 1, "type": "pong"})
    );

    // Long-polling over SSE: the same (the poll's cursor says seq 3 was
    // not processed, so it is replayed).
    send_ok(&server, &s, "alice", json!({"id": 2, "type": "ping"})).await;
    next_numbered(&mut second, &s, 3).await;
    assert_eq!(
        poll_ok(&server, &s, 2).await,
        json!({"cursor": 3, "messages": [{"id": 2, "type": "pong"}]})
    );
    second.ends().await;
}

#[tokio::test]
async fn sse_refuses_missing_forged_and_expired_tokens() {
    let server = server(|_| {}).await;
    let mut around = bystander(&server).await;

    let refused = sse_refused(&server, "", &[]).await;
    assert_error(&refused, 401, 101, "no token");
    let query = format!("token={}", forged("alice"));
    assert_error(
        &sse_refused(&server, &query, &[]).await,
        401,
        101,
        "forged token",
    );
    let bearer = format!("Bearer {}", forged("alice"));
    assert_error(
        &sse_refused(&server, "", &[("authorization", &bearer)]).await,
        401,
        101,
        "forged bearer token",
    );
    let query = format!("token={}", expired("alice"));
    assert_error(
        &sse_refused(&server, &query, &[]).await,
        401,
        109,
        "expired token",
    );

    // A good token in the same header is accepted.
    let bearer = format!("Bearer {}", token("alice"));
    let mut stream = sse(&server, "", &[("authorization", &bearer)])
        .await
        .unwrap_or_else(|e| panic!("a bearer token is refused: {e:?}"));
    assert_eq!(stream.event().await.frame["type"], "connected");

    bystander_still_hears(&server, &mut around).await;
}

#[tokio::test]
async fn sse_refuses_bad_resumes() {
    let server = server(|_| {}).await;
    let mut around = bystander(&server).await;
    let (mut alice, s) = sse_connect(&server, "alice").await;
    let t = token("alice");

    let query = format!("token={t}&session=no-such-session&seq=1");
    assert_error(
        &sse_refused(&server, &query, &[]).await,
        404,
        114,
        "unknown session",
    );
    let query = format!("token={t}");
    assert_error(
        &sse_refused(&server, &query, &[("last-event-id", "no-such-session.1")]).await,
        404,
        114,
        "unknown session in Last-Event-ID",
    );
    for malformed in ["garbage", &format!("{s}.x"), &format!("{s}.")] {
        assert_error(
            &sse_refused(&server, &query, &[("last-event-id", malformed)]).await,
            400,
            107,
            &format!("Last-Event-ID {malformed:?}"),
        );
    }
    let no_seq = format!("token={t}&session={s}");
    assert_error(
        &sse_refused(&server, &no_seq, &[]).await,
        400,
        107,
        "session without seq",
    );
    let bad_seq = format!("token={t}&session={s}&seq=x");
    assert_error(
        &sse_refused(&server, &bad_seq, &[]).await,
        400,
        107,
        "seq not a number",
    );
    let bob = format!("token={}&session={s}&seq=1", token("bob"));
    assert_error(
        &sse_refused(&server, &bob, &[]).await,
        403,
        103,
        "another user's session",
    );
    let bob_lei = format!("token={}", token("bob"));
    let lei = format!("{s}.1");
    assert_error(
        &sse_refused(&server, &bob_lei, &[("last-event-id", &lei)]).await,
        403,
        103,
        "another user's session in Last-Event-ID",
    );

    // None of that disturbed alice's session: her stream carries on.
    send_ok(&server, &s, "alice", json!({"id": 1, "type": "ping"})).await;
    assert_eq!(
        next_numbered(&mut alice, &s, 2).await,
        json!({"id": 1, "type": "pong"})
    );

    // A seq from the future is 115 and ends that session.
    let (_carol, c) = sse_connect(&server, "carol").await;
    let future = format!("token={}&session={c}&seq=99", token("carol"));
    assert_error(
        &sse_refused(&server, &future, &[]).await,
        400,
        115,
        "seq from the future",
    );
    let again = format!("token={}&session={c}&seq=1", token("carol"));
    assert_error(
        &sse_refused(&server, &again, &[]).await,
        404,
        114,
        "the session ended with 115",
    );

    bystander_still_hears(&server, &mut around).await;
}

// ================================================================== send

#[tokio::test]
async fn send_refuses_unknown_sessions_and_bad_or_foreign_tokens() {
    let server = server(|_| {}).await;
    let mut around = bystander(&server).await;
    let (mut stream, s) = sse_connect(&server, "alice").await;
    let t = token("alice");
    let ping = r#"{"id":1,"type":"ping"}"#;

    let got = send(&server, "no-such-session", Some(&t), ping).await;
    assert_error(&got, 404, 114, "unknown session");
    let got = send(&server, &s, Some(&token("bob")), ping).await;
    assert_error(&got, 403, 103, "another user's token");
    assert_error(&send(&server, &s, None, ping).await, 401, 101, "no token");
    let got = send(&server, &s, Some(&forged("alice")), ping).await;
    assert_error(&got, 401, 101, "forged token");
    let got = send(&server, &s, Some(&expired("alice")), ping).await;
    assert_error(&got, 401, 109, "expired token");
    let no_session = http()
        .post(server.http("/connection/send"))
        .bearer_auth(&t)
        .body(ping)
        .send()
        .await
        .unwrap();
    assert_error(&json_of(no_session).await, 400, 107, "missing session");

    // Nothing of those reached the session; `?token=` works too.
    let good = http()
        .post(server.http(&format!("/connection/send?session={s}&token={t}")))
        .body(r#"{"id":7,"type":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(good).await, (202, json!({"accepted": 1})));
    assert_eq!(
        next_numbered(&mut stream, &s, 2).await,
        json!({"id": 7, "type": "pong"})
    );
    bystander_still_hears(&server, &mut around).await;
}

#[tokio::test]
async fn send_refuses_bodies_that_are_not_commands_too_large_or_connect() {
    let server = server(|c| c.client.max_data_size = 1024).await;
    let mut around = bystander(&server).await;
    let (mut stream, s) = sse_connect(&server, "alice").await;
    let t = token("alice");

    let connect = json!({"id": 3, "type": "connect", "token": t}).to_string();
    let connect_in_batch =
        json!([{"id": 4, "type": "ping"}, {"id": 5, "type": "connect", "token": t}]).to_string();
    let cases: [(&str, &str); 10] = [
        ("truncated JSON", r#"{"id":1,"type":"#),
        ("not JSON", "hello"),
        ("empty body", ""),
        ("a string", r#""ping""#),
        ("a number", "42"),
        ("null", "null"),
        ("an array with a number", r#"[{"id":1,"type":"ping"},3]"#),
        ("an array of arrays", "[[]]"),
        ("connect", &connect),
        ("connect in a batch", &connect_in_batch),
    ];
    for (case, body) in cases {
        assert_error(&send(&server, &s, Some(&t), body).await, 400, 107, case);
    }
    let huge = json!({
        "id": 6, "type": "publish", "channel": "feed:big", "data": "x".repeat(400 * 1024),
    })
    .to_string();
    assert_error(
        &send(&server, &s, Some(&t), &huge).await,
        413,
        111,
        "body over the limit",
    );

    // The session is untouched: the next frame is the reply to a good send.
    send_ok(&server, &s, "alice", json!({"id": 9, "type": "ping"})).await;
    assert_eq!(
        next_numbered(&mut stream, &s, 2).await,
        json!({"id": 9, "type": "pong"})
    );
    bystander_still_hears(&server, &mut around).await;
}

#[tokio::test]
async fn send_a_bad_command_in_a_batch_gets_an_error_frame_and_the_rest_still_run() {
    let server = server(|_| {}).await;
    let mut watcher = server.client("watcher").await;
    watcher.subscribe("feed:b").await;
    let (mut stream, s) = sse_connect(&server, "alice").await;

    send_ok(
        &server,
        &s,
        "alice",
        json!([
            {"id": 2, "type": "subscribe", "channel": "feed:b"},
            {"id": 3, "type": "no-such-command"},
            {"id": 4, "type": "subscribe", "channel": "feed:bad channel"},
            {"id": 5, "type": "publish", "channel": "feed:b", "data": {"after": "errors"}},
        ]),
    )
    .await;
    let mut frames = Vec::new();
    for seq in 2..=6 {
        frames.push(next_numbered(&mut stream, &s, seq).await);
    }
    let reply = |id: u64| {
        frames
            .iter()
            .find(|f| f["id"] == id)
            .unwrap_or_else(|| panic!("a reply to {id}: {frames:?}"))
            .clone()
    };
    assert_eq!(reply(2)["type"], "subscribed", "{frames:?}");
    assert_eq!(reply(3)["type"], "error", "{frames:?}");
    assert_eq!(reply(3)["code"], 104, "{frames:?}");
    assert_eq!(reply(4)["type"], "error", "{frames:?}");
    assert_eq!(reply(4)["code"], 110, "{frames:?}");
    assert_eq!(reply(5)["type"], "published", "{frames:?}");
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "publication" && f["data"] == json!({"after": "errors"})),
        "{frames:?}"
    );
    let over_ws = watcher.push("publication").await;
    assert_eq!(over_ws["data"], json!({"after": "errors"}), "{over_ws}");
    assert_alive(&mut watcher).await;
}

// ========================================================== long-polling

#[tokio::test]
async fn poll_connect_then_a_cursor_replays_until_the_next_one_acknowledges() {
    let server = server(|c| c.client.poll_hold = Duration::from_millis(300)).await;
    let connected = poll_connect(&server, "alice").await;
    assert_eq!(connected["id"], 0, "{connected}");
    assert_eq!(connected["user"], "alice", "{connected}");
    let s = session_of(&connected);

    send_ok(
        &server,
        &s,
        "alice",
        json!({"id": 1, "type": "subscribe", "channel": "feed:p"}),
    )
    .await;
    // Through the Redis broker the publication reaches the node after the
    // publish returns; a WebSocket subscriber of the same node sees it once
    // it is queued to every local subscriber, the poller's session too.
    let mut watcher = server.client("watcher").await;
    watcher.subscribe("feed:p").await;
    server.publish("feed:p", json!({"n": 1})).await;
    watcher.push("publication").await;

    let first = poll_ok(&server, &s, 1).await;
    assert_eq!(first["cursor"], 3, "{first}");
    let messages = first["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 2, "{first}");
    assert_eq!(messages[0]["id"], 1, "{first}");
    assert_eq!(messages[0]["type"], "subscribed", "{first}");
    assert_eq!(messages[1]["type"], "publication", "{first}");
    assert_eq!(messages[1]["data"], json!({"n": 1}), "{first}");

    // A lost response loses nothing: the same cursor, the same messages.
    assert_eq!(poll_ok(&server, &s, 1).await, first);
    // The next cursor acknowledges them (nothing new: empty after the hold).
    assert_eq!(
        poll_ok(&server, &s, 3).await,
        json!({"cursor": 3, "messages": []})
    );
    assert_error(
        &poll(&server, &s, 1).await,
        400,
        115,
        "an acknowledged cursor",
    );
}

#[tokio::test]
async fn poll_connect_takes_a_bearer_token_too() {
    let server = server(|_| {}).await;
    let got = json_of(
        http()
            .post(server.http("/connection/poll"))
            .bearer_auth(token("alice"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got.0, 200, "{got:?}");
    assert_eq!(got.1["type"], "connected", "{got:?}");
    assert_eq!(got.1["id"], 0, "{got:?}");
    assert_eq!(got.1["user"], "alice", "{got:?}");
}

#[tokio::test]
async fn a_waiting_poll_answers_as_soon_as_something_is_queued() {
    let server = server(|c| c.client.poll_hold = Duration::from_secs(30)).await;
    let s = session_of(&poll_connect(&server, "alice").await);
    send_ok(
        &server,
        &s,
        "alice",
        json!({"id": 1, "type": "subscribe", "channel": "feed:w"}),
    )
    .await;
    assert_eq!(poll_ok(&server, &s, 1).await["cursor"], 2);

    let url = server.http(&format!("/connection/poll?session={s}&cursor=2"));
    let waiting = tokio::spawn(async move { json_of(http().get(url).send().await.unwrap()).await });
    // Let the poll start waiting (if it has not, it still must answer).
    tokio::time::sleep(SILENCE).await;
    server.publish("feed:w", json!({"n": 1})).await;
    let (status, body) = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the poll answers within the wait, long before the 30 s hold")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cursor"], 3, "{body}");
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["messages"][0]["type"], "publication", "{body}");
    assert_eq!(body["messages"][0]["data"], json!({"n": 1}), "{body}");
}

#[tokio::test]
async fn a_poll_with_nothing_queued_answers_empty_after_the_hold() {
    let server = server(|c| c.client.poll_hold = Duration::from_millis(300)).await;
    let s = session_of(&poll_connect(&server, "alice").await);
    assert_eq!(
        poll_ok(&server, &s, 1).await,
        json!({"cursor": 1, "messages": []})
    );
}

#[tokio::test]
async fn a_newer_poll_answers_the_older_one_at_once() {
    let server = server(|c| c.client.poll_hold = Duration::from_secs(30)).await;
    let s = session_of(&poll_connect(&server, "alice").await);
    send_ok(
        &server,
        &s,
        "alice",
        json!({"id": 1, "type": "subscribe", "channel": "feed:n"}),
    )
    .await;
    assert_eq!(poll_ok(&server, &s, 1).await["cursor"], 2);

    let url = server.http(&format!("/connection/poll?session={s}&cursor=2"));
    let older = {
        let url = url.clone();
        tokio::spawn(async move { json_of(http().get(url).send().await.unwrap()).await })
    };
    tokio::time::sleep(SILENCE).await;
    let newer = tokio::spawn(async move { json_of(http().get(url).send().await.unwrap()).await });

    let answered = tokio::time::timeout(WAIT, older)
        .await
        .expect("the older poll is answered within the wait")
        .unwrap();
    assert_eq!(answered, (200, json!({"cursor": 2, "messages": []})));

    // The newer one holds the session and gets what comes next.
    server.publish("feed:n", json!({"n": 1})).await;
    let (status, body) = tokio::time::timeout(WAIT, newer)
        .await
        .expect("the newer poll answers within the wait")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cursor"], 3, "{body}");
    assert_eq!(body["messages"][0]["data"], json!({"n": 1}), "{body}");
}

#[tokio::test]
async fn poll_responses_over_1_kib_are_gzipped_when_accepted() {
    let server = server(|_| {}).await;
    let small = http()
        .post(server.http("/connection/poll"))
        .header("accept-encoding", "gzip")
        .json(&json!({"token": token("alice")}))
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    assert_eq!(
        header(small.headers(), "content-encoding"),
        None,
        "a small body stays plain"
    );
    let s = session_of(&small.json::<Value>().await.unwrap());
    send_ok(
        &server,
        &s,
        "alice",
        json!({"id": 1, "type": "subscribe", "channel": "feed:z"}),
    )
    .await;
    let text = "compressible ".repeat(300);
    server.publish("feed:z", json!({"text": text})).await;

    let url = server.http(&format!("/connection/poll?session={s}&cursor=1"));
    // Through a broker the publication may land a moment after the
    // publish returns: poll until it is queued (a repeated cursor replays,
    // so the gzip poll below gets it again).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer: Value = http().get(&url).send().await.unwrap().json().await.unwrap();
        if answer["messages"].as_array().map_or(0, Vec::len) >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no publication: {answer}"
        );
    }
    let zipped = http()
        .get(&url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.status(), 200);
    assert_eq!(header(zipped.headers(), "content-encoding"), Some("gzip"));
    let raw = zipped.bytes().await.unwrap();
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_string(&mut unzipped)
        .expect("the body is gzip");
    let unzipped: Value = serde_json::from_str(&unzipped).expect("gunzips to JSON");
    assert_eq!(unzipped["cursor"], 3, "{unzipped}");
    assert_eq!(unzipped["messages"][1]["data"]["text"], text.as_str());

    // Without Accept-Encoding: the same answer, plain.
    let plain = http().get(&url).send().await.unwrap();
    assert_eq!(plain.status(), 200);
    assert_eq!(header(plain.headers(), "content-encoding"), None);
    assert_eq!(plain.json::<Value>().await.unwrap(), unzipped);
}

#[tokio::test]
async fn a_session_nobody_polls_expires_after_the_grace_period() {
    let server = server(|c| {
        c.client.session_grace = Duration::from_secs(1);
        c.client.poll_hold = Duration::from_millis(300);
    })
    .await;
    let channel = "room:lobby";
    let mut watcher = server.client("watcher").await;
    watcher.subscribe(channel).await;
    let connected = poll_connect(&server, "alice").await;
    let s = session_of(&connected);
    let client = connected["client"].as_str().unwrap().to_string();
    send_ok(
        &server,
        &s,
        "alice",
        json!({"id": 1, "type": "subscribe", "channel": channel}),
    )
    .await;
    push_about(&mut watcher, "join", "alice").await;
    let polled = poll_ok(&server, &s, 1).await;
    let cursor = polled["cursor"].as_u64().expect("cursor");
    let (_, presence) = server.api("presence", json!({"channel": channel})).await;
    assert!(
        presence["result"]["clients"].get(&client).is_some(),
        "{presence}"
    );

    // Nobody polls any more: past the grace period the session leaves.
    let leave = push_about(&mut watcher, "leave", "alice").await;
    assert_eq!(leave["info"]["client"], client.as_str(), "{leave}");
    assert_error(
        &poll(&server, &s, cursor).await,
        404,
        114,
        "an expired session",
    );
    let (status, presence) = server.api("presence", json!({"channel": channel})).await;
    assert_eq!(status, 200, "{presence}");
    let clients = presence["result"]["clients"].as_object().expect("clients");
    assert!(clients.values().all(|c| c["user"] != "alice"), "{presence}");
}

#[tokio::test]
async fn a_waiting_poll_gets_disconnect_3501_when_the_token_expires() {
    let server = server(|c| c.client.poll_hold = Duration::from_secs(30)).await;
    let exp = unix_now() + 2;
    let connected = json_of(
        http()
            .post(server.http("/connection/poll"))
            .json(&json!({"token": token_with("alice", Some(exp), None, None)}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(connected.0, 200, "{connected:?}");
    assert_eq!(connected.1["expires"], exp, "{connected:?}");
    let s = session_of(&connected.1);

    let polled = poll_ok(&server, &s, 1).await;
    assert_eq!(polled["cursor"], 2, "{polled}");
    let disconnect = &polled["messages"][0];
    assert_eq!(disconnect["type"], "disconnect", "{polled}");
    assert_eq!(disconnect["code"], 3501, "{polled}");
    assert_eq!(disconnect["reconnect"], false, "{polled}");
    // After a disconnect the session is gone.
    assert_error(
        &poll(&server, &s, 2).await,
        404,
        114,
        "after the disconnect",
    );
}

#[tokio::test]
async fn poll_refuses_bad_input() {
    let server = server(|_| {}).await;
    let mut around = bystander(&server).await;
    let s = session_of(&poll_connect(&server, "alice").await);
    let post = |body: &'static str| {
        http()
            .post(server.http("/connection/poll"))
            .header("content-type", "application/json")
            .body(body)
    };

    let got = json_of(post("").send().await.unwrap()).await;
    assert_error(&got, 401, 101, "POST without a token");
    let got = json_of(post("{}").send().await.unwrap()).await;
    assert_error(&got, 401, 101, "POST with an empty object");
    let got = json_of(post("not json").send().await.unwrap()).await;
    assert_error(&got, 400, 107, "POST body not JSON");
    for (case, t) in [("forged", forged("alice")), ("expired", expired("alice"))] {
        let response = http()
            .post(server.http("/connection/poll"))
            .json(&json!({"token": t}))
            .send()
            .await
            .unwrap();
        let (status, code) = if case == "forged" {
            (401, 101)
        } else {
            (401, 109)
        };
        assert_error(&json_of(response).await, status, code, case);
    }

    let cases = [
        ("no parameters", String::new(), 400, 107),
        ("no cursor", format!("session={s}"), 400, 107),
        ("no session", "cursor=1".to_string(), 400, 107),
        (
            "cursor not a number",
            format!("session={s}&cursor=x"),
            400,
            107,
        ),
        (
            "negative cursor",
            format!("session={s}&cursor=-1"),
            400,
            107,
        ),
        (
            "unknown session",
            "session=no-such-session&cursor=1".into(),
            404,
            114,
        ),
    ];
    for (case, query, status, code) in cases {
        assert_error(&poll_query(&server, &query).await, status, code, case);
    }
    // The session survived all that; a cursor from the future ends it.
    send_ok(&server, &s, "alice", json!({"id": 1, "type": "ping"})).await;
    assert_eq!(
        poll_ok(&server, &s, 1).await,
        json!({"cursor": 2, "messages": [{"id": 1, "type": "pong"}]})
    );
    assert_error(
        &poll(&server, &s, 99).await,
        400,
        115,
        "cursor from the future",
    );
    assert_error(&poll(&server, &s, 1).await, 404, 114, "ended by 115");

    bystander_still_hears(&server, &mut around).await;
}

// ===================================================== across transports

#[tokio::test]
async fn a_websocket_session_continues_over_long_polling_then_sse() {
    let server = server(|_| {}).await;
    let channel = "feed:move";

    // WebSocket: connected = 1, subscribed = 2, the publication = 3.
    // An error before `connect` is not numbered.
    let mut ws = Ws::open(&server.ws_url()).await;
    let early = ws
        .call(json!({"type": "subscribe", "channel": channel}))
        .await;
    assert_eq!(early["code"], 101, "{early}");
    let s = session_of(&ws.connect(&token("alice")).await);
    ws.subscribe(channel).await;
    server.publish(channel, json!({"n": 1})).await;
    assert_eq!(ws.push("publication").await["data"], json!({"n": 1}));
    let count = 3;
    drop(ws); // no close frame: the session waits
    server.publish(channel, json!({"n": 2})).await;
    server.publish(channel, json!({"n": 3})).await;

    // Long-polling continues it from the WebSocket's count. (Through the
    // Redis broker the second publication may reach the node after the
    // first poll answered: poll on from the cursor until both are in.)
    let mut cursor = count;
    let mut data: Vec<Value> = Vec::new();
    while data.len() < 2 {
        let polled = poll_ok(&server, &s, cursor).await;
        let messages = polled["messages"].as_array().expect("messages");
        data.extend(messages.iter().map(|m| m["data"].clone()));
        cursor = polled["cursor"].as_u64().expect("cursor");
        assert_eq!(cursor, count + data.len() as u64, "{polled}");
    }
    assert_eq!(data, [json!({"n": 2}), json!({"n": 3})]);
    assert_eq!(cursor, 5);
    server.publish(channel, json!({"n": 4})).await;
    server.publish(channel, json!({"n": 5})).await;

    // SSE resumes from the poll's cursor: the rest, then live traffic.
    let query = format!("token={}&session={s}&seq=5", token("alice"));
    let mut stream = sse(&server, &query, &[])
        .await
        .unwrap_or_else(|e| panic!("resume refused: {e:?}"));
    resumed_greeting(&mut stream, &s).await;
    publications(&mut stream, &s, 6, &[4, 5]).await;
    server.publish(channel, json!({"n": 6})).await;
    publications(&mut stream, &s, 8, &[6]).await;
    stream.expect_silence(SILENCE).await;
}

// ================================================================== CORS

const APP: &str = "https://app.example";

/// An `OPTIONS` preflight for `path` from `origin`.
async fn preflight(server: &TestServer, path: &str, origin: &str) -> reqwest::Response {
    http()
        .request(Method::OPTIONS, server.http(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("preflight")
}

fn assert_preflight_allowed(response: &reqwest::Response, origin: &str, path: &str) {
    let h = response.headers();
    assert_eq!(response.status(), 204, "{path}: {h:?}");
    assert_eq!(
        header(h, "access-control-allow-origin"),
        Some(origin),
        "{path}: {h:?}"
    );
    assert!(
        lists(h, "access-control-allow-methods", "POST"),
        "{path}: {h:?}"
    );
    assert!(
        lists(h, "access-control-allow-methods", "GET"),
        "{path}: {h:?}"
    );
    assert!(
        lists(h, "access-control-allow-headers", "authorization"),
        "{path}: {h:?}"
    );
    assert!(
        lists(h, "access-control-allow-headers", "content-type"),
        "{path}: {h:?}"
    );
}

#[tokio::test]
async fn cors_preflights_from_a_listed_origin_are_allowed() {
    let server = server(|c| c.allowed_origins = vec![APP.into()]).await;
    for path in ["/connection/send", "/connection/poll", "/connection/sse"] {
        let response = preflight(&server, path, APP).await;
        assert_preflight_allowed(&response, APP, path);
    }
}

#[tokio::test]
async fn cors_an_unlisted_origin_is_refused_with_403_103() {
    let server = server(|c| c.allowed_origins = vec![APP.into()]).await;
    let evil = "https://evil.example";
    for path in ["/connection/send", "/connection/poll", "/connection/sse"] {
        let response = preflight(&server, path, evil).await;
        assert_eq!(
            header(response.headers(), "access-control-allow-origin"),
            None,
            "{path}"
        );
        assert_error(&json_of(response).await, 403, 103, path);
    }
    let connect = http()
        .post(server.http("/connection/poll"))
        .header("origin", evil)
        .json(&json!({"token": token("alice")}))
        .send()
        .await
        .unwrap();
    assert_error(&json_of(connect).await, 403, 103, "POST /connection/poll");
    let query = format!("token={}", token("alice"));
    let refused = sse_refused(&server, &query, &[("origin", evil)]).await;
    assert_error(&refused, 403, 103, "GET /connection/sse");
}

#[tokio::test]
async fn cors_requests_from_a_listed_origin_carry_allow_origin() {
    let server = server(|c| {
        c.allowed_origins = vec![APP.into()];
        c.client.poll_hold = Duration::from_millis(300);
    })
    .await;
    let connect = http()
        .post(server.http("/connection/poll"))
        .header("origin", APP)
        .json(&json!({"token": token("alice")}))
        .send()
        .await
        .unwrap();
    assert_eq!(connect.status(), 200);
    assert_eq!(
        header(connect.headers(), "access-control-allow-origin"),
        Some(APP)
    );
    let s = session_of(&connect.json::<Value>().await.unwrap());
    let sent = http()
        .post(server.http(&format!("/connection/send?session={s}")))
        .header("origin", APP)
        .bearer_auth(token("alice"))
        .body(r#"{"id":1,"type":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    assert_eq!(
        header(sent.headers(), "access-control-allow-origin"),
        Some(APP)
    );

    let polled = http()
        .get(server.http(&format!("/connection/poll?session={s}&cursor=1")))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(polled.status(), 200);
    assert_eq!(
        header(polled.headers(), "access-control-allow-origin"),
        Some(APP)
    );
    let body: Value = polled.json().await.unwrap();
    assert_eq!(
        body["messages"][0],
        json!({"id": 1, "type": "pong"}),
        "{body}"
    );

    let query = format!("token={}", token("bob"));
    let stream = sse(&server, &query, &[("origin", APP)])
        .await
        .unwrap_or_else(|e| panic!("refused: {e:?}"));
    assert_eq!(
        header(stream.headers(), "access-control-allow-origin"),
        Some(APP)
    );
}

#[tokio::test]
async fn cors_the_nodes_own_origin_needs_no_listing() {
    let server = server(|_| {}).await;
    let own = format!("http://{}", server.addr);
    let response = preflight(&server, "/connection/send", &own).await;
    assert_preflight_allowed(&response, &own, "/connection/send");
    let connect = http()
        .post(server.http("/connection/poll"))
        .header("origin", &own)
        .json(&json!({"token": token("alice")}))
        .send()
        .await
        .unwrap();
    assert_eq!(connect.status(), 200);
    assert_eq!(
        header(connect.headers(), "access-control-allow-origin"),
        Some(own.as_str())
    );
    // Another port is another origin.
    let other = format!("http://{}:1", server.addr.ip());
    let response = preflight(&server, "/connection/send", &other).await;
    assert_error(&json_of(response).await, 403, 103, "another port");
}
