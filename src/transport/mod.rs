//! Transports move frames between a client and its [`crate::client::Client`].
//!
//! They parse nothing but their own framing: WebSocket here; SSE and
//! long-polling come with the fallback transports (issue 3).

pub mod websocket;
