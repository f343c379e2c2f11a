//! The demo page at `/` and the dev-mode-only `/demo/token`.

mod common;

use common::{TestServer, Ws};
use serde_json::Value;
use switchboard::config::Mode;

async fn get(server: &TestServer, path: &str) -> (u16, String) {
    let resp = reqwest::get(server.http(path)).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn the_demo_page_is_served_and_loads_the_sdk() {
    let server = TestServer::start().await;
    let (status, page) = get(&server, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("<html"), "{page:.200}");
    assert!(page.contains("/client.js"));
    server.stop().await;
}

#[tokio::test]
async fn a_dev_node_mints_demo_tokens_that_connect_with_the_name_as_info() {
    let server = TestServer::start_with(|c| c.mode = Mode::Dev).await;
    let (status, body) = get(&server, "/demo/token?name=Asha").await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let user = body["user"].as_str().unwrap().to_string();
    assert!(user.starts_with("demo-"), "{user}");
    let mut ws = Ws::open(&server.ws_url()).await;
    let reply = ws.connect(body["token"].as_str().unwrap()).await;
    assert_eq!(reply["user"], user.as_str());
    let sub = ws.subscribe("chat:lobby").await;
    assert_eq!(sub["type"], "subscribed");
    let join = ws.push("join").await;
    assert_eq!(join["info"]["data"]["name"], "Asha");

    // A page refreshing its token keeps its user id.
    let (status, again) = get(&server, &format!("/demo/token?name=Asha&user={user}")).await;
    assert_eq!(status, 200, "{again}");
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["user"], user.as_str());
    server.stop().await;
}

#[tokio::test]
async fn demo_token_refuses_bad_names_and_foreign_user_ids() {
    let server = TestServer::start_with(|c| c.mode = Mode::Dev).await;
    for path in [
        "/demo/token",
        "/demo/token?name=",
        "/demo/token?name=%20%20",
        &format!("/demo/token?name={}", "x".repeat(41)),
        "/demo/token?name=a%0Ab",
        "/demo/token?name=Asha&user=42",
    ] {
        let (status, body) = get(&server, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], 107, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn outside_dev_mode_there_is_no_demo_token_endpoint() {
    let server = TestServer::start().await;
    let (status, body) = get(&server, "/demo/token?name=Asha").await;
    assert_eq!(status, 404, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], 104);
    server.stop().await;
}
