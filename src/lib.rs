//! Switchboard: a self-hosted real-time messaging server.
//!
//! Layers, from the edge inwards (see docs/architecture.md):
//! - [`http`] and [`transport`] move bytes (axum routes, the WebSocket loop);
//! - [`client`] is one connection's protocol state machine, transport-agnostic;
//! - [`node`] ties the [`hub`] (channel → subscribers, fan-out), the
//!   [`broker`] (moves publications and presence between nodes), the
//!   [`store`] (durable history) and [`presence`] together;
//! - [`protocol`], [`codes`], [`stream`] are the wire and domain vocabulary.

pub mod auth;
pub mod broker;
pub mod channel;
pub mod client;
pub mod cluster;
pub mod codes;
pub mod config;
pub mod devmode;
pub mod history;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod node;
pub mod presence;
pub mod protocol;
pub mod random;
pub mod server;
pub mod session;
pub mod store;
pub mod stream;
pub mod transport;
pub mod ws;
