//! Static assets compiled into the binary: `GET /client.js`, the JavaScript
//! SDK of the same version as the server (from `clients/js/`).

use std::sync::Arc;

use axum::http::header;
use axum::routing::get;
use axum::Router;

use crate::node::Node;

const CLIENT_JS: &str = include_str!("../../clients/js/switchboard.js");
const CLIENT_DTS: &str = include_str!("../../clients/js/switchboard.d.ts");

pub fn router() -> Router<Arc<Node>> {
    Router::new()
        .route(
            "/client.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    CLIENT_JS,
                )
            }),
        )
        .route(
            "/client.d.ts",
            get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/typescript; charset=utf-8",
                    )],
                    CLIENT_DTS,
                )
            }),
        )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_sdk_is_the_module() {
        assert!(super::CLIENT_JS.contains("export class Switchboard"));
        assert!(super::CLIENT_DTS.contains("Switchboard"));
    }
}
