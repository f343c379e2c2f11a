//! Transports move frames between a client and its session
//! ([`crate::session::Session`]).
//!
//! They parse nothing but their own framing: WebSocket frames, SSE events,
//! long-poll JSON envelopes. Commands for SSE and long-poll sessions arrive
//! through [`send`].

pub mod http_session;
pub mod long_poll;
pub mod send;
pub mod sse;
pub mod websocket;
