//! Which browser origins may open connections (cross-site WebSocket
//! hijacking protection; CORS for the HTTP transports will reuse it).
//!
//! A request without an `Origin` header comes from a non-browser client and
//! is allowed. A browser's request is allowed when its origin is the node's
//! own (the origin's host equals the `Host` header), is listed in
//! `allowed_origins`, or the list holds `"*"`.

use axum::http::{header, HeaderMap};

/// Whether the request's origin may connect.
pub fn allowed(allowed_origins: &[String], headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    if allowed_origins.iter().any(|o| o == "*" || *o == origin) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (origin.split_once("://"), host) {
        (Some((_, origin_host)), Some(host)) => origin_host.eq_ignore_ascii_case(host),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(origin: Option<&'static str>, host: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static(host));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_static(o));
        }
        h
    }

    #[test]
    fn no_origin_and_same_origin_are_allowed() {
        assert!(allowed(&[], &headers(None, "node:8000")));
        assert!(allowed(
            &[],
            &headers(Some("http://node:8000"), "node:8000")
        ));
        assert!(allowed(
            &[],
            &headers(Some("https://NODE:8000/"), "node:8000")
        ));
    }

    #[test]
    fn foreign_origins_need_the_list() {
        let list = vec!["https://app.example".to_string()];
        assert!(!allowed(
            &[],
            &headers(Some("https://evil.example"), "node:8000")
        ));
        assert!(allowed(
            &list,
            &headers(Some("https://app.example"), "node:8000")
        ));
        assert!(!allowed(
            &list,
            &headers(Some("http://app.example"), "node:8000")
        ));
        assert!(!allowed(&list, &headers(Some("null"), "node:8000")));
        assert!(allowed(
            &["*".to_string()],
            &headers(Some("null"), "node:8000")
        ));
    }
}
