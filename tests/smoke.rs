//! The shortest path through the product: connect, subscribe, publish, receive.

mod common;

use common::TestServer;
use serde_json::json;

#[tokio::test]
async fn a_publication_reaches_another_subscriber() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.subscribe("chat:room").await;
    bob.subscribe("chat:room").await;
    let published = bob.publish("chat:room", json!({"text": "hi"})).await;
    let push = alice.push("publication").await;
    assert_eq!(push["data"], json!({"text": "hi"}));
    assert_eq!(push["offset"], published["position"]["offset"]);
    assert_eq!(push["info"]["user"], "bob");
    server.stop().await;
}
