//! A connection's life and the node's: heartbeat, connect timeout, token
//! expiry and refresh, slow consumers, leave on disconnect, API disconnect,
//! and graceful shutdown (in-process and of the real binary on SIGTERM).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{api_call, keys, token, token_with, unix_now, Process, TestServer, Ws, API_KEY, WAIT};
use futures_util::StreamExt;
use serde_json::{json, Value};
use switchboard::config::Config;
use tokio_tungstenite::tungstenite::Message;

/// Fast timings: ping every 1 s, 500 ms to answer, 500 ms to connect.
fn fast(c: &mut Config) {
    c.client.ping_interval = Duration::from_secs(1);
    c.client.pong_timeout = Duration::from_millis(500);
    c.client.connect_timeout = Duration::from_millis(500);
}

/// Reads raw frames, answering nothing (not even pings), until the server
/// closes; returns the JSON frames and the close frame's code.
async fn frames_until_close(ws: &mut Ws) -> (Vec<Value>, Option<u16>) {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, ws.stream.next())
            .await
            .expect("the server closes within the wait")
        {
            None | Some(Err(_)) => return (frames, None),
            Some(Ok(Message::Close(frame))) => return (frames, frame.map(|f| u16::from(f.code))),
            Some(Ok(Message::Text(t))) => {
                frames.push(serde_json::from_str(&t).expect("JSON frame"))
            }
            Some(Ok(_)) => {}
        }
    }
}

/// The next raw JSON frame, without answering pings.
async fn raw_frame(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.stream.next())
            .await
            .expect("a frame within the wait")
        {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("JSON frame"),
            Some(Ok(Message::Close(f))) => panic!("closed: {f:?}"),
            None | Some(Err(_)) => panic!("connection lost"),
            Some(Ok(_)) => {}
        }
    }
}

/// Asserts a `disconnect` push with `code` and `reconnect` (and a reason).
fn assert_disconnect(frame: Option<&Value>, code: u16, reconnect: bool) {
    let frame = frame.unwrap_or_else(|| panic!("expected a disconnect {code} push"));
    assert_eq!(frame["type"], "disconnect", "{frame}");
    assert_eq!(frame["code"], code, "{frame}");
    assert_eq!(frame["reconnect"], reconnect, "{frame}");
    assert!(
        frame["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{frame}"
    );
    assert!(frame.get("id").is_none(), "a push has no id: {frame}");
}

/// Stays idle for `period`, answering the server's pings; panics if
/// anything else arrives or the connection closes.
async fn idle_answering_pings(ws: &mut Ws, period: Duration) {
    let deadline = Instant::now() + period;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        // Short waits: `recv_wire` restarts its wait after each ping it answers.
        match ws.recv_wire(left.min(Duration::from_millis(200))).await {
            Err(()) => {}
            Ok(Some(frame)) => panic!("expected only pings, got {frame}"),
            Ok(None) => panic!("the connection closed"),
        }
    }
}

/// The `result` of an API call that must succeed.
async fn api_ok(addr: SocketAddr, method: &str, body: Value) -> Value {
    let (status, reply) = api_call(addr, method, body.clone(), Some(API_KEY)).await;
    assert_eq!(status, 200, "/api/{method} {body} answered {reply}");
    reply["result"].clone()
}

/// A Prometheus sample (`name{labels}` exactly as rendered) from /metrics.
async fn metric(addr: SocketAddr, sample: &str) -> u64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| {
            line.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no sample {sample} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------- heartbeat

#[tokio::test]
async fn server_pings_every_ping_interval() {
    let server = TestServer::start_with(fast).await;
    let mut ws = Ws::open(&server.ws_url()).await;
    ws.send(json!({"type": "connect", "token": token("42")}))
        .await;
    let connected = raw_frame(&mut ws).await;
    assert_eq!(connected["type"], "connected", "{connected}");
    assert_eq!(
        connected["ping"], 1,
        "the reply announces the ping interval in seconds"
    );

    let window = Duration::from_millis(3500);
    let started = Instant::now();
    let mut pings = 0;
    while let Some(left) = window.checked_sub(started.elapsed()) {
        let Ok(next) = tokio::time::timeout(left, ws.stream.next()).await else {
            break;
        };
        match next {
            Some(Ok(Message::Text(t))) => {
                let frame: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(frame, json!({"type": "ping"}), "only pings are expected");
                pings += 1;
                ws.send_text(r#"{"type":"pong"}"#).await;
            }
            Some(Ok(Message::Close(f))) => panic!("closed while answering pings: {f:?}"),
            None | Some(Err(_)) => panic!("connection lost while answering pings"),
            Some(Ok(_)) => {}
        }
    }
    assert!(
        (2..=4).contains(&pings),
        "{pings} pings in 3.5 s at a 1 s interval"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected_past_several_intervals() {
    let server = TestServer::start_with(fast).await;
    let mut ws = server.client("42").await;
    ws.subscribe("heartbeat").await;
    // 3.5 s is more than three ping intervals and seven pong timeouts.
    idle_answering_pings(&mut ws, Duration::from_millis(3500)).await;
    api_ok(
        server.addr,
        "publish",
        json!({"channel": "heartbeat", "data": {"still": "here"}}),
    )
    .await;
    let push = ws.push("publication").await;
    assert_eq!(push["data"], json!({"still": "here"}));
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed_with_3012() {
    let server = TestServer::start_with(fast).await;
    let mut ws = Ws::open(&server.ws_url()).await;
    ws.send(json!({"type": "connect", "token": token("42")}))
        .await;
    let (frames, close) = frames_until_close(&mut ws).await;
    assert_eq!(frames[0]["type"], "connected", "{frames:?}");
    assert!(
        frames.contains(&json!({"type": "ping"})),
        "it was pinged first: {frames:?}"
    );
    assert_disconnect(frames.last(), 3012, true);
    assert_eq!(close, Some(3012));
    server.stop().await;
}

// ---------------------------------------------------------- connect timeout

#[tokio::test]
async fn a_socket_that_never_sends_connect_is_closed_with_3003() {
    let server = TestServer::start_with(fast).await;
    let mut ws = Ws::open(&server.ws_url()).await;
    let (frames, close) = frames_until_close(&mut ws).await;
    assert_eq!(frames.len(), 1, "only the disconnect: {frames:?}");
    assert_disconnect(frames.last(), 3003, true);
    assert_eq!(close, Some(3003));
    server.stop().await;
}

// ------------------------------------------------------------- token expiry

#[tokio::test]
async fn a_connection_is_closed_with_3501_when_its_token_expires() {
    let server = TestServer::start().await;
    let exp = unix_now() + 2;
    let mut ws = Ws::open(&server.ws_url()).await;
    let connected = ws.connect(&token_with("42", Some(exp), None, None)).await;
    assert_eq!(connected["expires"], exp);
    let (disconnect, close) = ws.closed().await;
    let now_ms = switchboard::stream::now_millis();
    assert!(
        now_ms >= exp * 1000,
        "closed {} ms before the token expired",
        exp * 1000 - now_ms
    );
    assert_disconnect(disconnect.as_ref(), 3501, false);
    assert_eq!(close, Some(3501));
    server.stop().await;
}

#[tokio::test]
async fn refreshing_the_token_before_expiry_keeps_the_connection() {
    let server = TestServer::start().await;
    let exp = unix_now() + 2;
    let mut ws = Ws::open(&server.ws_url()).await;
    ws.connect(&token_with("42", Some(exp), None, None)).await;
    let later = unix_now() + 3600;
    let refreshed = ws
        .call(json!({"type": "refresh", "token": token_with("42", Some(later), None, None)}))
        .await;
    assert_eq!(refreshed["type"], "refreshed", "{refreshed}");
    assert_eq!(refreshed["expires"], later);
    ws.subscribe("after_refresh").await;
    // Past the old expiry by a second.
    ws.expect_silence(Duration::from_millis(3200)).await;
    assert!(unix_now() > exp);
    api_ok(
        server.addr,
        "publish",
        json!({"channel": "after_refresh", "data": 1}),
    )
    .await;
    assert_eq!(ws.push("publication").await["data"], 1);
    server.stop().await;
}

// ------------------------------------------------------------ slow consumer

/// Publishes ~1 KiB messages to `channel` from four API clients until the
/// node reports a queue overflow; panics if none happens within the cap.
///
/// With `paced_by` (the offset a reading subscriber has reached), publishing
/// never runs more than [`WINDOW`] messages ahead of that reader, so a reader
/// that keeps reading can never fill its 64 KiB queue, however loaded the
/// machine is.
async fn flood_until_overflow(
    addr: SocketAddr,
    channel: &'static str,
    paced_by: Option<Arc<AtomicU64>>,
    gap: Option<Duration>,
) {
    const CAP_PER_PUBLISHER: usize = 10_000;
    const WINDOW: u64 = 32;
    let overflowed = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    for p in 0..4 {
        let overflowed = overflowed.clone();
        let published = published.clone();
        let paced_by = paced_by.clone();
        publishers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let pad = "x".repeat(1000);
            for i in 0..CAP_PER_PUBLISHER {
                while let Some(read) = &paced_by {
                    if published.load(Ordering::SeqCst) < read.load(Ordering::SeqCst) + WINDOW
                        || overflowed.load(Ordering::SeqCst)
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if let Some(gap) = gap {
                    tokio::time::sleep(gap).await;
                }
                if overflowed.load(Ordering::SeqCst) {
                    return;
                }
                let response = http
                    .post(format!("http://{addr}/api/publish"))
                    .header("Authorization", format!("apikey {API_KEY}"))
                    .json(&json!({"channel": channel, "data": {"p": p, "i": i, "pad": pad}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                published.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    loop {
        if api_ok(addr, "info", json!({})).await["queue_overflows"]
            .as_u64()
            .unwrap()
            >= 1
        {
            overflowed.store(true, Ordering::SeqCst);
            break;
        }
        if publishers.iter().all(|p| p.is_finished()) {
            panic!(
                "no queue overflow after {} publications",
                4 * CAP_PER_PUBLISHER
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for p in publishers {
        p.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_that_stops_reading_is_disconnected_as_a_slow_consumer() {
    const CHANNEL: &str = "firehose";
    let server = TestServer::start_with(|c| c.client.queue_max_size = 64 * 1024).await;
    let addr = server.addr;
    let mut normal = server.client("normal").await;
    normal.subscribe(CHANNEL).await;
    // Subscribed, then never read again; the socket stays open.
    let mut slow = server.client("slow").await;
    slow.subscribe(CHANNEL).await;
    assert_eq!(api_ok(addr, "info", json!({})).await["num_clients"], 2);

    // The normal subscriber reads everything, checking order, until `end`.
    let read_up_to = Arc::new(AtomicU64::new(0));
    let reading = read_up_to.clone();
    let reader = tokio::spawn(async move {
        let mut expected = 1u64;
        loop {
            let frame = normal
                .recv_wire(Duration::from_secs(30))
                .await
                .expect("publications keep coming")
                .expect("the normal subscriber stays connected");
            if frame["type"] != "publication" {
                continue;
            }
            assert_eq!(
                frame["offset"], expected,
                "the normal subscriber got every publication in order"
            );
            reading.store(expected, Ordering::SeqCst);
            expected += 1;
            if frame["data"]["end"] == true {
                return frame["offset"].as_u64().unwrap();
            }
        }
    });

    flood_until_overflow(addr, CHANNEL, Some(read_up_to), None).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while api_ok(addr, "info", json!({})).await["num_clients"] != 1 {
        assert!(
            Instant::now() < deadline,
            "the slow consumer was not disconnected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        api_ok(addr, "channels", json!({})).await["channels"][CHANNEL]["num_clients"],
        1
    );
    assert!(metric(addr, "switchboard_queue_overflows_total").await >= 1);

    let end = api_ok(
        addr,
        "publish",
        json!({"channel": CHANNEL, "data": {"end": true}}),
    )
    .await;
    let last_read = reader.await.unwrap();
    assert_eq!(end["position"]["offset"], last_read);
    drop(slow);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_consumer_disconnect_is_counted_under_code_3008() {
    const CHANNEL: &str = "firehose";
    let server = TestServer::start_with(|c| c.client.queue_max_size = 64 * 1024).await;
    let addr = server.addr;
    let mut slow = server.client("slow").await;
    slow.subscribe(CHANNEL).await;
    // Slow enough that the queue only overflows once the socket is full.
    flood_until_overflow(addr, CHANNEL, None, Some(Duration::from_millis(1))).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while api_ok(addr, "info", json!({})).await["num_clients"] != 0 {
        assert!(
            Instant::now() < deadline,
            "the slow consumer was not disconnected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(addr, "switchboard_queue_overflows_total").await, 1);
    assert_eq!(
        metric(addr, r#"switchboard_disconnects_total{code="3008"}"#).await,
        1
    );
    drop(slow);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_consumer_that_reads_again_gets_an_unbroken_prefix_then_close_3008() {
    const CHANNEL: &str = "firehose";
    let server = TestServer::start_with(|c| c.client.queue_max_size = 64 * 1024).await;
    let mut slow = server.client("slow").await;
    slow.subscribe(CHANNEL).await;

    flood_until_overflow(server.addr, CHANNEL, None, None).await;
    let (frames, close) = frames_until_close(&mut slow).await;
    let offsets: Vec<u64> = frames
        .iter()
        .filter(|f| f["type"] == "publication")
        .map(|f| f["offset"].as_u64().unwrap())
        .collect();
    // The prefix is what the writer had handed to the socket before the
    // queue overflowed (an overflow frees the queue). On a loaded machine
    // the flood can fill the 64 KiB before the writer's first turn, so it
    // may be empty (seen once in CI); it is never gapped.
    assert_eq!(
        offsets,
        (1..=offsets.len() as u64).collect::<Vec<_>>(),
        "no gap before the close"
    );
    if let Some(d) = frames.iter().find(|f| f["type"] == "disconnect") {
        assert_disconnect(Some(d), 3008, true);
    }
    assert_eq!(close, Some(3008));
    server.stop().await;
}

// --------------------------------------------------------------- join/leave

/// Connects alice and bob to `channel`; alice has seen bob's join.
async fn alice_sees_bob_join(server: &TestServer, channel: &str) -> (Ws, Ws) {
    let mut alice = server.client("alice").await;
    alice.subscribe(channel).await;
    let mut bob = server.client("bob").await;
    bob.subscribe(channel).await;
    loop {
        let join = alice.push("join").await;
        if join["info"]["client"] == bob.client_id.as_str() {
            break;
        }
    }
    (alice, bob)
}

/// Asserts bob's leave reaches alice and bob is gone from presence.
async fn assert_bob_left(server: &TestServer, alice: &mut Ws, channel: &str, bob_id: &str) {
    let leave = alice.push("leave").await;
    assert_eq!(
        leave,
        json!({"type": "leave", "channel": channel, "info": {"user": "bob", "client": bob_id}})
    );
    let presence = alice
        .call(json!({"type": "presence", "channel": channel}))
        .await;
    assert_eq!(keys(&presence["clients"]), [alice.client_id.as_str()]);
    let api = api_ok(server.addr, "presence", json!({"channel": channel})).await;
    assert!(api["clients"].get(bob_id).is_none(), "{api}");
}

#[tokio::test]
async fn closing_a_socket_sends_leave_at_once_and_removes_it_from_presence() {
    // The default grace period is a minute: the leave must not wait for it.
    let server = TestServer::start().await;
    let channel = "chat:room";
    let (mut alice, mut bob) = alice_sees_bob_join(&server, channel).await;
    let bob_id = bob.client_id.clone();
    bob.stream.close(None).await.expect("close frame sent");
    assert_bob_left(&server, &mut alice, channel, &bob_id).await;
    server.stop().await;
}

#[tokio::test]
async fn a_dropped_socket_keeps_its_session_for_the_grace_period_then_leaves() {
    let server = TestServer::start_with(|c| c.client.session_grace = Duration::from_secs(2)).await;
    let channel = "chat:room";
    let (mut alice, bob) = alice_sees_bob_join(&server, channel).await;
    let bob_id = bob.client_id.clone();
    drop(bob);
    // Within the grace period bob may still resume: still present.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let presence = alice
        .call(json!({"type": "presence", "channel": channel}))
        .await;
    assert!(presence["clients"].get(&bob_id).is_some(), "{presence}");
    assert_bob_left(&server, &mut alice, channel, &bob_id).await;
    server.stop().await;
}

// ----------------------------------------------------------- API disconnect

#[tokio::test]
async fn api_disconnect_closes_every_connection_of_the_user_with_3503() {
    let server = TestServer::start().await;
    let mut first = server.client("42").await;
    let mut second = server.client("42").await;
    let mut other = server.client("7").await;

    let result = api_ok(server.addr, "disconnect", json!({"user": "42"})).await;
    assert_eq!(result, json!({"disconnected": 2}));
    for ws in [&mut first, &mut second] {
        let (disconnect, close) = ws.closed().await;
        assert_disconnect(disconnect.as_ref(), 3503, false);
        assert_eq!(close, Some(3503));
    }
    other.subscribe("chat:still-here").await;
    server.stop().await;
}

// ----------------------------------------------------------------- shutdown

#[tokio::test]
async fn stopping_a_node_sends_3001_to_every_client() {
    let server = TestServer::start().await;
    let mut subscribed = server.client("1").await;
    subscribed.subscribe("chat:room").await;
    let mut idle = server.client("2").await;
    let mut not_yet_connected = Ws::open(&server.ws_url()).await;

    let stopping = tokio::spawn(server.stop());
    for ws in [&mut subscribed, &mut idle, &mut not_yet_connected] {
        let (disconnect, close) = ws.closed().await;
        assert_disconnect(disconnect.as_ref(), 3001, true);
        assert_eq!(close, Some(3001));
    }
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_tells_clients_to_reconnect_and_exits_with_code_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut process = Process::start(dir.path(), &[("SWITCHBOARD_SHUTDOWN_TIMEOUT", "3s")]);
    let mut ws = Ws::open(&process.ws_url()).await;
    ws.connect(&token("42")).await;
    ws.subscribe("chat:lobby").await;

    process.signal("TERM");
    let (disconnect, close) = ws.closed().await;
    assert_disconnect(disconnect.as_ref(), 3001, true);
    assert_eq!(close, Some(3001));
    assert_eq!(process.wait(Duration::from_secs(3)), Some(0));
    let health = reqwest::get(format!("http://{}/health", process.addr)).await;
    assert!(
        health.is_err(),
        "/health still answers after exit: {health:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_acknowledged_right_before_sigterm_is_in_history_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut process = Process::start(dir.path(), &[]);
    let position = api_ok(
        process.addr,
        "publish",
        json!({"channel": "chat:last", "data": {"last": true}}),
    )
    .await["position"]
        .clone();
    process.signal("TERM");
    assert_eq!(process.wait(Duration::from_secs(10)), Some(0));

    let restarted = Process::start(dir.path(), &[]);
    let page = api_ok(restarted.addr, "history", json!({"channel": "chat:last"})).await;
    assert_eq!(page["position"], position);
    let publications = page["publications"].as_array().unwrap();
    assert_eq!(publications.len(), 1, "{page}");
    assert_eq!(publications[0]["offset"], position["offset"]);
    assert_eq!(publications[0]["data"], json!({"last": true}));
}

#[test]
fn sigterm_as_soon_as_the_port_accepts_still_exits_with_code_0() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
        .arg(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SWITCHBOARD_AUTH_HMAC_SECRET", common::SECRET)
        .env("SWITCHBOARD_AUTH_API_KEY", API_KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("binary starts");
    let mut process = Process { child, addr };
    let deadline = Instant::now() + WAIT;
    // The moment the node accepts connections it is serving, so from then
    // on SIGTERM must mean a graceful shutdown.
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the node did not come up");
        std::thread::sleep(Duration::from_millis(1));
    }
    process.signal("TERM");
    assert_eq!(process.wait(WAIT), Some(0));
}
