//! Bad input (issue 2, "Bad input — each one has a test"): every case gets
//! its documented error or close code, the connection stays up where the
//! protocol allows, and other clients notice nothing.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{
    api_call, assert_alive, keys, namespace, token, token_with, unix_now, TestServer, Ws, SECRET,
    WAIT,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchboard::auth::{mint_hs256, ConnectionClaims, SubscriptionClaims};
use switchboard::config::Config;
use tokio_tungstenite::tungstenite::Message;

const SILENCE: Duration = Duration::from_millis(200);

/// A throwaway RSA public key (its private half was discarded).
const RSA_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAmjoB6RXlyBUE6YAtycRw
HjZ/MB0do9d4ou5ArQkdpXfwxBdeqlbTRsqNDe2QRF8sNsh0FOntoz0dRCjRh5Xx
w3VFHVmBY0/hjdQk3rwrtNj2yMXJb3PmjITiJmAhf0P4wy/PTwBaiNiV2Vqmij/Z
6HHmBLxGaGKXdHVBR28Y7SjTRI+xYdYpZ4zcD7tdRBQiIEit8wmReJ7gfsTDwyXZ
Bj6gQjVztBj0jQA3rZtr9D/KZTPQaW049OmeO3+4yYGZrjLFwySKpP94/f66VFWo
R55icdlhPie5WltX/31C08cqSXQZrEqi2RJl30tQUg9YrMVQ4Sm/05R8C4wHySzV
aQIDAQAB
-----END PUBLIC KEY-----
";

/// A server with `chat` (built in), `feed` (plain), `secret` (private) and
/// `dm` (for user-limited channels), then `tweak`.
async fn start(tweak: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.namespaces.insert("feed".into(), namespace(|_| {}));
        c.namespaces
            .insert("secret".into(), namespace(|ns| ns.private = true));
        c.namespaces.insert("dm".into(), namespace(|_| {}));
        tweak(c);
    })
    .await
}

/// Asserts `reply` is `{"id":id,"type":"error","code":code,"message":…}`.
fn assert_error(reply: &Value, id: u64, code: u16) {
    assert_eq!(keys(reply), ["code", "id", "message", "type"], "{reply}");
    assert_eq!(reply["id"], id, "{reply}");
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], code, "{reply}");
    assert!(!reply["message"].as_str().unwrap().is_empty(), "{reply}");
}

/// Asserts `frame` is an error with no `id` (the id could not be read).
fn assert_error_without_id(frame: &Value, code: u16) {
    assert_eq!(keys(frame), ["code", "message", "type"], "{frame}");
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["code"], code, "{frame}");
}

/// Sends a command and asserts it is answered with error `code`.
async fn expect_error(ws: &mut Ws, command: Value, code: u16) -> Value {
    let id = ws.send(command).await;
    let reply = ws.reply(id).await;
    assert_error(&reply, id, code);
    reply
}

/// A well-behaved client subscribed to `feed:watch`.
async fn bystander(server: &TestServer) -> Ws {
    let mut ws = server.client("bystander").await;
    ws.subscribe("feed:watch").await;
    ws
}

/// The bystander's very next frame is a fresh publication, and it is alive.
async fn assert_bystander_unaffected(server: &TestServer, ws: &mut Ws) {
    let (status, body) = server
        .api(
            "publish",
            json!({"channel": "feed:watch", "data": {"still": "here"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let position = &body["result"]["position"];
    let frame = ws.recv().await.expect("bystander still connected");
    assert_eq!(frame["type"], "publication", "{frame}");
    assert_eq!(frame["offset"], position["offset"], "{frame}");
    assert_eq!(frame["epoch"], position["epoch"], "{frame}");
    assert_eq!(frame["data"], json!({"still": "here"}), "{frame}");
    assert_alive(ws).await;
}

/// A JWT built by hand: base64url header and claims, HMAC-SHA256 signature
/// with `key` (whatever `alg` the header claims).
fn hand_made_jwt(header: Value, claims: Value, key: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let signature = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

/// Connects with `token` and asserts the refusal: an error reply with
/// `error_code`, then `{"type":"disconnect","code":close_code,…}` and a
/// close frame with `close_code`.
async fn assert_connect_refused(
    server: &TestServer,
    token: &str,
    error_code: u16,
    close_code: u16,
    reason: &str,
) {
    let mut ws = Ws::open(&server.ws_url()).await;
    let id = ws.send(json!({"type": "connect", "token": token})).await;
    let reply = ws.reply(id).await;
    assert_error(&reply, id, error_code);
    let (disconnect, close) = ws.closed().await;
    assert_eq!(
        disconnect,
        Some(json!({
            "type": "disconnect",
            "code": close_code,
            "reason": reason,
            "reconnect": false,
        }))
    );
    assert_eq!(close, Some(close_code));
}

fn subscription_token(secret: &str, user: &str, channel: &str, exp: Option<u64>) -> String {
    mint_hs256(
        secret,
        &SubscriptionClaims {
            sub: user.into(),
            channel: channel.into(),
            exp,
        },
    )
    .unwrap()
}

// ---------------------------------------------------------------- malformed frames

#[tokio::test]
async fn malformed_json_gets_107_without_id_and_the_connection_stays_up() {
    let server = start(|_| {}).await;
    let mut watcher = bystander(&server).await;
    let mut ws = server.client("mallory").await;
    ws.subscribe("feed:watch").await;
    for bad in [
        "{nope",
        "",
        "not json",
        "null",
        "42",
        r#"{"id":1,"type":"ping""#,
    ] {
        ws.send_text(bad).await;
        let frame = ws.recv().await.expect("connection open");
        assert_error_without_id(&frame, 107);
    }
    assert_alive(&mut ws).await;
    assert_bystander_unaffected(&server, &mut watcher).await;
}

#[tokio::test]
async fn a_json_array_frame_gets_107_without_id_and_is_not_executed() {
    // One JSON object per frame: an array is malformed, not a command whose
    // fields are given by position.
    let server = start(|_| {}).await;
    let mut ws = server.client("mallory").await;
    for bad in [r#"[1,2]"#, r#"[1,"ping"]"#, r#"[2,"subscribe","feed:x"]"#] {
        ws.send_text(bad).await;
        let frame = ws.recv().await.expect("connection open");
        assert_error_without_id(&frame, 107);
    }
    // Not subscribed by the array above.
    expect_error(
        &mut ws,
        json!({"type": "unsubscribe", "channel": "feed:x"}),
        112,
    )
    .await;
}

#[tokio::test]
async fn an_unreadable_id_gets_107_without_id() {
    let server = start(|_| {}).await;
    let mut ws = server.client("mallory").await;
    for bad in [
        r#"{"id":-1,"type":"ping"}"#,
        r#"{"id":"7","type":"ping"}"#,
        r#"{"id":1.5,"type":"ping"}"#,
        r#"{"type":"ping"}"#,
    ] {
        ws.send_text(bad).await;
        let frame = ws.recv().await.expect("connection open");
        assert_error_without_id(&frame, 107);
    }
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn unknown_type_gets_104_with_the_id() {
    let server = start(|_| {}).await;
    let mut ws = server.client("mallory").await;
    ws.send_text(r#"{"id":77,"type":"dance"}"#).await;
    let reply = ws.reply(77).await;
    assert_error(&reply, 77, 104);
    assert!(
        reply["message"].as_str().unwrap().contains("dance"),
        "{reply}"
    );
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn missing_field_gets_107_naming_the_field() {
    let server = start(|_| {}).await;
    let mut ws = server.client("mallory").await;
    for (command, field) in [
        (json!({"type": "subscribe"}), "`channel`"),
        (json!({"type": "publish", "channel": "feed:x"}), "`data`"),
        (json!({"type": "publish", "data": 1}), "`channel`"),
        (json!({"type": "history"}), "`channel`"),
        (json!({"type": "refresh"}), "`token`"),
        (json!({}), "`type`"),
    ] {
        let reply = expect_error(&mut ws, command, 107).await;
        assert!(
            reply["message"].as_str().unwrap().contains(field),
            "{field}: {reply}"
        );
    }
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn wrong_typed_field_gets_107_naming_the_field() {
    let server = start(|_| {}).await;
    let mut ws = server.client("mallory").await;
    for (command, field) in [
        (json!({"type": "subscribe", "channel": 7}), "`channel`"),
        (json!({"type": 5}), "`type`"),
        (
            json!({"type": "subscribe", "channel": "feed:x", "since": {"offset": "1", "epoch": "e"}}),
            "`since`",
        ),
        (
            json!({"type": "history", "channel": "feed:x", "limit": "ten"}),
            "`limit`",
        ),
        (
            json!({"type": "history", "channel": "feed:x", "limit": -1}),
            "`limit`",
        ),
        (
            json!({"type": "history", "channel": "feed:x", "reverse": "yes"}),
            "`reverse`",
        ),
        (
            json!({"type": "publish", "channel": "feed:x", "data": 1, "idempotency_key": 9}),
            "`idempotency_key`",
        ),
    ] {
        let reply = expect_error(&mut ws, command, 107).await;
        assert!(
            reply["message"].as_str().unwrap().contains(field),
            "{field}: {reply}"
        );
    }
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn a_binary_frame_gets_107_and_the_connection_stays_up() {
    let server = start(|_| {}).await;
    let mut watcher = bystander(&server).await;
    let mut ws = server.client("mallory").await;
    ws.stream
        .send(Message::binary(br#"{"id":1,"type":"ping"}"#.to_vec()))
        .await
        .unwrap();
    let frame = ws.recv().await.expect("connection open");
    assert_error_without_id(&frame, 107);
    assert_alive(&mut ws).await;
    assert_bystander_unaffected(&server, &mut watcher).await;
}

#[tokio::test]
async fn a_frame_far_over_the_limit_closes_with_3504() {
    let server = start(|_| {}).await;
    let mut watcher = bystander(&server).await;
    let mut ws = server.client("mallory").await;
    ws.subscribe("feed:watch").await;

    let big = format!(
        r#"{{"id":9,"type":"publish","channel":"feed:watch","data":"{}"}}"#,
        "x".repeat(2 << 20)
    );
    let (mut sink, mut stream) = ws.stream.split();
    // The server may stop reading mid-frame: send from another task.
    let sender = tokio::spawn(async move {
        let _ = sink.send(Message::text(big)).await;
    });
    let mut disconnect = None;
    let close = loop {
        match tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("close within the wait")
        {
            None | Some(Err(_)) => break None,
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["type"], "disconnect", "only the disconnect may come: {v}");
                disconnect = Some(v);
            }
            Some(Ok(_)) => {}
        }
    };
    sender.abort();
    let disconnect = disconnect.expect("a disconnect push");
    assert_eq!(disconnect["code"], 3504, "{disconnect}");
    assert_eq!(disconnect["reconnect"], false, "{disconnect}");
    assert_eq!(close, Some(3504));
    assert_bystander_unaffected(&server, &mut watcher).await;
}

// ---------------------------------------------------------------- connect and tokens

#[tokio::test]
async fn a_command_before_connect_gets_101_and_the_connection_stays_up() {
    let server = start(|_| {}).await;
    let mut ws = Ws::open(&server.ws_url()).await;
    expect_error(
        &mut ws,
        json!({"type": "subscribe", "channel": "feed:x"}),
        101,
    )
    .await;
    expect_error(
        &mut ws,
        json!({"type": "publish", "channel": "feed:x", "data": 1}),
        101,
    )
    .await;
    expect_error(&mut ws, json!({"type": "ping"}), 101).await;
    ws.connect(&token("alice")).await;
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn connect_with_an_expired_token_gets_109_then_disconnect_3501() {
    let server = start(|_| {}).await;
    let expired = token_with("alice", Some(unix_now() - 10), None, None);
    assert_connect_refused(&server, &expired, 109, 3501, "token expired").await;
}

#[tokio::test]
async fn connect_with_a_forged_token_gets_101_then_disconnect_3500() {
    let server = start(|_| {}).await;
    let mut watcher = bystander(&server).await;
    let forged = mint_hs256(
        "another-secret-that-is-long-enough-0000",
        &ConnectionClaims {
            sub: "alice".into(),
            exp: None,
            info: None,
            channels: None,
            channel: None,
        },
    )
    .unwrap();
    assert_connect_refused(&server, &forged, 101, 3500, "invalid token").await;
    assert_bystander_unaffected(&server, &mut watcher).await;
}

#[tokio::test]
async fn connect_with_a_garbage_token_gets_101_then_disconnect_3500() {
    let server = start(|_| {}).await;
    assert_connect_refused(&server, "not.a.jwt", 101, 3500, "invalid token").await;
}

#[tokio::test]
async fn a_hand_made_hs256_token_connects() {
    // Control for the hand-made tokens below: the construction is right.
    let server = start(|_| {}).await;
    let mut ws = Ws::open(&server.ws_url()).await;
    let t = hand_made_jwt(
        json!({"alg": "HS256", "typ": "JWT"}),
        json!({"sub": "alice"}),
        SECRET.as_bytes(),
    );
    assert_eq!(ws.connect(&t).await["user"], "alice");
}

#[tokio::test]
async fn connect_with_alg_none_gets_disconnect_3500() {
    let server = start(|_| {}).await;
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(r#"{"sub":"alice"}"#);
    let none = format!("{header}.{claims}.");
    assert_connect_refused(&server, &none, 101, 3500, "invalid token").await;
}

#[tokio::test]
async fn connect_with_rs256_header_but_hmac_signature_gets_disconnect_3500() {
    let server = start(|_| {}).await;
    let confused = hand_made_jwt(
        json!({"alg": "RS256", "typ": "JWT"}),
        json!({"sub": "alice"}),
        SECRET.as_bytes(),
    );
    assert_connect_refused(&server, &confused, 101, 3500, "invalid token").await;
}

#[tokio::test]
async fn connect_with_rs256_header_signed_by_hmac_over_the_public_key_gets_3500() {
    // The classic HS/RS confusion: the attacker knows the RSA public key and
    // uses it as an HMAC secret.
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("rsa.pem");
    std::fs::write(&pem, RSA_PUBLIC_PEM).unwrap();
    let server = start(|c| c.auth.rsa_public_key = Some(pem.clone())).await;
    for alg in ["RS256", "HS256"] {
        let confused = hand_made_jwt(
            json!({"alg": alg, "typ": "JWT"}),
            json!({"sub": "alice"}),
            RSA_PUBLIC_PEM.as_bytes(),
        );
        assert_connect_refused(&server, &confused, 101, 3500, "invalid token").await;
    }
}

#[tokio::test]
async fn connect_with_a_subscription_token_gets_disconnect_3500() {
    let server = start(|_| {}).await;
    let sub = subscription_token(SECRET, "alice", "feed:x", None);
    assert_connect_refused(&server, &sub, 101, 3500, "invalid token").await;
}

#[tokio::test]
async fn connect_twice_gets_113_and_the_connection_stays_up() {
    let server = start(|_| {}).await;
    let mut ws = server.client("alice").await;
    expect_error(
        &mut ws,
        json!({"type": "connect", "token": token("bob")}),
        113,
    )
    .await;
    assert_alive(&mut ws).await;
    // Still alice.
    let reply = ws.subscribe("feed:x").await;
    assert_eq!(reply["channel"], "feed:x");
    ws.publish("feed:x", json!(1)).await;
    assert_eq!(ws.push("publication").await["info"]["user"], "alice");
}

#[tokio::test]
async fn refresh_with_a_token_for_another_user_gets_103() {
    let server = start(|_| {}).await;
    let mut ws = server.client("alice").await;
    expect_error(
        &mut ws,
        json!({"type": "refresh", "token": token("bob")}),
        103,
    )
    .await;
    assert_alive(&mut ws).await;
}

// ---------------------------------------------------------------- channel names

#[tokio::test]
async fn a_channel_name_over_max_channel_length_gets_110() {
    let server = start(|c| c.client.max_channel_length = 32).await;
    let mut ws = server.client("alice").await;
    let longest = format!("feed:{}", "a".repeat(27));
    assert_eq!(longest.len(), 32);
    ws.subscribe(&longest).await;
    let too_long = format!("feed:{}", "a".repeat(28));
    expect_error(
        &mut ws,
        json!({"type": "subscribe", "channel": too_long}),
        110,
    )
    .await;
    expect_error(
        &mut ws,
        json!({"type": "publish", "channel": too_long, "data": 1}),
        110,
    )
    .await;
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn a_channel_name_with_forbidden_characters_gets_110() {
    let server = start(|_| {}).await;
    let mut ws = server.client("alice").await;
    for bad in [
        "feed:a b",
        "feed:é",
        "feed:a*b",
        "feed:a\"b",
        "feed:a\nb",
        "feed:",
        ":x",
        "",
    ] {
        expect_error(&mut ws, json!({"type": "subscribe", "channel": bad}), 110).await;
        expect_error(
            &mut ws,
            json!({"type": "publish", "channel": bad, "data": 1}),
            110,
        )
        .await;
    }
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn an_unknown_namespace_gets_102() {
    let server = start(|_| {}).await;
    let mut ws = server.client("alice").await;
    expect_error(
        &mut ws,
        json!({"type": "subscribe", "channel": "nope:x"}),
        102,
    )
    .await;
    expect_error(
        &mut ws,
        json!({"type": "publish", "channel": "nope:x", "data": 1}),
        102,
    )
    .await;
    expect_error(
        &mut ws,
        json!({"type": "history", "channel": "nope:x"}),
        102,
    )
    .await;
    assert_alive(&mut ws).await;
}

// ---------------------------------------------------------------- data size

#[tokio::test]
async fn data_over_the_limit_gets_111_and_the_connection_stays_up() {
    let server = start(|c| c.client.max_data_size = 1024).await;
    let mut watcher = bystander(&server).await;
    let mut ws = server.client("mallory").await;
    ws.subscribe("feed:watch").await;
    expect_error(
        &mut ws,
        json!({"type": "publish", "channel": "feed:watch", "data": "x".repeat(2000)}),
        111,
    )
    .await;
    ws.expect_silence(SILENCE).await;
    assert_alive(&mut ws).await;
    assert_bystander_unaffected(&server, &mut watcher).await;
}

#[tokio::test]
async fn data_over_the_default_64_kib_limit_gets_111() {
    let server = start(|_| {}).await;
    let mut ws = server.client("mallory").await;
    expect_error(
        &mut ws,
        json!({"type": "publish", "channel": "feed:x", "data": "x".repeat(64 * 1024)}),
        111,
    )
    .await;
    // Just under the limit (the JSON string has two quotes) passes.
    ws.publish("feed:x", json!("x".repeat(64 * 1024 - 2))).await;
}

// ---------------------------------------------------------------- permissions

#[tokio::test]
async fn private_namespace_without_a_claim_gets_103() {
    let server = start(|_| {}).await;
    let mut ws = server.client("alice").await;
    expect_error(
        &mut ws,
        json!({"type": "subscribe", "channel": "secret:x"}),
        103,
    )
    .await;
    let mut other = Ws::open(&server.ws_url()).await;
    other
        .connect(&token_with(
            "carol",
            None,
            None,
            Some(vec!["secret:team_*"]),
        ))
        .await;
    expect_error(
        &mut other,
        json!({"type": "subscribe", "channel": "secret:x"}),
        103,
    )
    .await;
    assert_alive(&mut ws).await;
    assert_alive(&mut other).await;
}

#[tokio::test]
async fn private_channel_reads_and_publishes_without_subscribing_get_103() {
    let server = start(|c| {
        c.namespaces.insert(
            "secret".into(),
            namespace(|ns| {
                ns.private = true;
                ns.presence = true;
            }),
        );
    })
    .await;
    let mut ws = server.client("alice").await;
    expect_error(
        &mut ws,
        json!({"type": "publish", "channel": "secret:x", "data": 1}),
        103,
    )
    .await;
    expect_error(
        &mut ws,
        json!({"type": "history", "channel": "secret:x"}),
        103,
    )
    .await;
    expect_error(
        &mut ws,
        json!({"type": "presence", "channel": "secret:x"}),
        103,
    )
    .await;
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn user_limited_channel_of_other_users_gets_103() {
    let server = start(|_| {}).await;
    let mut carol = server.client("carol").await;
    expect_error(
        &mut carol,
        json!({"type": "subscribe", "channel": "dm:x#alice,bob"}),
        103,
    )
    .await;
    expect_error(
        &mut carol,
        json!({"type": "publish", "channel": "dm:x#alice,bob", "data": 1}),
        103,
    )
    .await;
    assert_alive(&mut carol).await;
}

#[tokio::test]
async fn subscription_token_for_another_channel_gets_103() {
    let server = start(|_| {}).await;
    let mut bob = server.client("bob").await;
    let other_channel = subscription_token(SECRET, "bob", "secret:y", None);
    expect_error(
        &mut bob,
        json!({"type": "subscribe", "channel": "secret:x", "token": other_channel}),
        103,
    )
    .await;
    let other_user = subscription_token(SECRET, "alice", "secret:x", None);
    expect_error(
        &mut bob,
        json!({"type": "subscribe", "channel": "secret:x", "token": other_user}),
        103,
    )
    .await;
    let forged = subscription_token(
        "another-secret-that-is-long-enough-0000",
        "bob",
        "secret:x",
        None,
    );
    expect_error(
        &mut bob,
        json!({"type": "subscribe", "channel": "secret:x", "token": forged}),
        103,
    )
    .await;
    assert_alive(&mut bob).await;
}

#[tokio::test]
async fn expired_subscription_token_gets_109() {
    let server = start(|_| {}).await;
    let mut bob = server.client("bob").await;
    let expired = subscription_token(SECRET, "bob", "secret:x", Some(unix_now() - 10));
    expect_error(
        &mut bob,
        json!({"type": "subscribe", "channel": "secret:x", "token": expired}),
        109,
    )
    .await;
    assert_alive(&mut bob).await;
}

#[tokio::test]
async fn publishing_where_clients_may_not_gets_103() {
    // `news` is in the default namespace, where client_publish is off.
    let server = start(|_| {}).await;
    let mut reader = server.client("reader").await;
    reader.subscribe("news").await;
    let mut ws = server.client("mallory").await;
    expect_error(
        &mut ws,
        json!({"type": "publish", "channel": "news", "data": "spam"}),
        103,
    )
    .await;
    reader.expect_silence(SILENCE).await;
    assert_alive(&mut ws).await;
}

// ---------------------------------------------------------------- subscription state

#[tokio::test]
async fn a_subscription_over_max_subscriptions_gets_106() {
    let server = start(|c| c.client.max_subscriptions = 2).await;
    let mut ws = server.client("alice").await;
    ws.subscribe("feed:a").await;
    ws.subscribe("feed:b").await;
    let reply = expect_error(
        &mut ws,
        json!({"type": "subscribe", "channel": "feed:c"}),
        106,
    )
    .await;
    assert!(reply["message"].as_str().unwrap().contains('2'), "{reply}");
    // The first two still deliver; after an unsubscribe there is room again.
    let (status, _) = server
        .api("publish", json!({"channel": "feed:b", "data": "b"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(ws.push("publication").await["channel"], "feed:b");
    ws.call(json!({"type": "unsubscribe", "channel": "feed:a"}))
        .await;
    ws.subscribe("feed:c").await;
}

#[tokio::test]
async fn subscribing_twice_gets_105_and_delivery_stays_single() {
    let server = start(|_| {}).await;
    let mut ws = server.client("alice").await;
    ws.subscribe("feed:a").await;
    expect_error(
        &mut ws,
        json!({"type": "subscribe", "channel": "feed:a"}),
        105,
    )
    .await;
    let (status, _) = server
        .api("publish", json!({"channel": "feed:a", "data": 1}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(ws.push("publication").await["data"], 1);
    ws.expect_silence(SILENCE).await;
}

#[tokio::test]
async fn unsubscribing_when_not_subscribed_gets_112() {
    let server = start(|_| {}).await;
    let mut ws = server.client("alice").await;
    expect_error(
        &mut ws,
        json!({"type": "unsubscribe", "channel": "feed:a"}),
        112,
    )
    .await;
    assert_alive(&mut ws).await;
}

// ---------------------------------------------------------------- server API keys

#[tokio::test]
async fn api_calls_without_or_with_a_wrong_key_get_401_code_101() {
    let server = start(|_| {}).await;
    let mut watcher = bystander(&server).await;
    for key in [None, Some("wrong-key"), Some("")] {
        let (status, body) = api_call(
            server.addr,
            "publish",
            json!({"channel": "feed:watch", "data": "forged"}),
            key,
        )
        .await;
        assert_eq!(status, 401, "{key:?}: {body}");
        assert_eq!(body["error"]["code"], 101, "{key:?}: {body}");
    }
    assert_bystander_unaffected(&server, &mut watcher).await;
}
