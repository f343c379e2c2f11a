//! Connection tokens signed with RSA (RS256) and ECDSA (ES256) keys: the
//! node verifies them with the configured PEM public keys.

mod common;

use std::path::PathBuf;

use common::{TestServer, Ws};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use switchboard::auth::ConnectionClaims;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn claims(user: &str) -> ConnectionClaims {
    ConnectionClaims {
        sub: user.into(),
        exp: None,
        info: None,
        channels: None,
        channel: None,
    }
}

fn rs256(user: &str) -> String {
    let key =
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_private.pem")).unwrap()).unwrap();
    encode(&Header::new(Algorithm::RS256), &claims(user), &key).unwrap()
}

fn es256(private: &str, user: &str) -> String {
    let key = EncodingKey::from_ec_pem(&std::fs::read(fixture(private)).unwrap()).unwrap();
    encode(&Header::new(Algorithm::ES256), &claims(user), &key).unwrap()
}

async fn asymmetric_server() -> TestServer {
    TestServer::start_with(|c| {
        c.auth.rsa_public_key = Some(fixture("rsa_public.pem"));
        c.auth.ecdsa_public_key = Some(fixture("ec_public.pem"));
    })
    .await
}

#[tokio::test]
async fn an_rs256_token_signed_with_the_matching_private_key_connects() {
    let server = asymmetric_server().await;
    let mut ws = Ws::open(&server.ws_url()).await;
    let reply = ws.connect(&rs256("rsa-user")).await;
    assert_eq!(reply["user"], "rsa-user");
}

#[tokio::test]
async fn an_es256_token_signed_with_the_matching_private_key_connects() {
    let server = asymmetric_server().await;
    let mut ws = Ws::open(&server.ws_url()).await;
    let reply = ws.connect(&es256("ec_private.pem", "ec-user")).await;
    assert_eq!(reply["user"], "ec-user");
}

#[tokio::test]
async fn an_es256_token_from_another_key_is_refused_with_3500() {
    let server = asymmetric_server().await;
    let mut ws = Ws::open(&server.ws_url()).await;
    let reply = ws
        .call(json!({"type": "connect", "token": es256("ec_other_private.pem", "x")}))
        .await;
    assert_eq!(reply["code"], 101, "{reply}");
    let (disconnect, close) = ws.closed().await;
    assert_eq!(disconnect.expect("disconnect push")["code"], 3500);
    assert_eq!(close, Some(3500));
}

#[tokio::test]
async fn an_rs256_token_is_refused_when_no_rsa_key_is_configured() {
    let server = TestServer::start().await;
    let mut ws = Ws::open(&server.ws_url()).await;
    let reply = ws
        .call(json!({"type": "connect", "token": rs256("x")}))
        .await;
    assert_eq!(reply["code"], 101, "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("RS256"),
        "{reply}"
    );
    let (disconnect, _) = ws.closed().await;
    assert_eq!(disconnect.expect("disconnect push")["code"], 3500);
}

#[tokio::test]
async fn hmac_tokens_still_work_beside_the_public_keys() {
    let server = asymmetric_server().await;
    let ws = server.client("hmac-user").await;
    assert!(!ws.client_id.is_empty());
}
