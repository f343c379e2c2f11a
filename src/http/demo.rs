//! The demo chat page at `GET /` (built on the SDK at `/client.js`) and, in
//! dev mode only, `GET /demo/token?name=…[&user=demo-…]`, which mints a
//! connection token for a new demo user (or the given one, so a page can
//! refresh its token) with `{"name": …}` as its info.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::auth::{mint_hs256, ConnectionClaims};
use crate::codes::ErrorCode;
use crate::config::Mode;
use crate::http::error::ApiError;
use crate::node::Node;
use crate::stream::{now_millis, RawJson};

const PAGE: &str = include_str!("../../clients/demo/index.html");
/// Demo tokens last a day.
const DEMO_TTL_SECS: u64 = 24 * 3600;
/// Longest display name, in characters.
const MAX_NAME: usize = 40;

pub fn router(node: &Node) -> Router<Arc<Node>> {
    let page = Router::new().route(
        "/",
        get(|| async { ([(header::CACHE_CONTROL, "no-cache")], Html(PAGE)) }),
    );
    if node.config.mode == Mode::Dev {
        page.route("/demo/token", get(token))
    } else {
        page
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    name: Option<String>,
    user: Option<String>,
}

async fn token(State(node): State<Arc<Node>>, Query(query): Query<TokenQuery>) -> Response {
    let name = query.name.as_deref().unwrap_or("").trim();
    match mint(&node, name, query.user.as_deref()) {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

fn mint(node: &Node, name: &str, user: Option<&str>) -> Result<serde_json::Value, ApiError> {
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("`name` must be 1 to {MAX_NAME} printable characters"),
        ));
    }
    let secret = node
        .config
        .auth
        .hmac_secret
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorCode::NotAvailable, "no HMAC secret configured"))?;
    let user = match user {
        Some(user) if is_demo_user(user) => user.to_string(),
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "`user` must be a demo user id from an earlier token (`demo-…`)",
            ))
        }
        None => format!("demo-{}", crate::random::token(6)),
    };
    let info = RawJson::from_string(serde_json::json!({ "name": name }).to_string())
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let claims = ConnectionClaims {
        sub: user.clone(),
        exp: Some(now_millis() / 1000 + DEMO_TTL_SECS),
        info: Some(info),
        channels: None,
        channel: None,
    };
    let token = mint_hs256(secret, &claims)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    Ok(serde_json::json!({ "token": token, "user": user }))
}

/// Demo user ids are `demo-` and up to 16 base64url characters.
fn is_demo_user(user: &str) -> bool {
    user.strip_prefix("demo-").is_some_and(|rest| {
        (1..=16).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_demo_user_ids_may_be_kept() {
        assert!(is_demo_user("demo-abcDEF12"));
        assert!(!is_demo_user("demo-"));
        assert!(!is_demo_user("42"));
        assert!(!is_demo_user("demo-a b"));
        assert!(!is_demo_user("demo-aaaaaaaaaaaaaaaaa"));
    }
}
