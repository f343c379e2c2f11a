//! A minimal, allocation-frugal WebSocket (RFC 6455) codec.
//!
//! Switchboard does not use tungstenite on the server: an idle connection must
//! cost at most a few KiB, so no per-connection read or write buffer may stay
//! allocated while nothing is in flight. This module only turns bytes into
//! messages and back; the socket loop lives in [`crate::transport`].
//!
//! - [`handshake`]: the `Sec-WebSocket-Accept` computation and client keys;
//! - [`frame`]: [`FrameReader`], an incremental decoder that holds no memory
//!   while idle, and the `encode_*` functions that append frames to a buffer.

pub mod frame;
pub mod handshake;

pub use frame::{
    encode_binary, encode_client_close, encode_client_pong, encode_client_text, encode_close,
    encode_frame, encode_ping, encode_pong, encode_text, header, header_len, FrameError,
    FrameReader, Message, OpCode, Role,
};
pub use handshake::{accept_key, client_key};
