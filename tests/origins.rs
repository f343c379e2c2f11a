//! Cross-site WebSocket hijacking: browsers on other origins may connect
//! only when `allowed_origins` lists them.

mod common;

use common::TestServer;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error;

/// Opens the WebSocket with an `Origin` header; `Ok(())` if the upgrade succeeded,
/// else the HTTP status of the refusal.
async fn open_with_origin(server: &TestServer, origin: &str) -> Result<(), u16> {
    let mut request = server.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", origin.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => Ok(()),
        Err(Error::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("unexpected error: {other}"),
    }
}

#[tokio::test]
async fn a_page_on_another_origin_is_refused_with_403() {
    let server = TestServer::start().await;
    assert_eq!(
        open_with_origin(&server, "https://evil.example").await,
        Err(403)
    );
}

#[tokio::test]
async fn a_page_served_by_the_node_itself_connects() {
    let server = TestServer::start().await;
    let own = format!("http://{}", server.addr);
    assert_eq!(open_with_origin(&server, &own).await, Ok(()));
}

#[tokio::test]
async fn a_listed_origin_connects_and_others_still_do_not() {
    let server = TestServer::start_with(|c| {
        c.allowed_origins = vec!["https://shop.example".into()];
    })
    .await;
    assert_eq!(
        open_with_origin(&server, "https://shop.example").await,
        Ok(())
    );
    assert_eq!(
        open_with_origin(&server, "https://evil.example").await,
        Err(403)
    );
}

#[tokio::test]
async fn a_star_allows_every_origin() {
    let server = TestServer::start_with(|c| c.allowed_origins = vec!["*".into()]).await;
    assert_eq!(
        open_with_origin(&server, "https://anything.example").await,
        Ok(())
    );
}
